"""Read-only views of the nodes for the command line (`nodes`, and the line `status` starts with): the node rows,
the database's clock they are judged by, and the node of each worker's latest run.

A node is alive when its state is alive and its lease runs past the database's now; on PostgreSQL "now" is the
database's clock, never this host's, since the nodes' clocks (and the operator's) may differ. SQLite has no nodes
(one supervisor; record/ownership.py tells whether it runs).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import peewee

from .schema import NodeRow, RunRow, utcnow
from .store import Store

RECENT = timedelta(hours=24)
"""Nodes that stopped, died or let their lease lapse longer ago than this are left out of the listing."""
DATABASE_NOW = "SELECT (clock_timestamp() AT TIME ZONE 'UTC')"


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as the command line shows it, judged against the database's clock."""

    id: str
    name: str
    host: str
    pid: int
    version: str
    state: str
    """alive, expired (state alive, its lease lapsed), stopped or dead."""
    started_at: datetime
    heartbeat_at: datetime
    lease_until: datetime
    clock_offset: float | None
    running: int
    workers: list[str]
    ended_at: datetime | None
    ended_by: str | None
    """The id of the node that declared this one dead."""
    ended_by_name: str | None
    end_reason: str | None

    @property
    def alive(self) -> bool:
        return self.state == "alive"

    def moment(self) -> datetime:
        """When it last did something: its end, else its last heartbeat (what the listing's window counts from)."""
        return self.ended_at or self.heartbeat_at

    def last_seen(self) -> datetime:
        """When it was last known alive: its clean stop, else its last heartbeat (a dead one died before it was
        declared dead)."""
        return self.ended_at if self.state == "stopped" and self.ended_at else self.heartbeat_at


@dataclass(frozen=True, slots=True)
class Nodes:
    """The nodes of the last RECENT (alive and expired ones first), the database's now, and how many older
    nodes were left out."""

    now: datetime
    nodes: list[NodeView]
    older: int

    @property
    def alive(self) -> list[NodeView]:
        return [node for node in self.nodes if node.alive]


def is_postgres(store: Store) -> bool:
    """Tell whether the store is on PostgreSQL (the only database with nodes)."""
    return isinstance(store.db, peewee.PostgresqlDatabase)


def database_now(store: Store) -> datetime:
    """The database's clock as naive UTC on PostgreSQL; this host's on SQLite (the database is a local file)."""
    if not is_postgres(store):
        return utcnow()
    db: Any = store.db  # peewee's execute_sql is untyped
    with store.unavailable_as("cannot read the database's clock"):
        now: datetime = db.execute_sql(DATABASE_NOW).fetchone()[0]
    return now


def read_nodes(store: Store, recent: timedelta = RECENT) -> Nodes:
    """Every node alive now, and those that ended (or whose lease lapsed) within `recent` of the database's now."""
    now = database_now(store)
    with store.unavailable_as("cannot read nodes"):
        rows = list(NodeRow.select())
    names = {row.id: row.name for row in rows}
    views = [_view(row, now, names) for row in rows]
    shown = [view for view in views if view.alive or view.moment() >= now - recent]
    order = {"alive": 0, "expired": 1, "stopped": 2, "dead": 3}
    shown.sort(key=lambda view: (order.get(view.state, 4), view.name, -view.moment().timestamp()))
    return Nodes(now, shown, len(views) - len(shown))


def last_node(store: Store) -> NodeView | None:
    """The node that was alive last (`NodeView.last_seen`), whenever that was; None if none ever was."""
    now = database_now(store)
    with store.unavailable_as("cannot read nodes"):
        rows = list(NodeRow.select())
    if not rows:
        return None
    names = {row.id: row.name for row in rows}
    return max((_view(row, now, names) for row in rows), key=lambda view: view.last_seen())


def latest_run_nodes(store: Store) -> dict[str, str]:
    """The name of the node that ran each worker's latest run, by worker (one grouped query on run's index)."""
    latest = (RunRow.select(RunRow.worker.alias("w"), peewee.fn.MAX(RunRow.started_at).alias("m"))
              .group_by(RunRow.worker).alias("latest"))
    query = (RunRow.select(RunRow.worker, RunRow.node)
             .join(latest, on=((RunRow.worker == latest.c.w) & (RunRow.started_at == latest.c.m))))
    with store.unavailable_as("cannot read runs"):
        rows: Any = query.tuples()  # peewee's types say models, tuples() gives tuples
        return {str(worker): str(node) for worker, node in rows}


def _view(row: NodeRow, now: datetime, names: dict[str, str]) -> NodeView:
    state = str(row.state)
    if state == "alive" and row.lease_until <= now:
        state = "expired"
    try:
        workers = [str(name) for name in json.loads(row.workers or "[]")]
    except ValueError:
        workers = []
    return NodeView(
        id=row.id, name=row.name, host=row.host, pid=row.pid, version=row.version, state=state,
        started_at=row.started_at, heartbeat_at=row.heartbeat_at, lease_until=row.lease_until,
        clock_offset=row.clock_offset, running=row.running or 0, workers=workers, ended_at=row.ended_at,
        ended_by=row.ended_by, ended_by_name=names.get(row.ended_by) if row.ended_by else None,
        end_reason=row.end_reason,
    )
