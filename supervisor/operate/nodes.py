"""`nodes`: the supervisors on a shared PostgreSQL database, as a table or as JSON; on SQLite, one line saying it
runs one supervisor, and whether it runs.

Ages and leases are judged against the database's clock (record/nodes_view.py); stopped and dead nodes are listed
for a day (nodes_view.RECENT).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from rich.console import JustifyMethod
from rich.table import Table
from rich.text import Text

from .dashboard import COMPACT, ago, printable, span
from ..record import ownership
from ..record.nodes_view import RECENT, NodeView, Nodes, read_nodes
from ..record.store import Store

STATE_STYLES = {"alive": "green", "expired": "bold yellow", "stopped": "dim", "dead": "bold red"}
ID_LENGTH = 8
WIDE = 24
"""The most a name, host:pid, version or end takes of the width."""
COLUMNS: tuple[tuple[str, JustifyMethod, int], ...] = (
    ("name", "left", 0), ("id", "left", ID_LENGTH), ("host:pid", "left", 0), ("version", "left", 0),
    ("state", "left", len("expired")), ("heartbeat", "right", len("heartbeat")), ("lease", "right", len("10.0s")),
    ("clock", "right", len("+120ms")), ("runs", "right", len("runs")), ("workers", "right", len("workers")),
    ("ended", "left", 0),
)


def read(store: Store) -> Nodes | ownership.Holder:
    """What `nodes` shows: the nodes on PostgreSQL; on SQLite, who holds its one supervisor's lock (if anyone)."""
    holder = ownership.probe(store.url)
    return read_nodes(store) if holder is None else holder


def table(nodes: Nodes) -> Table | Text:
    """The nodes, alive first: who, where, its state, its heartbeat's age, its lease, its clock, its work."""
    older = f"; {nodes.older} older node(s) not shown" if nodes.older else ""
    if not nodes.nodes:
        return Text(f"no nodes in the last {_hours()}{older} (a supervisor on this database registers one)")
    grid = Table(title="nodes", title_justify="left", box=COMPACT, show_edge=False, pad_edge=False,
                 padding=(0, 1, 0, 0), caption=f"{len(nodes.alive)} alive; stopped and dead nodes of the last "
                 f"{_hours()}{older}", caption_justify="left")
    # The short columns keep their width (a state or an age cut to "stopp…" says nothing); names, hosts,
    # versions and the end give way on a narrow terminal.
    for header, justify, width in COLUMNS:
        grid.add_column(header, justify=justify, no_wrap=True, overflow="ellipsis", min_width=width,
                        max_width=None if width else WIDE)
    for node in nodes.nodes:
        grid.add_row(
            printable(node.name),
            node.id[:ID_LENGTH],
            printable(f"{node.host}:{node.pid}"),
            printable(node.version),
            Text(node.state, style=STATE_STYLES.get(node.state, "")),
            ago(node.heartbeat_at, nodes.now),
            span(lease_left(node, nodes.now)) if node.alive else "-",
            clock(node.clock_offset),
            str(node.running) if node.alive else "-",
            str(len(node.workers)),
            _ended(node, nodes.now),
        )
    return grid


def as_json(nodes: Nodes) -> str:
    """The nodes as one JSON object: the database's now, and each node with its ages computed against it."""
    return json.dumps({
        "database": "postgresql",
        "now": _iso(nodes.now),
        "older_not_shown": nodes.older,
        "nodes": [{
            "name": node.name,
            "id": node.id,
            "host": node.host,
            "pid": node.pid,
            "version": node.version,
            "state": node.state,
            "started_at": _iso(node.started_at),
            "heartbeat_at": _iso(node.heartbeat_at),
            "heartbeat_age_s": round((nodes.now - node.heartbeat_at).total_seconds(), 3),
            "lease_until": _iso(node.lease_until),
            "lease_left_s": round(lease_left(node, nodes.now), 3) if node.alive else None,
            "clock_offset_ms": None if node.clock_offset is None else round(node.clock_offset * 1000, 1),
            "running": node.running,
            "workers": node.workers,
            "ended_at": _iso(node.ended_at),
            "ended_by": node.ended_by,
            "ended_by_name": node.ended_by_name,
            "end_reason": node.end_reason,
        } for node in nodes.nodes],
    }, indent=2)


def sqlite_line(holder: ownership.Holder) -> str:
    """What `nodes` says on SQLite: it runs one supervisor (no nodes), and whether that one runs."""
    head = "SQLite runs one supervisor (nodes need PostgreSQL): "
    if holder.running is None:
        return head + f"whether it runs is unknown ({holder.problem})"
    if not holder.running:
        return head + "none is running"
    if holder.pid is None:
        return head + "running (it has not said who it is yet)"
    since = "" if holder.since is None else f", since {datetime.fromtimestamp(holder.since):%Y-%m-%d %H:%M:%S}"
    return head + f"running, pid {holder.pid} on {holder.host}{since}"


def sqlite_json(holder: ownership.Holder) -> str:
    """The SQLite supervisor as JSON: whether it runs (null when unknown), and who."""
    since = None if holder.since is None else datetime.fromtimestamp(holder.since, timezone.utc).isoformat()
    return json.dumps({"database": "sqlite", "supervisor": {
        "running": holder.running, "host": holder.host, "pid": holder.pid, "since": since, "problem": holder.problem,
    }}, indent=2)


def lease_left(node: NodeView, now: datetime) -> float:
    """Seconds left of a node's lease at the database's `now` (0 once it lapsed)."""
    return max(0.0, (node.lease_until - now).total_seconds())


def clock(offset: float | None) -> str:
    """A node's clock offset from the database's, as `+12ms` (`-` when unknown)."""
    return "-" if offset is None else f"{offset * 1000:+.0f}ms"


def _ended(node: NodeView, now: datetime) -> Any:
    """When it ended (its state says how), and who declared a dead one dead; when an expired one's lease lapsed."""
    if node.state == "dead":
        by = printable(node.ended_by_name or node.ended_by or "?")
        return Text(f"{ago(node.ended_at, now)} by {by}", style="red")
    if node.state == "stopped":
        return ago(node.ended_at, now)
    if node.state == "expired":
        return Text(f"lease lapsed {ago(node.lease_until, now)}", style="yellow")
    return ""


def _hours() -> str:
    return f"{RECENT.total_seconds() / 3600:g} h"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(tzinfo=timezone.utc).isoformat()
