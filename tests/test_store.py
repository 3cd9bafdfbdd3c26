"""Tests of supervisor/record/store.py on real databases, SQLite and PostgreSQL alike: schema and migration, records and
their idempotency, counters under concurrent writers, lost runs, retention, and reading while another writes.

Every storage test takes `store_url` (conftest.py), so it runs once per backend. Rows are checked through a
connection of the test's own (dbtools.query), as another process would see them.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import peewee
import pytest
from playhouse import db_url

import schema_v1
from dbtools import column_names, indexes, is_postgres, query, scalar, table_names, when
from supervisor.record import records
from supervisor.errors import StoreUnavailable
from supervisor.outcome import Outcome, Verdict
from supervisor.record.records import Record
from supervisor.record.store import ERROR_MESSAGE_LIMIT, SCHEMA_VERSION, Store, redact, utcnow
from supervisor.worker import WorkerDefinition

ROOT = Path(__file__).resolve().parent.parent
NODE = socket.gethostname()

OK = Verdict(Outcome.SUCCEEDED, "")
BOOM = Verdict(Outcome.ERROR, "ValueError: boom", "Traceback (most recent call last):\nValueError: boom\n")
CRASH = Verdict(Outcome.CRASH, "crashed with SIGSEGV")


# -- building records ----------------------------------------------------------------------------------------------


def definition(name: str, module: str = "jobs", interval: float = 60.0, timeout: float | None = 30.0) -> WorkerDefinition:
    return WorkerDefinition(name=name, module=module, interval=interval, timeout=timeout, grace=5.0)


def synced(*definitions: WorkerDefinition, broken: tuple[str, ...] = (), at: datetime | None = None) -> Record:
    return records.workers_synced(list(definitions), list(broken), at or utcnow())


def started(
    run: str,
    worker: str,
    at: datetime | None = None,
    next_run_at: datetime | None = None,
    attempt: int = 1,
    supervisor_pid: int | None = None,
    node: str = NODE,
    skipped: int = 0,
) -> Record:
    return records.run_started(
        run, worker, attempt, at or utcnow(), next_run_at, node, os.getpid() if supervisor_pid is None else supervisor_pid,
        skipped=skipped,
    )


def finished(
    run: str,
    worker: str,
    verdict: Verdict = OK,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    duration: float = 1.5,
    supervisor_pid: int | None = None,
    **extra: Any,
) -> Record:
    finished_at = finished_at or utcnow()
    extra.setdefault("exit_code", 0 if verdict.outcome is Outcome.SUCCEEDED else 1)
    extra.setdefault("cpu_time", 0.25)
    extra.setdefault("peak_rss", 12_345_678)
    return records.run_finished(
        run, worker, 1, started_at or finished_at - timedelta(seconds=duration), finished_at, duration, verdict, NODE,
        os.getpid() if supervisor_pid is None else supervisor_pid, **extra,
    )


def journaled(record: Record) -> Record:
    """The record as the recorder reads it back from the journal."""
    return dict(json.loads(json.dumps(record)))


def apply(store: Store, *batch: Record) -> None:
    store.apply([journaled(record) for record in batch])


def one_run(store: Store, worker: str, verdict: Verdict = OK, at: datetime | None = None, **extra: Any) -> str:
    """Apply a whole run (start, spawn, end) in one batch; return its id."""
    run = uuid.uuid4().hex
    at = at or utcnow() - timedelta(seconds=2)
    apply(
        store,
        started(run, worker, at=at),
        records.run_spawned(run, worker, 4242),
        finished(run, worker, verdict, started_at=at, finished_at=at + timedelta(seconds=1.5), **extra),
    )
    return run


# -- reading rows ------------------------------------------------------------------------------------------------


def worker_row(url: str, name: str) -> dict[str, Any]:
    rows = query(url, "select * from worker where name = ?", name)
    assert rows, f"no worker row {name!r}"
    return rows[0]


def counters(url: str, name: str) -> tuple[int, int, int, int]:
    row = worker_row(url, name)
    return row["success_count"], row["failure_count"], row["consecutive_failures"], row["skipped_count"]


def run_ids(url: str, worker: str | None = None) -> set[str]:
    if worker is None:
        return {row["id"] for row in query(url, "select id from run")}
    return {row["id"] for row in query(url, "select id from run where worker = ?", worker)}


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the three tables, in a stable order, for comparing whole states."""
    return {
        table: sorted((tuple(sorted(row.items())) for row in query(url, f"select * from {table}")), key=repr)
        for table in ("worker", "run", "failure")
    }


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    s.open()
    try:
        yield s
    finally:
        s.close()


# -- opening -------------------------------------------------------------------------------------------------------


def test_open_creates_the_current_schema(store: Store, store_url: str) -> None:
    assert {"schema_version", "worker", "run", "failure", "output"} <= table_names(store_url)
    assert [row["version"] for row in query(store_url, "select version from schema_version")] == [SCHEMA_VERSION] == [7]
    assert "event" in column_names(store_url, "failure")
    assert (("event",), True) in indexes(store_url, "failure")
    assert (("worker", "started_at"), False) in indexes(store_url, "run")


def test_sqlite_database_is_in_wal_mode(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/wal.db"
    s = Store(url)
    s.open()
    s.close()
    assert query(url, "pragma journal_mode") == [{"journal_mode": "wal"}]


def test_opening_twice_keeps_one_schema_version_and_the_data(store_url: str) -> None:
    for _ in range(2):
        s = Store(store_url)
        s.open()
        try:
            apply(s, synced(definition("a")))
            assert [w.name for w in s.workers()] == ["a"]
        finally:
            s.close()
    assert query(store_url, "select version from schema_version") == [{"version": SCHEMA_VERSION}]


def test_unwritable_sqlite_path_raises_store_unavailable_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "x.db"
    s = Store(f"sqlite:///{path}")
    try:
        with pytest.raises(StoreUnavailable) as info:
            s.open()
        assert s.db.is_closed()
    finally:
        s.close()
    assert str(path) in str(info.value)
    assert info.value.message.startswith("cannot open the database")
    assert info.value.exit_code == 1
    assert not path.parent.exists()


def test_unreachable_postgres_raises_store_unavailable_without_the_password() -> None:
    url = "postgresql://postgres:s3cret@127.0.0.1:1/x"
    s = Store(url, connect_timeout=2)
    try:
        with pytest.raises(StoreUnavailable) as info:
            s.open()
        assert s.db.is_closed()
    finally:
        s.close()
    text = str(info.value)
    assert "s3cret" not in text and "s3cret" not in info.value.message
    assert info.value.message.startswith("cannot open the database")
    assert info.value.where == "postgresql://postgres:***@127.0.0.1:1/x"
    assert "127.0.0.1:1" in text


def test_describe_scrubs_the_password_plain_and_url_quoted() -> None:
    s = Store("postgresql://app:p%40ss%2Fword@db.invalid/x")
    text = s.describe(RuntimeError('FATAL: password "p@ss/word" (p%40ss%2Fword) rejected\nsecond line p@ss/word'))
    assert "p@ss/word" not in text and "p%40ss%2Fword" not in text
    assert text == 'FATAL: password "***" (***) rejected'
    assert s.describe(RuntimeError()) == "RuntimeError"


def test_unsupported_scheme() -> None:
    with pytest.raises(StoreUnavailable, match="unsupported database URL scheme 'mysql'"):
        Store("mysql://user:pw@host/db")


def test_postgres_url_without_a_database() -> None:
    with pytest.raises(StoreUnavailable, match="names no database") as info:
        Store("postgresql://app:s3cret@db.invalid/")
    assert "s3cret" not in str(info.value)


def test_redact_hides_a_postgres_password() -> None:
    url = "postgresql://app:s3cr3t@db.example.com:5432/supervisor"
    assert redact(url) == "postgresql://app:***@db.example.com:5432/supervisor"
    assert "s3cr3t" not in redact("postgres://app:s3cr3t@db/supervisor?sslmode=require")
    assert redact("postgres://app:s3cr3t@db/supervisor?sslmode=require").endswith("@db/supervisor?sslmode=require")


def test_redact_leaves_urls_without_a_password_alone() -> None:
    assert redact("sqlite:////var/lib/supervisor.db") == "sqlite:////var/lib/supervisor.db"
    assert redact("postgresql://app@db/supervisor") == "postgresql://app@db/supervisor"


def test_redact_password_containing_at_sign() -> None:
    redacted = redact("postgresql://app:p@ss@db/supervisor")
    assert "p@ss" not in redacted
    assert redacted == "postgresql://app:***@db/supervisor"


# -- migration -------------------------------------------------------------------------------------------------------


def _version_1_database(url: str, at: datetime) -> None:
    """Write a database as version 1 did: its schema, a worker, a finished failed run and its failure."""
    db = db_url.connect(url)
    try:
        schema_v1.create(db)
        with db.atomic():
            schema_v1.WorkerRow.create(
                name="old", module="jobs", interval=60.0, success_count=7, failure_count=2, consecutive_failures=1,
                last_outcome="error", last_error="E: old", updated_at=at,
            )
            schema_v1.RunRow.create(
                id="r-old", worker="old", started_at=at, finished_at=at + timedelta(seconds=1), duration=1.0,
                outcome="error", exit_code=1, node=NODE, supervisor_pid=123,
            )
            schema_v1.FailureRow.create(run="r-old", worker="old", created_at=at, kind="error", message="E: old")
    finally:
        db.close()


def test_a_version_1_database_is_migrated_to_the_current_version(store_url: str) -> None:
    at = utcnow().replace(microsecond=0) - timedelta(hours=1)
    _version_1_database(store_url, at)
    assert query(store_url, "select version from schema_version") == [{"version": 1}]
    assert "event" not in column_names(store_url, "failure")

    s = Store(store_url)
    s.open()
    try:
        assert query(store_url, "select version from schema_version") == [{"version": SCHEMA_VERSION}]
        assert "event" in column_names(store_url, "failure")
        assert (("event",), True) in indexes(store_url, "failure")
        assert (("worker", "started_at"), False) in indexes(store_url, "run")
        assert "command" in table_names(store_url)  # version 3
        # The old rows are intact.
        old = worker_row(store_url, "old")
        assert (old["success_count"], old["failure_count"], old["consecutive_failures"]) == (7, 2, 1)
        assert (old["last_error"], when(old["updated_at"])) == ("E: old", at)
        (run,) = query(store_url, "select * from run")
        assert (run["id"], run["worker"], run["outcome"], run["supervisor_pid"]) == ("r-old", "old", "error", 123)
        assert when(run["finished_at"]) == at + timedelta(seconds=1)
        (failure,) = query(store_url, "select * from failure")
        assert (failure["run_id"], failure["message"], failure["event"]) == ("r-old", "E: old", None)
        # The new column does its job: a module broken, recorded twice, is one failure.
        broke = records.broken("pkg.bad", "pkg.bad", "SyntaxError: nope", utcnow())
        apply(s, broke)
        apply(s, broke)
        assert len(query(store_url, "select * from failure where worker = 'pkg.bad'")) == 1
        # And counting carries on from the old counters.
        one_run(s, "old", OK)
        assert counters(store_url, "old")[:3] == (8, 2, 0)
    finally:
        s.close()
    # Opening again migrates nothing more.
    again = Store(store_url)
    again.open()
    again.close()
    assert query(store_url, "select version from schema_version") == [{"version": SCHEMA_VERSION}]
    assert len(query(store_url, "select * from failure")) == 2


def test_a_newer_schema_than_known_is_refused(store_url: str) -> None:
    s = Store(store_url)
    s.open()
    apply(s, synced(definition("a")))
    s.close()
    query(store_url, "update schema_version set version = 99")
    newer = Store(store_url)
    try:
        with pytest.raises(StoreUnavailable, match=rf"version 99, newer than this release's {SCHEMA_VERSION}") as info:
            newer.open()
        assert info.value.where == redact(store_url)
        # Like every other failure to open, it leaves no connection behind.
        assert newer.db.is_closed(), "Store.open() raised StoreUnavailable but left its connection open"
    finally:
        newer.close()
    # Nothing was changed.
    assert query(store_url, "select version from schema_version") == [{"version": 99}]
    assert worker_row(store_url, "a")["status"] == "idle"


# -- workers ---------------------------------------------------------------------------------------------------------


def test_workers_synced_creates_rows(store: Store, store_url: str) -> None:
    at = utcnow().replace(microsecond=123456)
    apply(store, synced(definition("a", interval=10, timeout=None), definition("b", module="other"), at=at))
    a = worker_row(store_url, "a")
    assert (a["module"], a["status"], a["interval"], a["timeout"], a["success_count"]) == ("jobs", "idle", 10.0, None, 0)
    assert when(a["updated_at"]) == at
    assert worker_row(store_url, "b")["module"] == "other"
    assert [w.name for w in store.workers()] == ["a", "b"]


def test_workers_synced_retires_workers_no_longer_defined(store: Store, store_url: str) -> None:
    apply(store, synced(definition("a"), definition("b"), definition("c")))
    apply(store, synced(definition("a"), definition("c", interval=5)))
    assert worker_row(store_url, "b")["status"] == "retired"
    assert worker_row(store_url, "a")["status"] == "idle"
    assert worker_row(store_url, "c")["interval"] == 5.0
    assert [w.name for w in store.workers()] == ["a", "c"]
    # Defined again: back from retirement.
    apply(store, synced(definition("a"), definition("b")))
    assert worker_row(store_url, "b")["status"] == "idle"
    assert [w.name for w in store.workers()] == ["a", "b"]


def test_workers_synced_keeps_rows_of_broken_modules(store: Store, store_url: str) -> None:
    apply(store, synced(definition("a", module="good"), definition("x", module="flaky")))
    apply(store, records.broken("flaky", "flaky", "ImportError: no module named nope", utcnow(), "Traceback ...", "err", 1))
    apply(store, synced(definition("a", module="good"), broken=("flaky",)))
    assert worker_row(store_url, "x")["status"] == "broken"
    assert worker_row(store_url, "flaky")["status"] == "broken"
    assert worker_row(store_url, "a")["status"] == "idle"
    # Once the module is neither defined nor broken, its rows retire.
    apply(store, synced(definition("a", module="good")))
    assert worker_row(store_url, "x")["status"] == "retired"
    assert worker_row(store_url, "flaky")["status"] == "retired"


def test_a_broken_module_is_a_failure_row_of_kind_import_without_a_run(store: Store, store_url: str) -> None:
    apply(store, synced(definition("w1", module="pkg.mod"), definition("w2", module="pkg.other")))
    at = utcnow()
    apply(store, records.broken("pkg.mod", "pkg.mod", "SyntaxError: invalid syntax", at, "Traceback (most ...", "boom", None, 11))
    (failure,) = query(store_url, "select * from failure")
    assert failure["run_id"] is None
    assert (failure["worker"], failure["kind"], failure["message"]) == ("pkg.mod", "import", "SyntaxError: invalid syntax")
    assert failure["traceback"].startswith("Traceback")
    assert (failure["stderr_tail"], failure["exit_code"], failure["signal"]) == ("boom", None, 11)
    assert when(failure["created_at"]) == at
    assert worker_row(store_url, "pkg.mod")["status"] == "broken"
    assert worker_row(store_url, "pkg.mod")["module"] == "pkg.mod"
    assert worker_row(store_url, "w1")["status"] == "broken"
    assert worker_row(store_url, "w1")["last_error"] == "SyntaxError: invalid syntax"
    assert worker_row(store_url, "w2")["status"] == "idle"


def test_a_broken_worker_definition_is_a_failure_row_of_kind_definition(store: Store, store_url: str) -> None:
    apply(store, synced(definition("sibling", module="pkg.jobs")))
    apply(store, records.broken("bad-interval", "pkg.jobs", "interval must be a positive duration, got -1", utcnow()))
    row = worker_row(store_url, "bad-interval")
    assert (row["status"], row["module"]) == ("broken", "pkg.jobs")
    assert row["last_error"] == "interval must be a positive duration, got -1"
    (failure,) = query(store_url, "select * from failure")
    assert (failure["worker"], failure["kind"], failure["run_id"]) == ("bad-interval", "definition", None)
    # One invalid worker does not break the other workers of its module.
    assert worker_row(store_url, "sibling")["status"] == "idle"
    # The supervisor passes broken workers with the broken modules: the row is kept, not retired.
    apply(store, synced(definition("sibling", module="pkg.jobs"), broken=("bad-interval",)))
    assert worker_row(store_url, "bad-interval")["status"] == "broken"
    assert [w.name for w in store.workers()] == ["bad-interval", "sibling"]


# -- runs ------------------------------------------------------------------------------------------------------------


def test_run_started_and_spawned_write_an_unfinished_run(store: Store, store_url: str) -> None:
    apply(store, synced(definition("a")))
    at = utcnow()
    following = at + timedelta(seconds=60)
    apply(store, started("r1", "a", at=at, next_run_at=following, attempt=2, supervisor_pid=777))
    apply(store, records.run_spawned("r1", "a", 4242))
    (run,) = query(store_url, "select * from run")
    assert (run["id"], run["worker"], run["attempt"], run["pid"]) == ("r1", "a", 2, 4242)
    assert run["finished_at"] is None and run["outcome"] is None
    assert (run["node"], run["supervisor_pid"]) == (NODE, 777)
    assert when(run["started_at"]) == at
    worker = worker_row(store_url, "a")
    assert (worker["status"], worker["pid"]) == ("running", 4242)
    assert (when(worker["last_run_at"]), when(worker["next_run_at"])) == (at, following)


def test_successful_run_writes_one_run_row_and_no_failure(store: Store, store_url: str) -> None:
    apply(store, synced(definition("a")))
    at = utcnow() - timedelta(seconds=2)
    following = at + timedelta(seconds=60)
    apply(store, started("r1", "a", at=at), records.run_spawned("r1", "a", 4242))
    apply(store, finished("r1", "a", OK, started_at=at, finished_at=at + timedelta(seconds=1.5), next_run_at=following))
    (run,) = query(store_url, "select * from run")
    assert (run["id"], run["outcome"], run["pid"]) == ("r1", "succeeded", 4242)
    assert when(run["finished_at"]) == at + timedelta(seconds=1.5)
    assert (run["duration"], run["exit_code"], run["cpu_time"], run["peak_rss"]) == (1.5, 0, 0.25, 12_345_678)
    assert query(store_url, "select * from failure") == []
    worker = worker_row(store_url, "a")
    assert counters(store_url, "a") == (1, 0, 0, 0)
    assert (worker["status"], worker["pid"], worker["last_outcome"], worker["last_duration"]) == ("idle", None, "succeeded", 1.5)
    assert when(worker["last_success_at"]) == at + timedelta(seconds=1.5)
    assert when(worker["next_run_at"]) == following


def test_failed_run_writes_one_run_row_and_one_failure_row(store: Store, store_url: str) -> None:
    apply(store, synced(definition("a")))
    run = one_run(store, "a", BOOM, stderr="some stderr", stdout="some stdout", exit_code=1, signal=None)
    (row,) = query(store_url, "select * from run")
    assert (row["outcome"], row["exit_code"]) == ("error", 1)
    (failure,) = query(store_url, "select * from failure")
    assert (failure["run_id"], failure["worker"], failure["kind"]) == (run, "a", "error")
    assert (failure["message"], failure["traceback"]) == ("ValueError: boom", BOOM.traceback)
    assert (failure["stderr_tail"], failure["stdout_tail"], failure["exit_code"]) == ("some stderr", "some stdout", 1)
    assert failure["event"] is None
    worker = worker_row(store_url, "a")
    assert counters(store_url, "a") == (0, 1, 1, 0)
    assert worker["last_error"] == "ValueError: boom"
    assert worker["last_success_at"] is None


def test_counters_and_consecutive_failures_reset_on_success(store: Store, store_url: str) -> None:
    apply(store, synced(definition("a")))
    for verdict in (BOOM, CRASH, BOOM):
        one_run(store, "a", verdict)
    assert counters(store_url, "a")[:3] == (0, 3, 3)
    assert worker_row(store_url, "a")["last_outcome"] == "error"
    one_run(store, "a", OK)
    assert counters(store_url, "a")[:3] == (1, 3, 0)
    assert worker_row(store_url, "a")["last_error"] == "ValueError: boom"  # the last error stays visible
    one_run(store, "a", CRASH, signal=11, exit_code=None)
    assert counters(store_url, "a")[:3] == (1, 4, 1)
    assert worker_row(store_url, "a")["last_error"] == "crashed with SIGSEGV"
    assert len(run_ids(store_url)) == 5
    kinds = [row["kind"] for row in query(store_url, "select kind from failure order by id")]
    assert kinds == ["error", "crash", "error", "crash"]


def test_long_error_is_cut_in_the_worker_row_but_kept_in_the_failure_row(store: Store, store_url: str) -> None:
    apply(store, synced(definition("a")))
    message = "E: " + "x" * (ERROR_MESSAGE_LIMIT * 2)
    one_run(store, "a", Verdict(Outcome.ERROR, message))
    assert len(worker_row(store_url, "a")["last_error"]) == ERROR_MESSAGE_LIMIT
    assert scalar(store_url, "select message from failure") == message


def test_broken_and_retired_rows_keep_their_status_when_a_run_ends(store: Store, store_url: str) -> None:
    apply(store, synced(definition("a", module="m"), definition("b")))
    apply(store, started("ra", "a"), started("rb", "b"))
    apply(store, records.broken("m", "m", "ImportError: gone", utcnow()))
    apply(store, synced(broken=("m",)))  # b is no longer defined
    apply(store, finished("ra", "a", OK), finished("rb", "b", BOOM))
    assert worker_row(store_url, "a")["status"] == "broken"
    assert worker_row(store_url, "b")["status"] == "retired"
    assert counters(store_url, "a")[:2] == (1, 0)
    assert counters(store_url, "b")[:2] == (0, 1)


def test_run_finished_without_its_start_stands_alone(store: Store, store_url: str) -> None:
    # The start was lost (a journal line cut short); the end carries what the start would have.
    began = utcnow() - timedelta(minutes=5)
    ended = began + timedelta(seconds=3)
    apply(store, finished("r1", "ghost", BOOM, started_at=began, finished_at=ended, duration=3.0, supervisor_pid=555, pid=99))
    (run,) = query(store_url, "select * from run")
    assert (run["id"], run["worker"], run["attempt"], run["node"], run["supervisor_pid"]) == ("r1", "ghost", 1, NODE, 555)
    assert (when(run["started_at"]), when(run["finished_at"])) == (began, ended)
    assert (run["outcome"], run["duration"], run["pid"]) == ("error", 3.0, 99)
    assert worker_row(store_url, "ghost")["status"] == "idle"
    assert counters(store_url, "ghost") == (0, 1, 1, 0)
    assert len(query(store_url, "select * from failure where run_id = 'r1'")) == 1
    before = snapshot(store_url)
    # Its start arriving late, and its end again, change nothing.
    apply(store, started("r1", "ghost", at=began, supervisor_pid=555))
    apply(store, records.run_spawned("r1", "ghost", 1234))
    apply(store, finished("r1", "ghost", BOOM, started_at=began, finished_at=ended, duration=3.0, supervisor_pid=555, pid=99))
    assert snapshot(store_url) == before


def test_finishing_a_run_twice_keeps_the_first_end(store: Store, store_url: str) -> None:
    apply(store, synced(definition("a")))
    run = one_run(store, "a", OK)
    first = query(store_url, "select finished_at, duration from run where id = ?", run)
    apply(store, finished(run, "a", BOOM, finished_at=utcnow() + timedelta(hours=1), duration=9.0))
    assert query(store_url, "select finished_at, duration from run where id = ?", run) == first
    assert counters(store_url, "a")[:2] == (1, 0)
    assert query(store_url, "select * from failure") == []


def test_skipped_ticks_carried_by_run_records_are_counted_once(store: Store, store_url: str) -> None:
    apply(store, synced(definition("a")))
    at = utcnow()
    batch = [started("r1", "a", at=at, skipped=3), finished("r1", "a", OK, started_at=at, skipped=2)]
    for _ in range(3):
        apply(store, *batch)
    assert counters(store_url, "a") == (1, 0, 0, 5)
    # A late end standing alone counts its skips once too.
    alone = finished("r2", "a", OK, skipped=4)
    apply(store, alone)
    apply(store, alone)
    assert counters(store_url, "a") == (2, 0, 0, 9)


# -- idempotency -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("times", [2, 3])
def test_every_record_of_a_run_and_a_broken_module_applied_again_counts_once(store: Store, store_url: str, times: int) -> None:
    apply(store, synced(definition("a"), definition("x", module="flaky")))
    at = utcnow() - timedelta(seconds=10)
    run = [
        started("r1", "a", at=at, skipped=2),
        records.run_spawned("r1", "a", 4242),
        finished("r1", "a", BOOM, started_at=at, finished_at=at + timedelta(seconds=2), skipped=1),
        records.broken("flaky", "flaky", "ImportError: nope", at + timedelta(seconds=3)),
    ]
    # Each record again, alone, right after itself.
    for record in run:
        for _ in range(times):
            apply(store, record)
    # And the whole lot again, several times in one batch, and batch after batch.
    apply(store, *(run * times))
    for _ in range(times):
        apply(store, *run)
    assert run_ids(store_url) == {"r1"}
    assert [(r["run_id"], r["kind"]) for r in query(store_url, "select run_id, kind from failure order by id")] == [
        ("r1", "error"),
        (None, "import"),
    ]
    assert counters(store_url, "a") == (0, 1, 1, 3)
    (row,) = query(store_url, "select * from run")
    assert (row["pid"], row["outcome"], when(row["finished_at"])) == (4242, "error", at + timedelta(seconds=2))


def test_a_run_applied_whole_leaves_the_rows_its_three_records_would(store: Store, store_url: str) -> None:
    # A run whose start, pid and end are in one batch is written as one row insert (Store._run_whole); the rows
    # must be exactly those of its records applied one batch each, as a slow run's are.
    apply(store, synced(definition("apart"), definition("whole")))
    at = utcnow() - timedelta(seconds=5)
    ended = at + timedelta(seconds=1.5)
    rows = {}
    for worker, verdict, skipped in (("apart", OK, 2), ("whole", OK, 2), ("apart", CRASH, 1), ("whole", CRASH, 1)):
        run = f"{worker}-{verdict.outcome.value}"
        batch = [
            started(run, worker, at=at, next_run_at=at + timedelta(seconds=60), skipped=skipped),
            records.run_spawned(run, worker, 4242),
            finished(run, worker, verdict, started_at=at, finished_at=ended, skipped=1),
        ]
        if worker == "apart":
            for record in batch:
                apply(store, record)
        else:
            apply(store, *batch)
        rows[(worker, verdict.outcome.value)] = query(store_url, "select * from run where id = ?", run)[0]
    for outcome in ("succeeded", "crash"):
        apart, whole = rows[("apart", outcome)], rows[("whole", outcome)]
        assert {k: v for k, v in apart.items() if k not in ("id", "worker")} == {
            k: v for k, v in whole.items() if k not in ("id", "worker")}
    apart, whole = worker_row(store_url, "apart"), worker_row(store_url, "whole")
    assert {k: v for k, v in apart.items() if k != "name"} == {k: v for k, v in whole.items() if k != "name"}
    assert counters(store_url, "whole") == (1, 1, 1, 5)
    failures = query(store_url, "select run_id, message from failure order by run_id")
    assert [f["run_id"] for f in failures] == ["apart-crash", "whole-crash"]
    # And applied whole twice, it is counted once.
    before = snapshot(store_url)
    apply(store, started("whole-crash", "whole", at=at, skipped=1), records.run_spawned("whole-crash", "whole", 4242),
          finished("whole-crash", "whole", CRASH, started_at=at, finished_at=ended, skipped=1))
    assert snapshot(store_url) == before


def test_replaying_a_journal_segment_leaves_the_state_as_it_was(store: Store, store_url: str) -> None:
    # The recorder re-applies everything after the last offset it acknowledged (a recorder killed between its
    # commit and its report), and start-up replays what the journal holds: the same records, in the same order.
    t = utcnow() - timedelta(minutes=10)
    segment = [
        synced(definition("a"), definition("b", module="m2"), at=t),
        started("r1", "a", at=t + timedelta(seconds=1)),
        records.run_spawned("r1", "a", 1001),
        finished("r1", "a", OK, started_at=t + timedelta(seconds=1), finished_at=t + timedelta(seconds=2)),
        records.broken("m2", "m2", "ImportError: m2 went away", t + timedelta(seconds=3)),
        synced(definition("a"), broken=("m2",), at=t + timedelta(seconds=4)),
        started("r2", "a", at=t + timedelta(seconds=5)),
        records.run_spawned("r2", "a", 1002),
    ]
    apply(store, *segment)
    first = snapshot(store_url)
    assert (worker_row(store_url, "a")["status"], worker_row(store_url, "a")["pid"]) == ("running", 1002)
    assert worker_row(store_url, "b")["status"] == "broken"
    apply(store, *segment)
    a, b = worker_row(store_url, "a"), worker_row(store_url, "b")
    assert (a["status"], a["pid"], b["status"]) == ("running", 1002, "broken"), "a replay rolled worker rows back"
    assert snapshot(store_url) == first


def test_replaying_the_spawn_of_a_finished_run_leaves_the_worker_pid_alone(store: Store, store_url: str) -> None:
    # A recorder applied this batch and was killed before acknowledging it; its successor applies it again.
    t = utcnow() - timedelta(minutes=1)
    batch = [
        started("r1", "a", at=t),
        records.run_spawned("r1", "a", 1001),
        finished("r1", "a", OK, started_at=t, finished_at=t + timedelta(seconds=1)),
        started("r2", "a", at=t + timedelta(seconds=2)),  # r2 runs; its spawn is not recorded yet
    ]
    apply(store, *batch)
    assert (worker_row(store_url, "a")["status"], worker_row(store_url, "a")["pid"]) == ("running", None)
    apply(store, *batch)
    # r1 is over: its pid is no worker's pid any more.
    assert (worker_row(store_url, "a")["status"], worker_row(store_url, "a")["pid"]) == ("running", None)


def test_a_batch_that_fails_midway_is_rolled_back_whole(store: Store, store_url: str) -> None:
    apply(store, synced(definition("a")))
    first = one_run(store, "a", OK)
    before = snapshot(store_url)
    bad = started("r-bad", "a")
    bad["node"] = None  # run.node is NOT NULL: the database itself refuses the row
    batch = [
        synced(definition("a"), definition("b")),
        started("r2", "a"),
        finished("r2", "a", BOOM),
        records.broken("pkg.bad", "pkg.bad", "SyntaxError", utcnow()),
        bad,
        started("r3", "a"),
    ]
    with pytest.raises(peewee.IntegrityError):
        apply(store, *batch)
    assert snapshot(store_url) == before
    # The store is still usable, and the good records alone go in.
    apply(store, *batch[:4])
    assert run_ids(store_url, "a") == {first, "r2"}
    assert counters(store_url, "a")[:2] == (1, 1)
    assert len(query(store_url, "select * from failure")) == 2


# -- lost runs ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("together", [False, True], ids=["one-by-one", "in-one-batch"])
def test_a_run_a_peer_recorded_lost_gets_its_pid_from_its_nodes_late_records(store: Store, store_url: str,
                                                                            together: bool) -> None:
    # A node cut off from PostgreSQL was declared dead; the peer recorded its run `lost`, without the pid it never
    # knew. When the node is back, its journal's records of that run arrive: the outcome stays the peer's (first
    # writer wins), and the pid, still missing, is filled (the test of a cut-off node found its run by pid).
    at = utcnow() - timedelta(seconds=10)
    run = uuid.uuid4().hex
    lost = Verdict(Outcome.LOST, "node n1 was declared dead by n2")
    apply(store, synced(definition("a")), finished(run, "a", lost, started_at=at, finished_at=at + timedelta(seconds=5)))
    assert scalar(store_url, "select pid from run where id = ?", run) is None
    late = [started(run, "a", at=at), records.run_spawned(run, "a", 4242),
            finished(run, "a", Verdict(Outcome.KILLED, "fenced"), started_at=at, finished_at=at + timedelta(seconds=3),
                     pid=4242)]
    if together:
        apply(store, *late)
    else:
        for record in late:
            apply(store, record)
    (row,) = query(store_url, "select outcome, pid from run where id = ?", run)
    assert (row["outcome"], row["pid"]) == ("lost", 4242)
    # A replay of a finished run with its pid keeps the pid it has.
    apply(store, records.run_spawned(run, "a", 9999))
    assert scalar(store_url, "select pid from run where id = ?", run) == 4242


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _recover(url: str) -> int:
    s = Store(url)
    s.open()
    try:
        return len(s.recover_lost())
    finally:
        s.close()


def _unfinished_run(url: str, worker: str, supervisor_pid: int, at: datetime, node: str = NODE) -> str:
    s = Store(url)
    s.open()
    try:
        run = uuid.uuid4().hex
        apply(s, synced(definition(worker)), started(run, worker, at=at, supervisor_pid=supervisor_pid, node=node))
    finally:
        s.close()
    return run


DIES_DURING_A_RUN = textwrap.dedent(
    """
    import os, socket, sys
    from supervisor.record import records
    from supervisor.record.store import Store, utcnow
    from supervisor.worker import WorkerDefinition
    store = Store(sys.argv[1])
    store.open()
    store.apply([
        records.workers_synced([WorkerDefinition("a", "jobs", 60.0, None, 5.0)], [], utcnow()),
        records.run_started("orphan", "a", 1, utcnow(), None, socket.gethostname(), os.getpid()),
        records.run_spawned("orphan", "a", 4242),
    ])
    os._exit(0)  # no close, no run_finished: as if SIGKILLed
    """
)


def test_run_of_a_supervisor_that_died_is_marked_lost(store_url: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", DIES_DURING_A_RUN, store_url], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, child.stderr
    (run,) = query(store_url, "select * from run")
    dead_pid = run["supervisor_pid"]
    assert dead_pid != os.getpid()
    assert worker_row(store_url, "a")["status"] == "running"

    assert _recover(store_url) == 1
    (run,) = query(store_url, "select * from run")
    assert run["outcome"] == "lost"
    finished_at, started_at = when(run["finished_at"]), when(run["started_at"])
    assert finished_at is not None and started_at is not None and finished_at >= started_at
    assert run["duration"] is not None and run["duration"] >= 0
    assert run["pid"] == 4242
    (failure,) = query(store_url, "select * from failure")
    assert (failure["run_id"], failure["kind"]) == ("orphan", "lost")
    assert f"pid {dead_pid}" in failure["message"]
    worker = worker_row(store_url, "a")
    assert (worker["failure_count"], worker["consecutive_failures"], worker["last_outcome"]) == (1, 1, "lost")
    assert (worker["status"], worker["pid"]) == ("idle", None)
    # Recovering again finds nothing more.
    assert _recover(store_url) == 0
    assert len(query(store_url, "select * from failure")) == 1
    assert worker_row(store_url, "a")["failure_count"] == 1


def test_run_of_a_dead_pid_is_lost(store_url: str) -> None:
    run = _unfinished_run(store_url, "a", _dead_pid(), utcnow())
    assert _recover(store_url) == 1
    assert scalar(store_url, "select outcome from run where id = ?", run) == "lost"


def test_run_recorded_under_our_own_pid_is_lost(store_url: str) -> None:
    # A previous supervisor had the pid we have now (pid 1 in a container, every time): its run is lost.
    run = _unfinished_run(store_url, "a", os.getpid(), utcnow() - timedelta(seconds=5))
    assert _recover(store_url) == 1
    assert scalar(store_url, "select outcome from run where id = ?", run) == "lost"


def test_run_of_a_live_supervisor_started_before_it_is_left_alone(store_url: str) -> None:
    # Our parent process is alive and was started before this run: another supervisor still running it.
    run = _unfinished_run(store_url, "a", os.getppid(), utcnow())
    assert _recover(store_url) == 0
    (row,) = query(store_url, "select * from run where id = ?", run)
    assert row["outcome"] is None and row["finished_at"] is None
    assert query(store_url, "select * from failure") == []
    assert worker_row(store_url, "a")["status"] == "running"


def test_run_of_a_reused_pid_is_lost(store_url: str) -> None:
    # The pid is alive, but the process holding it started after the run did: the pid was reused.
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        run = _unfinished_run(store_url, "a", holder.pid, utcnow() - timedelta(hours=1))
        assert _recover(store_url) == 1
        assert scalar(store_url, "select outcome from run where id = ?", run) == "lost"
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def test_runs_of_other_nodes_and_finished_runs_are_left_alone(store_url: str) -> None:
    other = _unfinished_run(store_url, "a", _dead_pid(), utcnow(), node="some-other-host")
    s = Store(store_url)
    s.open()
    try:
        done = one_run(s, "a", OK)
    finally:
        s.close()
    assert _recover(store_url) == 0
    assert scalar(store_url, "select outcome from run where id = ?", other) is None
    assert scalar(store_url, "select outcome from run where id = ?", done) == "succeeded"
    assert counters(store_url, "a")[:2] == (1, 0)


# -- retention ---------------------------------------------------------------------------------------------------------


def _run_at(store: Store, worker: str, at: datetime, verdict: Verdict = OK, end: bool = True) -> str:
    run = uuid.uuid4().hex
    batch = [started(run, worker, at=at)]
    if end:
        batch.append(finished(run, worker, verdict, started_at=at, finished_at=at + timedelta(seconds=1)))
    apply(store, *batch)
    return run


def test_prune_keeps_the_newest_runs_of_each_worker(store: Store, store_url: str) -> None:
    now = utcnow()
    a = [_run_at(store, "a", now - timedelta(hours=hours)) for hours in range(6, 0, -1)]  # oldest first
    b = [_run_at(store, "b", now - timedelta(days=300 + n)) for n in range(2)]
    assert store.prune(keep_runs=3, failure_days=30) == (3, 0)
    assert run_ids(store_url, "a") == set(a[-3:])
    assert run_ids(store_url, "b") == set(b)
    assert counters(store_url, "a")[:2] == (6, 0)  # counters are history: pruning leaves them
    assert store.prune(keep_runs=3, failure_days=30) == (0, 0)


def _retention_case(store: Store) -> set[str]:
    """Rows of every kind around the limits of keep_runs=2, failure_days=30; return the ids of the runs to keep.

    Pruning them deletes 6 runs and 3 failures, and leaves 2 failures: a's young one and flaky's.
    """
    now = utcnow()

    def days(n: float) -> datetime:
        return now - timedelta(days=n)

    apply(store, synced(definition("a"), definition("b")))
    _run_at(store, "a", days(40), BOOM)  # its failure is past retention: failure and run go
    young_failure = _run_at(store, "a", days(2), BOOM)  # its failure is kept, so the run stays beyond keep_runs
    for n in range(5):
        _run_at(store, "a", days(35 - n))  # beyond keep_runs: go
    unfinished = _run_at(store, "a", days(50), end=False)  # still running (or lost later): never pruned
    newest = [_run_at(store, "a", now - timedelta(hours=h)) for h in (2, 1)]
    apply(store, records.broken("gone", "gone", "ImportError: old", days(45)))  # no run, and old: goes
    apply(store, records.broken("flaky", "flaky", "ImportError: new", days(1)))  # no run, and young: stays
    b_only = _run_at(store, "b", days(100), BOOM)  # within b's keep_runs; its failure is old and goes
    return {young_failure, unfinished, *newest, b_only}


@pytest.mark.parametrize("batch", [1, 2, 500])
def test_prune_keeps_young_failures_and_their_runs_and_deletes_old_ones(store: Store, store_url: str, batch: int) -> None:
    kept = _retention_case(store)
    before = {name: counters(store_url, name) for name in ("a", "b")}
    assert store.prune(keep_runs=2, failure_days=30, batch=batch) == (6, 3)
    assert run_ids(store_url) == kept
    kinds = sorted((row["worker"], row["kind"]) for row in query(store_url, "select worker, kind from failure"))
    assert kinds == [("a", "error"), ("flaky", "import")]
    # The failure kept is the young one, with its run.
    (young,) = query(store_url, "select run_id from failure where worker = 'a'")
    assert young["run_id"] in kept
    assert {name: counters(store_url, name) for name in ("a", "b")} == before
    assert store.prune(keep_runs=2, failure_days=30, batch=batch) == (0, 0)


def test_prune_steps_yield_batches_and_let_records_in_between(store: Store, store_url: str) -> None:
    kept = _retention_case(store)
    steps: list[tuple[str, int]] = []
    for table, deleted in store.prune_steps(keep_runs=2, failure_days=30, batch=2):
        steps.append((table, deleted))
        # What the recorder does between steps: apply new records.
        kept.add(one_run(store, "c", BOOM))
    assert all(1 <= deleted <= 2 for _, deleted in steps), steps
    assert [table for table, _ in steps] == ["failure"] * 2 + ["run"] * 3
    assert sum(n for t, n in steps if t == "failure") == 3
    assert sum(n for t, n in steps if t == "run") == 6
    assert run_ids(store_url) == kept
    assert counters(store_url, "c")[:2] == (0, len(steps))


# -- several writers ---------------------------------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import json, os, socket, sys, uuid
    import peewee
    from supervisor.record import records
    from supervisor.outcome import Outcome, Verdict
    from supervisor.record.store import Store, utcnow

    url, index, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    node, me = socket.gethostname(), os.getpid()
    store = Store(url)
    store.open()
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    succeeded = failed = retries = 0
    for i in range(runs):
        run = uuid.uuid4().hex
        ok = (i + index) % 3 != 0
        verdict = Verdict(Outcome.SUCCEEDED, "") if ok else Verdict(Outcome.ERROR, f"E: run {i} of writer {index}")
        began = utcnow()
        # A run's start and end, each in a transaction of its own, as they reach the recorder.
        for record in (
            records.run_started(run, "shared", 1, began, None, node, me),
            records.run_finished(run, "shared", 1, began, utcnow(), 0.01, verdict, node, me, exit_code=0 if ok else 1),
        ):
            while True:
                try:
                    store.apply([record])
                    break
                except peewee.OperationalError:  # "database is locked": the recorder retries too
                    retries += 1
                    assert retries < 100_000, "writes kept failing"
        succeeded += ok
        failed += not ok
    store.close()
    print(json.dumps({"succeeded": succeeded, "failed": failed, "retries": retries}), flush=True)
    """
)


def _reap(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_counters_are_exact_with_several_writers(store: Store, store_url: str) -> None:
    apply(store, synced(definition("shared")))
    store.close()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, store_url, str(index), "50"],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for index in range(4)
    ]
    results: list[tuple[int, str, str]] = []
    try:
        for writer in writers:
            assert writer.stdout is not None
            line = writer.stdout.readline().strip()
            assert line == "ready", line + (writer.stderr.read() if writer.stderr else "")
        for writer in writers:
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.flush()
        for writer in writers:
            out, err = writer.communicate(timeout=60)
            results.append((writer.returncode, out, err))
    finally:
        _reap(writers)
    for code, out, err in results:
        assert code == 0, err
    reports = [json.loads(out) for _, out, _ in results]
    expected_ok = sum(r["succeeded"] for r in reports)
    expected_failed = sum(r["failed"] for r in reports)
    assert expected_ok + expected_failed == 200

    worker = worker_row(store_url, "shared")
    by_outcome = {
        row["outcome"]: row["n"]
        for row in query(store_url, "select outcome, count(*) as n from run where worker = 'shared' group by outcome")
    }
    assert sum(by_outcome.values()) == 200
    assert worker["success_count"] + worker["failure_count"] == 200
    assert worker["success_count"] == by_outcome.get("succeeded", 0) == expected_ok
    assert worker["failure_count"] == by_outcome.get("error", 0) == expected_failed
    assert scalar(store_url, "select count(*) from failure where worker = 'shared'") == expected_failed
    assert scalar(store_url, "select count(*) from run where finished_at is null") == 0
    if is_postgres(store_url):
        # Row locks order the writers; none of them should ever have had to retry.
        assert sum(r["retries"] for r in reports) == 0, reports


STEADY_WRITER = textwrap.dedent(
    """
    import json, os, select, socket, sys, uuid
    from supervisor.record import records
    from supervisor.outcome import Outcome, Verdict
    from supervisor.record.store import Store, utcnow

    url = sys.argv[1]
    node, me = socket.gethostname(), os.getpid()
    store = Store(url)
    store.open()
    written = 0
    ok = Verdict(Outcome.SUCCEEDED, "")
    while True:
        began = utcnow()
        run = uuid.uuid4().hex
        store.apply([records.run_started(run, "busy", 1, began, None, node, me)])  # no retry: must not fail
        store.apply([records.run_finished(run, "busy", 1, began, utcnow(), 0.001, ok, node, me, exit_code=0)])
        written += 1
        if written == 1:
            print("writing", flush=True)
        if select.select([sys.stdin], [], [], 0)[0]:  # told to stop (stdin closed)
            break
    store.close()
    print(json.dumps({"written": written}), flush=True)
    """
)


def test_reading_while_another_process_writes(store: Store, store_url: str, tmp_path: Path) -> None:
    apply(store, synced(definition("busy")))
    store.close()
    writer = subprocess.Popen(
        [sys.executable, "-c", STEADY_WRITER, store_url],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen: list[int] = []
    statuses: list[subprocess.CompletedProcess[str]] = []
    try:
        assert writer.stdout is not None and writer.stdin is not None
        line = writer.stdout.readline().strip()
        assert line == "writing", line
        for i in range(40):
            reader = Store(store_url)
            reader.open()
            try:
                (row,) = reader.workers()
                seen.append(row.success_count)
            finally:
                reader.close()
            if i % 20 == 0:
                statuses.append(
                    subprocess.run(
                        [sys.executable, "-m", "supervisor", "status", "--db", store_url],
                        cwd=tmp_path, capture_output=True, text=True, timeout=60,
                        env={**os.environ, "COLUMNS": "200"},
                    )
                )
        out, err = writer.communicate(timeout=60)  # closes its stdin first: the signal to stop
    finally:
        _reap([writer])
    assert writer.returncode == 0, err
    assert "locked" not in err
    written = json.loads(out)["written"]
    for status in statuses:
        # The writer is this test, not a supervisor: status says no supervisor runs (exit 2), and reads all the same.
        assert status.returncode == 2 and not status.stderr, status.stderr
        assert "locked" not in status.stderr
        assert "busy" in status.stdout
    # The reads overlapped the writes: they saw the count move, and never run ahead of the writer.
    assert len(set(seen)) >= 3, seen
    assert seen == sorted(seen) and seen[-1] <= written
    assert worker_row(store_url, "busy")["success_count"] == written == len(run_ids(store_url, "busy"))


# -- the test tools themselves -----------------------------------------------------------------------------------------


def test_query_sees_only_what_is_committed(store: Store, store_url: str) -> None:
    apply(store, synced(definition("a")))
    with store.db.atomic():
        store.db.execute_sql("update worker set module = 'changed' where name = 'a'")
        assert worker_row(store_url, "a")["module"] == "jobs"
    assert worker_row(store_url, "a")["module"] == "changed"


RECORDS_BATCHES = textwrap.dedent(
    """
    import os, socket, sys, uuid
    from datetime import timedelta
    from supervisor.outcome import Outcome, Verdict
    from supervisor.record import records
    from supervisor.record.store import Store, utcnow
    store = Store(sys.argv[1])
    store.open()
    for _ in range(int(sys.argv[2])):
        at = utcnow() - timedelta(seconds=5)
        batch = []
        for name in sys.argv[3:]:
            run = uuid.uuid4().hex
            batch += [
                records.run_started(run, name, 1, at, None, socket.gethostname(), os.getpid()),
                records.run_finished(run, name, 1, at, at, 0.0, Verdict(Outcome.SUCCEEDED, ""), socket.gethostname(),
                                     os.getpid()),
            ]
        store.apply(batch)
    store.close()
    """
)


def test_two_nodes_recording_the_same_workers_in_opposite_orders_never_deadlock(pg_url: str) -> None:
    # Seen on two nodes sharing PostgreSQL: one recorder's batch updated worker rows fast0 then fast1, the other's
    # fast1 then fast0; PostgreSQL broke the deadlock after a second by failing one batch ("database writes fail:
    # deadlock detected"). Each batch now locks its workers' rows in name order first. Two processes, as two
    # recorders are (SQLite serves one supervisor, and has one writer at a time).
    workers = [f"w{i}" for i in range(6)]
    setup = Store(pg_url)
    setup.open()
    apply(setup, synced(*(definition(name) for name in workers)))
    setup.close()
    batches = 40
    recorders = [subprocess.Popen([sys.executable, "-c", RECORDS_BATCHES, pg_url, str(batches), *order],
                                  stderr=subprocess.PIPE, text=True) for order in (workers, workers[::-1])]
    errors = [recorder.communicate(timeout=120)[1] for recorder in recorders]
    assert [recorder.returncode for recorder in recorders] == [0, 0], errors
    assert [counters(pg_url, name)[0] for name in workers] == [2 * batches] * len(workers)
