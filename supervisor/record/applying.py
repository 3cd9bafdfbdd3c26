"""Applying the journal's records to the database: each kind of record, idempotently, in one transaction per batch.

Records (records.py) are applied so that a record replayed after a crash changes nothing the second time, and
counters change only through SQL expressions (`failure_count = failure_count + 1`), together with the row that
proves the change is new, so several writers stay exact. Also here: runs an earlier supervisor left unfinished,
recorded `lost` at start-up.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

import peewee
import psutil

from . import records, statements
from .. import schedule
from ..outcome import Outcome, Verdict, WorkerState
from .connection import StoreConnection
from .records import Record, moment
from .schema import CommandRow, FailureRow, OutputRow, RunRow, WorkerRow, utcnow

ERROR_MESSAGE_LIMIT = 2000


class RecordApplier(StoreConnection):
    """The part of the Store that writes what the supervisor journaled."""

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
                self.lock_workers(_workers_of(records))
                self._apply_records(records, starts, pids, whole)
        except BaseException:
            self._known_workers.clear()  # what this transaction added is gone with it
            raise

    def lock_workers(self, names: Iterable[str] | None) -> None:
        """On PostgreSQL, lock these workers' rows (None: every worker's) in the order of their names, at the start
        of a transaction that will update them. Two nodes' recorders, or a recorder and a coordinator recording a
        dead node's runs lost, that update the same workers in other orders deadlocked, and PostgreSQL failed one
        of them after a second. SQLite has one writer at a time."""
        if not isinstance(self.db, peewee.PostgresqlDatabase):
            return
        if names is None:
            self.db.execute_sql("SELECT 1 FROM worker ORDER BY name FOR UPDATE")  # type: ignore[no-untyped-call]
            return
        wanted = sorted(set(names))
        if wanted:
            self.db.execute_sql(  # type: ignore[no-untyped-call]
                "SELECT 1 FROM worker WHERE name = ANY(%s) ORDER BY name FOR UPDATE", (wanted,))

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
        else:
            self._fill_pid(record["run"], pid)

    def _fill_pid(self, run: str, pid: int | None) -> None:
        """A run recorded `lost` by the peer that declared its node dead has no pid (the peer never knew it): the
        node's own records of it, applied once it is back, still give it (its end never replaces the outcome)."""
        if pid is not None:
            statements.update(self.db, RunRow, {RunRow.pid: pid}, run, only_if={RunRow.pid: None})

    @staticmethod
    def _start_fields(record: Record) -> dict[Any, Any]:
        """A run row's fields known at its start (its end's record carries them too)."""
        return {
            RunRow.id: record["run"],
            RunRow.worker: record["worker"],
            RunRow.attempt: record["attempt"],
            RunRow.started_at: moment(record["started_at"]),
            RunRow.node: record["node"],
            RunRow.node_id: record.get("node_id"),
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
                self._fill_pid(record["run"], record.get("pid"))
                return  # its end was applied before: a replay, or the node's late end of a run recorded lost
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
            self._fill_pid(finished["run"], pid)
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
            if record.get("stdout") or record.get("stderr"):
                # What it printed (cut to its worker's keep_output by the supervisor already).
                statements.insert(self.db, OutputRow, {OutputRow.run: record["run"], OutputRow.stdout_tail:
                                  record.get("stdout") or "", OutputRow.stderr_tail: record.get("stderr") or ""},
                                  ignore_conflict=True)
            if outcome.counted:  # a success; an interrupted run is counted neither way
                fields[WorkerRow.success_count] = statements.Add(1)
                fields[WorkerRow.consecutive_failures] = 0
                fields[WorkerRow.last_success_at] = finished_at
        statements.update(self.db, WorkerRow, fields, record["worker"])

    def _command_done(self, record: Record) -> None:
        CommandRow.update(done_at=moment(record["at"]), result=record["result"]).where(
            CommandRow.id == record["command"], CommandRow.done_at.is_null()
        ).execute()

    def _alert_state(self, record: Record) -> None:
        WorkerRow.update(alert_signature=record["signature"], alert_sent_at=moment(record["sent_at"])).where(
            WorkerRow.name == record["worker"]).execute()

    def _worker_paused(self, record: Record) -> None:
        WorkerRow.update(paused=record["paused"], pause_reason=record.get("reason")).where(
            WorkerRow.name == record["worker"], WorkerRow.updated_at <= moment(record["at"])
        ).execute()

    # -- start-up ---------------------------------------------------------------------------------------------

    def recover_lost(self) -> list[dict[str, Any]]:
        """Mark runs an earlier supervisor on this node left unfinished as `lost`; return them (for the alerts).

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
                lost = []
                for run in orphans:
                    verdict = Verdict(Outcome.LOST, f"the supervisor (pid {run.supervisor_pid}) died during the run")
                    worker = run.worker_id  # type: ignore[attr-defined]  # peewee's accessor for the FK's value
                    lost.append({"id": run.id, "worker": worker, "attempt": run.attempt, "pid": run.pid,
                                 "started_at": run.started_at, "message": verdict.message})
                    self._run_finished(
                        records.run_finished(
                            run.id, worker, run.attempt, run.started_at, now, (now - run.started_at).total_seconds(),
                            verdict, run.node, run.supervisor_pid, pid=run.pid,
                        )
                    )
        return lost


HISTORY_STATES = (WorkerState.BROKEN.value, WorkerState.RETIRED.value)
"""A worker row in one of these keeps it when a late run's start or end is applied: that run is history."""



APPLY = {
    "workers_synced": RecordApplier._workers_synced,
    "broken": RecordApplier._broken,
    "run_started": RecordApplier._run_started,
    "run_spawned": RecordApplier._run_spawned,
    "run_finished": RecordApplier._run_finished,
    "command_done": RecordApplier._command_done,
    "worker_paused": RecordApplier._worker_paused,
    "alert_state": RecordApplier._alert_state,
}


def _still_running_since(pid: int, started_at: datetime) -> bool:
    """Tell whether process `pid` exists and is older than `started_at` (so not a reuse of a dead one's pid)."""
    try:
        created = datetime.fromtimestamp(psutil.Process(pid).create_time(), timezone.utc).replace(tzinfo=None)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True
    return created <= started_at


def _workers_of(records: list[Record]) -> list[str] | None:
    """The workers whose rows a batch may update (None: all of them, as a workers' sync retires the others)."""
    if any(record["type"] == "workers_synced" for record in records):
        return None
    return [str(record["worker"] if "worker" in record else record.get("name")) for record in records
            if "worker" in record or record["type"] == "broken"]
