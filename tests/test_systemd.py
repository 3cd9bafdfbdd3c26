"""Life under systemd, with this test playing systemd's side: a real datagram socket as NOTIFY_SOCKET.

READY comes once the first spawner has reported its workers; WATCHDOG keeps coming while the loop starts due
work on time and stops when due runs cannot start (the spawner frozen with SIGSTOP); STOPPING at the first stop
signal; and no helper or run inherits the socket (it could speak for the unit).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from helpers import SupervisorProcess, title, wait_until, worker_package

ENVIRONMENT_PROBE = '''
import os
import time
from supervisor import worker


@worker(interval=0.2, timeout=0.5, grace=0.2)
def ticker(ctx):
    time.sleep(0.05)


@worker(interval=0.3)
def probe(ctx):
    names = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
    with open(os.path.join(os.getcwd(), "run-environment"), "w") as out:
        out.write(" ".join(f"{name}={os.environ.get(name)}" for name in names))
'''


class FakeSystemd:
    """The service manager's end of the notify socket: every datagram received (by a thread of its own, so that
    each is stamped when it came), with when it came."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind("\0" + address[1:] if address.startswith("@") else address)
        self.socket.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while not self.closed.is_set():
            try:
                data = self.socket.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def pings(self, since: float, until: float = float("inf")) -> list[float]:
        return [at for at, fields in list(self.messages) if fields.get("WATCHDOG") == "1" and since <= at <= until]

    def first(self, key: str) -> dict[str, str] | None:
        return next((fields for _, fields in list(self.messages) if key in fields), None)

    def close(self) -> None:
        self.closed.set()
        self.thread.join(5)
        self.socket.close()


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeSystemd]:
    address = str(tmp_path / "notify") if request.param == "path" else f"@worker-supervisor-test-{os.getpid()}-{time.monotonic_ns()}"
    fake = FakeSystemd(address)
    yield fake
    fake.close()


def live_spawners(supervisor: SupervisorProcess) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(supervisor.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "worker-supervisor: spawner" in title(child):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def test_ready_watchdog_and_stopping_reach_systemd_and_no_child_inherits_the_socket(
        tmp_path: Path, db: Path, systemd: FakeSystemd) -> None:
    worker_package(tmp_path, [], extra={"probe": ENVIRONMENT_PROBE})
    started = time.monotonic()
    supervisor = SupervisorProcess(tmp_path, f"sqlite:///{db}", env={
        "NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "2000000"})
    try:
        ready = wait_until(lambda: systemd.first("READY"), timeout=60, what="READY=1")
        # Ready only once the spawner has imported the workers and said so.
        assert "spawner ready" in supervisor.log()
        assert ready["READY"] == "1" and "2 workers" in ready["STATUS"], ready
        # The watchdog hears from us every half period (1 s) while all is well.
        healthy_from = time.monotonic()
        wait_until(lambda: time.monotonic() > healthy_from + 3, timeout=10, step=0.1)
        pings = systemd.pings(started)
        assert len(pings) >= 3 and max(b - a for a, b in zip(pings, pings[1:])) < 1.5, pings
        # No helper and no run has the socket or the watchdog in its environment.
        environment = wait_until(lambda: (tmp_path / "run-environment").exists() and
                                 (tmp_path / "run-environment").read_text(), timeout=30, what="the probe's run")
        assert environment == "NOTIFY_SOCKET=None WATCHDOG_USEC=None WATCHDOG_PID=None"
        for helper in psutil.Process(supervisor.pid).children():
            assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC"} & set(helper.environ()), helper.cmdline()
        # A reload (SIGHUP): RELOADING with the monotonic time, then READY once the new spawner is ready.
        supervisor.signal(signal.SIGHUP)
        reloading = wait_until(lambda: systemd.first("RELOADING"), timeout=30, what="RELOADING=1")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        wait_until(lambda: sum("READY" in fields for _, fields in list(systemd.messages)) == 2, timeout=30,
                   what="READY=1 again")
        wait_until(lambda: "reload: no worker changed" in supervisor.log(), timeout=30, what="the reload done")
        # The spawner frozen: due runs cannot start, and a run in flight then cannot be reported ended, even once
        # killed at its timeout. Either way the pings stop within a watchdog period or two...
        # (The reload's old spawner exits once its runs ended: the one left is the new one.)
        (spawner,) = wait_until(lambda: (lambda found: found if len(found) == 1 else None)(live_spawners(supervisor)),
                                timeout=30, what="one spawner left after the reload")
        spawner.suspend()
        frozen_at = time.monotonic()
        wait_until(lambda: "no longer pinged" in supervisor.log(), timeout=10, what="the watchdog withheld")
        withheld_at = time.monotonic()
        quiet_until = withheld_at + 2.5
        wait_until(lambda: time.monotonic() > quiet_until, timeout=10, step=0.1)
        assert not systemd.pings(withheld_at + 0.1, quiet_until), systemd.pings(frozen_at)
        # ...and come back once it answers again.
        spawner.resume()
        resumed_at = time.monotonic()
        wait_until(lambda: systemd.pings(resumed_at), timeout=10, what="pings again")
        # The first stop signal says STOPPING.
        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0
        assert systemd.first("STOPPING") is not None
    finally:
        supervisor.stop()


def test_without_systemd_nothing_is_sent_and_nothing_breaks(tmp_path: Path, db: Path) -> None:
    # A NOTIFY_SOCKET nobody listens on (systemd went away): one warning, and the supervisor goes on.
    worker_package(tmp_path, ["healthy"])
    supervisor = SupervisorProcess(tmp_path, f"sqlite:///{db}", env={
        "NOTIFY_SOCKET": str(tmp_path / "nobody"), "WATCHDOG_USEC": "500000"})
    try:
        wait_until(lambda: "spawner ready" in supervisor.log(), timeout=60, what="the spawner ready")
        wait_until(lambda: supervisor.log().count("healthy: pid") >= 5, timeout=30, what="runs")
        assert supervisor.log().count("notify socket") == 1, supervisor.log()
        assert supervisor.stop() == 0
    finally:
        supervisor.stop()


def test_the_shipped_unit_says_what_the_promise_needs_and_systemd_accepts_it(tmp_path: Path) -> None:
    config = tmp_path / "etc dir" / "supervisor.toml"  # a space: ExecStart must quote it
    config.parent.mkdir()
    config.write_text("[worker.x]\n")
    printed = subprocess.run([sys.executable, "-m", "supervisor", "systemd-unit", "--config", str(config),
                              "--user", "jobs"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    unit = printed.stdout
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    # A run the OOM killer takes must not stop the service; our own stop must reach the runs through us.
    assert settings["OOMPolicy"] == "continue" and settings["KillMode"] == "mixed"
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main" and settings["WatchdogSec"] == "30"
    assert settings["Restart"] == "on-failure" and settings["User"] == settings["Group"] == "jobs"
    assert settings["ExecStart"] == f'{sys.executable} -m supervisor run --config "{config}"'
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert int(settings["TimeoutStopSec"]) > 2 * 5  # above the default grace, with time to write the records
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax is not verified here")
    path = tmp_path / "worker-supervisor.service"
    path.write_text(unit)
    verified = subprocess.run([analyze, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (verified.stdout + verified.stderr).splitlines() if str(path) in line]
    assert verified.returncode == 0 and not complaints, verified.stdout + verified.stderr
