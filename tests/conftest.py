from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from helpers import Record, SupervisorProcess


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a child process or an open descriptor behind."""
    before = _open_fds()
    yield
    me = psutil.Process()
    leftovers = [p for p in me.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
    for p in leftovers:
        p.kill()
    psutil.wait_procs(me.children(recursive=True), timeout=10)
    assert not leftovers, f"test left processes running: {[(p.pid, p.cmdline()) for p in leftovers]}"
    # /proc/self/fd itself shows up as an fd while being listed; compare what stays open.
    leaked = _open_fds() - before
    leaked = {fd for fd in leaked if os.path.exists(f"/proc/self/fd/{fd}")}
    assert not leaked, f"test leaked fds: {[(fd, os.readlink(f'/proc/self/fd/{fd}')) for fd in leaked]}"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Path of a fresh SQLite database file in the test's own directory."""
    return tmp_path / "supervisor.db"


@pytest.fixture
def record(db: Path) -> Record:
    """The SQLite record, read through a connection of the test's own."""
    return Record(db)


@pytest.fixture
def start_supervisor(tmp_path: Path, db: Path) -> Iterator[object]:
    """Start real supervisors in the test's directory; every one is stopped and reaped afterwards."""
    started: list[SupervisorProcess] = []

    def start(*args: str, config: str | None = None) -> SupervisorProcess:
        process = SupervisorProcess(tmp_path, db, args, config=config)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
