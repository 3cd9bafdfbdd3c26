"""The records the supervisor writes: plain JSON-ready dicts, each safe to apply more than once.

Every record is written to the local journal first and applied to the database later (by the recorder), maybe
twice: after a crash, a record whose commit was not yet acknowledged is replayed. So each record carries its
own idempotency key: a run's id (a run starts once and finishes once) or an event id (a module breaking).
Counters change only together with the row that proves the change happened for the first time.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from ..outcome import Verdict
from ..worker import WorkerDefinition

Record = dict[str, Any]


def timestamp(moment: datetime | None) -> str | None:
    """Encode a naive-UTC datetime for a record."""
    return moment.isoformat() if moment is not None else None


def moment(text: str | None) -> datetime | None:
    """Decode a record's timestamp."""
    return datetime.fromisoformat(text) if text else None


def workers_synced(
    definitions: list[WorkerDefinition], broken: list[str], at: datetime, next_runs: dict[str, datetime] | None = None
) -> Record:
    """The spawner reported these workers; every other row but the broken ones is retired.

    `next_runs` holds each worker's next slot, so a supervisor started later knows which slots it missed.
    """
    return {
        "type": "workers_synced",
        "definitions": [d.to_dict() for d in definitions],
        "broken": sorted(broken),
        "next_runs": {name: timestamp(moment) for name, moment in (next_runs or {}).items()},
        "at": timestamp(at),
    }


def broken(
    name: str,
    module: str,
    message: str,
    at: datetime,
    traceback: str = "",
    stderr: str = "",
    exit_code: int | None = None,
    signal: int | None = None,
) -> Record:
    """A module failed to import (name == module), or one worker's definition is invalid."""
    return {
        "type": "broken",
        "event": uuid.uuid4().hex,
        "name": name,
        "module": module,
        "message": message,
        "traceback": traceback,
        "stderr": stderr,
        "exit_code": exit_code,
        "signal": signal,
        "at": timestamp(at),
    }


def run_started(
    run: str,
    worker: str,
    attempt: int,
    started_at: datetime,
    next_run_at: datetime | None,
    node: str,
    supervisor_pid: int,
    skipped: int = 0,
    node_id: str | None = None,
) -> Record:
    """A run was requested; `skipped` counts the worker's ticks missed since its last record; `node_id` is the
    node incarnation that claimed it (on PostgreSQL)."""
    return {
        "type": "run_started",
        "run": run,
        "worker": worker,
        "attempt": attempt,
        "started_at": timestamp(started_at),
        "next_run_at": timestamp(next_run_at),
        "node": node,
        "supervisor_pid": supervisor_pid,
        "skipped": skipped,
        "node_id": node_id,
    }


def run_spawned(run: str, worker: str, pid: int) -> Record:
    """The run's child got this pid."""
    return {"type": "run_spawned", "run": run, "worker": worker, "pid": pid}


def run_finished(
    run: str,
    worker: str,
    attempt: int,
    started_at: datetime,
    finished_at: datetime,
    duration: float,
    verdict: Verdict,
    node: str,
    supervisor_pid: int,
    pid: int | None = None,
    exit_code: int | None = None,
    signal: int | None = None,
    cpu_time: float | None = None,
    peak_rss: int | None = None,
    stderr: str = "",
    stdout: str = "",
    next_run_at: datetime | None = None,
    skipped: int = 0,
    node_id: str | None = None,
) -> Record:
    """A run ended. Carries what its start carried too, so it stands alone if the start was never applied."""
    return {
        "type": "run_finished",
        "run": run,
        "worker": worker,
        "attempt": attempt,
        "started_at": timestamp(started_at),
        "finished_at": timestamp(finished_at),
        "duration": duration,
        "outcome": verdict.outcome.value,
        "message": verdict.message,
        "traceback": verdict.traceback,
        "node": node,
        "supervisor_pid": supervisor_pid,
        "pid": pid,
        "exit_code": exit_code,
        "signal": signal,
        "cpu_time": cpu_time,
        "peak_rss": peak_rss,
        "stderr": stderr,
        "stdout": stdout,
        "next_run_at": timestamp(next_run_at),
        "skipped": skipped,
        "node_id": node_id,
    }


def command_done(command: int, result: str, at: datetime) -> Record:
    """The supervisor took up an operator's command; `result` says what it did."""
    return {"type": "command_done", "command": command, "result": result, "at": timestamp(at)}


def alert_state(worker: str, signature: str | None, sent_at: datetime | None) -> Record:
    """What was last told of a worker (notify/policy.py): the failure alerted and when; None after a recovery."""
    return {"type": "alert_state", "worker": worker, "signature": signature, "sent_at": timestamp(sent_at)}


def worker_paused(worker: str, paused: bool, at: datetime, reason: str | None = None) -> Record:
    """A worker was paused (it keeps no schedule) or resumed; `reason` says why the supervisor paused it."""
    return {"type": "worker_paused", "worker": worker, "paused": paused, "reason": reason, "at": timestamp(at)}
