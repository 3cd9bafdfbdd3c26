"""Where the loop meets the other nodes: the runs owed go to claims, the won claims start, and what each heartbeat
brought (slots to keep in step with, pauses on record, a lease to keep, a death to act on) reaches the parts of
the loop it is for.

Only on a shared PostgreSQL (supervise/cluster.py holds the node and its claims; record/cluster.py the ledger).
On SQLite the loop starts what is owed itself and this module is not used.
"""
from __future__ import annotations

import logging
import selectors
import signal
from typing import Callable

from .cluster import Cluster, ClusterSettings
from .operator_commands import OperatorCommands
from ..outcome import StopReason
from ..protocol import Message
from .runs import RunKeeper
from .scheduling import DueRun, Scheduler
from .spawner_link import SpawnerLink
from ..worker import WorkerDefinition

log = logging.getLogger("supervisor")

StartRun = Callable[[DueRun, float, float, str], None]


class NodeRuns:
    """This node's share of the runs: claimed before they start, fenced when its lease runs out."""

    def __init__(
        self,
        settings: ClusterSettings,
        url: str,
        parts: tuple[Scheduler, RunKeeper, OperatorCommands],
        spawners: Callable[[], list[SpawnerLink]],
        start_run: StartRun,
        selector: selectors.BaseSelector,
        clock: Callable[[], float],
    ) -> None:
        self.scheduler, self.run_keeper, self.commands = parts
        self.spawners = spawners
        """Every live spawner: the current one and those a reload retired (each fences its own runs)."""
        self.start_run = start_run
        self.cluster = Cluster(settings, url, selector, clock, self.fence, self.declared_dead)
        self.run_keeper.node_id = self.cluster.node_id

    def offer(self, due: DueRun, now: float) -> None:
        """A run is owed: claim it (or leave it to the nodes ranked before us); the scheduler moves on."""
        self.cluster.offer(due, now)
        self.scheduler.attend(due.status, now)

    def take_news(self, now: float, wall: float) -> None:
        """Act on what the coordinator said since the last pass: keep the timetables in step with the ledger,
        follow the record's pauses, start the runs whose claims were won, answer the triggers decided."""
        cluster, workers = self.cluster, self.scheduler.workers
        for name, claimed in cluster.last_slots.items():
            status = workers.get(name)
            if status is not None:
                status.timetable.align(now, wall, claimed)
                cluster.realigned.append(status)
        cluster.last_slots = {}
        if cluster.paused_on_record is not None:
            self.commands.follow_record(cluster.paused_on_record, now, wall)
            cluster.paused_on_record = None
        for status in cluster.realigned:
            self.scheduler.attend(status, now)
        cluster.realigned.clear()
        for due, run_id, skipped in cluster.take_won():
            if skipped is not None:
                due.status.unrecorded_skips = skipped  # the ledger counts the slots no node claimed
            self.start_run(due, now, wall, run_id)
        self.answer_triggers()

    def stopping(self) -> None:
        """The supervisor is stopping: what was claimed and not started goes back to the other nodes."""
        self.cluster.give_back_unstarted()
        self.answer_triggers()

    def answer_triggers(self) -> None:
        """Answer the triggers whose claims were decided (run here, run elsewhere, or not run)."""
        for command, worker, result in self.cluster.answers:
            self.commands.answer_trigger(command, worker, result)
        self.cluster.answers.clear()

    def spawner_ready(self, defined: dict[str, WorkerDefinition]) -> None:
        """A spawner reported its workers: advertise those we may run (pinned ones only where they are pinned, so
        the others rank among the nodes that may), and give a new spawner the deadline its runs must keep."""
        self.cluster.workers = sorted(name for name, d in defined.items() if self.cluster.may_run(d))
        if self.cluster.lease_until is not None:
            self.fence(self.cluster.lease_until)

    def fence(self, deadline: float) -> None:
        """The lease was renewed: the spawners may let our runs go on until `deadline` (boottime)."""
        for spawner in self.spawners():
            spawner.send("fence", until=deadline)

    def declared_dead(self) -> None:
        """A peer declared this node dead: its runs are recorded lost there; kill them now (the spawner's fence
        normally has already), and go on as the new node the cluster has become."""
        self.run_keeper.node_id = self.cluster.node_id
        for run in self.run_keeper.runs.values():
            run.stop_reason = StopReason.FENCED
            run.spawner.signal_run(run.id, signal.SIGKILL)

    def fenced(self, message: Message) -> None:
        """The spawner killed our runs: our lease was running out (spawn/fence.py)."""
        runs = [self.run_keeper.runs[r] for r in message["runs"] if r in self.run_keeper.runs]
        for run in runs:
            run.stop_reason = StopReason.FENCED
        log.error("the lease on the database was not renewed in time: the spawner killed %d run(s) (%s)",
                  len(runs), ", ".join(run.definition.name for run in runs))
