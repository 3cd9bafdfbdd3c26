"""What the supervisor knows of each worker and each run in flight, and the run policies that decide on them.

The loop (loop.py) does the I/O: pipes, the spawner, the record. This module decides, from times it is given:
which worker starts next and why (its slot, a queued slot, a retry, an operator's trigger), what a slot that
comes while runs are in progress does (overlap: skip, queue, allow), and what a failed run leads to (a retry
with backoff, or quarantine after too many failures in a row).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any
from datetime import datetime, timedelta

from .capture import Capture
from ..outcome import Outcome, StopReason, Verdict, WorkerState
from .timetable import Timetable, retry_delay
from .usage import ResourceSampler
from ..worker import WorkerDefinition


@dataclass(slots=True, eq=False)
class Run:
    """One run in flight, from the spawn request until its record is written."""

    id: str
    definition: WorkerDefinition
    attempt: int
    started: float
    started_at: datetime
    deadline: float | None
    fds: dict[int, str] = field(default_factory=dict)  # read end -> "result" | "stdout" | "stderr"
    result: bytearray = field(default_factory=bytearray)
    stdout: Capture = field(default_factory=Capture)
    stderr: Capture = field(default_factory=Capture)
    pid: int | None = None
    stop_reason: StopReason | None = None
    limit_verdict: Verdict | None = None
    """Why the run was stopped over a limit, with the value seen (when stop_reason is LIMIT)."""
    kill_at: float | None = None
    killed: bool = False
    node_id: str | None = None
    """The node incarnation that claimed it, on a shared PostgreSQL (cluster.py)."""
    usage: ResourceSampler | None = None
    """Samples the CPU and memory of the run and its descendants, for the table (only while one is shown)."""
    spawner: Any = None
    """The spawner (its SpawnerLink) that forked it: its signals go there, and that spawner's death ends it. After a
    reload it may be an older one than the current spawner (reload.py)."""


class StartReason(str, enum.Enum):
    """Why a run starts."""

    SLOT = "slot"
    """Its schedule's slot came."""
    QUEUED = "queued"
    """A slot came while a run was in progress (overlap = queue); it runs when that one ends."""
    RETRY = "retry"
    """The last attempt failed and retries are left."""
    TRIGGER = "trigger"
    """An operator asked for a run now."""


@dataclass(slots=True, eq=False)
class WorkerStatus:
    """What the supervisor knows of one worker now; the live table is drawn from these."""

    definition: WorkerDefinition
    timetable: Timetable
    state: WorkerState = WorkerState.IDLE
    runs: list[Run] = field(default_factory=list)
    last_outcome: str | None = None
    last_run_at: datetime | None = None
    last_duration: float | None = None
    successes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    skipped: int = 0
    last_error: str | None = None
    last_failure_at: datetime | None = None
    """When the last failed run ended (wall clock); None when none has failed since this supervisor started."""
    unrecorded_skips: int = 0
    """Slots skipped since the worker's last record; they travel with its next run's record (exactly once)."""
    paused: bool = False
    """Paused by an operator or by quarantine: no scheduled runs until resumed."""
    pause_reason: str | None = None
    """Why it is paused when the supervisor did it (quarantine); None when an operator did."""
    triggers: list[int] = field(default_factory=list)
    """Operators' trigger commands waiting, oldest first: each asks for one run now, paused or not."""
    queued_since: float | None = None
    """A slot came while runs were in progress and overlap is 'queue': one run waits, since this time."""
    retry_at: float | None = None
    """The failed run's next attempt is due at this time (monotonic), if one is owed."""
    retry_attempt: int = 1
    failures_before_resume: int = 0
    """The failure streak when last resumed, so quarantine counts only the failures since."""
    pause_changed: float = 0.0
    """When this supervisor last paused or resumed it (monotonic): a newer change than the record may know of."""

    @property
    def run(self) -> Run | None:
        """The oldest run in progress, or None."""
        return self.runs[0] if self.runs else None

    @property
    def triggered(self) -> bool:
        """An operator asked for a run now; it starts at the next pass, paused or not."""
        return bool(self.triggers)

    @property
    def due(self) -> float:
        return self.timetable.due

    @property
    def has_room(self) -> bool:
        """Whether another run of this worker may start now (its overlap mode allows it)."""
        return len(self.runs) < self.definition.concurrency

    @property
    def quarantined(self) -> bool:
        return self.paused and self.pause_reason is not None

    def slot_passed_while_busy(self, mono: float, wall: float) -> str | None:
        """The slot came while no run may start for it: skip it (counted) or queue one run; say what was done.

        A slot passes this way when the worker's runs in progress fill its overlap allowance, or while a retry
        of a failed run is owed (the retry, not a fresh attempt, runs next).
        """
        if self.paused or mono < self.timetable.due or (self.has_room and self.retry_at is None):
            return None
        missed = self.timetable.advance(mono, wall)
        if self.retry_at is None and self.definition.overlap == "queue" and self.queued_since is None:
            self.queued_since = mono
            self._skip(missed)
            return "still running; one run queued" + (f", {missed} slot(s) skipped" if missed else "")
        self._skip(1 + missed)
        busy = "a retry is pending" if self.retry_at is not None else f"still running ({len(self.runs)} run(s))"
        return f"{busy}; skipped {1 + missed} slot(s)"

    def ready_since(self, mono: float) -> float | None:
        """If a run should start now, since when it has been owed (the oldest start first); else None."""
        if not self.has_room or self.state is WorkerState.BROKEN:
            return None
        if self.triggered:
            return mono
        if self.retry_at is not None:
            return self.retry_at if mono >= self.retry_at and not self.paused else None
        if self.queued_since is not None and not self.paused:
            return self.queued_since
        if not self.paused and mono >= self.timetable.due:
            return self.timetable.due
        return None

    def take_start(self, mono: float, wall: float) -> tuple[StartReason, int]:
        """Take the run `ready_since` said is owed: return why it starts and its attempt number."""
        if self.triggers:
            self.triggers.pop(0)
            return StartReason.TRIGGER, 1  # an extra run: the schedule stays where it was
        if self.retry_at is not None:
            self.retry_at = None
            return StartReason.RETRY, self.retry_attempt
        if self.queued_since is not None:
            self.queued_since = None
            return StartReason.QUEUED, 1
        self._skip(self.timetable.advance(mono, wall))
        return StartReason.SLOT, 1

    def run_ended(self, run: Run, outcome: Outcome, mono: float, stopping: bool) -> str | None:
        """Count the run's end and decide what follows: a retry, quarantine, or nothing. Say what was decided."""
        if run in self.runs:
            self.runs.remove(run)
        if not outcome.counted:
            return None  # our own stop interrupted it: no success, no failure, no retry
        if not outcome.failed:
            self.successes += 1
            self.consecutive_failures = self.failures_before_resume = 0
            return None
        self.failures += 1
        self.consecutive_failures += 1
        # The run's wall-clock start plus its monotonic length: the table gives the age of an error once recovered.
        self.last_failure_at = run.started_at + timedelta(seconds=max(0.0, mono - run.started))
        limit = self.definition.quarantine_after
        if limit is not None and self.consecutive_failures - self.failures_before_resume >= limit and not self.paused:
            self.paused = True
            self.pause_changed = mono
            self.pause_reason = f"quarantined after {limit} failures in a row"
            self.retry_at = self.queued_since = None
            return self.pause_reason
        if run.attempt <= self.definition.retries and not stopping and not self.paused:
            delay = retry_delay(self.definition, run.attempt)
            self.retry_at = mono + delay
            self.retry_attempt = run.attempt + 1
            return f"attempt {run.attempt + 1} of {self.definition.retries + 1} in {delay:g}s"
        return None

    def pause(self, reason: str | None = None) -> None:
        """Stop scheduling (an operator's pause, or quarantine with its reason); a pending retry is dropped."""
        self.paused, self.pause_reason = True, reason
        self.retry_at = self.queued_since = None

    def resume(self, mono: float, wall: float) -> None:
        """Schedule again from now, with a fresh count of failures toward quarantine."""
        self.paused, self.pause_reason = False, None
        self.pause_changed = mono
        self.failures_before_resume = self.consecutive_failures
        self.timetable.resume(mono, wall)

    def _skip(self, slots: int) -> None:
        self.skipped += slots
        self.unrecorded_skips += slots
