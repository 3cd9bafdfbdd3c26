"""One supervisor to a journal, and one to a SQLite database (issue 13, its first step; supervisor/record/ownership.py).

Two supervisors on one SQLite file shared one journal (`<db>.pending`): the second one's recorder died on the
other's records, and records the first had journaled never reached the database. Two on PostgreSQL started
from one directory shared `./worker-supervisor.pending` the same way. Now the second is refused, in one line
naming the first, and the first loses nothing.
"""
from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

from dbtools import query_or_empty
from helpers import Record, wait_until, worker_package


def refused(process: Any) -> str:
    """The one line a refused second supervisor wrote; it must have exited 1 without a traceback."""
    assert process.wait(60) == 1, process.log()
    lines = [line for line in process.log().splitlines() if line.strip()]
    assert "Traceback" not in process.log(), process.log()
    return lines[-1]


def test_a_second_supervisor_on_one_sqlite_file_is_refused_and_the_first_loses_nothing(
    tmp_path: Path, record: Record, start_supervisor: Any
) -> None:
    worker_package(tmp_path, ["healthy"])
    first = start_supervisor()
    wait_until(lambda: len(record.runs("healthy")) >= 3, timeout=60, what="the first supervisor's runs")
    second = start_supervisor()
    line = refused(second)
    assert f"pid {first.pid} on {socket.gethostname()}" in line and "this SQLite database" not in line, line
    assert "the journal" in line and str(tmp_path / "supervisor.db.pending") in line, line
    # With a journal of its own it still may not share the database.
    third = start_supervisor("--journal", str(tmp_path / "own.pending"))
    line = refused(third)
    assert f"pid {first.pid}" in line and "this SQLite database" in line and "PostgreSQL" in line, line
    assert not (tmp_path / "own.pending").exists()
    # The first goes on, and every run it started reaches the database.
    before = len(record.runs("healthy"))
    wait_until(lambda: len(record.runs("healthy")) >= before + 3, timeout=30, what="more runs of the first")
    assert first.stop() == 0
    started = record.query("select count(*) as n from run where worker = 'healthy'")[0]["n"]
    assert started == len(record.runs("healthy"))  # none left unfinished
    assert (tmp_path / "supervisor.db.pending").stat().st_size == 0  # nothing waits for a database it never reached


def test_a_supervisor_killed_outright_leaves_no_lock_behind(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    # The kernel lets go of an flock with the process: no stale lock to clear by hand after a SIGKILL.
    worker_package(tmp_path, ["healthy"])
    first = start_supervisor()
    wait_until(lambda: record.runs("healthy"), timeout=60, what="a run")
    first.signal(signal.SIGKILL)
    first.wait(10)
    second = start_supervisor()
    wait_until(lambda: "spawner ready" in second.log(), timeout=60, what="the second supervisor")
    assert second.stop() == 0


def test_two_supervisors_on_postgres_from_one_directory_do_not_share_a_journal(
    tmp_path: Path, pg_url: str, start_supervisor: Any
) -> None:
    worker_package(tmp_path, ["healthy"])
    first = start_supervisor(url=pg_url)  # the default journal: ./worker-supervisor.pending
    wait_until(lambda: query_or_empty(pg_url, "select id from run where worker = ? and finished_at is not null",
                                      "healthy"), timeout=60, what="a run of the first")
    second = start_supervisor(url=pg_url)
    line = refused(second)
    assert f"pid {first.pid}" in line and "the journal" in line and "--journal" in line, line
    assert first.stop() == 0
    assert os.path.getsize(tmp_path / "worker-supervisor.pending") == 0
