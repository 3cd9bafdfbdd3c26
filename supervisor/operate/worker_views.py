"""The workers as the record has them: rows of the table for `status`, `health` and `status --json`, read from the
database (never from a running supervisor), with which supervisor is alive and the database's clock."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .dashboard import ACTIVE_STATES, WorkerView
from .liveness import Liveness, is_overdue, liveness, run_nodes
from .report import last_failures
from ..record.nodes_view import database_now
from ..record.store import Store


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """Everything `status` shows, read at one moment."""

    alive: Liveness
    rows: list[WorkerView]
    now: datetime
    """The database's clock, against which ages and overdue are judged."""


def read_status(store: Store, with_liveness: bool = True) -> StatusSnapshot:
    """Read the workers' rows (and who runs them) from an open store."""
    alive = liveness(store) if with_liveness else Liveness("", None)
    workers = store.workers()
    failed_at = last_failures(store, workers)
    now = database_now(store)
    nodes = run_nodes(store, [row.name for row in workers])
    return StatusSnapshot(alive, [row_view(row, failed_at.get(row.name), now, nodes.get(row.name)) for row in workers], now)


def row_view(row: Any, last_failure_at: datetime | None = None, now: datetime | None = None,
             node: str | None = None) -> WorkerView:
    """Turn a worker row of the database into a row of the table (`last_failure_at` from the failure table; at
    `now`, the database's clock, an idle worker's late next run is marked overdue; `node` ran its latest run)."""
    state = row.status
    if state == "idle" and getattr(row, "paused", False):
        # A pause is kept beside the status; a run in progress still shows as running.
        state = "quarantined" if getattr(row, "pause_reason", None) else "paused"
    active = state in ACTIVE_STATES
    return WorkerView(
        name=row.name,
        state=state,
        pid=row.pid,
        last_outcome=row.last_outcome,
        last_run_at=row.last_run_at,
        duration=row.last_duration,
        next_run_at=row.next_run_at,
        successes=row.success_count,
        failures=row.failure_count,
        last_error=row.last_error,
        # The row keeps no start of its own for the run in progress: last_run_at is that run's start.
        running_since=row.last_run_at if active else None,
        timeout=row.timeout,
        consecutive_failures=row.consecutive_failures or 0,
        schedule=getattr(row, "schedule", None),
        last_failure_at=last_failure_at,
        overdue=state == "idle" and now is not None and is_overdue(row.next_run_at, row.interval, now),
        node=node,
    )
