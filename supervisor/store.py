"""The record: peewee models for workers, runs and failures, and the Store that writes them.

Only the supervisor writes, over one connection. Counters change only through SQL expressions
(`failure_count = failure_count + 1`), never read-modify-write, so several writers stay exact. The database is a
record, not the heartbeat: a write that fails is queued in order and retried, and the workers keep running.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

import peewee
import psutil
from playhouse import db_url

from .errors import StoreUnavailable
from .outcome import Outcome, Verdict, WorkerState
from .worker import WorkerDefinition

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SQLITE_BUSY_TIMEOUT_MS = 5000
MAX_PENDING_WRITES = 100_000
ERROR_MESSAGE_LIMIT = 2000

database = peewee.DatabaseProxy()


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class SchemaVersion(BaseModel):
    """The schema version this database was last migrated to."""

    version = peewee.IntegerField()


class WorkerRow(BaseModel):
    """One row per worker (or per broken module), as in the Go pattern's worker status table."""

    name = peewee.CharField(primary_key=True, max_length=200)
    module = peewee.CharField(default="", max_length=300)
    status = peewee.CharField(default=WorkerState.IDLE.value, max_length=20)
    interval = peewee.FloatField(null=True)
    timeout = peewee.FloatField(null=True)
    pid = peewee.IntegerField(null=True)
    last_run_at = peewee.DateTimeField(null=True)
    next_run_at = peewee.DateTimeField(null=True)
    last_success_at = peewee.DateTimeField(null=True)
    last_outcome = peewee.CharField(null=True, max_length=20)
    last_duration = peewee.FloatField(null=True)
    success_count = peewee.IntegerField(default=0)
    failure_count = peewee.IntegerField(default=0)
    consecutive_failures = peewee.IntegerField(default=0)
    skipped_count = peewee.IntegerField(default=0)
    last_error = peewee.TextField(null=True)
    paused = peewee.BooleanField(default=False)
    updated_at = peewee.DateTimeField()

    class Meta:
        table_name = "worker"


class RunRow(BaseModel):
    """One row per run, written when it starts and completed when it ends."""

    id = peewee.CharField(primary_key=True, max_length=32)
    worker = peewee.ForeignKeyField(WorkerRow, column_name="worker", field="name", backref="runs", on_delete="CASCADE")
    attempt = peewee.IntegerField(default=1)
    started_at = peewee.DateTimeField(index=True)
    finished_at = peewee.DateTimeField(null=True)
    duration = peewee.FloatField(null=True)
    outcome = peewee.CharField(null=True, max_length=20, index=True)
    exit_code = peewee.IntegerField(null=True)
    signal = peewee.IntegerField(null=True)
    pid = peewee.IntegerField(null=True)
    node = peewee.CharField(max_length=255)
    supervisor_pid = peewee.IntegerField()
    peak_rss = peewee.BigIntegerField(null=True)
    cpu_time = peewee.FloatField(null=True)

    class Meta:
        table_name = "run"


class FailureRow(BaseModel):
    """One row per failed run (and per module that failed to import), with what it left behind."""

    id = peewee.AutoField()
    run = peewee.ForeignKeyField(RunRow, null=True, backref="failures", on_delete="CASCADE", unique=True)
    worker = peewee.ForeignKeyField(WorkerRow, column_name="worker", field="name", on_delete="CASCADE")
    created_at = peewee.DateTimeField(index=True)
    kind = peewee.CharField(max_length=20)
    message = peewee.TextField()
    traceback = peewee.TextField(default="")
    stderr_tail = peewee.TextField(default="")
    stdout_tail = peewee.TextField(default="")
    exit_code = peewee.IntegerField(null=True)
    signal = peewee.IntegerField(null=True)

    class Meta:
        table_name = "failure"


MODELS = [SchemaVersion, WorkerRow, RunRow, FailureRow]


@dataclass(frozen=True, slots=True)
class RunEnd:
    """Everything known about a run once it is over."""

    run_id: str
    worker: str
    finished_at: datetime
    duration: float
    verdict: Verdict
    exit_code: int | None
    signal: int | None
    cpu_time: float | None
    peak_rss: int | None
    stderr: str
    stdout: str
    next_run_at: datetime | None


def utcnow() -> datetime:
    """Return the current UTC time as a naive datetime, the form every timestamp column holds."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def redact(url: str) -> str:
    """Return the URL with its password replaced, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str) -> peewee.Database:
    """Make (not yet open) the peewee database a URL names: `sqlite:///path` or `postgresql://...`."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = db_url.parse(url)["database"] or ":memory:"
        return peewee.SqliteDatabase(
            path,
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
            pragmas={
                # WAL lets `status` in another process read while we write; NORMAL is durable across a
                # process crash (only an OS crash can lose the last commits).
                "journal_mode": "wal",
                "synchronous": "normal",
                "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
                "foreign_keys": 1,
            },
        )
    if scheme in ("postgres", "postgresql"):
        try:
            database: peewee.Database = db_url.connect(url, connect_timeout=5)
            return database
        except Exception as exc:  # peewee raises ImproperlyConfigured when no driver is installed
            raise StoreUnavailable(f"cannot use PostgreSQL: {exc}", redact(url)) from exc
    raise StoreUnavailable(f"unsupported database URL scheme {scheme!r}; use sqlite:/// or postgresql://", redact(url))


class Store:
    """Write the record of workers and runs; queue writes (in order) while the database is failing."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = redact(url)
        self.db = connect(url)
        self.node = socket.gethostname()
        self.pid = os.getpid()
        self._pending: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._retry_at = 0.0
        self._retry_delay = 0.5
        self._healthy = True

    # -- opening ----------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Connect and bring the schema up to date; raise StoreUnavailable with one clear line if we cannot."""
        database.initialize(self.db)
        try:
            self.db.connect(reuse_if_open=True)
            with self.db.atomic():
                self.db.create_tables(MODELS, safe=True)
                if not SchemaVersion.select().exists():
                    SchemaVersion.create(version=SCHEMA_VERSION)
        except peewee.PeeweeException as exc:
            raise StoreUnavailable(f"cannot open the database: {_first_line(exc)}", self.where) from exc

    def close(self) -> None:
        """Flush what is queued (once) and close the connection."""
        self.flush()
        if self._pending:
            log.error("store: %d record(s) could not be written before exit", len(self._pending))
        if not self.db.is_closed():
            self.db.close()

    # -- the write queue ------------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many writes wait for the database."""
        return len(self._pending)

    def _write(self, fn: Callable[..., None], *args: Any) -> None:
        if len(self._pending) >= MAX_PENDING_WRITES:
            log.error("store: write queue full (%d); dropping the oldest record", MAX_PENDING_WRITES)
            self._pending.popleft()
        self._pending.append((fn, args))
        if len(self._pending) == 1:
            self.flush()

    def flush(self, now: float | None = None) -> None:
        """Write queued records in order until one fails; after a failure, wait with backoff before retrying."""
        now = time.monotonic() if now is None else now
        if not self._pending or (not self._healthy and now < self._retry_at):
            return
        while self._pending:
            fn, args = self._pending[0]
            try:
                with self.db.atomic():
                    fn(*args)
            except peewee.PeeweeException as exc:
                if self._healthy:
                    log.error("store: database write failed, records will wait and be retried: %s", _first_line(exc))
                self._healthy = False
                self._retry_at = now + self._retry_delay
                self._retry_delay = min(self._retry_delay * 2, 30.0)
                self._reset_connection()
                return
            self._pending.popleft()
        if not self._healthy:
            log.warning("store: database writes succeed again")
        self._healthy = True
        self._retry_delay = 0.5

    def next_retry(self) -> float | None:
        """Return when queued writes should next be tried, or None when nothing waits."""
        return self._retry_at if self._pending else None

    def _reset_connection(self) -> None:
        try:
            self.db.close()
        except peewee.PeeweeException:
            pass

    # -- what the supervisor records ------------------------------------------------------------------------

    def recover_lost(self) -> int:
        """Mark runs an earlier supervisor on this node left unfinished as `lost`; return how many.

        A run is left unfinished only when its supervisor died without recording its end (SIGKILL, power
        loss). Runs of a supervisor that is still alive (another instance on this node) are left alone.
        """
        now = utcnow()
        try:
            with self.db.atomic():
                orphans = [
                    run
                    for run in RunRow.select().where(RunRow.finished_at.is_null(), RunRow.node == self.node)
                    if run.supervisor_pid == self.pid or not _still_running_since(run.supervisor_pid, run.started_at)
                ]
                for run in orphans:
                    verdict = Verdict(Outcome.LOST, f"the supervisor (pid {run.supervisor_pid}) died during the run")
                    duration = (now - run.started_at).total_seconds()
                    worker = run.worker_id  # type: ignore[attr-defined]  # peewee's accessor for the FK's value
                    self._finish_run(RunEnd(run.id, worker, now, duration, verdict, None, None, None, None, "", "", None))
        except peewee.PeeweeException as exc:
            raise StoreUnavailable(f"cannot read unfinished runs: {_first_line(exc)}", self.where) from exc
        return len(orphans)

    def sync_workers(self, definitions: Iterable[WorkerDefinition], broken_modules: Iterable[str]) -> None:
        """Create or update the rows of the workers the spawner reported; retire the ones nothing defines now.

        Rows of modules that are broken right now (and of the workers those modules defined before) stay as
        they are: they were just marked broken.
        """
        self._write(self._sync_workers, list(definitions), sorted(broken_modules), utcnow())

    def _sync_workers(self, definitions: list[WorkerDefinition], broken_modules: list[str], now: datetime) -> None:
        for d in definitions:
            fields = {
                "module": d.module,
                "interval": d.interval,
                "timeout": d.timeout,
                "status": WorkerState.IDLE.value,
                "pid": None,
                "updated_at": now,
            }
            WorkerRow.insert(name=d.name, **fields).on_conflict(conflict_target=[WorkerRow.name], update=fields).execute()
        current = [d.name for d in definitions] + broken_modules
        WorkerRow.update(status=WorkerState.RETIRED.value, pid=None, updated_at=now).where(
            WorkerRow.name.not_in(current), WorkerRow.module.not_in(broken_modules)
        ).execute()

    def module_broken(
        self, module: str, message: str, traceback: str, stderr: str, exit_code: int | None, signum: int | None
    ) -> None:
        """Record that a module could not be imported: a failure row, and its workers (and itself) as broken."""
        self._write(self._broken, module, module, message, traceback, stderr, exit_code, signum, utcnow())

    def worker_broken(self, name: str, module: str, message: str) -> None:
        """Record a worker whose definition is invalid (bad interval, duplicate name); its module's others run."""
        self._write(self._broken, name, module, message, "", "", None, None, utcnow())

    def _broken(
        self,
        name: str,
        module: str,
        message: str,
        traceback: str,
        stderr: str,
        exit_code: int | None,
        signum: int | None,
        now: datetime,
    ) -> None:
        error = message[:ERROR_MESSAGE_LIMIT]
        fields = {"module": module, "status": WorkerState.BROKEN.value, "last_error": error, "pid": None, "updated_at": now}
        WorkerRow.insert(name=name, **fields).on_conflict(conflict_target=[WorkerRow.name], update=fields).execute()
        if name == module:  # a whole module: the workers it defined when it last imported are broken with it
            WorkerRow.update(status=WorkerState.BROKEN.value, last_error=error, updated_at=now).where(
                WorkerRow.module == module
            ).execute()
        FailureRow.create(
            run=None,
            worker=name,
            created_at=now,
            kind="import" if name == module else "definition",
            message=message,
            traceback=traceback,
            stderr_tail=stderr,
            exit_code=exit_code,
            signal=signum,
        )

    def run_started(self, run_id: str, worker: str, attempt: int, started_at: datetime, next_run_at: datetime | None) -> None:
        """Record that a run is starting (so a supervisor that dies now leaves it to be found as lost)."""
        self._write(self._run_started, run_id, worker, attempt, started_at, next_run_at)

    def _run_started(self, run_id: str, worker: str, attempt: int, started_at: datetime, next_run_at: datetime | None) -> None:
        RunRow.insert(
            id=run_id, worker=worker, attempt=attempt, started_at=started_at, node=self.node, supervisor_pid=self.pid
        ).execute()
        WorkerRow.update(
            status=WorkerState.RUNNING.value, last_run_at=started_at, next_run_at=next_run_at, updated_at=started_at
        ).where(WorkerRow.name == worker).execute()

    def run_spawned(self, run_id: str, worker: str, pid: int) -> None:
        """Record the pid a run got."""
        self._write(self._run_spawned, run_id, worker, pid)

    def _run_spawned(self, run_id: str, worker: str, pid: int) -> None:
        RunRow.update(pid=pid).where(RunRow.id == run_id).execute()
        WorkerRow.update(pid=pid).where(WorkerRow.name == worker).execute()

    def run_finished(self, end: RunEnd) -> None:
        """Record how a run ended: its row, a failure row if it failed, and the worker's counters."""
        self._write(self._finish_run, end)

    def _finish_run(self, end: RunEnd) -> None:
        outcome = end.verdict.outcome
        RunRow.update(
            finished_at=end.finished_at,
            duration=end.duration,
            outcome=outcome.value,
            exit_code=end.exit_code,
            signal=end.signal,
            cpu_time=end.cpu_time,
            peak_rss=end.peak_rss,
        ).where(RunRow.id == end.run_id, RunRow.finished_at.is_null()).execute()
        fields: dict[Any, Any] = {
            WorkerRow.pid: None,
            WorkerRow.last_outcome: outcome.value,
            WorkerRow.last_duration: end.duration,
            WorkerRow.updated_at: end.finished_at,
        }
        if end.next_run_at is not None:
            fields[WorkerRow.next_run_at] = end.next_run_at
        if outcome.failed:
            fields[WorkerRow.failure_count] = WorkerRow.failure_count + 1
            fields[WorkerRow.consecutive_failures] = WorkerRow.consecutive_failures + 1
            fields[WorkerRow.last_error] = end.verdict.message[:ERROR_MESSAGE_LIMIT]
            FailureRow.create(
                run=end.run_id,
                worker=end.worker,
                created_at=end.finished_at,
                kind=outcome.value,
                message=end.verdict.message,
                traceback=end.verdict.traceback,
                stderr_tail=end.stderr,
                stdout_tail=end.stdout,
                exit_code=end.exit_code,
                signal=end.signal,
            )
        else:
            fields[WorkerRow.success_count] = WorkerRow.success_count + 1
            fields[WorkerRow.consecutive_failures] = 0
            fields[WorkerRow.last_success_at] = end.finished_at
        # Broken and retired rows keep their status: a run that was in flight when its module broke is history.
        status_kept = WorkerRow.status.in_([WorkerState.BROKEN.value, WorkerState.RETIRED.value])
        fields[WorkerRow.status] = peewee.Case(None, [(status_kept, WorkerRow.status)], WorkerState.IDLE.value)
        WorkerRow.update(fields).where(WorkerRow.name == end.worker).execute()

    def runs_skipped(self, worker: str, count: int, next_run_at: datetime | None) -> None:
        """Count ticks that came while the worker's previous run was still going (or while we were behind)."""
        self._write(self._runs_skipped, worker, count, next_run_at)

    def _runs_skipped(self, worker: str, count: int, next_run_at: datetime | None) -> None:
        WorkerRow.update(skipped_count=WorkerRow.skipped_count + count, next_run_at=next_run_at).where(
            WorkerRow.name == worker
        ).execute()

    # -- reading ----------------------------------------------------------------------------------------------

    def workers(self) -> list[WorkerRow]:
        """Return every worker row that is not retired, by name."""
        try:
            return list(WorkerRow.select().where(WorkerRow.status != WorkerState.RETIRED.value).order_by(WorkerRow.name))
        except peewee.PeeweeException as exc:
            raise StoreUnavailable(f"cannot read workers: {_first_line(exc)}", self.where) from exc


def _still_running_since(pid: int, started_at: datetime) -> bool:
    """Tell whether process `pid` exists and is older than `started_at` (so not a reuse of a dead one's pid)."""
    try:
        created = datetime.fromtimestamp(psutil.Process(pid).create_time(), timezone.utc).replace(tzinfo=None)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True
    return created <= started_at


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
