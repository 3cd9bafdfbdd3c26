"""Tests of supervisor/store.py on a real SQLite file: schema, runs, failures, counters, lost runs, concurrency."""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest

from supervisor.errors import StoreUnavailable
from supervisor.outcome import Outcome, Verdict
from supervisor.store import ERROR_MESSAGE_LIMIT, RunEnd, Store, redact, utcnow
from supervisor.worker import WorkerDefinition

ROOT = Path(__file__).resolve().parent.parent


def _definition(name: str, module: str = "jobs", interval: float = 60.0, timeout: float | None = 30.0) -> WorkerDefinition:
    return WorkerDefinition(name=name, module=module, interval=interval, timeout=timeout, grace=5.0)


def _query(db: Path, sql: str, *params: Any) -> list[sqlite3.Row]:
    connection = sqlite3.connect(db, timeout=10)
    connection.row_factory = sqlite3.Row
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def _worker(db: Path, name: str) -> sqlite3.Row:
    rows = _query(db, "select * from worker where name = ?", name)
    assert rows, f"no worker row {name!r}"
    return rows[0]


def _end(run_id: str, worker: str, verdict: Verdict, **changes: Any) -> RunEnd:
    fields: dict[str, Any] = dict(
        run_id=run_id,
        worker=worker,
        finished_at=utcnow(),
        duration=1.5,
        verdict=verdict,
        exit_code=0 if verdict.outcome is Outcome.SUCCEEDED else 1,
        signal=None,
        cpu_time=0.25,
        peak_rss=12_345_678,
        stderr="",
        stdout="",
        next_run_at=None,
    )
    fields.update(changes)
    return RunEnd(**fields)


OK = Verdict(Outcome.SUCCEEDED, "")
BOOM = Verdict(Outcome.ERROR, "ValueError: boom", "Traceback (most recent call last):\nValueError: boom\n")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "supervisor.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{db}")
    s.open()
    try:
        yield s
    finally:
        s.close()


def _run(store: Store, worker: str, verdict: Verdict, **changes: Any) -> str:
    run_id = uuid.uuid4().hex
    store.run_started(run_id, worker, 1, utcnow(), None)
    store.run_finished(_end(run_id, worker, verdict, **changes))
    assert store.pending == 0
    return run_id


# -- opening ---------------------------------------------------------------------------------------------------


def test_open_creates_the_tables_and_wal_mode(store: Store, db: Path) -> None:
    tables = {row["name"] for row in _query(db, "select name from sqlite_master where type = 'table'")}
    assert {"schema_version", "worker", "run", "failure"} <= tables
    assert [row[0] for row in _query(db, "pragma journal_mode")] == ["wal"]
    assert [row["version"] for row in _query(db, "select version from schema_version")] == [1]


def test_opening_twice_keeps_one_schema_version_and_the_data(db: Path) -> None:
    first = Store(f"sqlite:///{db}")
    first.open()
    try:
        first.sync_workers([_definition("a")], [])
    finally:
        first.close()
    second = Store(f"sqlite:///{db}")
    second.open()
    try:
        assert [w.name for w in second.workers()] == ["a"]
    finally:
        second.close()
    assert len(_query(db, "select * from schema_version")) == 1


def test_unwritable_path_raises_store_unavailable_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "x.db"
    store = Store(f"sqlite:///{path}")
    try:
        with pytest.raises(StoreUnavailable) as info:
            store.open()
    finally:
        store.close()
    assert str(path) in str(info.value)
    assert info.value.message.startswith("cannot open the database")
    assert info.value.exit_code == 1
    assert not path.parent.exists()


def test_unsupported_scheme() -> None:
    with pytest.raises(StoreUnavailable, match="unsupported database URL scheme 'mysql'"):
        Store("mysql://user:pw@host/db")


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


# -- workers -----------------------------------------------------------------------------------------------------


def test_sync_workers_creates_rows(store: Store, db: Path) -> None:
    store.sync_workers([_definition("a", interval=10, timeout=None), _definition("b", module="other")], [])
    a = _worker(db, "a")
    assert (a["module"], a["status"], a["interval"], a["timeout"], a["success_count"]) == ("jobs", "idle", 10.0, None, 0)
    assert _worker(db, "b")["module"] == "other"
    assert [w.name for w in store.workers()] == ["a", "b"]


def test_sync_workers_retires_workers_no_longer_defined(store: Store, db: Path) -> None:
    store.sync_workers([_definition("a"), _definition("b"), _definition("c")], [])
    store.sync_workers([_definition("a"), _definition("c", interval=5)], [])
    assert _worker(db, "b")["status"] == "retired"
    assert _worker(db, "a")["status"] == "idle"
    assert _worker(db, "c")["interval"] == 5.0
    assert [w.name for w in store.workers()] == ["a", "c"]
    # Defined again: back from retirement.
    store.sync_workers([_definition("a"), _definition("b")], [])
    assert _worker(db, "b")["status"] == "idle"
    assert [w.name for w in store.workers()] == ["a", "b"]


def test_sync_workers_keeps_rows_of_broken_modules(store: Store, db: Path) -> None:
    store.sync_workers([_definition("a", module="good"), _definition("x", module="flaky")], [])
    store.module_broken("flaky", "ImportError: no module named nope", "Traceback ...", "stderr text", 1, None)
    store.sync_workers([_definition("a", module="good")], ["flaky"])
    assert _worker(db, "x")["status"] == "broken"
    assert _worker(db, "flaky")["status"] == "broken"
    assert _worker(db, "a")["status"] == "idle"
    # Once the module is neither defined nor broken, its rows retire.
    store.sync_workers([_definition("a", module="good")], [])
    assert _worker(db, "x")["status"] == "retired"
    assert _worker(db, "flaky")["status"] == "retired"


def test_module_broken_writes_a_failure_row_without_a_run(store: Store, db: Path) -> None:
    store.sync_workers([_definition("w1", module="pkg.mod"), _definition("w2", module="pkg.other")], [])
    store.module_broken("pkg.mod", "SyntaxError: invalid syntax", "Traceback (most recent call last): ...", "boom", None, 11)
    failures = _query(db, "select * from failure")
    assert len(failures) == 1
    failure = failures[0]
    assert failure["run_id"] is None
    assert failure["worker"] == "pkg.mod"
    assert failure["kind"] == "import"
    assert failure["message"] == "SyntaxError: invalid syntax"
    assert failure["traceback"].startswith("Traceback")
    assert failure["stderr_tail"] == "boom"
    assert failure["signal"] == 11
    assert _worker(db, "pkg.mod")["status"] == "broken"
    assert _worker(db, "w1")["status"] == "broken"
    assert _worker(db, "w1")["last_error"] == "SyntaxError: invalid syntax"
    assert _worker(db, "w2")["status"] == "idle"


def test_worker_broken_records_the_module_it_is_in(store: Store, db: Path) -> None:
    store.sync_workers([_definition("sibling", module="pkg.jobs")], [])
    store.worker_broken("bad-interval", "pkg.jobs", "interval must be a positive duration, got -1")
    row = _worker(db, "bad-interval")
    assert row["status"] == "broken"
    assert row["last_error"] == "interval must be a positive duration, got -1"
    failures = _query(db, "select * from failure where worker = 'bad-interval'")
    assert len(failures) == 1 and failures[0]["run_id"] is None
    assert failures[0]["kind"] == "definition"
    # One invalid worker does not break the other workers of its module.
    assert _worker(db, "sibling")["status"] == "idle"
    # The row says which module declares the worker.
    assert row["module"] == "pkg.jobs"
    # The supervisor passes broken workers with the broken modules: the row is kept, not retired.
    store.sync_workers([_definition("sibling", module="pkg.jobs")], ["bad-interval"])
    assert _worker(db, "bad-interval")["status"] == "broken"
    assert [w.name for w in store.workers()] == ["bad-interval", "sibling"]


# -- runs ----------------------------------------------------------------------------------------------------------


def test_run_started_writes_an_unfinished_run(store: Store, db: Path) -> None:
    store.sync_workers([_definition("a")], [])
    started = utcnow()
    following = started + timedelta(seconds=60)
    store.run_started("r1", "a", 2, started, following)
    store.run_spawned("r1", "a", 4242)
    (run,) = _query(db, "select * from run")
    assert run["id"] == "r1" and run["worker"] == "a" and run["attempt"] == 2
    assert run["finished_at"] is None and run["outcome"] is None
    assert run["pid"] == 4242
    assert run["supervisor_pid"] == os.getpid()
    assert run["node"] == socket.gethostname()
    worker = _worker(db, "a")
    assert worker["status"] == "running"
    assert worker["pid"] == 4242
    assert worker["last_run_at"] is not None and worker["next_run_at"] is not None


def test_successful_run_writes_one_run_row_and_no_failure(store: Store, db: Path) -> None:
    store.sync_workers([_definition("a")], [])
    following = utcnow() + timedelta(seconds=60)
    run_id = _run(store, "a", OK, next_run_at=following)
    (run,) = _query(db, "select * from run")
    assert run["id"] == run_id
    assert run["outcome"] == "succeeded"
    assert run["finished_at"] is not None
    assert run["duration"] == 1.5 and run["exit_code"] == 0 and run["cpu_time"] == 0.25 and run["peak_rss"] == 12_345_678
    assert _query(db, "select * from failure") == []
    worker = _worker(db, "a")
    assert (worker["success_count"], worker["failure_count"], worker["consecutive_failures"]) == (1, 0, 0)
    assert worker["status"] == "idle" and worker["pid"] is None
    assert worker["last_outcome"] == "succeeded" and worker["last_success_at"] is not None
    assert worker["last_duration"] == 1.5
    assert worker["next_run_at"] == str(following)


def test_failed_run_writes_one_run_row_and_one_failure_row(store: Store, db: Path) -> None:
    store.sync_workers([_definition("a")], [])
    run_id = _run(store, "a", BOOM, stderr="some stderr", stdout="some stdout", exit_code=1)
    (run,) = _query(db, "select * from run")
    assert run["outcome"] == "error" and run["exit_code"] == 1
    (failure,) = _query(db, "select * from failure")
    assert failure["run_id"] == run_id
    assert failure["worker"] == "a"
    assert failure["kind"] == "error"
    assert failure["message"] == "ValueError: boom"
    assert failure["traceback"] == BOOM.traceback
    assert (failure["stderr_tail"], failure["stdout_tail"], failure["exit_code"]) == ("some stderr", "some stdout", 1)
    worker = _worker(db, "a")
    assert (worker["success_count"], worker["failure_count"], worker["consecutive_failures"]) == (0, 1, 1)
    assert worker["last_error"] == "ValueError: boom"
    assert worker["last_success_at"] is None


def test_counters_and_consecutive_failures_reset_on_success(store: Store, db: Path) -> None:
    store.sync_workers([_definition("a")], [])
    crash = Verdict(Outcome.CRASH, "crashed with SIGSEGV")
    for verdict in (BOOM, crash, BOOM):
        _run(store, "a", verdict)
    worker = _worker(db, "a")
    assert (worker["failure_count"], worker["consecutive_failures"], worker["last_outcome"]) == (3, 3, "error")
    _run(store, "a", OK)
    worker = _worker(db, "a")
    assert (worker["success_count"], worker["failure_count"], worker["consecutive_failures"]) == (1, 3, 0)
    assert worker["last_error"] == "ValueError: boom"  # the last error stays visible after a success
    _run(store, "a", crash, signal=11, exit_code=None)
    worker = _worker(db, "a")
    assert (worker["success_count"], worker["failure_count"], worker["consecutive_failures"]) == (1, 4, 1)
    assert worker["last_error"] == "crashed with SIGSEGV"
    assert len(_query(db, "select * from run")) == 5
    assert [r["kind"] for r in _query(db, "select kind from failure order by id")] == ["error", "crash", "error", "crash"]


def test_finishing_a_run_twice_counts_once_in_the_run_row(store: Store, db: Path) -> None:
    store.sync_workers([_definition("a")], [])
    run_id = _run(store, "a", OK)
    first = _query(db, "select finished_at from run where id = ?", run_id)[0][0]
    store.run_finished(_end(run_id, "a", OK, finished_at=utcnow() + timedelta(hours=1)))
    assert _query(db, "select finished_at from run where id = ?", run_id)[0][0] == first


def test_long_error_is_cut_in_the_worker_row_but_kept_in_the_failure_row(store: Store, db: Path) -> None:
    store.sync_workers([_definition("a")], [])
    message = "E: " + "x" * (ERROR_MESSAGE_LIMIT * 2)
    _run(store, "a", Verdict(Outcome.ERROR, message))
    assert len(_worker(db, "a")["last_error"]) == ERROR_MESSAGE_LIMIT
    assert _query(db, "select message from failure")[0][0] == message


def test_broken_and_retired_rows_keep_their_status_when_a_run_ends(store: Store, db: Path) -> None:
    store.sync_workers([_definition("a", module="m"), _definition("b")], [])
    run_a, run_b = uuid.uuid4().hex, uuid.uuid4().hex
    store.run_started(run_a, "a", 1, utcnow(), None)
    store.run_started(run_b, "b", 1, utcnow(), None)
    store.module_broken("m", "ImportError: gone", "", "", 1, None)
    store.sync_workers([], ["m"])  # b is no longer defined
    store.run_finished(_end(run_a, "a", OK))
    store.run_finished(_end(run_b, "b", BOOM))
    assert _worker(db, "a")["status"] == "broken"
    assert _worker(db, "b")["status"] == "retired"
    assert _worker(db, "a")["success_count"] == 1
    assert _worker(db, "b")["failure_count"] == 1


def test_runs_skipped_adds_to_the_count(store: Store, db: Path) -> None:
    store.sync_workers([_definition("a")], [])
    store.runs_skipped("a", 3, None)
    store.runs_skipped("a", 2, utcnow())
    assert _worker(db, "a")["skipped_count"] == 5


# -- lost runs -----------------------------------------------------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _unfinished_run(db: Path, worker: str, supervisor_pid: int, started_at: datetime, node: str | None = None) -> str:
    """Write an unfinished run as a supervisor with pid `supervisor_pid` (on `node`) would have."""
    store = Store(f"sqlite:///{db}")
    store.open()
    try:
        store.pid = supervisor_pid
        if node is not None:
            store.node = node
        store.sync_workers([_definition(worker)], [])
        run_id = uuid.uuid4().hex
        store.run_started(run_id, worker, 1, started_at, None)
        assert store.pending == 0
    finally:
        store.close()
    return run_id


def _recover(db: Path) -> int:
    store = Store(f"sqlite:///{db}")
    store.open()
    try:
        return store.recover_lost()
    finally:
        store.close()


def test_run_of_a_supervisor_that_died_is_marked_lost(db: Path) -> None:
    # A real supervisor process records a run start and dies without recording its end.
    script = textwrap.dedent(
        """
        import os, sys
        from supervisor.store import Store, utcnow
        from supervisor.worker import WorkerDefinition
        store = Store(sys.argv[1])
        store.open()
        store.sync_workers([WorkerDefinition("a", "jobs", 60.0, None, 5.0)], [])
        store.run_started("orphan", "a", 1, utcnow(), None)
        assert store.pending == 0
        os._exit(0)  # no close, no run_finished: as if SIGKILLed
        """
    )
    child = subprocess.run([sys.executable, "-c", script, f"sqlite:///{db}"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    (run,) = _query(db, "select * from run")
    dead_pid = run["supervisor_pid"]
    assert dead_pid != os.getpid()

    assert _recover(db) == 1
    (run,) = _query(db, "select * from run")
    assert run["outcome"] == "lost"
    assert run["finished_at"] is not None
    assert run["duration"] is not None and run["duration"] >= 0
    (failure,) = _query(db, "select * from failure")
    assert failure["run_id"] == "orphan"
    assert failure["kind"] == "lost"
    assert f"pid {dead_pid}" in failure["message"]
    worker = _worker(db, "a")
    assert (worker["failure_count"], worker["consecutive_failures"], worker["last_outcome"]) == (1, 1, "lost")
    # Recovering again finds nothing more.
    assert _recover(db) == 0
    assert len(_query(db, "select * from failure")) == 1


def test_run_of_a_dead_pid_is_lost(db: Path) -> None:
    run_id = _unfinished_run(db, "a", _dead_pid(), utcnow())
    assert _recover(db) == 1
    assert _query(db, "select outcome from run where id = ?", run_id)[0][0] == "lost"


def test_run_recorded_under_our_own_pid_is_lost(db: Path) -> None:
    # A previous supervisor had the pid we have now (pid 1 in a container, every time): its run is lost.
    run_id = _unfinished_run(db, "a", os.getpid(), utcnow() - timedelta(seconds=5))
    assert _recover(db) == 1
    assert _query(db, "select outcome from run where id = ?", run_id)[0][0] == "lost"


def test_run_of_a_live_supervisor_started_before_it_is_left_alone(db: Path) -> None:
    # Our parent process is alive and was started before this run: another supervisor still running it.
    live = os.getppid()
    run_id = _unfinished_run(db, "a", live, utcnow())
    assert _recover(db) == 0
    (run,) = _query(db, "select * from run where id = ?", run_id)
    assert run["outcome"] is None and run["finished_at"] is None
    assert _query(db, "select * from failure") == []


def test_run_of_a_reused_pid_is_lost(db: Path) -> None:
    # The pid is alive, but the process holding it started after the run did: the pid was reused.
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        run_id = _unfinished_run(db, "a", holder.pid, utcnow() - timedelta(hours=1))
        assert _recover(db) == 1
        assert _query(db, "select outcome from run where id = ?", run_id)[0][0] == "lost"
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def test_runs_of_other_nodes_and_finished_runs_are_left_alone(db: Path) -> None:
    dead = _dead_pid()
    other = _unfinished_run(db, "a", dead, utcnow(), node="some-other-host")
    store = Store(f"sqlite:///{db}")
    store.open()
    try:
        finished = _run(store, "a", OK)
    finally:
        store.close()
    assert _recover(db) == 0
    assert _query(db, "select outcome from run where id = ?", other)[0][0] is None
    assert _query(db, "select outcome from run where id = ?", finished)[0][0] == "succeeded"


# -- several writers -------------------------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import json, math, sys, uuid
    from supervisor.outcome import Outcome, Verdict
    from supervisor.store import RunEnd, Store, utcnow

    url, index, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = Store(url)
    store.open()
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    succeeded = failed = 0
    for i in range(runs):
        run_id = uuid.uuid4().hex
        store.run_started(run_id, "shared", 1, utcnow(), None)
        ok = (i + index) % 3 != 0
        verdict = Verdict(Outcome.SUCCEEDED, "") if ok else Verdict(Outcome.ERROR, f"E: run {i} of writer {index}")
        store.run_finished(RunEnd(run_id, "shared", utcnow(), 0.01, verdict, 0 if ok else 1, None, None, None, "", "", None))
        tries = 0
        while store.pending:  # a busy database: retry now rather than after the backoff
            tries += 1
            assert tries < 10_000, "writes kept failing"
            store.flush(now=math.inf)
        succeeded += ok
        failed += not ok
    store.close()
    print(json.dumps({"succeeded": succeeded, "failed": failed}), flush=True)
    """
)


def test_counters_are_exact_with_several_writers(db: Path, store: Store) -> None:
    store.sync_workers([_definition("shared")], [])
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, f"sqlite:///{db}", str(index), "50"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(4)
    ]
    results: list[tuple[int, str, str]] = []
    try:
        for writer in writers:
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "ready"
        for writer in writers:
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.flush()
        for writer in writers:
            out, err = writer.communicate(timeout=60)
            results.append((writer.returncode, out, err))
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
            writer.communicate()
    for code, out, err in results:
        assert code == 0, err
    expected_ok = sum(json.loads(out)["succeeded"] for _, out, _ in results)
    expected_failed = sum(json.loads(out)["failed"] for _, out, _ in results)
    assert expected_ok + expected_failed == 200

    worker = _worker(db, "shared")
    runs = _query(db, "select outcome, count(*) as n from run where worker = 'shared' group by outcome")
    by_outcome = {row["outcome"]: row["n"] for row in runs}
    assert sum(by_outcome.values()) == 200
    assert worker["success_count"] + worker["failure_count"] == 200
    assert worker["success_count"] == by_outcome.get("succeeded", 0) == expected_ok
    assert worker["failure_count"] == by_outcome.get("error", 0) == expected_failed
    assert len(_query(db, "select * from failure where worker = 'shared'")) == expected_failed
    assert _query(db, "select count(*) from run where finished_at is null")[0][0] == 0
