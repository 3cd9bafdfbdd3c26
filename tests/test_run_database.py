"""A run's own database (`ctx.db`, `ctx.transaction()`), in real forked children on SQLite and PostgreSQL.

The worker's database is never the supervisor's record: a SQLite file of its own, or a PostgreSQL database made
for the test. Every check of its contents goes through a fresh connection of the test's (dbtools.query), so it
sees what was committed and nothing else. Workers that must be caught in the middle of a transaction wait there
for a file the test writes, so the test can look at the open transaction before letting the worker go on.
"""
from __future__ import annotations

import signal
import socket
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import peewee
import pytest

from dbtools import create_database, drop_database, is_postgres, query, query_or_empty, sqlite_path
from helpers import wait_until, worker_package
from supervisor.errors import StoreUnavailable, WorkerDefinitionError
from supervisor.spawn.run_database import open_run_database, transaction

RUN_TIMEOUT = 60.0

# Each worker module starts with `URL = ...` (the worker's own database) and `DIR = ...` (where the hand-off
# files go); one run each (interval of an hour), so the rows a test finds belong to that run alone.
PREAMBLE = '''
import ctypes
import os

from supervisor import Worker, worker


def insert(ctx, db, *numbers):
    for n in numbers:
        db.execute_sql(f"insert into item (run, n) values ({db.param}, {db.param})", (ctx.run_id, n))


def pause(ctx, name):
    """Say we are here, then wait for the test to let us go on."""
    open(os.path.join(DIR, f"{name}.ready"), "w").close()
    while not os.path.exists(os.path.join(DIR, f"{name}.go")):
        ctx.sleep(0.01)
'''

WORKERS = {
    "crash_in_transaction": '''
@worker(interval=3600, timeout=60, database=URL)
def crash_in_transaction(ctx):
    with ctx.transaction() as db:
        insert(ctx, db, 0, 1, 2, 3, 4)
        ctx.log.info("five rows inserted, transaction open")
        pause(ctx, "crash_in_transaction")
        ctypes.string_at(0)  # SIGSEGV with the transaction still open
''',
    "raise_in_transaction": '''
class RaiseInTransaction(Worker):
    name = "raise_in_transaction"
    interval = 3600
    timeout = 60
    database = URL

    def run(self, ctx):
        with ctx.transaction() as db:
            insert(ctx, db, 0, 1, 2, 3, 4)
            raise RuntimeError("changed my mind after five rows")
''',
    "commit_transaction": '''
@worker(interval=3600, timeout=60, database=URL)
def commit_transaction(ctx):
    with ctx.transaction() as db:
        insert(ctx, db, 0, 1, 2)
        try:
            with ctx.transaction():  # nested: a savepoint, undone alone
                insert(ctx, db, 99)
                raise ValueError("undo only the inner block")
        except ValueError:
            pass
        insert(ctx, db, 3, 4)
        pause(ctx, "commit_transaction")
''',
    "no_database": '''
@worker(interval=3600, timeout=60)
def no_database(ctx):
    ctx.db.execute_sql("select 1")
''',
}


@pytest.fixture
def own_url(store_url: str, tmp_path: Path) -> Iterator[str]:
    """The worker's own database, of the record's backend but never the record: it holds one empty table."""
    if is_postgres(store_url):
        url = create_database("ws_own")
    else:
        url = f"sqlite:///{tmp_path}/own.db"
    try:
        query(url, "create table item (run varchar(64) not null, n integer not null)")
        yield url
    finally:
        if is_postgres(url):
            drop_database(url)


def start_one(tmp_path: Path, start_supervisor: Any, record_url: str, own_url: str | None, name: str) -> Any:
    """Start a supervisor on its record with a package holding only the worker `name` (and `URL = own_url`)."""
    source = f"URL = {own_url!r}\nDIR = {str(tmp_path)!r}\n" + PREAMBLE + WORKERS[name]
    worker_package(tmp_path, [], extra={name: source})
    return start_supervisor(url=record_url)


def finished_run(record_url: str, worker: str) -> dict[str, Any]:
    """Wait for the worker's one run to finish; return its row."""
    runs = wait_until(
        lambda: query_or_empty(record_url, "select * from run where worker = ? and finished_at is not null", worker),
        timeout=RUN_TIMEOUT, what=f"a finished run of {worker}",
    )
    assert len(runs) == 1, runs
    return runs[0]


def failure_of(record_url: str, run_id: str) -> dict[str, Any]:
    (failure,) = query(record_url, "select * from failure where run_id = ?", run_id)
    return failure


def items(own_url: str) -> list[tuple[str, int]]:
    """The rows committed to the worker's table, as another connection sees them."""
    return [(row["run"], row["n"]) for row in query(own_url, "select run, n from item order by n")]


def handed_off(tmp_path: Path, name: str) -> None:
    """Wait until the worker is paused in its transaction."""
    wait_until(lambda: (tmp_path / f"{name}.ready").exists(), timeout=RUN_TIMEOUT, what=f"{name} inside its transaction")


def let_go(tmp_path: Path, name: str) -> None:
    (tmp_path / f"{name}.go").touch()


def can_lock(own_url: str) -> bool:
    """Tell whether another connection can take the strongest lock on the worker's table right now, without waiting."""
    if is_postgres(own_url):
        import psycopg

        with psycopg.connect(own_url, connect_timeout=3) as pg:
            try:
                pg.execute("lock table item in access exclusive mode nowait")
            except psycopg.errors.LockNotAvailable:
                return False
            return True
    lite = sqlite3.connect(sqlite_path(own_url), timeout=0, isolation_level=None)
    try:
        lite.execute("begin immediate")
        lite.execute("rollback")
        return True
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
        return False
    finally:
        lite.close()


def sessions(own_url: str, worker: str) -> list[str]:
    """The states of the worker's run sessions on the PostgreSQL server (`idle in transaction`, ...)."""
    return [
        row["state"]
        for row in query(
            own_url, "select state from pg_stat_activity where application_name = ?", f"worker-supervisor run {worker}"
        )
    ]


# -- runs in real children -------------------------------------------------------------------------------------


def test_a_crash_inside_the_transaction_leaves_no_rows_and_no_lock(
    tmp_path: Path, store_url: str, own_url: str, start_supervisor: Any
) -> None:
    supervisor = start_one(tmp_path, start_supervisor, store_url, own_url, "crash_in_transaction")
    handed_off(tmp_path, "crash_in_transaction")
    # The open transaction holds the table and shows nothing to anyone else.
    assert items(own_url) == []
    assert not can_lock(own_url)
    if is_postgres(own_url):
        assert sessions(own_url, "crash_in_transaction") == ["idle in transaction"]

    let_go(tmp_path, "crash_in_transaction")
    run = finished_run(store_url, "crash_in_transaction")
    assert (run["outcome"], run["signal"]) == ("crash", signal.SIGSEGV), supervisor.log()
    failure = failure_of(store_url, run["id"])
    assert "five rows inserted, transaction open" in failure["stderr_tail"]
    assert "Fatal Python error: Segmentation fault" in failure["stderr_tail"]

    # The crash ended the connection with the process: the transaction is gone, and so is its lock.
    wait_until(lambda: can_lock(own_url), timeout=10, what="the crashed run's lock to be released")
    if is_postgres(own_url):
        wait_until(lambda: not sessions(own_url, "crash_in_transaction"), timeout=10, what="the crashed run's session to end")
    assert items(own_url) == []
    assert supervisor.alive()
    assert supervisor.stop() == 0


def test_an_exception_inside_the_transaction_rolls_it_back(
    tmp_path: Path, store_url: str, own_url: str, start_supervisor: Any
) -> None:
    supervisor = start_one(tmp_path, start_supervisor, store_url, own_url, "raise_in_transaction")
    run = finished_run(store_url, "raise_in_transaction")
    assert run["outcome"] == "error", supervisor.log()
    failure = failure_of(store_url, run["id"])
    assert failure["message"] == "RuntimeError: changed my mind after five rows"
    assert items(own_url) == []
    assert can_lock(own_url)
    assert supervisor.stop() == 0


def test_a_transaction_that_ends_commits_as_a_whole(
    tmp_path: Path, store_url: str, own_url: str, start_supervisor: Any
) -> None:
    supervisor = start_one(tmp_path, start_supervisor, store_url, own_url, "commit_transaction")
    handed_off(tmp_path, "commit_transaction")
    assert items(own_url) == []  # nothing is seen before the block ends
    if is_postgres(own_url):
        assert sessions(own_url, "commit_transaction") == ["idle in transaction"]

    let_go(tmp_path, "commit_transaction")
    run = finished_run(store_url, "commit_transaction")
    assert run["outcome"] == "succeeded", supervisor.log()
    # The inner block's row (99) was undone alone; the rest came in one commit, seen by another connection.
    assert items(own_url) == [(run["id"], n) for n in range(5)]
    assert supervisor.stop() == 0


def test_a_worker_without_a_database_setting_fails_with_one_clear_message(
    tmp_path: Path, store_url: str, start_supervisor: Any
) -> None:
    supervisor = start_one(tmp_path, start_supervisor, store_url, None, "no_database")
    run = finished_run(store_url, "no_database")
    assert run["outcome"] == "error", supervisor.log()
    message = failure_of(store_url, run["id"])["message"]
    assert message.startswith("WorkerDefinitionError: no `database` setting"), message
    assert 'database="sqlite:' in message and "[worker.no_database]" in message
    assert supervisor.stop() == 0


# -- open_run_database and transaction in this process ---------------------------------------------------------


def test_no_url_says_how_to_give_the_worker_a_database() -> None:
    with pytest.raises(WorkerDefinitionError) as caught:
        open_run_database(None, "nightly")
    assert caught.value.where == "nightly"
    assert "no `database` setting" in caught.value.message
    assert '@worker(..., database="sqlite:' in caught.value.message
    assert "`[worker.nightly]`" in caught.value.message
    with pytest.raises(WorkerDefinitionError, match=r'\[worker\."feeds\.eu"\]'):
        open_run_database(None, "feeds.eu")  # a dotted name is quoted, or TOML would read nested tables


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    "url, redacted, reason",
    [
        ("postgresql://app:s3cret@127.0.0.1:{port}/appdb", "postgresql://app:***@127.0.0.1:{port}/appdb", "refused"),
        ("postgresql://app:s3cret@127.0.0.1:{port}/", "postgresql://app:***@127.0.0.1:{port}/", "names no database"),
        ("mysql://app:s3cret@127.0.0.1:{port}/appdb", "mysql://app:***@127.0.0.1:{port}/appdb", "unsupported"),
        ("sqlite:///{tmp}/no/such/dir/own.db", "sqlite:///{tmp}/no/such/dir/own.db", "unable to open"),
    ],
    ids=["unreachable", "no-database-name", "bad-scheme", "missing-directory"],
)
def test_a_database_that_cannot_be_opened_is_named_without_its_password(
    url: str, redacted: str, reason: str, tmp_path: Path
) -> None:
    port = closed_port()
    with pytest.raises(StoreUnavailable) as caught:
        open_run_database(url.format(port=port, tmp=tmp_path), "nightly")
    text = str(caught.value)
    assert caught.value.where == redacted.format(port=port, tmp=tmp_path)
    assert text.startswith("cannot open the database of worker 'nightly': ") and reason in text, text
    assert "s3cret" not in text


def test_the_database_opens_connected_with_its_guards(own_url: str) -> None:
    db = open_run_database(own_url, "nightly")
    try:
        assert not db.is_closed()
        if is_postgres(own_url):
            assert db.execute_sql("select current_setting('application_name')").fetchone()[0] == "worker-supervisor run nightly"
            # No statement limit of ours: the run's timeout bounds the run's work.
            assert db.execute_sql("show statement_timeout").fetchone()[0] == "0"
        else:
            assert db.execute_sql("pragma foreign_keys").fetchone()[0] == 1
            assert db.execute_sql("pragma busy_timeout").fetchone()[0] > 0
    finally:
        db.close()


def test_transaction_commits_rolls_back_and_nests(own_url: str) -> None:
    db = open_run_database(own_url, "nightly")

    def add(n: int) -> None:
        db.execute_sql(f"insert into item (run, n) values ({db.param}, {db.param})", ("r", n))

    try:
        with transaction(db) as inside:
            assert inside is db
            add(1)
        assert items(own_url) == [("r", 1)]

        with pytest.raises(RuntimeError, match="undo"):
            with transaction(db):
                add(2)
                raise RuntimeError("undo")
        assert items(own_url) == [("r", 1)]

        with transaction(db):
            add(3)
            with pytest.raises(ValueError):
                with transaction(db):
                    add(4)
                    raise ValueError("only the savepoint")
            add(5)
            assert items(own_url) == [("r", 1)]  # another connection sees nothing before the outer block ends
        assert items(own_url) == [("r", 1), ("r", 3), ("r", 5)]
    finally:
        db.close()


def test_an_error_inside_the_database_rolls_back_the_whole_block(own_url: str) -> None:
    db = open_run_database(own_url, "nightly")
    try:
        with pytest.raises(peewee.IntegrityError):
            with transaction(db):
                db.execute_sql(f"insert into item (run, n) values ({db.param}, {db.param})", ("r", 1))
                db.execute_sql(f"insert into item (run, n) values ({db.param}, {db.param})", ("r", None))
        assert items(own_url) == []
        assert db.execute_sql("select count(*) from item").fetchone()[0] == 0  # the connection is usable again
    finally:
        db.close()
