"""The event every sink receives: one documented, versioned JSON payload (docs/notify-payload.md).

Built by the supervisor from what it knows of the run (the child never reports its own crash); bounded (the
stderr tail is cut to 4 KiB); never carrying the database URL or its password.
"""
from __future__ import annotations

import socket
import uuid
from datetime import datetime, timezone
from typing import Any

PAYLOAD_VERSION = 1
TAIL_LIMIT = 4096


def moment(value: datetime | float | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, timezone.utc)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def tail(text: str | None, limit: int = TAIL_LIMIT) -> str:
    data = (text or "").encode()
    return data[-limit:].decode("utf-8", errors="ignore") if len(data) > limit else (text or "")


def run_event(event: str, worker: str, node: str, supervisor_pid: int, run: dict[str, Any],
              state: dict[str, Any], note: str = "") -> dict[str, Any]:
    """An event about one run: `run` has id, attempt, outcome, exit_code, signal (a name), pid, started_at,
    ended_at, duration, message, traceback, stderr; `state` the worker's counts."""
    outcome = run.get("outcome")
    what = {"failure": f"failed: {run.get('message') or outcome}", "recovery": "succeeded again",
            "quarantine": f"quarantined: {run.get('message') or outcome}", "lost": f"lost: {run.get('message')}",
            "start": "started", "success": "succeeded"}.get(event, event)
    streak = state.get("consecutive_failures") or 0
    text = f"{worker} {what} on {node}" + (f" ({streak} failure(s) in a row)" if event == "failure" and streak else "")
    return {
        "version": PAYLOAD_VERSION,
        "event": event,
        "text": text + (f"; {note}" if note else ""),
        "host": socket.gethostname(),
        "node": node,
        "supervisor_pid": supervisor_pid,
        "worker": worker,
        "run": {
            "id": str(uuid.UUID(run["id"])) if run.get("id") else None,
            "attempt": run.get("attempt"),
            "outcome": outcome,
            "exit_code": run.get("exit_code"),
            "signal": run.get("signal"),
            "pid": run.get("pid"),
            "started_at": moment(run.get("started_at")),
            "ended_at": moment(run.get("ended_at")),
            "duration_s": run.get("duration"),
            "message": run.get("message") or "",
            "traceback": tail(run.get("traceback")),
            "stderr_tail": tail(run.get("stderr")),
        },
        "worker_state": state,
    }


def summary_event(workers: list[str], node: str, supervisor_pid: int) -> dict[str, Any]:
    """The messages folded by the rate limit, as one."""
    names = sorted(set(workers))
    return {
        "version": PAYLOAD_VERSION,
        "event": "summary",
        "text": f"{len(workers)} more alert(s) in the last minute, held back by max_per_minute: "
                + ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else ""),
        "host": socket.gethostname(),
        "node": node,
        "supervisor_pid": supervisor_pid,
        "workers": names,
        "count": len(workers),
    }


def test_event(worker: str | None, node: str) -> dict[str, Any]:
    """`notify test`: a synthetic failure, marked as a test."""
    name = worker or "notify-test"
    return {
        "version": PAYLOAD_VERSION,
        "event": "test",
        "text": f"worker-supervisor test notification for {name} from {node}: if you read this, the sink works",
        "host": socket.gethostname(),
        "node": node,
        "supervisor_pid": None,
        "worker": name,
        "run": None,
        "worker_state": None,
    }
