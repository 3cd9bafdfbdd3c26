"""`python -m supervisor status --watch` in a real pseudo-terminal: it redraws from the database every second,
shows changes other processes record, fits the terminal, survives an unreachable database, and stops on Ctrl-C."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Iterator

import pytest

from supervisor.record import records
from supervisor.outcome import Outcome, Verdict
from supervisor.record.records import Record
from supervisor.record.store import Store, utcnow
from supervisor.worker import WorkerDefinition

NODE = socket.gethostname()
BOOM = Verdict(Outcome.ERROR, "ValueError: boom at the end", "Traceback (most recent call last):\nValueError: boom\n")
OK = Verdict(Outcome.SUCCEEDED, "")


class Terminal:
    """A pseudo-terminal of a given size with `status --watch` running in it; what it drew is kept in `screen`."""

    def __init__(self, cwd: Path, url: str, rows: int = 30, columns: int = 120) -> None:
        self.master, slave = pty.openpty()
        self.output = bytearray()
        self.closed = False
        try:
            self.resize(rows, columns, slave)
            # A terminal rich draws on as it would on an operator's: no size or colour forced by the environment.
            env = {k: v for k, v in os.environ.items()
                   if k not in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
            env["TERM"] = "xterm-256color"
            self.process = subprocess.Popen(
                [sys.executable, "-m", "supervisor", "status", "--watch", "--db", url],
                cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=env,
            )
        except BaseException:
            os.close(self.master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(self.master, False)

    def resize(self, rows: int, columns: int, fd: int | None = None) -> None:
        """Set the terminal's size (what TIOCGWINSZ reports to the program in it)."""
        fcntl.ioctl(self.master if fd is None else fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def pump(self, timeout: float) -> None:
        """Read what the program drew within `timeout` seconds (it must be read, or it blocks on a full pty)."""
        if self.closed:
            return
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EIO:  # every slave end is closed: the program has exited
                    self.closed = True
                    return
                raise
            if not chunk:
                self.closed = True
                return
            self.output += chunk

    def text(self, since: int = 0) -> str:
        """What was drawn (escape sequences included) from byte `since` on."""
        return self.output[since:].decode("utf-8", errors="replace")

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 20.0, since: int = 0, what: str = "") -> str:
        """Read until `predicate` holds for what was drawn since `since`; fail with the screen after `timeout`."""
        deadline = time.monotonic() + timeout
        while not predicate(self.text(since)):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the terminal shows:\n{self.text(since)[-3000:]}")
            if self.process.poll() is not None and self.closed:
                raise AssertionError(f"status --watch exited ({self.process.returncode}) before {what}:\n"
                                     f"{self.text()[-3000:]}")
            self.pump(0.1)
        return self.text(since)

    def interrupt(self, timeout: float = 20.0) -> int:
        """Press Ctrl-C (SIGINT to the program) and return its exit code, reading what it draws meanwhile."""
        self.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"status --watch still runs {timeout}s after SIGINT:\n{self.text()[-3000:]}")
            self.pump(0.05)
        self.pump(0)
        return self.process.returncode

    def close(self) -> None:
        """Kill the program if it still runs, reap it and close the terminal."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        os.close(self.master)


@pytest.fixture
def terminals(tmp_path: Path) -> Iterator[Callable[..., Terminal]]:
    """Start `status --watch` in pseudo-terminals; every one is killed (if need be), reaped and closed afterwards."""
    started: list[Terminal] = []

    def start(url: str, rows: int = 30, columns: int = 120) -> Terminal:
        terminal = Terminal(tmp_path, url, rows, columns)
        started.append(terminal)
        return terminal

    yield start
    for terminal in started:
        terminal.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[tuple[str, Store]]:
    """A fresh SQLite database and a Store of the test's own to record into it (as the recorder would)."""
    url = f"sqlite:///{tmp_path}/x.db"
    store = Store(url)
    store.open()
    try:
        yield url, store
    finally:
        store.close()


def apply(store: Store, *batch: Record) -> None:
    """Apply records as the recorder does: after their trip through the journal (JSON)."""
    store.apply([json.loads(json.dumps(record)) for record in batch])


def definition(name: str, timeout: float | None = 30.0) -> WorkerDefinition:
    return WorkerDefinition(name=name, module="jobs", interval=60.0, timeout=timeout, grace=5.0)


def started(run: str, worker: str, at: datetime) -> Record:
    return records.run_started(run, worker, 1, at, at + timedelta(seconds=60), NODE, os.getpid())


def finished(run: str, worker: str, verdict: Verdict, at: datetime) -> Record:
    return records.run_finished(
        run, worker, 1, at, at + timedelta(seconds=1.5), 1.5, verdict, NODE, os.getpid(), pid=4242,
        exit_code=0 if verdict.outcome is Outcome.SUCCEEDED else 1, next_run_at=at + timedelta(seconds=60),
    )


def one_run(store: Store, worker: str, verdict: Verdict, at: datetime) -> None:
    run = uuid.uuid4().hex
    apply(store, started(run, worker, at), records.run_spawned(run, worker, 4242), finished(run, worker, verdict, at))


def test_watch_shows_the_workers_then_what_changes_and_stops_on_ctrl_c(
    sqlite_store: tuple[str, Store], terminals: Callable[..., Terminal]
) -> None:
    url, store = sqlite_store
    now = utcnow()
    apply(store, records.workers_synced([definition("alpha"), definition("beta"), definition("gamma")], [], now))
    one_run(store, "alpha", OK, now - timedelta(seconds=10))
    one_run(store, "beta", OK, now - timedelta(seconds=10))
    # gamma is running: started 3s ago, never finished; its row says so, with its timeout.
    gamma_run = uuid.uuid4().hex
    apply(store, started(gamma_run, "gamma", now - timedelta(seconds=3)), records.run_spawned(gamma_run, "gamma", 31337))

    terminal = terminals(url)
    terminal.wait_for(
        lambda s: all(name in s for name in ("alpha", "beta", "gamma", "31337", "3 worker(s)", "1 running")),
        what="the three workers, gamma running",
    )
    assert "s/30s" in terminal.text()  # gamma's time against its timeout
    assert "ValueError: boom" not in terminal.text()

    mark = len(terminal.output)
    one_run(store, "beta", BOOM, utcnow() - timedelta(seconds=2))
    apply(store, finished(gamma_run, "gamma", OK, now - timedelta(seconds=3)))
    frame = terminal.wait_for(
        # Every column keeps its width from frame to frame; at 120 characters the error's column is cut short.
        lambda s: "ValueError: boom" in s and "1 failing" in s and "0 running" in s,
        since=mark, what="beta's failure and gamma's end on the screen",
    )
    assert "31337" not in frame.rsplit("worker-supervisor", 1)[-1]  # gamma's pid left with its run

    assert terminal.interrupt() == 0
    assert "Traceback" not in terminal.text()
    assert "KeyboardInterrupt" not in terminal.text()


def test_watch_fits_the_terminal_and_follows_its_resizing(
    sqlite_store: tuple[str, Store], terminals: Callable[..., Terminal]
) -> None:
    url, store = sqlite_store
    apply(store, records.workers_synced([definition(f"job-{i:02d}") for i in range(40)], [], utcnow()))
    terminal = terminals(url, rows=20, columns=100)
    # 20 lines: a title, a header, its rule, 14 rows, "… and 26 more", two footer lines.
    terminal.wait_for(lambda s: "… and 26 more workers" in s and "40 worker(s)" in s, what="a frame of 20 lines")

    mark = len(terminal.output)
    terminal.resize(15, 100)
    terminal.process.send_signal(signal.SIGWINCH)  # the kernel sends it only to the terminal's foreground group
    terminal.wait_for(lambda s: "… and 31 more workers" in s and "40 worker(s)" in s, since=mark,
                      what="a frame of 15 lines after the resize")
    assert terminal.interrupt() == 0


def test_watch_shows_an_unreachable_database_in_its_footer_and_keeps_trying(terminals: Callable[..., Terminal]) -> None:
    terminal = terminals("postgresql://postgres@127.0.0.1:1/x")
    # Each frame is drawn anew: the error seen in two frames means it kept running and trying.
    terminal.wait_for(lambda s: s.count("cannot open the database: connection failed") >= 2,
                      what="the database error in two frames' footers")
    assert terminal.process.poll() is None
    text = terminal.text()
    assert "127.0.0.1:1" in text or "port 1" in text
    assert "Traceback" not in text
    assert terminal.interrupt() == 0
    assert "Traceback" not in terminal.text()
