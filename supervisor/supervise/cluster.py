"""This supervisor as one node of several on a shared PostgreSQL: its lease, its claims, its share of the work.

Every node schedules every worker it has, but a slot runs only where its claim won (record/cluster.py: a unique
index on the tick ledger, checked with the database's clock). Who tries first is decided without talking:
rendezvous hashing of (worker, node name) over the live nodes that have the worker ranks them alike on every node;
rank 0 claims at the slot's time, ranks 1 and 2 (the backups) `backup_delay` and twice that later, when the slot
is normally taken already; the rest do not try. So the work spreads over the nodes, a node that stops or dies
costs its workers one backup delay, and a join or a death moves only ~1/N of the workers.

The database work happens in the coordinator process (record/coordinator.py). The lease is renewed only when
this loop asks, so a frozen supervisor loses it; each renewal becomes a deadline for the spawner (spawn/fence.py),
which kills this node's runs before a peer may declare the node dead, even if this loop never runs again.

A node alone (the database showed it no live peer at its last heartbeat) keeps, for as long as its lease holds,
the single supervisor's promise that the database is a record, not the heartbeat: while the database cannot
answer, it runs its slots without claims. That is safe because a newcomer claims nothing until every live node
has seen it (record/cluster.py), and no peer may declare it dead before its lease ran out, by which time it has
stopped and its runs are fenced like any node's. A database failover longer than the lease needs a longer lease.

A slot whose claim the database could not take (it was restarting, or our lease had lapsed in a longer outage)
is owed: once the lease is renewed, its claim goes out again if the slot is still within the worker's misfire
grace (default one period) and no later slot of the worker has come due meanwhile, so one late run makes up for
the slots an outage cost, as a single supervisor does at start (Timetable.begin). The ledger counts the slots
before it as skipped. Every node owes the same slot, so the ranks decide again who runs it, and the unique slot
makes it run once.
"""
from __future__ import annotations

import hashlib
import logging
import os
import select
import selectors
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from .helper import HelperProcess
from ..process import boottime
from ..protocol import COORDINATOR_DB_ENV, Message
from .scheduling import DueRun
from .runs import new_run_id
from .worker_status import WorkerStatus
from ..worker import WorkerDefinition

log = logging.getLogger("supervisor")

BACKUPS = 2
"""Ranks 1..BACKUPS try a slot its first choice did not claim; beyond them nobody does (they would only conflict)."""
RESTART_DELAY = 1.0
CLAIM_TRIES = 3
"""A claim the database failed is asked again (the coordinator reconnects first), up to this many times."""
CLAIM_PATIENCE = 0.5
"""A node alone runs a slot without its claim once the claim has waited this long (see the module's note)."""
MISSED_UNAVAILABLE = "the database did not answer"
MISSED_FENCED = "the database refused the claim: this node's lease was about to lapse, or a peer had not yet seen it"
STOP_WAIT = 2.0
"""At a clean stop, how long we wait for the database to hear that this node stopped (else its lease runs out)."""



@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """A node's name and its lease: how often it renews, how long a renewal holds, and the margins around it."""

    node_name: str
    node_tags: tuple[str, ...] = ()
    heartbeat: float = 2.0
    lease: float = 15.0
    grace: float = 3.0
    """A peer declares a node dead this long after its lease ran out."""
    margin: float = 2.0
    """The spawner kills the runs this long before the lease runs out; no claim is made this close to it."""
    backup_delay: float = 0.5
    statement_timeout: float = 1.0


class CoordinatorProcess(HelperProcess):
    """The coordinator process, as the supervisor sees it."""

    module = "supervisor.record.coordinator"

    def __init__(self, settings: ClusterSettings, url: str) -> None:
        super().__init__(
            ["--lease", str(settings.lease), "--grace", str(settings.grace), "--margin", str(settings.margin),
             "--statement-timeout-ms", str(int(settings.statement_timeout * 1000))],
            env={COORDINATOR_DB_ENV: url},
        )


def rendezvous(worker: str, name: str) -> int:
    """The weight of a node for a worker: the highest weight among the live nodes claims first."""
    return int.from_bytes(hashlib.blake2b(f"{worker}\0{name}".encode(), digest_size=8).digest(), "big")


@dataclass(slots=True)
class PendingClaim:
    due: DueRun
    run_id: str
    send_at: float
    sent: bool = False
    sent_at: float = 0.0
    tries: int = 1
    late: bool = False
    """A claim owed since an outage, sent again once the database answered: its run makes up for missed slots."""
    missed_because: str = MISSED_UNAVAILABLE
    """Why the slot was owed, for the log line of its late run: the database did not answer, or it fenced us."""


class Cluster:
    """This node: its incarnation, the live nodes it last heard of, and its claims in flight."""

    def __init__(
        self,
        settings: ClusterSettings,
        url: str,
        selector: selectors.BaseSelector,
        clock: Callable[[], float],
        fence: Callable[[float], None],
        fenced: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.url = url
        self.selector = selector
        self.clock = clock
        self.fence = fence
        """Tell the spawner the deadline (boottime) by which our runs must end unless the lease is renewed."""
        self.fenced = fenced
        """We were declared dead: kill every run now (their records say `lost` already)."""
        self.node_id = uuid.uuid4().hex
        self.workers: list[str] = []
        self.members: list[tuple[str, str, frozenset[str]]] = []
        """The live nodes at the last heartbeat: (id, name, workers)."""
        self.coordinator: CoordinatorProcess | None = None
        self.restart_at: float | None = None
        self.next_heartbeat = 0.0
        self.heartbeat_out = False
        self.heartbeat_sent = 0.0
        self.lease_until: float | None = None
        """Boottime until which we may claim (our lease, less the margin), from the last renewal."""
        self.pending: dict[str, PendingClaim] = {}
        self.owed: dict[str, PendingClaim] = {}
        """By worker: the latest scheduled slot whose claim the database could not take, to claim again (late)
        once it answers, if still within the worker's misfire grace."""
        self.won: list[tuple[DueRun, str, int | None, int | None]] = []
        """Runs to start: (the run owed, its id, its tick, slots skipped before it); tick None: run alone, unclaimed."""
        self.solo_workers: set[str] = set()
        """Workers run without a claim since their last claim: the ledger's count of slots skipped is wrong for them."""
        self.ticks: dict[str, int] = {}
        """Our runs in flight by id, with their tick in the ledger: closed as each ends."""
        self.unclaimed: dict[str, str] = {}
        """Our runs in flight that were started alone, without a claim (run id: worker): each heartbeat puts them
        in the ledger, so that a newcomer, which may claim only once that heartbeat has seen it, finds them."""
        self.finished_ticks: list[int] = []
        self.given_back: list[str] = []
        """Runs whose slot we won but will not start (we are stopping): their ticks go back to the ledger, so that
        a peer's backup claim can still take the slot."""
        self.stopping = False
        """The supervisor is stopping: no claim goes out any more, and what is won is given back."""
        self.stopped = False
        self.failing: str | None = None
        self.paused_on_record: dict[str, str | None] | None = None
        """The workers the record said were paused at the last heartbeat (None: no news since the loop took it):
        an operator's pause or resume reaches one node's recorder, and every node follows the record."""
        self.last_slots: dict[str, float] = {}
        """Each worker's last claimed slot (Unix time), from the last heartbeat: the loop keeps its interval
        timetables in step with them (Timetable.align), so every node names each slot alike."""
        self.last_node: dict[str, str] = {}
        """The node that claimed each worker's last slot (by name), for the live table."""
        self.alive = 0
        """How many nodes were live at the last heartbeat, this one included."""
        self.answers: list[tuple[int, str, str]] = []
        """Trigger commands whose claim was decided here: (command, worker, what to answer), for the loop."""
        self.realigned: list[WorkerStatus] = []
        self.on_lost: Callable[[list[dict[str, Any]]], None] | None = None
        """Told of the runs of a node this one declared dead (they are `lost`: the alerts tell people)."""
        """Workers whose timetable a claim lined up with another node's: the loop puts them on its agenda again."""

    # -- the coordinator --------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.restart_at = None
        coordinator = CoordinatorProcess(self.settings, self.url)
        coordinator.start()
        coordinator.watch(self.selector, "coordinator")
        self.coordinator = coordinator
        self.heartbeat_out = False
        self.next_heartbeat = 0.0

    def handle(self, kind: str) -> None:
        """React to the coordinator's fd `kind` being readable: a message, output, or its exit."""
        coordinator = self.coordinator
        if coordinator is None:
            return
        if kind == "message":
            for message in coordinator.messages():
                self._handle_message(message)
            if coordinator.channel_closed:
                coordinator.unwatch(self.selector, coordinator.control)
        elif kind == "output":
            coordinator.log_output(self.selector, log, logging.WARNING, "coordinator")
        else:
            for message in coordinator.messages():
                self._handle_message(message)
            exit_code, signum = coordinator.reap()
            log.error("coordinator (pid %d) exited (%s); starting another in %.0fs", coordinator.pid,
                      f"signal {signum}" if signum else f"status {exit_code}", RESTART_DELAY)
            coordinator.unwatch(self.selector)
            coordinator.close()
            self.coordinator = None
            self.restart_at = self.clock() + RESTART_DELAY
            # Whether the database took them is unknown: owed, claimed again once another renews our lease.
            for claim in list(self.pending.values()):
                self._owe(claim, MISSED_UNAVAILABLE)
            self.pending.clear()

    def _handle_message(self, message: Message) -> None:
        op = message["op"]
        if op == "renewed" and message["node"] == self.node_id:
            self.heartbeat_out = False
            self.members = [(m[0], m[1], frozenset(m[2])) for m in message["members"]]
            self.lease_until = float(message["since"]) + self.settings.lease - self.settings.margin
            self.fence(self.lease_until)
            slots = message.get("slots", {})
            self.last_slots = {worker: float(at) for worker, (at, _) in slots.items()}
            self.last_node.update({worker: node for worker, (_, node) in slots.items()})
            self.alive = len(self.members)
            self.paused_on_record = message.get("paused")
            for run, tick in message.get("ticks", {}).items():
                if self.unclaimed.pop(run, None) is not None:
                    self.ticks[run] = int(tick)
            self._claim_owed()
            if abs(message.get("offset") or 0.0) > 1.0:
                log.warning("this node's clock is %+.1fs off the database's; slots are claimed on the database's",
                            message["offset"])
        elif op == "dead" and message["node"] == self.node_id:
            self.heartbeat_out = False
            old = self.node_id
            self.node_id = uuid.uuid4().hex
            log.error("this node (%s) was declared dead by %s at %s: its runs were recorded lost and are killed; "
                      "rejoining as a new node (%s)", old[:8], message["by"], message["at"], self.node_id[:8])
            self.lease_until = None
            self.pending.clear()
            self.owed.clear()  # our slots went to the live nodes meanwhile
            self.won.clear()
            self.ticks.clear()
            self.fenced()
            self.next_heartbeat = 0.0
        elif op == "declared":
            log.warning("node %s (%s) declared dead: its lease ran out; %d run(s) of it recorded lost%s",
                        message["name"], message["where"], len(message["runs"]),
                        "".join(f"; {worker} {run[:8]}" for run, worker in message["runs"][:5]))
            if self.on_lost is not None:
                self.on_lost([{"id": run, "worker": worker, "message": f"node {message['name']} ({message['where']}) "
                               f"was declared dead by {self.settings.node_name}"} for run, worker in message["runs"]])
        elif op == "claim":
            claim = self.pending.pop(message["run"], None)
            if claim is not None:
                self._claimed(claim, message)
        elif op == "unavailable":
            self.heartbeat_out = False
            if self.failing is None:
                log.error("cluster: the database is unavailable: %s; %s", message["error"],
                          "running alone meanwhile" if self.alone else "no slot is claimed until it is back")
            self.failing = message["error"]
        elif op == "healthy" and self.failing is not None:
            self.failing = None
            log.info("cluster: the database is back")

    def _claimed(self, claim: PendingClaim, message: Message) -> None:
        due, result = claim.due, message["result"]
        name = due.status.definition.name
        if self.stopping and result in ("won", "unavailable"):  # nothing starts now, nor is asked again
            self._give_back(due, claim.run_id, claimed=result == "won")
            return
        if due.command is not None and result in ("won", "busy"):
            self.answers.append((due.command, name, f"run started on node {self.settings.node_name} (run "
                                 f"{claim.run_id[:8]})" if result == "won" else
                                 "not run: a run is in progress on another node"))
        if result == "won":
            skipped = None if name in self.solo_workers else self._skipped_before(due, message)
            self.solo_workers.discard(name)
            self.last_node[name] = self.settings.node_name
            if claim.late:
                log.warning("%s: the slot at %s was missed (%s); one run now makes up for it%s", name,
                            time.strftime("%H:%M:%S", time.localtime(due.slot_wall)), claim.missed_because,
                            f" ({skipped} earlier slot(s) skipped)" if skipped else "")
            self.won.append((due, claim.run_id, int(message["tick"]), skipped))
        elif result == "unavailable" and self.alone and self.lease_valid:
            self._run_alone(due, claim.run_id)  # the database said it cannot: we are cut off
        elif result == "unavailable" and claim.tries < CLAIM_TRIES:
            # A dropped connection (a restart, a terminated session): the coordinator reconnects for the next.
            claim.tries, claim.sent = claim.tries + 1, False
            self.pending[claim.run_id] = claim
        elif result == "unavailable" and due.command is not None:
            self.answers.append((due.command, name, "not run: the database is unavailable"))
        elif result == "unavailable" or (result == "fenced" and due.scheduled):
            self._owe(claim, MISSED_UNAVAILABLE if result == "unavailable" else MISSED_FENCED)
        elif result == "taken":
            if message.get("taken_at") is not None:
                due.status.timetable.align(self.clock(), time.time(), float(message["taken_at"]))
                self.realigned.append(due.status)
            log.debug("%s: slot taken by another node", name)
        elif result == "busy":
            log.info("%s: a run is in progress on another node; slot skipped", name)
        else:
            log.debug("%s: slot not claimed (%s)", name, result)

    # -- what the loop calls ----------------------------------------------------------------------------------------

    def offer(self, due: DueRun, now: float) -> None:
        """A run is due here: claim it now, a backup delay later, or leave it to the nodes ranked before us."""
        definition = due.status.definition
        if not self.may_run(definition):
            return  # pinned elsewhere: the nodes it is pinned to run it (and only they advertise it)
        if self.may_run_alone(now):
            self._run_alone(due, new_run_id())
            return
        if due.scheduled:
            self.owed.pop(definition.name, None)  # a later slot has come: the owed one is skipped (the ledger counts it)
        send_at = self._send_at(due, now)
        if send_at is not None:
            run_id = new_run_id()
            self.pending[run_id] = PendingClaim(due, run_id, send_at)

    def _send_at(self, due: DueRun, now: float) -> float | None:
        """When we claim `due`: at once if we rank first, a backup delay later per rank, or never (None)."""
        definition = due.status.definition
        rank = self.rank(definition.name) if due.scheduled else 0
        if rank > BACKUPS:
            return None
        period = definition.interval
        delay = self.settings.backup_delay if period is None else min(self.settings.backup_delay, period / 4)
        return now + rank * delay

    def _owe(self, claim: PendingClaim, because: str) -> None:
        """The database could not take this claim: keep the latest scheduled slot of each worker to claim late."""
        due = claim.due
        name = due.status.definition.name
        if not due.scheduled or due.command is not None:
            return  # an extra run was asked for now, or answered already (a trigger)
        known = self.owed.get(name)
        if known is None or known.due.slot_wall < due.slot_wall:
            claim.missed_because = because
            self.owed[name] = claim

    def _claim_owed(self) -> None:
        """The database answers again and our lease holds: claim the owed slots still within their misfire grace."""
        now, wall = self.clock(), time.time()
        for name, claim in list(self.owed.items()):
            due = claim.due
            del self.owed[name]
            if wall - due.slot_wall > due.status.timetable.misfire_grace(due.slot_wall):
                log.warning("%s: the slot at %s was missed (%s); past its misfire grace, it is skipped", name,
                            time.strftime("%H:%M:%S", time.localtime(due.slot_wall)), claim.missed_because)
                continue
            send_at = self._send_at(due, now)
            if send_at is None:
                continue
            if due.status.timetable.due <= send_at:
                # The worker's next slot has come meanwhile (the loop offers it right after this renewal): its claim
                # stands for this one, and the ledger counts this slot skipped. Claiming both made the late run
                # collide with the next slot's claim, on whichever node got it, and cost that slot too (busy).
                log.info("%s: the slot at %s was missed (%s); the next slot, due now, makes up for it", name,
                         time.strftime("%H:%M:%S", time.localtime(due.slot_wall)), claim.missed_because)
                continue
            self.pending[claim.run_id] = PendingClaim(due, claim.run_id, send_at, late=True,
                                                      missed_because=claim.missed_because)

    def _skipped_before(self, due: DueRun, message: Message) -> int:
        """The slots of the worker nobody claimed between the last claimed one and ours: the ledger counts an
        interval's by their numbers; a cron schedule counts its own from the last claimed slot's time."""
        timetable = due.status.timetable
        if timetable.is_cron and message.get("last_at") is not None:
            return timetable.slots_between(float(message["last_at"]), due.slot_wall)
        return int(message["skipped"] or 0)

    @property
    def alone(self) -> bool:
        """Whether the database showed us no live peer at our last heartbeat (and has shown us the nodes at all)."""
        return self.lease_until is not None and all(node_id == self.node_id for node_id, _, _ in self.members)

    @property
    def late(self) -> float:
        """How long a heartbeat may take: no statement may take longer, so one that has is not coming."""
        return self.settings.statement_timeout + 1.0

    def cut_off(self, now: float) -> bool:
        """Whether the database is not answering us: it said so, or a heartbeat has waited too long."""
        return self.failing is not None or self.coordinator is None or (
            self.heartbeat_out and now - self.heartbeat_sent > self.late)

    @property
    def lease_valid(self) -> bool:
        """Whether our lease holds (less the margin), by the last renewal."""
        return self.lease_until is not None and boottime() < self.lease_until

    def may_run_alone(self, now: float) -> bool:
        """Whether to start runs without claims: we are alone, cut off, and our lease still holds (no newcomer
        claims before we have seen it, and none may declare us dead before it runs out; then we stop, as any
        node does)."""
        return self.alone and self.cut_off(now) and self.lease_valid

    def give_back_unstarted(self) -> None:
        """The supervisor is stopping and starts nothing more: drop the claims not yet sent and the slots owed, give
        back the slots won but not started, and answer their triggers; a claim still out is given back once won.

        A slot won just before a SIGTERM was otherwise neither run here nor left to anyone: its tick said it was
        ours, and a peer's backup claim of it came back `taken` (a rolling deploy lost that slot).
        """
        self.stopping = True
        for claim in [claim for claim in self.pending.values() if not claim.sent]:
            del self.pending[claim.run_id]
            self._give_back(claim.due, claim.run_id, claimed=False)
        self.owed.clear()
        for due, run_id, tick, _ in self.won:
            self._give_back(due, run_id, claimed=tick is not None)
        self.won.clear()

    def _give_back(self, due: DueRun, run_id: str, claimed: bool) -> None:
        if claimed:
            self.given_back.append(run_id)
        if due.command is not None:
            self.answers = [answer for answer in self.answers if answer[0] != due.command]
            self.answers.append((due.command, due.status.definition.name,
                                 f"not run: node {self.settings.node_name} was stopping"))

    def _run_alone(self, due: DueRun, run_id: str) -> None:
        """Start a run without a claim: we are alone and cannot reach the database (see the module's note)."""
        self.solo_workers.add(due.status.definition.name)
        self.won.append((due, run_id, None, None))
        if due.command is not None:
            self.answers.append((due.command, due.status.definition.name, "run started"))

    def may_run(self, definition: WorkerDefinition) -> bool:
        """Whether this node is one the worker is pinned to (by name or `tag:NAME`), or it is pinned to none."""
        if definition.nodes is None:
            return True
        mine = {self.settings.node_name, *(f"tag:{tag}" for tag in self.settings.node_tags)}
        return bool(mine.intersection(definition.nodes))

    def rank(self, worker: str) -> int:
        """Our place among the live nodes that have `worker` (0: we claim first)."""
        eligible = {node_id: name for node_id, name, workers in self.members if worker in workers}
        eligible[self.node_id] = self.settings.node_name
        order = sorted(eligible, key=lambda node_id: (-rendezvous(worker, eligible[node_id]), node_id))
        return order.index(self.node_id)

    def tend(self, now: float, running: list[str]) -> None:
        """Renew the lease when due, send the claims whose time came, close the ticks of ended runs.

        `running` are the ids of our runs in flight: with the claims not yet answered, the only ticks of ours the
        ledger may keep open (a claim whose answer a dropped connection lost may have been committed all the same).
        """
        coordinator = self.coordinator
        if coordinator is None and self.restart_at is not None and now >= self.restart_at and not self.stopped:
            self.start()
            coordinator = self.coordinator
        if self.alone and self.lease_valid and not self.stopping:
            # Alone, a claim that waits is a database that does not answer: run it without (an answer that may
            # still come is not waited for; the run keeps the id the claim named).
            for claim in list(self.pending.values()):
                if self.cut_off(now) or (claim.sent and now - claim.sent_at > CLAIM_PATIENCE):
                    del self.pending[claim.run_id]
                    self._run_alone(claim.due, claim.run_id)
        if coordinator is None:
            return
        if self.heartbeat_out and now - self.heartbeat_sent > self.settings.lease and not coordinator.killed:
            # A connection that hangs (a partition that drops nothing, a server that accepts and never answers)
            # holds the coordinator with no timeout of its own; our runs are fenced meanwhile. Start afresh.
            log.error("coordinator (pid %d) silent for %.0fs; replacing it", coordinator.pid, now - self.heartbeat_sent)
            coordinator.kill()
        self._send_closed_ticks(coordinator)  # first: our own claims that follow must not find our ended runs in flight
        if now >= self.next_heartbeat and not self.heartbeat_out and not self.stopped:
            coordinator.send("heartbeat", node=self.node_id, name=self.settings.node_name, running=len(running),
                             workers=self.workers, runs=[*running, *self.pending, *(w[1] for w in self.won)],
                             pid=os.getpid(),
                             unclaimed=[[run, worker] for run, worker in self.unclaimed.items() if run in running])
            self.heartbeat_out = True
            self.heartbeat_sent = now
            self.next_heartbeat = now + self.settings.heartbeat
        for claim in self.pending.values():
            if not claim.sent and now >= claim.send_at and not self.stopping:
                definition = claim.due.status.definition
                coordinator.send("claim", node=self.node_id, run=claim.run_id, worker=definition.name,
                                 slot_at=claim.due.slot_wall, period=definition.interval, overlap=definition.overlap,
                                 scheduled=claim.due.scheduled, command=claim.due.command)
                claim.sent, claim.sent_at = True, now

    def _send_closed_ticks(self, coordinator: CoordinatorProcess) -> None:
        """Tell the ledger which of our ticks are over: runs that ended, and slots won that we give back."""
        if self.finished_ticks:
            coordinator.send("done", ticks=self.finished_ticks)
            self.finished_ticks = []
        if self.given_back:
            coordinator.send("give_back", node=self.node_id, runs=self.given_back)
            self.given_back = []

    def take_won(self) -> list[tuple[DueRun, str, int | None]]:
        """The runs to start now, claimed or run alone: (the run owed, its id, slots skipped before it by the
        ledger's count; None: count them here, as a single supervisor does)."""
        won, self.won = self.won, []
        started = []
        for due, run_id, tick, skipped in won:
            if tick is not None:
                self.ticks[run_id] = tick
            else:
                self.unclaimed[run_id] = due.status.definition.name
            started.append((due, run_id, skipped))
        return started

    def run_ended(self, run_id: str) -> None:
        self.unclaimed.pop(run_id, None)
        tick = self.ticks.pop(run_id, None)
        if tick is not None:
            self.finished_ticks.append(tick)

    def next_times(self) -> list[float]:
        """When the loop must next come to us: runs to start, a claim to send, a heartbeat to send or that is late
        (then we are cut off), a coordinator to restart."""
        if self.won:
            return [0.0]
        if self.coordinator is None:
            return [] if self.restart_at is None or self.stopped else [self.restart_at]
        waiting_alone = self.alone and self.lease_valid  # a claim that waits too long then runs without (tend)
        times = [claim.send_at if not claim.sent else claim.sent_at + CLAIM_PATIENCE
                 for claim in self.pending.values() if not claim.sent or waiting_alone]
        if self.finished_ticks or self.given_back:
            times.append(0.0)
        if not self.stopped:
            if not self.heartbeat_out:
                times.append(self.next_heartbeat)
            else:
                late = self.heartbeat_sent + self.late
                times.append(late if late > self.clock() else self.heartbeat_sent + self.settings.lease)
        return times

    def stop(self) -> None:
        """A clean stop, once our runs have ended: tell the other nodes at once, so they need not wait out our lease."""
        coordinator = self.coordinator
        self.stopped = True
        if coordinator is None or coordinator.channel_closed:
            return
        self._send_closed_ticks(coordinator)
        coordinator.send("stop", node=self.node_id)
        deadline = time.monotonic() + STOP_WAIT
        while (left := deadline - time.monotonic()) > 0:
            coordinator.flush()
            readable, _, _ = select.select([coordinator.control], [], [], min(left, 0.05))
            if readable:
                if any(m["op"] == "stopped" for m in coordinator.messages()):
                    return
                if coordinator.channel_closed:
                    break
        log.warning("cluster: could not tell the database that this node stopped; its lease runs out instead")

    def close(self) -> None:
        coordinator = self.coordinator
        if coordinator is None:
            return
        coordinator.unwatch(self.selector)
        # Its work is done or moot (what it committed stays; a lease not renewed runs out): no need to wait on it.
        coordinator.kill()
        coordinator.reap()
        coordinator.close()
        self.coordinator = None
