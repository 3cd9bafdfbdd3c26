"""The reading commands' answers as JSON (`status`, `health`, `history` and `failures` with --json): for scripts,
monitoring and the team's own tools. Times are UTC in ISO 8601 with a `Z`; what a worker printed is passed on as
it is (JSON escapes it); keys are stable: new ones may be added, none renamed.
"""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from typing import Any, Iterable

from .dashboard import WorkerView

FORMAT_VERSION = 1
"""Bumped only when a key changes meaning or goes away."""


def dumps(document: dict[str, Any]) -> str:
    return json.dumps({"format": FORMAT_VERSION, **document}, default=_default, ensure_ascii=False, indent=2)


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return moment(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def moment(value: datetime | None) -> str | None:
    """A timestamp column (naive UTC) or an aware time as `2026-11-27T18:04:05.123456Z`."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.isoformat() + "Z"


WORKER_FIELDS = ("name", "state", "pid", "last_outcome", "last_run_at", "duration", "next_run_at", "successes",
                 "failures", "consecutive_failures", "last_error", "last_failure_at", "running_since", "timeout",
                 "schedule", "overdue", "node")


def worker(view: WorkerView) -> dict[str, Any]:
    values = dataclasses.asdict(view)
    return {key: values[key] for key in WORKER_FIELDS}


def status(snapshot: Any) -> dict[str, Any]:
    """`status --json`: who runs the workers, and every worker's row."""
    return {
        "supervisor": {"alive": snapshot.alive.alive, "says": snapshot.alive.line},
        "database_time": snapshot.now,
        "workers": [worker(view) for view in snapshot.rows],
    }


RUN_FIELDS = ("id", "attempt", "started_at", "finished_at", "duration", "outcome", "exit_code", "signal", "pid",
              "node", "node_id", "cpu_time", "peak_rss")


def runs(worker_name: str, rows: Iterable[Any]) -> dict[str, Any]:
    """`history --json`: a worker's runs, newest first."""
    return {"worker": worker_name, "runs": [{key: getattr(row, key) for key in RUN_FIELDS} for row in rows]}


def run_in_full(run: Any, output: Any, failure: Any) -> dict[str, Any]:
    """`history WORKER --run ID --json`: one run, with what it printed (a failure's tails, or the output kept)."""
    source = failure if failure is not None else output
    return {"run": {"worker": str(run.worker_id), **{key: getattr(run, key) for key in RUN_FIELDS},
                    "failure": None if failure is None else failure.id,
                    "stdout_tail": getattr(source, "stdout_tail", ""), "stderr_tail": getattr(source, "stderr_tail", "")}}


def failure_summary(row: Any) -> dict[str, Any]:
    return {"id": row.id, "worker": str(row.worker_id), "run": row.run_id, "created_at": row.created_at,
            "kind": row.kind, "message": row.message, "exit_code": row.exit_code, "signal": row.signal}


def failures(rows: Iterable[Any]) -> dict[str, Any]:
    """`failures --json`: the newest failures, without their long texts (`--id N --json` has them)."""
    return {"failures": [failure_summary(row) for row in rows]}


def failure(row: Any) -> dict[str, Any]:
    """`failures --id N --json`: one failure in full."""
    return {"failure": {**failure_summary(row), "traceback": row.traceback, "stderr_tail": row.stderr_tail,
                        "stdout_tail": row.stdout_tail}}
