"""What each page reads, read as `status`, `health`, `history`, `failures` and `nodes` read it (operate/), through
a connection opened for the request and closed after it.

One connection per request, never one kept: a database that went away costs the request that finds it gone
one line, and the next request opens afresh, with nothing dead to notice and drop first. (On PostgreSQL that is
a connection every few seconds per open page, as `status` in a loop would make.) The reads are serialised by a
lock: the record's models reach the database through one process-wide proxy (record/schema.py), which a second
thread must not point elsewhere halfway through a read; a read is bounded by the statement timeout and a short
connect timeout, and the page is rendered and sent outside the lock.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import peewee

from ..operate import health, nodes
from ..operate.report import open_store
from ..operate.worker_views import StatusSnapshot, read_status
from ..record.nodes_view import Nodes, database_now
from ..record.ownership import Holder
from ..record.schema import FailureRow, OutputRow, RunRow, WorkerRow
from ..errors import StoreUnavailable
from ..record.database import redact
from ..record.store import Store

T = TypeVar("T")
CONNECT_TIMEOUT = 2
"""Seconds to wait for PostgreSQL to answer a connection (libpq's least): a page says it is down soon."""
RUNS_SHOWN = 30
"""Runs on a worker's page, newest first."""
FAILURES_SHOWN = 20
"""Failures on a worker's page, newest first."""


@dataclass(frozen=True, slots=True)
class StatusView:
    """The status page: `status`'s snapshot, and each worker's newest failure (for a link to it)."""

    snapshot: StatusSnapshot
    newest_failure: dict[str, int]


@dataclass(frozen=True, slots=True)
class RunView:
    """One run on a worker's page, with what it printed (its failure's tails, or its output kept)."""

    run: RunRow
    failure: int | None
    """The id of its failure, when it failed."""
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class WorkerPage:
    worker: WorkerRow
    runs: list[RunView]
    failures: list[FailureRow]
    now: Any
    """The database's clock (a datetime), against which ages are told."""


class Reader:
    """Reads the record for the pages: a connection per read, one read at a time."""

    def __init__(self, url: str, statement_timeout: float) -> None:
        self.url = url
        self.statement_timeout_ms = int(statement_timeout * 1000)
        self._lock = threading.Lock()

    def read(self, read: Callable[[Store], T]) -> T:
        """Open the record, `read` it, close it; raise StoreUnavailable (one line) when it cannot be read, or when
        another request's read has held the database up for longer than a read may take."""
        wait = CONNECT_TIMEOUT + self.statement_timeout_ms / 1000 * 2
        if not self._lock.acquire(timeout=wait):
            raise StoreUnavailable(f"another page has waited on the database for over {wait:g}s", redact(self.url))
        try:
            store = open_store(self.url, self.statement_timeout_ms, write=False, connect_timeout=CONNECT_TIMEOUT)
            try:
                return read(store)
            finally:
                store.close()
        finally:
            self._lock.release()

    def status(self) -> StatusView:
        """What `status` reads, and each worker's newest failure."""
        return self.read(lambda store: StatusView(read_status(store), newest_failures(store)))

    def health(self) -> tuple[int, list[health.Problem], StatusSnapshot | None]:
        """`health`'s verdict: the same judgement, the database unreadable being down."""
        return health.assess(lambda: self.read(read_status))

    def worker(self, name: str) -> WorkerPage | None:
        """A worker's row, its recent runs with their output and its recent failures; None when no such worker."""
        def read(store: Store) -> WorkerPage | None:
            row = store.find_worker(name)
            if row is None:
                return None
            runs = store.recent_runs(name, RUNS_SHOWN)
            return WorkerPage(row, runs_with_output(store, runs), store.recent_failures(name, FAILURES_SHOWN),
                              database_now(store))

        return self.read(read)

    def failure(self, failure_id: int) -> Any:
        """One failure in full (as `failures --id`): a FailureRow, or None."""
        return self.read(lambda store: store.failure(failure_id))

    def nodes(self) -> Nodes | Holder:
        """The nodes on PostgreSQL; on SQLite, who holds its one supervisor's lock (as `nodes` says)."""
        return self.read(nodes.read)


def newest_failures(store: Store) -> dict[str, int]:
    """The id of each worker's newest failure (one grouped query), so the status page links its last error."""
    query = FailureRow.select(FailureRow.worker, peewee.fn.MAX(FailureRow.id)).group_by(FailureRow.worker)
    with store.unavailable_as("cannot read failures"):
        rows: Any = query.tuples()  # peewee's types say models, tuples() gives tuples
        return {str(worker): int(newest) for worker, newest in rows}


def runs_with_output(store: Store, runs: list[RunRow]) -> list[RunView]:
    """The runs with what each printed: a failed run's tails from its failure, another's from the output kept
    (as `history --run` shows one run), in two queries for all of them rather than two per run."""
    ids = [run.id for run in runs]
    if not ids:
        return []
    with store.unavailable_as("cannot read output"):
        failed: Any = FailureRow.select(FailureRow.id, FailureRow.run, FailureRow.stdout_tail, FailureRow.stderr_tail)
        kept: Any = OutputRow.select()
        # run_id: the foreign key's value, read without fetching the run (peewee's types do not know it).
        failures = {str(row.run_id): row for row in failed.where(FailureRow.run.in_(ids))}
        outputs = {str(row.run_id): row for row in kept.where(OutputRow.run.in_(ids))}
    found = []
    for run in runs:
        failure = failures.get(run.id)
        source: Any = failure if failure is not None else outputs.get(run.id)
        found.append(RunView(run, None if failure is None else int(failure.id),
                             getattr(source, "stdout_tail", "") or "", getattr(source, "stderr_tail", "") or ""))
    return found
