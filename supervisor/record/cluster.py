"""The nodes' ledger on PostgreSQL: node leases, the claim that makes each slot run once, and the declaration of
dead nodes. The coordinator process (coordinator.py) is its only user while a supervisor runs.

No leader and no consensus of our own: PostgreSQL decides. A slot runs only after its `tick` row was inserted
under the unique index on (worker, slot_no), in a transaction that also found, with the database's clock, the
claimant's lease valid, the worker not paused and (unless its overlap is `allow`) no run of it in flight on a
node not declared dead. Every time compared here is the database's (`clock_timestamp()`), so the nodes' clocks
only choose when to try. A node whose lease ran out `grace` ago is declared dead by whichever peer gets there
first (a row lock decides), and the runs it had in flight become `lost`: they were its children, and died with it
or were killed by its own spawner before its lease ran out (fencing, spawn/fence.py).

The design, and the systems it learned from (Quartz, GoodJob, Solid Queue, db-scheduler, Oban): docs/design.md,
"Several nodes on one PostgreSQL".
"""
from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import records
from .. import __version__
from ..outcome import Outcome, Verdict
from .claim_sql import CLAIM_FUNCTION
from .store import Store

NOW = "(clock_timestamp() AT TIME ZONE 'UTC')"
"""The database's clock as the naive UTC every timestamp column holds."""
CLAIM_LOCK = "worker-supervisor:claim:"
"""Prefix of the transaction-scoped advisory lock that serialises the claims of one worker."""


@dataclass(frozen=True, slots=True)
class Member:
    """A live node as its peers see it: who may run which workers."""

    id: str
    name: str
    workers: frozenset[str]


@dataclass(frozen=True, slots=True)
class Claim:
    """What a claim came to. `result` is one of:

    won      the slot is ours: run it (`tick`; `skipped` interval slots nobody claimed since the last claim, and
             `last_at`, that claim's slot, from which a cron schedule counts its own);
    taken    another node claimed it (`taken_at`: that slot's time, to line our timetable up with);
    busy     a run of the worker is in flight on a live node: the slot is skipped (and the ledger says so);
    paused   an operator paused the worker;
    fenced   our lease is not valid (or about to lapse): we claim nothing.
    """

    result: str
    tick: int | None = None
    skipped: int = 0
    taken_at: float | None = None
    last_at: float | None = None


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """One slot (or extra run) a node asks for: see NodeLedger.claim."""

    worker: str
    slot_at: datetime
    period: float | None
    overlap: str
    run: str
    scheduled: bool = True
    command: int | None = None


@dataclass(frozen=True, slots=True)
class Lost:
    """A run in flight on a node that was declared dead."""

    run: str
    worker: str


class NodeLedger:
    """Node registration, heartbeat, claims and declarations of death, on one Store's PostgreSQL connection."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # peewee's Database methods are untyped calls to mypy: through Any, as statements.py does.
        self.db: Any = store.db

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.db.execute_sql(sql, params).fetchone()

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return list(self.db.execute_sql(sql, params).fetchall())

    # -- a node's life ------------------------------------------------------------------------------------------

    def register(self, node: str, name: str, lease: float, workers: list[str], pid: int) -> datetime:
        """Add this incarnation (of the supervisor `pid`) as a live node with a fresh lease; return the database's
        time.

        It has seen, from the start, every node live as it registers: those may go on claiming. A later heartbeat
        acknowledges only what the supervisor was told at the one before (see heartbeat), so that a node never
        lets a peer claim while it may still believe itself alone. A newcomer cannot believe that before its
        supervisor has its first renewal, whose members (read after this) include every node acknowledged here.
        Registering with none seen fenced every live node for a heartbeat or two whenever one joined: the
        slots due meanwhile ran late or not at all.
        """
        with self.db.atomic():
            row = self._one(
                f"INSERT INTO node (id, name, host, pid, version, state, started_at, heartbeat_at, lease_seconds,"
                f" lease_until, lease_since, running, workers, seen)"
                f" VALUES (%s, %s, %s, %s, %s, 'alive', {NOW}, {NOW}, %s, {NOW} + %s * interval '1 second', {NOW},"
                f" 0, %s, (SELECT coalesce(json_agg(live.id), '[]'::json)::text FROM node AS live"
                f" WHERE live.state = 'alive' AND live.lease_until > {NOW})) RETURNING heartbeat_at",
                (node, name, socket.gethostname(), pid, __version__, lease, lease, json.dumps(workers)),
            )
        return row[0]  # type: ignore[no-any-return]

    def heartbeat(
        self, node: str, lease: float, running: int, workers: list[str], clock_offset: float | None,
        in_flight: list[str] | None = None, seen: list[str] | None = None,
        unclaimed: list[tuple[str, str]] | None = None,
    ) -> datetime | None:
        """Renew our lease from the database's now; return that time, or None if we were declared dead.

        `lease_since` moves only when the lease had lapsed: it says how long we have held it without a gap.
        With `in_flight` (our runs and unanswered claims), our other ticks still open are closed: a claim that
        committed while its answer was lost with the connection would otherwise keep its worker busy for good.
        `seen` are the live nodes we read at our last heartbeat: from now on, they may claim (see claim). So our
        `unclaimed` runs in flight (run id, worker: started alone, without a claim) enter the ledger in the same
        transaction: a node that may claim from now on finds them in flight.
        """
        with self.db.atomic():
            row = self._one(
                f"UPDATE node SET heartbeat_at = {NOW},"
                f" lease_since = CASE WHEN lease_until >= {NOW} THEN lease_since ELSE {NOW} END,"
                f" lease_until = {NOW} + %s * interval '1 second', lease_seconds = %s, running = %s, workers = %s,"
                f" clock_offset = %s, seen = coalesce(%s, seen)"
                f" WHERE id = %s AND state = 'alive' RETURNING heartbeat_at",
                (lease, lease, running, json.dumps(workers), clock_offset,
                 None if seen is None else json.dumps(seen), node),
            )
            for run, worker in unclaimed or []:
                if row is not None:
                    self.db.execute_sql(
                        f"INSERT INTO tick (worker, slot_at, kind, node, claimed_at, state, skipped, run_id)"
                        f" SELECT %s, {NOW}, 'extra', %s, {NOW}, 'running', 0, %s"
                        f" WHERE NOT EXISTS (SELECT 1 FROM tick WHERE run_id = %s)",
                        (worker, node, run, run),
                    )
            if row is not None and in_flight is not None:
                self.db.execute_sql(
                    "UPDATE tick SET state = 'done' WHERE node = %s AND state = 'running'"
                    " AND NOT (run_id = ANY(%s))",
                    (node, in_flight),
                )
        return None if row is None else row[0]

    def paused(self, workers: list[str]) -> dict[str, str | None]:
        """Which of these workers the record says are paused, and why (None: an operator)."""
        return dict(self._all("SELECT name, pause_reason FROM worker WHERE name = ANY(%s) AND paused", (workers,)))

    def ticks_of(self, runs: list[str]) -> dict[str, int]:
        """The ticks of these runs (by run id), for those the ledger has."""
        if not runs:
            return {}
        return {run: int(tick) for run, tick in self._all("SELECT run_id, id FROM tick WHERE run_id = ANY(%s)", (runs,))}

    def last_slots(self, workers: list[str]) -> dict[str, tuple[float, str]]:
        """The time of each worker's last claimed slot, for the nodes to keep their timetables in step with, and
        the name of the node that claimed it, for their tables to show."""
        rows = self._all(
            "SELECT DISTINCT ON (t.worker) t.worker, t.slot_at, n.name FROM tick t JOIN node n ON n.id = t.node"
            " WHERE t.worker = ANY(%s) AND t.slot_no IS NOT NULL ORDER BY t.worker, t.slot_no DESC",
            (workers,),
        )
        return {worker: (_unix(slot_at), name) for worker, slot_at, name in rows}

    def prune_ticks(self, older_than_hours: float) -> int:
        """Delete ticks older than this, but each worker's last numbered one (the next claim counts from it)."""
        with self.db.atomic():
            cursor = self.db.execute_sql(
                f"DELETE FROM tick AS t WHERE t.claimed_at < {NOW} - %s * interval '1 hour' AND t.state <> 'running'"
                " AND (t.slot_no IS NULL OR EXISTS (SELECT 1 FROM tick AS later WHERE later.worker = t.worker"
                " AND later.slot_no > t.slot_no))",
                (older_than_hours,),
            )
        return int(cursor.rowcount)

    def members(self) -> list[Member]:
        """The live nodes: alive, with a lease the database finds valid now."""
        rows = self._all(f"SELECT id, name, workers FROM node WHERE state = 'alive' AND lease_until > {NOW}")
        return [Member(id, name, frozenset(json.loads(workers or "[]"))) for id, name, workers in rows]

    def declared_by(self, node: str) -> tuple[str, str] | None:
        """Who declared this incarnation dead, and when (for the log line), if it was."""
        row = self._one(
            "SELECT coalesce(d.name, n.ended_by, '?'), n.ended_at FROM node n LEFT JOIN node d ON d.id = n.ended_by"
            " WHERE n.id = %s AND n.state = 'dead'",
            (node,),
        )
        return None if row is None else (str(row[0]), f"{row[1]:%H:%M:%S}" if row[1] else "?")

    def stop(self, node: str) -> None:
        """A clean stop: our runs have ended; peers take our workers at once, without waiting out the lease.

        Every tick of ours still open is closed with it: no heartbeat comes after to close it, and left `running`
        it made every peer's claim of that worker `busy` for good (a rolling deploy lost the worker's slots). The
        slots won but never started are given back before this (give_back); this is what remains if that failed.
        """
        with self.db.atomic():
            self.db.execute_sql(
                f"UPDATE node SET state = 'stopped', ended_at = {NOW}, end_reason = 'stopped' WHERE id = %s"
                " AND state = 'alive'",
                (node,),
            )
            self.db.execute_sql("UPDATE tick SET state = 'done' WHERE node = %s AND state = 'running'", (node,))

    # -- the dead ------------------------------------------------------------------------------------------------

    def declare_dead(self, me: str, grace: float) -> list[tuple[str, str, list[Lost]]]:
        """Declare dead every node whose lease ran out `grace` ago, and record its runs in flight `lost`.

        Only while we ourselves have held our lease without a gap for longer than the victim's lease plus grace:
        after an outage of the database that every node saw, nobody's heartbeat is held against it. The UPDATE
        takes each victim's row lock, so of several peers trying at once exactly one declares it.
        Returns (name, description, runs lost) for each node declared.
        """
        declared = []
        with self.db.atomic():
            dead = self._all(
                f"UPDATE node AS victim SET state = 'dead', ended_at = {NOW}, ended_by = %s,"
                f" end_reason = 'lease expired'"
                f" FROM node AS me WHERE me.id = %s AND me.state = 'alive' AND victim.state = 'alive'"
                f" AND victim.id <> me.id"
                f" AND victim.lease_until + %s * interval '1 second' < {NOW}"
                f" AND me.lease_since <= {NOW} - (victim.lease_seconds + %s) * interval '1 second'"
                f" RETURNING victim.id, victim.name, victim.host, victim.pid, victim.heartbeat_at, me.name",
                (me, me, grace, grace),
            )
            lost_ticks = {
                victim: self._all(
                    "UPDATE tick SET state = 'lost' WHERE node = %s AND state = 'running'"
                    " RETURNING run_id, worker, claimed_at",
                    (victim,),
                )
                for victim, *_ in dead
            }
            # Their runs' workers are updated below, as a recorder updates them: both lock them in name order.
            self.store.lock_workers([worker for ticks in lost_ticks.values() for _, worker, _ in ticks])
            for victim, name, host, pid, heartbeat_at, my_name in dead:
                ticks = lost_ticks[victim]
                now = self._one(f"SELECT {NOW}")[0]
                message = (
                    f"node {name} ({host}:{pid}) was declared dead by {my_name} at {now:%H:%M:%S}; its last heartbeat"
                    f" was at {heartbeat_at:%H:%M:%S}"
                )
                lost = []
                for run, worker, claimed_at in ticks:
                    if run is None:
                        continue
                    # The same path as a recorded end: first writer wins, so a late result of the run (its node's
                    # journal, replayed after a partition) never replaces this.
                    self.store._run_finished(records.run_finished(
                        run, worker, 1, claimed_at, now, (now - claimed_at).total_seconds(),
                        Verdict(Outcome.LOST, message), name, pid, node_id=victim,
                    ))
                    lost.append(Lost(run, worker))
                declared.append((name, f"{host}:{pid}", lost))
        return declared

    # -- claims --------------------------------------------------------------------------------------------------

    def claim(
        self,
        me: str,
        worker: str,
        slot_at: datetime,
        period: float | None,
        overlap: str,
        run: str,
        margin: float,
        scheduled: bool = True,
        command: int | None = None,
    ) -> Claim:
        """Claim the worker's slot at `slot_at` for run `run`, in one short transaction (see the module's note).

        Slots are numbered per worker: a cron slot by its own time (exact on every node), an interval slot
        counting on from the last one claimed (see claim_sql.py), so nodes whose clocks or timetables differ by
        less than a quarter of a period name the same slot alike. `scheduled=False` is a run that
        is not a slot (a trigger, a retry, a queued run): it gets a row, unnumbered, so its run is seen in flight;
        a trigger's row names its `command`, which only one row may name.
        """
        return self.claim_many(me, margin, [ClaimRequest(worker, slot_at, period, overlap, run, scheduled, command)])[0]

    def claim_many(self, me: str, margin: float, requests: list[ClaimRequest]) -> list[Claim]:
        """Several claims in one statement (one transaction), answered in order. The workers' locks are taken in
        the order of their names, on every node, so two nodes' batches never wait for each other in a circle."""
        order = sorted(range(len(requests)), key=lambda i: requests[i].worker)
        rows = ", ".join(["(%s::int, %s::text, %s::timestamp, %s::float8, %s::text, %s::text, %s::bool, %s::bigint)"]
                         * len(requests))
        params: list[Any] = []
        for position, i in enumerate(order):
            r = requests[i]
            params += [position, r.worker, r.slot_at, r.period, r.overlap, r.run, r.scheduled, r.command]
        found = self._all(
            f"SELECT c.i, f.* FROM (VALUES {rows}) AS c(i, worker, slot_at, period, overlap, run, scheduled, command)"
            f" CROSS JOIN LATERAL {CLAIM_FUNCTION}(%s, c.worker, c.slot_at, c.period, c.overlap, c.run, %s,"
            f" c.scheduled, c.command) AS f ORDER BY c.i",
            (*params, me, margin),
        )
        claims: list[Claim] = [Claim("unavailable")] * len(requests)
        for position, result, tick, skipped, taken_at, last_at in found:
            claims[order[position]] = Claim(result, tick, skipped or 0, None if taken_at is None else _unix(taken_at),
                                            None if last_at is None else _unix(last_at))
        return claims

    def give_back(self, node: str, runs: list[str]) -> None:
        """Our claims of these runs were won, but the runs will not start (we are stopping): remove their ticks, so
        that their slots (and triggers) are unclaimed again and a peer's backup claim can take them."""
        if runs:
            with self.db.atomic():
                self.db.execute_sql(
                    "DELETE FROM tick WHERE node = %s AND run_id = ANY(%s) AND state = 'running'", (node, runs)
                )

    def ticks_done(self, ticks: list[int]) -> None:
        """Our runs of these ticks ended: other nodes' overlap checks stop counting them at once (their records
        travel through the journal and may come later)."""
        if ticks:
            with self.db.atomic():
                self.db.execute_sql(
                    "UPDATE tick SET state = 'done' WHERE id = ANY(%s) AND state = 'running'", (ticks,)
                )


def _unix(moment: datetime) -> float:
    """A naive-UTC datetime as Unix time."""
    return moment.replace(tzinfo=timezone.utc).timestamp()
