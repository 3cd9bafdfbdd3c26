"""Whether the work is being done, as `status` says it: which supervisor is alive (the line before the table, and
exit status 2 when none is), which workers are overdue, and the node that ran each worker last.

On PostgreSQL every judgement is made against the database's clock (record/nodes_view.py), never this host's; on
SQLite, whose one supervisor holds a lock on the database's file, against the lock (record/ownership.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .dashboard import ago
from ..record import ownership
from ..record.nodes_view import NodeView, database_now, is_postgres, last_node, latest_run_nodes, read_nodes
from ..record.store import Store

NO_SUPERVISOR = 2
"""`status`'s exit status when no supervisor is alive (1 is an error, e.g. an unreachable database)."""
OVERDUE_MIN = 1.0
"""A worker is overdue once its next run is this many seconds late, or a tenth of its period if that is more."""
CRON_PERIOD = 60.0
"""The period assumed for a cron schedule's tolerance (its finest): 6 seconds late is overdue."""


@dataclass(frozen=True, slots=True)
class Liveness:
    """Who runs the workers of a database: one line to print, and whether any supervisor is alive."""

    line: str
    alive: bool | None
    """True or False; None when it cannot be told (a lock file this user may not read)."""


def liveness(store: Store) -> Liveness:
    """Tell who runs the workers: the live nodes on PostgreSQL, the lock's holder on SQLite."""
    if is_postgres(store):
        alive = read_nodes(store).alive
        if alive:
            return Liveness(f"nodes: {len(alive)} alive ({', '.join(node.name for node in alive)})", True)
        last = last_node(store)
        return Liveness(f"no supervisor is alive ({_last_words(last, store)})", False)
    holder = ownership.probe(store.url)
    if holder is None or holder.running is None:
        why = holder.problem if holder is not None else "not a SQLite file"
        return Liveness(f"supervisor: unknown ({why})", None)
    if not holder.running:
        return Liveness("no supervisor is running", False)
    if holder.pid is None:
        return Liveness("supervisor: running (it has not said who it is yet)", True)
    return Liveness(f"supervisor: running (pid {holder.pid} on {holder.host})", True)


def _last_words(last: NodeView | None, store: Store) -> str:
    if last is None:
        return "none has run on this database yet"
    when = ago(last.moment(), database_now(store))
    if last.state == "stopped":
        return f"last: node {last.name}, stopped {when}"
    if last.state == "dead":
        return f"last: node {last.name}, declared dead {when}" + (f" by {last.ended_by_name}" if last.ended_by_name else "")
    return f"last: node {last.name}, its lease lapsed; last heartbeat {when}"


def is_overdue(next_run_at: datetime | None, interval: float | None, now: datetime) -> bool:
    """Tell whether a run due at `next_run_at` is late by more than max(1 s, a tenth of its period) at `now`."""
    if next_run_at is None:
        return False
    tolerance = max(OVERDUE_MIN, 0.1 * (interval or CRON_PERIOD))
    return next_run_at < now - timedelta(seconds=tolerance)


def run_nodes(store: Store, workers: list[str]) -> dict[str, str]:
    """The node of each worker's latest run, when a node column says something: always on PostgreSQL, on SQLite
    only when the runs came from more than one host (the file was moved); else no column (empty)."""
    shown = set(workers)
    found = {worker: node for worker, node in latest_run_nodes(store).items() if worker in shown}
    if is_postgres(store) or len(set(found.values())) > 1:
        return found
    return {}
