"""Test helpers: wait on conditions with a deadline, run a real supervisor, read its SQLite record."""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import psutil

FIXTURES = Path(__file__).parent / "fixture_workers"
T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, step: float = 0.01, what: str = "") -> T:
    """Poll `predicate` until it returns something truthy; fail with the last value seen after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}; last value: {value!r}")
        time.sleep(step)


@contextmanager
def cpu_load(processes: int = 2) -> Iterator[None]:
    """Keep `processes` CPU-bound processes spinning during the block: a loaded machine, as users have one.

    Races that an idle machine hides for hundreds of tries (a process woken before the event it was woken for is
    visible) show within a few dozen under load.
    """
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
                for _ in range(processes)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def worker_package(root: Path, modules: Iterable[str], name: str = "workers", extra: dict[str, str] | None = None) -> Path:
    """Make a package `name` under `root` holding copies of the named fixture modules (and `extra` sources)."""
    package = root / name
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    for module in modules:
        shutil.copy(FIXTURES / f"{module}.py", package / f"{module}.py")
    for module, source in (extra or {}).items():
        (package / f"{module}.py").write_text(source)
    return package


class SupervisorProcess:
    """A real `python -m supervisor run` in a directory of the test's, its output going to a file."""

    def __init__(self, cwd: Path, url: str, args: Iterable[str] = (), config: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.url = url
        self.log_path = cwd / f"supervisor-{time.monotonic_ns()}.log"
        argv = [sys.executable, "-m", "supervisor", "run", "--db", url, *args]
        if config is not None:
            config_path = cwd / "supervisor.toml"
            config_path.write_text(config)
            argv += ["--config", str(config_path)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self.pid = self.process.pid

    def log(self) -> str:
        """Return everything the supervisor has written so far."""
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        """Tell whether the supervisor is still running."""
        return self.process.poll() is None

    def descendants(self) -> list[psutil.Process]:
        """Return the supervisor's descendants (spawner, runs, their children)."""
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def signal(self, sig: int) -> None:
        """Send `sig` to the supervisor process."""
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the supervisor to exit; return its exit code."""
        return self.process.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop it (SIGTERM, then SIGKILL) if it still runs, and reap it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def title(process: psutil.Process) -> str:
    """What `ps` shows for one of our processes (set by supervisor/process_title.py): `worker-supervisor: ROLE ...`."""
    return " ".join(part for part in process.cmdline() if part)


def spawner_of(supervisor: SupervisorProcess) -> psutil.Process:
    """The supervisor's spawner, once it has started it."""
    return helper_of(supervisor, "spawner")


def helper_of(supervisor: SupervisorProcess, role: str) -> psutil.Process:
    """The supervisor's child in this role (`spawner`, `guard`, ...), once it has started and says so in its title.

    A helper is a fresh interpreter: it names itself only after its imports, which take a while on a loaded
    machine, and the guard has nothing the supervisor waits for (the spawner can be ready before it)."""
    def find() -> psutil.Process | None:
        for child in psutil.Process(supervisor.pid).children():
            if f"worker-supervisor: {role}" in title(child):
                return child
        return None

    return wait_until(find, timeout=60, what=f"the {role}")


class Record:
    """Read the supervisor's SQLite record through a connection of our own (as another process would)."""

    def __init__(self, db: Path) -> None:
        self.db = db

    def query(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        """Run a read-only query; an absent database or table reads as no rows."""
        if not self.db.exists():
            return []
        connection = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        connection.row_factory = sqlite3.Row
        try:
            return connection.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            connection.close()

    def runs(self, worker: str, finished: bool = True) -> list[sqlite3.Row]:
        """Return a worker's runs in start order (only finished ones unless told otherwise)."""
        where = " and finished_at is not null" if finished else ""
        return self.query(f"select * from run where worker = ?{where} order by started_at", worker)

    def outcomes(self, worker: str) -> list[str]:
        """Return the outcomes of a worker's finished runs, in order."""
        return [row["outcome"] for row in self.runs(worker)]

    def failures(self, worker: str) -> list[sqlite3.Row]:
        """Return a worker's failure rows, oldest first."""
        return self.query("select * from failure where worker = ? order by id", worker)

    def worker(self, name: str) -> sqlite3.Row | None:
        """Return a worker's row."""
        rows = self.query("select * from worker where name = ?", name)
        return rows[0] if rows else None


def pid_alive(pid: int) -> bool:
    """Tell whether a process exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class TcpProxy:
    """tests/tcpproxy.py in a subprocess: forward, cut or hang the way to PostgreSQL."""

    def __init__(self, target_port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "tcpproxy.py"), str(target_port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline().split()[1])

    def set(self, mode: str) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(mode + "\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == f"ok {mode}"

    def close(self) -> None:
        """Stop the proxy and close its pipes, even when it died first (the test reports why it did)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.close()
        except BrokenPipeError:
            pass
        finally:
            self.process.wait(10)
            self.process.stdout.close()
