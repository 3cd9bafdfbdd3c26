"""Operators' commands as the supervisor acts on them: trigger, pause and resume, each answered in the record.

The command line inserts a `command` row; the recorder passes it on (recorder.py, command_watch.py); this
module decides what it means for the worker and writes the answer the command line is waiting for. Several
supervisors may share a database: a command for a worker this one does not have is left for the one that does.
"""
from __future__ import annotations

import logging
from typing import Callable

from ..record import records
from ..outcome import WorkerState
from ..protocol import Message
from ..record.recording import Recording
from .scheduling import Scheduler
from ..record.store import utcnow

log = logging.getLogger("supervisor")

PAUSE_SETTLE = 5.0
"""Seconds a pause or resume made here is kept against the record, which learns of it through the journal."""


class OperatorCommands:
    """Act on each command once, and record what was done, signed with this supervisor's host and pid."""

    def __init__(self, scheduler: Scheduler, broken: dict[str, str], recording: Recording, signature: str,
                 clock: Callable[[], float], wall_clock: Callable[[], float], claimed: bool = False) -> None:
        self.scheduler = scheduler
        self.broken = broken
        """Workers and modules broken in our spawner, and why (the spawner keeper's)."""
        self.recording = recording
        self.signature = signature
        self.clock = clock
        self.wall_clock = wall_clock
        self.done: set[int] = set()
        self.claimed = claimed
        """Several nodes share the database: a trigger is answered by the node whose claim of it won (cluster.py)."""
        self.on_reload: Callable[[int], None] | None = None
        """Carries out a `reload` command (its number, to answer once the new spawner is ready): the loop's."""

    def handle(self, command: Message, stopping: bool) -> None:
        """Act on an operator's trigger, pause or resume, and record what was done."""
        worker, action, number = str(command["worker"]), str(command["action"]), int(command["id"])
        if action == "reload":  # for every supervisor on the database: each reloads, the first answer is shown
            if number not in self.done and self.on_reload is not None and not stopping:
                self.done.add(number)
                self.on_reload(number)
            return
        status = self.scheduler.workers.get(worker)
        if number in self.done or (status is None and worker not in self.broken):
            return  # a repeat, or another supervisor's worker (they share the database)
        self.done.add(number)
        now = utcnow()
        if status is None:  # broken here: its module did not import, or its definition is invalid
            self._answer(number, worker, action, f"not run: the worker is broken: {self.broken[worker]}")
            return
        if action == "trigger":
            if status.state is WorkerState.BROKEN:
                result = "not run: the worker is broken"
            elif not status.has_room:
                result = f"not run: a run is in progress (pid {status.run.pid if status.run else '?'})"
            elif stopping:
                result = "not run: the supervisor is stopping"
            else:
                status.triggers.append(number)
                if self.claimed:
                    self.scheduler.attend(status, self.clock())
                    return  # answered by the node that wins its claim (answer_trigger)
                result = "run started"
        elif action == "pause":
            result = "already paused" if status.paused else "paused"
            status.pause()
            status.pause_changed = self.clock()
            self.recording.record(records.worker_paused(worker, True, now))
        elif action == "resume" and not status.paused:
            result = "not paused"
        elif action == "resume":
            was = status.pause_reason
            status.resume(self.clock(), self.wall_clock())
            result = f"resumed (was {was})" if was else "resumed"
            self.recording.record(records.worker_paused(worker, False, now))
        else:
            result = f"unknown action {action!r}"
        self.scheduler.attend(status, self.clock())
        self._answer(number, worker, action, result)

    def follow_record(self, paused: dict[str, str | None], now: float, wall: float) -> None:
        """Take each worker's pause from the record (another node took the operator's pause, resume or
        quarantine), unless this supervisor changed it itself too recently for the record to know."""
        for name, status in self.scheduler.workers.items():
            there = name in paused
            if there == status.paused or now - status.pause_changed < PAUSE_SETTLE:
                continue
            if there:
                status.pause(paused[name])
                log.info("%s: paused (on record: by an operator or by another node)", name)
            else:
                status.resume(now, wall)
                log.info("%s: resumed (on record: by an operator or by another node)", name)
            self.scheduler.attend(status, now)

    def answer_trigger(self, number: int, worker: str, result: str) -> None:
        """Answer a trigger once its claim on the shared database is decided (won here, or refused)."""
        self._answer(number, worker, "trigger", result)

    def answer_reload(self, number: int, result: str) -> None:
        self._answer(number, "*", "reload", result)

    def _answer(self, number: int, worker: str, action: str, result: str) -> None:
        log.info("%s: %s: %s", worker, action, result)
        self.recording.record(records.command_done(number, f"{result} ({self.signature})", utcnow()))
