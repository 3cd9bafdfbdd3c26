"""The record: peewee models for workers, runs and failures, and the Store that applies records to them.

One store, one schema and one set of queries serve SQLite and PostgreSQL. Records (see records.py) are applied
idempotently, so a record replayed after a crash changes nothing the second time, and counters change only
through SQL expressions (`failure_count = failure_count + 1`), together with the row that proves the change is
new, so several writers stay exact. The store does no queueing or retrying of its own: the recorder process
does, so that a slow or hung database never holds up the supervisor's loop.
"""
from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timedelta, timezone
from contextlib import contextmanager
from typing import Any, Iterable, Iterator
from urllib.parse import unquote, urlsplit

import peewee
import psutil
from playhouse.migrate import SchemaMigrator, migrate

from . import command_watch
from . import records
from .. import schedule
from . import statements
# CONNECT_TIMEOUT and redact are re-exported: the recorder and the reports import them from here.
from .database import CONNECT_TIMEOUT as CONNECT_TIMEOUT, STATEMENT_TIMEOUT_MS, connect, redact as redact
from ..errors import StoreUnavailable
from ..outcome import Outcome, Verdict, WorkerState
from .records import Record, moment

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4
COMMAND_EXPIRY = timedelta(minutes=10)
"""A command that no supervisor took up this long after it was sent is never acted on: a trigger queued while
nothing ran must not fire hours later at the next start. (The command line withdraws its own sooner: after
its --wait.)"""
ERROR_MESSAGE_LIMIT = 2000
PRUNE_BATCH = 500

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
    pause_reason = peewee.TextField(null=True)
    """Why the supervisor paused it (quarantine); None when an operator did, or when not paused."""
    schedule = peewee.CharField(null=True, max_length=300)
    """The schedule in a few words ("every 5m", "cron 0 3 * * * (Europe/Berlin)"), for `status`."""
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
        indexes = ((("worker", "started_at"), False),)


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
    event = peewee.CharField(null=True, unique=True, max_length=32)
    """Idempotency key of a failure that belongs to no run (a module that broke), so a replay adds no copy."""

    class Meta:
        table_name = "failure"


class CommandRow(BaseModel):
    """An operator's request to a running supervisor (trigger, pause, resume), taken up by whichever
    supervisor runs the worker. Going through the database lets it reach a supervisor on another host."""

    id = peewee.AutoField()
    worker = peewee.CharField(max_length=200)
    action = peewee.CharField(max_length=20)
    created_at = peewee.DateTimeField()
    done_at = peewee.DateTimeField(null=True, index=True)
    result = peewee.TextField(null=True)

    class Meta:
        table_name = "command"


MODELS = [SchemaVersion, WorkerRow, RunRow, FailureRow, CommandRow]


def utcnow() -> datetime:
    """Return the current UTC time as a naive datetime, the form every timestamp column holds."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Store:
    """Apply records to the database; read what the table and the command line show."""

    def __init__(self, url: str, connect_timeout: int = CONNECT_TIMEOUT, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> None:
        self.url = url
        self.where = redact(url)
        self._secret = urlsplit(url).password
        self.db = connect(url, connect_timeout, statement_timeout_ms)
        self._known_workers: set[str] = set()
        """Worker rows this connection has seen exist (workers are retired, never deleted, while we run)."""
        self.node = socket.gethostname()
        self.pid = os.getpid()

    def scrub(self, text: str) -> str:
        """Remove the database password from a message (a driver may quote the connection string)."""
        if self._secret:
            text = text.replace(self._secret, "***").replace(unquote(self._secret), "***")
        return text

    def describe(self, exc: BaseException) -> str:
        """One line saying what went wrong, with no password in it."""
        text = str(exc).strip() or type(exc).__name__
        return self.scrub(text.splitlines()[0])

    @contextmanager
    def unavailable_as(self, doing: str) -> Iterator[None]:
        """Turn a database error inside the block into StoreUnavailable: `<doing>: <what went wrong>` (no password)."""
        try:
            yield
        except peewee.PeeweeException as exc:
            raise StoreUnavailable(f"{doing}: {self.describe(exc)}", self.where) from exc

    # -- opening ----------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Connect and bring the schema up to date; raise StoreUnavailable with one clear line if we cannot."""
        database.initialize(self.db)
        try:
            self.db.connect(reuse_if_open=True)
            self._migrate()
        except peewee.PeeweeException as exc:
            self.close()
            raise StoreUnavailable(f"cannot open the database: {self.describe(exc)}", self.where) from exc
        except StoreUnavailable:
            self.close()
            raise

    def _migrate(self) -> None:
        with self.db.atomic():
            tables = set(self.db.get_tables())
            if "worker" not in tables:
                self.db.create_tables(MODELS, safe=True)
                SchemaVersion.insert(id=1, version=SCHEMA_VERSION).on_conflict_ignore().execute()
                return
            self.db.create_tables([SchemaVersion], safe=True)
            version = SchemaVersion.select(peewee.fn.MAX(SchemaVersion.version)).scalar() or 1
            if version > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"the database's schema is version {version}, newer than this release's {SCHEMA_VERSION}; "
                    "upgrade worker-supervisor",
                    self.where,
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                log.warning("store: migrating the schema from version %d to %d", target - 1, target)
                MIGRATIONS[target](self.db)
                SchemaVersion.delete().execute()
                SchemaVersion.insert(id=1, version=target).execute()

    def close(self) -> None:
        """Close the connection."""
        if not self.db.is_closed():
            try:
                self.db.close()
            except peewee.PeeweeException:
                pass

    def reconnect(self) -> None:
        """Drop the connection (after an error) so the next use opens a fresh one."""
        self._known_workers.clear()
        try:
            self.db.close()
        except peewee.PeeweeException:
            pass

    # -- applying records -------------------------------------------------------------------------------------

    def write_transaction(self) -> Any:
        """A transaction that will write: on SQLite it takes the write lock at BEGIN (IMMEDIATE), so a second
        writer waits out the busy timeout instead of failing at once on a read lock it cannot upgrade."""
        return self.db.atomic("IMMEDIATE") if isinstance(self.db, peewee.SqliteDatabase) else self.db.atomic()

    def apply(self, batch: Iterable[Record]) -> None:
        """Apply records in order, in one transaction: all of them or none. Safe to repeat.

        A run whose start and end are both in the batch (most runs: the supervisor tells the recorder of a start
        only with the next record that cannot wait, see recording.py) is written whole where its end comes: one
        row insert and one worker update, instead of the three records' seven statements.
        """
        records = list(batch)
        starts = {r["run"]: r for r in records if r["type"] == "run_started"}
        pids = {r["run"]: r["pid"] for r in records if r["type"] == "run_spawned"}
        whole = {r["run"] for r in records if r["type"] == "run_finished" and r["run"] in starts}
        try:
            with self.write_transaction():
                self._apply_records(records, starts, pids, whole)
        except BaseException:
            self._known_workers.clear()  # what this transaction added is gone with it
            raise

    def _apply_records(
        self, records: list[Record], starts: dict[str, Record], pids: dict[str, int], whole: set[str]
    ) -> None:
        for record in records:
            kind = record["type"]
            if kind in ("run_started", "run_spawned") and record["run"] in whole:
                continue
            if kind == "run_finished" and record["run"] in whole:
                self._run_whole(starts[record["run"]], pids.get(record["run"]), record)
            else:
                APPLY[kind](self, record)

    def _workers_synced(self, record: Record) -> None:
        # Rows changed after this record (by later records) are left alone, so a replayed journal segment
        # cannot set a running or broken worker back to idle.
        now = moment(record["at"])
        not_newer = WorkerRow.updated_at <= now
        names = []
        for d in record["definitions"]:
            names.append(d["name"])
            fields = {
                "module": d["module"],
                "interval": d["interval"],
                "timeout": d["timeout"],
                "schedule": schedule.describe(d["interval"], d.get("cron"), d.get("timezone")),
                "status": WorkerState.IDLE.value,
                "pid": None,
                "updated_at": now,
            }
            next_run = record.get("next_runs", {}).get(d["name"])
            if next_run:
                fields["next_run_at"] = moment(next_run)
            WorkerRow.insert(name=d["name"], **fields).on_conflict(
                conflict_target=[WorkerRow.name], update=fields, where=not_newer
            ).execute()
        broken = record["broken"]
        WorkerRow.update(status=WorkerState.RETIRED.value, pid=None, updated_at=now).where(
            WorkerRow.name.not_in(names + broken), WorkerRow.module.not_in(broken), not_newer
        ).execute()

    def _broken(self, record: Record) -> None:
        if FailureRow.select().where(FailureRow.event == record["event"]).exists():
            return
        now = moment(record["at"])
        name, module = record["name"], record["module"]
        error = record["message"][:ERROR_MESSAGE_LIMIT]
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
            message=record["message"],
            traceback=record["traceback"],
            stderr_tail=record["stderr"],
            exit_code=record["exit_code"],
            signal=record["signal"],
            event=record["event"],
        )

    def _ensure_worker(self, name: str, at: datetime | None) -> None:
        """Make sure the worker row a run points to exists (a statement saved per run once it is known to)."""
        if name not in self._known_workers:
            WorkerRow.insert(name=name, updated_at=at or utcnow()).on_conflict_ignore().execute()
            self._known_workers.add(name)

    def _run_started(self, record: Record) -> None:
        started_at = moment(record["started_at"])
        self._ensure_worker(record["worker"], started_at)
        inserted = statements.insert(
            self.db,
            RunRow,
            self._start_fields(record),
            ignore_conflict=True,
        )
        if not inserted:
            return  # applied before (a replay), or its end already was
        fields: dict[Any, Any] = {
            WorkerRow.status: statements.UnlessIn(HISTORY_STATES, WorkerState.RUNNING.value),
            WorkerRow.last_run_at: started_at,
            WorkerRow.next_run_at: moment(record["next_run_at"]),
            WorkerRow.updated_at: started_at,
        }
        if record.get("skipped"):
            fields[WorkerRow.skipped_count] = statements.Add(record["skipped"])
        statements.update(self.db, WorkerRow, fields, record["worker"])

    def _run_spawned(self, record: Record) -> None:
        # Only while the run is unfinished: a replayed spawn of a finished run must not show its pid again.
        pid = record["pid"]
        if statements.update(self.db, RunRow, {RunRow.pid: pid}, record["run"], only_if={RunRow.finished_at: None}):
            statements.update(
                self.db, WorkerRow, {WorkerRow.pid: pid}, record["worker"], only_if={WorkerRow.status: WorkerState.RUNNING.value}
            )

    @staticmethod
    def _start_fields(record: Record) -> dict[Any, Any]:
        """A run row's fields known at its start (its end's record carries them too)."""
        return {
            RunRow.id: record["run"],
            RunRow.worker: record["worker"],
            RunRow.attempt: record["attempt"],
            RunRow.started_at: moment(record["started_at"]),
            RunRow.node: record["node"],
            RunRow.supervisor_pid: record["supervisor_pid"],
        }

    @staticmethod
    def _end_fields(record: Record) -> dict[Any, Any]:
        return {
            RunRow.finished_at: moment(record["finished_at"]),
            RunRow.duration: record["duration"],
            RunRow.outcome: record["outcome"],
            RunRow.exit_code: record["exit_code"],
            RunRow.signal: record["signal"],
            RunRow.cpu_time: record["cpu_time"],
            RunRow.peak_rss: record["peak_rss"],
        }

    def _run_finished(self, record: Record) -> None:
        finished = self._end_fields(record)
        if record.get("pid") is not None:
            finished[RunRow.pid] = record["pid"]
        changed = statements.update(self.db, RunRow, finished, record["run"], only_if={RunRow.finished_at: None})
        if not changed:
            if RunRow.select().where(RunRow.id == record["run"]).exists():
                return  # its end was applied before: a replay
            # Its start never reached the database (it was lost with a journal line cut short): stand alone.
            self._ensure_worker(record["worker"], moment(record["finished_at"]))
            statements.insert(self.db, RunRow, {**self._start_fields(record), **finished})
        self._count_run(record)

    def _run_whole(self, started: Record, pid: int | None, finished: Record) -> None:
        self._ensure_worker(finished["worker"], moment(started["started_at"]))
        inserted = statements.insert(
            self.db,
            RunRow,
            {
                **self._start_fields(started),
                RunRow.pid: finished["pid"] if finished.get("pid") is not None else pid,
                **self._end_fields(finished),
            },
            ignore_conflict=True,
        )
        if not inserted:
            self._run_finished(finished)  # its start was applied before (a replay): the end applies as it would alone
            return
        self._count_run(finished, started)

    def _count_run(self, record: Record, started: Record | None = None) -> None:
        """Count an ended run in its worker's row (and, given its start record, what the start would have set).

        Every run takes this and, if it failed, the failure's row: they go through statements.py, not peewee."""
        finished_at = moment(record["finished_at"])
        outcome = Outcome(record["outcome"])
        fields: dict[Any, Any] = {
            WorkerRow.pid: None,
            WorkerRow.last_outcome: outcome.value,
            WorkerRow.last_duration: record["duration"],
            WorkerRow.updated_at: finished_at,
            WorkerRow.status: statements.UnlessIn(HISTORY_STATES, WorkerState.IDLE.value),
        }
        skipped = record.get("skipped") or 0
        if started is not None:
            fields[WorkerRow.last_run_at] = moment(started["started_at"])
            skipped += started.get("skipped") or 0
        next_run_at = record.get("next_run_at") or (started or {}).get("next_run_at")
        if next_run_at:
            fields[WorkerRow.next_run_at] = moment(next_run_at)
        if skipped:
            fields[WorkerRow.skipped_count] = statements.Add(skipped)
        if outcome.failed:
            fields[WorkerRow.failure_count] = statements.Add(1)
            fields[WorkerRow.consecutive_failures] = statements.Add(1)
            fields[WorkerRow.last_error] = record["message"][:ERROR_MESSAGE_LIMIT]
            statements.insert(
                self.db,
                FailureRow,
                {
                    FailureRow.run: record["run"],
                    FailureRow.worker: record["worker"],
                    FailureRow.created_at: finished_at,
                    FailureRow.kind: outcome.value,
                    FailureRow.message: record["message"],
                    FailureRow.traceback: record["traceback"],
                    FailureRow.stderr_tail: record["stderr"],
                    FailureRow.stdout_tail: record["stdout"],
                    FailureRow.exit_code: record["exit_code"],
                    FailureRow.signal: record["signal"],
                },
            )
        else:
            fields[WorkerRow.success_count] = statements.Add(1)
            fields[WorkerRow.consecutive_failures] = 0
            fields[WorkerRow.last_success_at] = finished_at
        statements.update(self.db, WorkerRow, fields, record["worker"])

    def _command_done(self, record: Record) -> None:
        CommandRow.update(done_at=moment(record["at"]), result=record["result"]).where(
            CommandRow.id == record["command"], CommandRow.done_at.is_null()
        ).execute()

    def _worker_paused(self, record: Record) -> None:
        WorkerRow.update(paused=record["paused"], pause_reason=record.get("reason")).where(
            WorkerRow.name == record["worker"], WorkerRow.updated_at <= moment(record["at"])
        ).execute()

    # -- operators' commands ---------------------------------------------------------------------------------

    def send_command(self, worker: str, action: str) -> int:
        """Queue a command for the supervisor that runs `worker`; pause and resume take effect in the record
        at once too, so a supervisor that is down finds the worker paused (or not) when it starts."""
        now = utcnow()
        with self.unavailable_as("cannot send the command"):
            with self.write_transaction():
                if action in ("pause", "resume"):
                    WorkerRow.update(paused=action == "pause", pause_reason=None).where(WorkerRow.name == worker).execute()
                command: int = CommandRow.insert(worker=worker, action=action, created_at=now).execute()
                command_watch.announce(self.db)
            command_watch.announce_committed(self.db)
        return command

    def pending_commands(self) -> list[dict[str, Any]]:
        """Commands no supervisor has taken up yet, oldest first; those older than COMMAND_EXPIRY are marked
        expired instead (a command line killed while it waited could not withdraw its command)."""
        now = utcnow()
        pending: list[Any] = []
        expired: list[Any] = []
        for command in CommandRow.select().where(CommandRow.done_at.is_null()).order_by(CommandRow.id):
            (expired if command.created_at < now - COMMAND_EXPIRY else pending).append(command)
        if expired:
            with self.write_transaction():
                CommandRow.update(
                    done_at=now, result=f"expired: no supervisor took it up within {_minutes(COMMAND_EXPIRY)}"
                ).where(CommandRow.id.in_([c.id for c in expired]), CommandRow.done_at.is_null()).execute()
        return [{"id": c.id, "worker": c.worker, "action": c.action} for c in pending]

    def withdraw_command(self, command: int, why: str) -> str | None:
        """Withdraw a command no supervisor has taken up, so that none acts on it later; return None if it was
        withdrawn, or what a supervisor said of it if one took it up meanwhile."""
        with self.unavailable_as("cannot withdraw the command"):
            with self.write_transaction():
                withdrawn = (
                    CommandRow.update(done_at=utcnow(), result=f"withdrawn: {why}")
                    .where(CommandRow.id == command, CommandRow.done_at.is_null())
                    .execute()
                )
        return None if withdrawn else self.command_result(command)

    def command_result(self, command: int) -> str | None:
        """What the supervisor said of a command, or None while none has taken it up."""
        with self.unavailable_as("cannot read the command's result"):
            row = CommandRow.get_or_none(CommandRow.id == command)
        return row.result if row is not None and row.done_at is not None else None

    # -- start-up ---------------------------------------------------------------------------------------------

    def recover_lost(self) -> int:
        """Mark runs an earlier supervisor on this node left unfinished as `lost`; return how many.

        A run is left unfinished only when its supervisor died without recording its end (SIGKILL, power
        loss). Runs of a supervisor that is still alive (another instance on this node) are left alone.
        """
        now = utcnow()
        with self.unavailable_as("cannot read unfinished runs"):
            with self.write_transaction():
                orphans = [
                    run
                    for run in RunRow.select().where(RunRow.finished_at.is_null(), RunRow.node == self.node)
                    if run.supervisor_pid == self.pid or not _still_running_since(run.supervisor_pid, run.started_at)
                ]
                for run in orphans:
                    verdict = Verdict(Outcome.LOST, f"the supervisor (pid {run.supervisor_pid}) died during the run")
                    worker = run.worker_id  # type: ignore[attr-defined]  # peewee's accessor for the FK's value
                    self._run_finished(
                        records.run_finished(
                            run.id, worker, run.attempt, run.started_at, now, (now - run.started_at).total_seconds(),
                            verdict, run.node, run.supervisor_pid, pid=run.pid,
                        )
                    )
        return len(orphans)

    # -- retention --------------------------------------------------------------------------------------------

    def prune(self, keep_runs: int, failure_days: float, batch: int = PRUNE_BATCH) -> tuple[int, int]:
        """Delete failures older than `failure_days`, and runs beyond each worker's newest `keep_runs`.

        A run with a failure younger than `failure_days` is kept even beyond `keep_runs`, so a failure's
        record stays whole for as long as failures are kept. Returns (runs deleted, failures deleted).
        """
        runs = failures = 0
        for table, deleted in self.prune_steps(keep_runs, failure_days, batch):
            if table == "run":
                runs += deleted
            else:
                failures += deleted
        return runs, failures

    def prune_steps(self, keep_runs: int, failure_days: float, batch: int = PRUNE_BATCH) -> Iterator[tuple[str, int]]:
        """Prune in transactions of at most `batch` rows, yielding (table, rows deleted) after each.

        Small steps keep locks short, and let the recorder write new records between them.
        """
        cutoff = utcnow() - timedelta(days=failure_days)
        yield from self._delete_in_batches(
            FailureRow, FailureRow.select(FailureRow.id).where(FailureRow.created_at < cutoff), batch
        )
        # Only the workers over their count: one grouped query, not one query per worker (a thousand workers cost
        # the recorder 130 ms at every prune).
        over = RunRow.select(RunRow.worker).group_by(RunRow.worker).having(peewee.fn.COUNT(RunRow.id) > keep_runs)
        rows: Any = over.tuples()  # peewee's types say models, tuples() gives tuples
        workers: list[str] = [row[0] for row in rows]
        for worker in workers:
            newest_kept = (
                RunRow.select(RunRow.started_at)
                .where(RunRow.worker == worker)
                .order_by(RunRow.started_at.desc())
                .offset(keep_runs - 1)
                .limit(1)
                .scalar()
            )
            if newest_kept is None:
                continue
            recent_failure = FailureRow.select().where(FailureRow.run == RunRow.id, FailureRow.created_at >= cutoff)
            yield from self._delete_in_batches(
                RunRow,
                RunRow.select(RunRow.id).where(
                    RunRow.worker == worker,
                    RunRow.started_at < newest_kept,
                    RunRow.finished_at.is_null(False),
                    ~peewee.fn.EXISTS(recent_failure),
                ),
                batch,
            )

    def _delete_in_batches(self, model: type[BaseModel], ids: peewee.Select, batch: int) -> Iterator[tuple[str, int]]:
        key: Any = model._meta.primary_key
        table: str = model._meta.table_name
        while True:
            with self.write_transaction():
                chosen = [row[0] for row in ids.limit(batch).tuples()]
                if not chosen:
                    return
                deleted = model.delete().where(key.in_(chosen)).execute()
            yield table, deleted

    # -- reading ----------------------------------------------------------------------------------------------

    def workers(self) -> list[WorkerRow]:
        """Return every worker row that is not retired, by name."""
        with self.unavailable_as("cannot read workers"):
            return list(WorkerRow.select().where(WorkerRow.status != WorkerState.RETIRED.value).order_by(WorkerRow.name))

    def worker_names(self) -> list[str]:
        """Return the name of every worker row, retired ones too (their history is still there), sorted."""
        with self.unavailable_as("cannot read workers"):
            return [row.name for row in WorkerRow.select(WorkerRow.name).order_by(WorkerRow.name)]

    def find_worker(self, name: str) -> WorkerRow | None:
        """Return the worker row named `name`, retired or not, or None."""
        with self.unavailable_as("cannot read workers"):
            row: WorkerRow | None = WorkerRow.get_or_none(WorkerRow.name == name)
        return row

    def recent_runs(self, worker: str, limit: int) -> list[RunRow]:
        """Return a worker's newest `limit` runs, newest first."""
        with self.unavailable_as("cannot read runs"):
            return list(
                RunRow.select()
                .where(RunRow.worker == worker)
                .order_by(RunRow.started_at.desc(), RunRow.id.desc())
                .limit(limit)
            )

    def recent_failures(self, worker: str | None, limit: int) -> list[FailureRow]:
        """Return the newest `limit` failures, of one worker or of all, newest first."""
        query = FailureRow.select()
        if worker is not None:
            query = query.where(FailureRow.worker == worker)
        with self.unavailable_as("cannot read failures"):
            return list(query.order_by(FailureRow.created_at.desc(), FailureRow.id.desc()).limit(limit))

    def failure(self, failure_id: int) -> FailureRow | None:
        """Return one failure by its id, or None if there is none (pruned, or never was)."""
        with self.unavailable_as(f"cannot read failure {failure_id}"):
            row: FailureRow | None = FailureRow.get_or_none(FailureRow.id == failure_id)
        return row


HISTORY_STATES = (WorkerState.BROKEN.value, WorkerState.RETIRED.value)
"""A worker row in one of these keeps it when a late run's start or end is applied: that run is history."""



APPLY = {
    "workers_synced": Store._workers_synced,
    "broken": Store._broken,
    "run_started": Store._run_started,
    "run_spawned": Store._run_spawned,
    "run_finished": Store._run_finished,
    "command_done": Store._command_done,
    "worker_paused": Store._worker_paused,
}


def _migrate_1_to_2(db: peewee.Database) -> None:
    """Version 2: failures that belong to no run get an idempotency key; runs are indexed by worker and time."""
    migrator = SchemaMigrator.from_database(db)
    migrate(
        migrator.add_column("failure", "event", peewee.CharField(null=True, max_length=32)),
        migrator.add_index("failure", ("event",), True),
        migrator.add_index("run", ("worker", "started_at"), False),
    )


def _migrate_2_to_3(db: peewee.Database) -> None:
    """Version 3: operators' commands (trigger, pause, resume) travel through a table."""
    db.create_tables([CommandRow], safe=True)


def _migrate_3_to_4(db: peewee.Database) -> None:
    """Version 4: why a worker is paused (quarantine), and its schedule in words (cron as well as intervals)."""
    migrator = SchemaMigrator.from_database(db)
    migrate(
        migrator.add_column("worker", "pause_reason", peewee.TextField(null=True)),
        migrator.add_column("worker", "schedule", peewee.CharField(null=True, max_length=300)),
    )


MIGRATIONS = {2: _migrate_1_to_2, 3: _migrate_2_to_3, 4: _migrate_3_to_4}


def _still_running_since(pid: int, started_at: datetime) -> bool:
    """Tell whether process `pid` exists and is older than `started_at` (so not a reuse of a dead one's pid)."""
    try:
        created = datetime.fromtimestamp(psutil.Process(pid).create_time(), timezone.utc).replace(tzinfo=None)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True
    return created <= started_at


def _minutes(span: timedelta) -> str:
    return f"{span.total_seconds() / 60:g} minutes"
