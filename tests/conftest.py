from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from dbtools import create_database, drop_database, postgres_problem
from helpers import Record, SupervisorProcess


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a child process or an open descriptor behind."""
    before = _open_fds()
    yield
    me = psutil.Process()
    leftovers = [p for p in me.children(recursive=True) if _running(p)]
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

    def start(*args: str, config: str | None = None, url: str | None = None) -> SupervisorProcess:
        process = SupervisorProcess(tmp_path, url or f"sqlite:///{db}", args, config=config)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def postgres_unreachable_reason() -> str | None:
    """Why PostgreSQL on 127.0.0.1:5432 cannot be used (asked once per session), or None when it can."""
    return postgres_problem()


def _postgres_unavailable(problem: str) -> None:
    message = f"PostgreSQL not reachable on 127.0.0.1:5432: {problem}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI must run the PostgreSQL tests, not skip them)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database of each backend: a SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    problem = request.getfixturevalue("postgres_unreachable_reason")
    if problem is not None:
        _postgres_unavailable(problem)
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def pg_url(postgres_unreachable_reason: str | None) -> Iterator[str]:
    """The URL of a fresh PostgreSQL database of the test's own, dropped afterwards."""
    if postgres_unreachable_reason is not None:
        _postgres_unavailable(postgres_unreachable_reason)
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)
