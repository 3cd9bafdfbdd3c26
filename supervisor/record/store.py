"""The Store: the record as its writer (the recorder) and its readers (the command line) use it.

One store, one schema and one set of queries serve SQLite and PostgreSQL. The store does no queueing or retrying
of its own: the recorder process does, so that a slow or hung database never holds up the supervisor's loop.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Iterator

import peewee

from . import command_watch
from ..outcome import WorkerState
from .applying import ERROR_MESSAGE_LIMIT as ERROR_MESSAGE_LIMIT, RecordApplier
# Re-exported: the recorder, the reports and the tests import them from here.
from .database import CONNECT_TIMEOUT as CONNECT_TIMEOUT, connect as connect, redact as redact
from .schema import (
    SCHEMA_VERSION as SCHEMA_VERSION,
    BaseModel,
    CommandRow,
    FailureRow as FailureRow,
    OutputRow,
    RunRow,
    WorkerRow,
    utcnow as utcnow,
)

log = logging.getLogger(__name__)

COMMAND_EXPIRY = timedelta(minutes=10)
"""A command that no supervisor took up this long after it was sent is never acted on: a trigger queued while
nothing ran must not fire hours later at the next start. (The command line withdraws its own sooner: after
its --wait.)"""
PRUNE_BATCH = 500


class Store(RecordApplier):
    """Apply records to the database; take operators' commands; prune; read what the table and the command line
    show. (Its connection: connection.py; applying records: applying.py; the schema: schema.py.)"""

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

    def runs_named(self, worker: str, run: str) -> list[RunRow]:
        """A worker's runs whose id starts with `run` (a prefix as `history` shows ids; at most two, to tell)."""
        with self.unavailable_as("cannot read runs"):
            return list(RunRow.select().where(RunRow.worker == worker, RunRow.id.startswith(run)).limit(2))

    def output_of(self, run: str) -> OutputRow | None:
        """What a run that did not fail printed, if it printed anything and it is kept."""
        with self.unavailable_as("cannot read output"):
            row: OutputRow | None = OutputRow.get_or_none(OutputRow.run == run)
        return row

    def failure_of(self, run: str) -> FailureRow | None:
        with self.unavailable_as("cannot read failures"):
            row: FailureRow | None = FailureRow.get_or_none(FailureRow.run == run)
        return row

    def failure(self, failure_id: int) -> FailureRow | None:
        """Return one failure by its id, or None if there is none (pruned, or never was)."""
        with self.unavailable_as(f"cannot read failure {failure_id}"):
            row: FailureRow | None = FailureRow.get_or_none(FailureRow.id == failure_id)
        return row


def _minutes(span: timedelta) -> str:
    return f"{span.total_seconds() / 60:g} minutes"
