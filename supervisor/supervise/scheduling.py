"""Which worker runs when: each worker's status and timetable, and the agenda of when each next wants the loop.

The supervisor's loop asks two things of it: which runs are owed now (`take_due`, oldest first, within the cap on
children), and when it must wake next for a worker (`next_time`). Everything else here keeps the statuses true:
a new worker list from the spawner (`place`), a run's end (`run_ended`), a broken module (`mark_broken`). Nothing
here touches a process or a pipe; runs.py starts and ends the runs.
"""
from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from .agenda import Agenda
from ..outcome import Verdict, WorkerState
from .timetable import Timetable
from ..worker import WorkerDefinition
from .worker_status import Run, StartReason, WorkerStatus

log = logging.getLogger("supervisor")

FULL_PASS_INTERVAL = 60.0  # every worker is looked at this often (cron slots follow a wall clock step)


@dataclass(frozen=True, slots=True)
class DueRun:
    """A run to start now: of which worker, which attempt, and the slot (monotonic) it is for."""

    status: WorkerStatus
    attempt: int
    slot: float
    slot_wall: float = 0.0
    """The slot as Unix time, without its jitter: what names it to the other nodes on a shared database."""
    scheduled: bool = True
    """A slot of the schedule; False for a trigger, a retry or a queued run (not claimed by slot)."""
    command: int | None = None
    """The operator's trigger command it answers, if it is one."""


@dataclass(frozen=True, slots=True)
class RunEnded:
    """What a run's end did to its worker, for the run's record and the log."""

    next_run_at: datetime | None
    skipped: int
    decided: str | None
    """A decision the end brought (a retry, a quarantine), to log; None if none."""


class Scheduler:
    """The workers' statuses and the agenda that says when each next needs the loop."""

    def __init__(
        self,
        stored: dict[str, Any],
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        max_children: int | None,
    ) -> None:
        self.stored = stored
        """Worker rows read at start-up, so counters and schedules carry on from the record."""
        self.clock = clock
        self.wall_clock = wall_clock
        self.max_children = max_children
        """At most this many runs of all workers at once (None: no cap); runs owed beyond it wait their turn."""
        self.workers: dict[str, WorkerStatus] = {}
        self.agenda = Agenda()
        """When each worker next wants attention, so a pass looks only at the workers that are due."""
        self.waiting_for_room: list[tuple[float, str]] = []
        """Runs owed beyond the cap, out of the agenda: a heap of (owed since, worker), oldest first."""
        self._waiting_names: set[str] = set()
        self.next_full_pass = 0.0

    # -- the worker list ------------------------------------------------------------------------------------------

    def place(self, defined: dict[str, WorkerDefinition], now: float, wall: float) -> dict[str, datetime]:
        """Take the spawner's worker list: keep known workers' schedules, place new ones (from the record), drop
        the ones gone (once their runs end); return each worker's next run, for the record."""
        for name in list(self.workers):
            if name not in defined and not self.workers[name].runs:
                del self.workers[name]
                self.agenda.set(name, None)
        for name, definition in defined.items():
            status = self.workers.get(name)
            if status is None:
                status = self.workers[name] = self._new_status(definition, now, wall)
            else:
                if _schedule_of(status.definition) != _schedule_of(definition):
                    timetable = Timetable(definition)
                    timetable.begin(now, wall, status.timetable.slot_wall(now, wall))
                    status.timetable = timetable
                status.definition = status.timetable.definition = definition
            if status.state is WorkerState.BROKEN:
                status.state = WorkerState.RUNNING if status.runs else WorkerState.IDLE
            self.attend(status, now)
        return {name: utc(s.timetable.slot_wall(now, wall)) for name, s in self.workers.items()}

    def _new_status(self, definition: WorkerDefinition, now: float, wall: float) -> WorkerStatus:
        """A worker this supervisor has not scheduled yet: carry on its counters and schedule from the record."""
        status = WorkerStatus(definition=definition, timetable=Timetable(definition))
        row = self.stored.get(definition.name)
        recorded_next = None
        if row is not None:
            status.successes, status.failures = row.success_count, row.failure_count
            status.consecutive_failures, status.skipped = row.consecutive_failures, row.skipped_count
            status.last_outcome, status.last_error = row.last_outcome, row.last_error
            status.last_run_at, status.last_duration = row.last_run_at, row.last_duration
            status.paused, status.pause_reason = bool(row.paused), getattr(row, "pause_reason", None)
            status.failures_before_resume = status.consecutive_failures if status.quarantined else 0
            if row.next_run_at is not None:
                recorded_next = row.next_run_at.replace(tzinfo=timezone.utc).timestamp()
        catchup = status.timetable.begin(now, wall, recorded_next)
        if catchup.missed:
            status.skipped += catchup.skipped
            status.unrecorded_skips += catchup.skipped
            log.info(
                "%s: %d slot(s) missed while no supervisor ran it; %s",
                definition.name,
                catchup.missed,
                "one run now makes up for them" if catchup.run_now else "skipped (past its misfire grace)",
            )
        return status

    def mark_broken(self, module: str, error: str) -> None:
        """Show the workers of a module that is broken now as broken, and take them off the agenda."""
        for status in self.workers.values():
            if status.definition.module == module:
                status.state = WorkerState.BROKEN
                status.last_error = error
                self.agenda.set(status.definition.name, None)

    # -- what is due ------------------------------------------------------------------------------------------------

    def take_due(self, now: float, wall: float, running: int) -> list[DueRun]:
        """The runs owed now, oldest first, within the cap on children (`running` are in progress); each is taken
        (its worker's timetable moves on). Busy slots are dealt with on the way (skipped or queued, and said)."""
        if now >= self.next_full_pass:
            self._attend_all(now, wall)
        for name in self.agenda.due(now):
            status = self._looked_at(name, now, wall)
            since = None if status is None else status.ready_since(now)
            if since is None:
                if status is not None:
                    self.attend(status, now)
            elif name not in self._waiting_names:
                heapq.heappush(self.waiting_for_room, (since, name))
                self._waiting_names.add(name)
        room = len(self.waiting_for_room) if self.max_children is None else max(0, self.max_children - running)
        # Runs owed beyond the cap wait in the heap, out of the agenda; each pass takes the oldest ones the room a
        # run's end made allows, and looks at them again only then (a pause, a trigger, a reload meanwhile is seen
        # there). A pass costs the workers newly due and the runs it starts, not the whole queue.
        due: list[DueRun] = []
        while len(due) < room and self.waiting_for_room:
            since, name = heapq.heappop(self.waiting_for_room)
            self._waiting_names.discard(name)
            status = self._looked_at(name, now, wall)
            if status is None:
                continue
            now_since = status.ready_since(now)
            if now_since is None:
                self.attend(status, now)
                continue
            if now_since > since and self.waiting_for_room and self.waiting_for_room[0][0] < now_since:
                heapq.heappush(self.waiting_for_room, (now_since, name))  # owed anew since: back in its place
                self._waiting_names.add(name)
                continue
            slot, slot_wall = status.timetable.due, status.timetable.slot_wall(now, wall)
            command = status.triggers[0] if status.triggers else None
            reason, attempt = status.take_start(now, wall)
            scheduled = reason is StartReason.SLOT
            command = command if reason is StartReason.TRIGGER else None
            due.append(DueRun(status, attempt, slot if scheduled else now, slot_wall, scheduled, command))
        return due

    def _looked_at(self, name: str, now: float, wall: float) -> WorkerStatus | None:
        """The worker `name` brought up to date with the clocks, its busy slot dealt with (and said); None if it is
        gone or broken."""
        status = self.workers.get(name)
        if status is None or status.state is WorkerState.BROKEN:
            return None
        status.timetable.follow_wall_clock(now, wall)
        done = status.slot_passed_while_busy(now, wall)
        if done:
            log.info("%s: %s", name, done)
        return status

    def attend(self, status: WorkerStatus, now: float) -> None:
        """Put the worker on the agenda for the next time it wants the loop: its slot, a retry, a run owed now."""
        name = status.definition.name
        if status.state is WorkerState.BROKEN or self.workers.get(name) is not status:
            self.agenda.set(name, None)
            return
        times = []
        if status.has_room and (status.triggered or status.queued_since is not None):
            times.append(now)
        if not status.paused:
            times.append(status.due)  # also when busy: the slot is then skipped or queued, and counted
            if status.retry_at is not None and status.has_room:  # without room, the end of a run brings it back
                times.append(status.retry_at)
        self.agenda.set(name, min(times) if times else None)

    def _attend_all(self, now: float, wall: float) -> None:
        """Every minute: follow the wall clock with cron slots (a clock step moves them), and re-place everyone."""
        for status in self.workers.values():
            status.timetable.follow_wall_clock(now, wall)
            self.attend(status, now)
        self.next_full_pass = now + FULL_PASS_INTERVAL

    def behind(self, now: float) -> float:
        """How long the earliest worker due has waited for the loop to take it (0: none is waiting)."""
        earliest = self.agenda.next_time()
        return 0.0 if earliest is None else max(0.0, now - earliest)

    def next_times(self, now: float, running: int) -> list[float]:
        """When the loop must next look at the workers (a due worker, room for a waiting run, the full pass)."""
        times = [self.next_full_pass]
        attention = self.agenda.next_time()
        if attention is not None:
            times.append(attention)
        if self.waiting_for_room and (self.max_children is None or running < self.max_children):
            times.append(now)
        return times

    # -- a run's end ------------------------------------------------------------------------------------------------

    def run_ended(self, run: Run, verdict: Verdict, duration: float, now: float, stopping: bool) -> RunEnded:
        """Bring the run's worker up to date with how the run ended, and place it on the agenda again."""
        worker = self.workers.get(run.definition.name)
        if worker is None:
            return RunEnded(None, 0, None)
        skipped, worker.unrecorded_skips = worker.unrecorded_skips, 0
        decided = worker.run_ended(run, verdict.outcome, now, stopping)
        if worker.state is not WorkerState.BROKEN and not worker.runs:
            worker.state = WorkerState.IDLE
        worker.last_outcome = verdict.outcome.value
        worker.last_run_at = run.started_at
        worker.last_duration = duration
        if verdict.outcome.failed:
            worker.last_error = verdict.message
        self.attend(worker, now)
        return RunEnded(utc(worker.timetable.slot_wall(now, self.wall_clock())), skipped, decided)


def _schedule_of(definition: WorkerDefinition) -> tuple[object, ...]:
    """The settings that place a worker's slots: a change in any of them starts its timetable afresh."""
    return (definition.interval, definition.cron, definition.timezone, definition.jitter)


def utc(moment: float) -> datetime:
    """A Unix time as the naive-UTC datetime every record and row holds."""
    return datetime.fromtimestamp(moment, timezone.utc).replace(tzinfo=None)
