"""When one worker runs next: its schedule's slots, their jitter, the catch-up after an outage, retry backoff.

Pure arithmetic on times it is given, so every rule here is tested with invented clocks. Two clocks, as the
supervisor keeps them: `mono` (time.monotonic, which never jumps) decides when a run starts; `wall` (Unix time)
is what cron expressions and the record speak. An interval schedule lives on the monotonic clock, so a clock
step never bunches or stretches its runs; a cron schedule lives on the wall clock in its time zone, as cron's.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from .. import schedule
from ..worker import WorkerDefinition


@dataclass(frozen=True, slots=True)
class Catchup:
    """What an outage cost a worker, as found when it is first scheduled: slots missed, and whether to make up."""

    missed: int
    """Slots that came and went while no supervisor ran this worker."""
    run_now: bool
    """The latest missed slot is within the grace period: one run now stands for all of them."""

    @property
    def skipped(self) -> int:
        """Missed slots no run stands for: all of them, or all but the one the catch-up run makes up."""
        return self.missed - 1 if self.run_now else self.missed


class Timetable:
    """The slots of one worker's schedule, and the due time (slot plus jitter) of the next run."""

    def __init__(self, definition: WorkerDefinition, rng: Callable[[], float] = random.random) -> None:
        self.definition = definition
        self._rng = rng
        self._zone = schedule.zone(definition.timezone) if definition.cron is not None else None
        self.slot = 0.0
        """The current slot: on the monotonic clock for an interval, Unix time for cron."""
        self.offset = 0.0
        """This slot's jitter: the run is due this long after the slot."""
        self.due = 0.0
        """When the run for the current slot is due, on the monotonic clock."""

    @property
    def is_cron(self) -> bool:
        return self.definition.cron is not None

    # -- the first slot ---------------------------------------------------------------------------------------

    def begin(self, mono: float, wall: float, recorded_next: float | None) -> Catchup:
        """Place the first slot, given the next run the record holds (Unix time) from an earlier supervisor.

        With nothing on record, the worker runs at once or waits one period (`run_at_start`). A recorded slot
        still ahead is kept, so a restart neither runs a worker early nor resets its period. Slots that passed
        while nothing ran are coalesced into one run now if the latest is within `misfire_grace` (default: one
        period), and are otherwise skipped; either way they are counted.
        """
        if recorded_next is None:
            if self.definition.starts_at_once:
                self._set_slot(self._slot_at(mono, wall, wall), mono, wall, jitter=False)
            else:
                self._set_slot(self._after(mono, wall), mono, wall)
            return Catchup(0, False)
        if recorded_next > wall:
            # A schedule changed since it was recorded must not wait for the old, later slot.
            first = min(recorded_next, self._next_wall_after(wall))
            self._set_slot(self._slot_at(mono, wall, first), mono, wall)
            return Catchup(0, False)
        missed, latest, period = self._missed_since(recorded_next, wall)
        if wall - latest <= self.misfire_grace(latest):
            self._set_slot(self._slot_at(mono, wall, latest), mono, wall, jitter=False)
            self.due = mono  # made up now, not at the old slot's time
            return Catchup(missed, True)
        self._set_slot(self._slot_at(mono, wall, latest + period), mono, wall)  # the next slot, on the grid
        return Catchup(missed, False)

    def _missed_since(self, first: float, wall: float) -> tuple[int, float, float]:
        """Count the slots from `first` (a slot on record, now past) to `wall`: how many, the latest, a period."""
        if self.is_cron:
            assert self._zone is not None and self.definition.cron is not None
            count, latest = schedule.cron_slots_until(self.definition.cron, self._zone, first, wall)
            period = schedule.cron_after(self.definition.cron, self._zone, latest) - latest
            return count, latest, period
        interval = self.definition.interval
        assert interval is not None
        count = int((wall - first) // interval) + 1
        return count, first + (count - 1) * interval, interval

    # -- the following slots ----------------------------------------------------------------------------------

    def advance(self, mono: float, wall: float) -> int:
        """The current slot has been dealt with (run, or skipped): move to the first slot still ahead.

        Returns how many slots in between were already past (the supervisor was busy or behind): they are
        skipped, not run in a burst, and counted.
        """
        if self.is_cron:
            assert self._zone is not None and self.definition.cron is not None
            following = schedule.cron_after(self.definition.cron, self._zone, self.slot)
            missed = 0
            if following <= wall:
                missed, latest = schedule.cron_slots_until(self.definition.cron, self._zone, following, wall)
                following = schedule.cron_after(self.definition.cron, self._zone, latest)
            self._set_slot(following, mono, wall)
            return missed
        interval = self.definition.interval
        assert interval is not None
        following, missed = schedule.next_due(self.slot, interval, mono)
        self._set_slot(following, mono, wall)
        return missed

    def follow_wall_clock(self, mono: float, wall: float) -> None:
        """Re-place a cron slot's due time after the wall clock moved (an NTP step, a manual change)."""
        if self.is_cron:
            self.due = mono + (self.slot - wall) + self.offset

    def resume(self, mono: float, wall: float) -> None:
        """Come back from a pause: an overdue interval worker runs now, a cron worker waits for its next slot.

        The slots that passed during the pause are neither run nor counted as skipped: a pause is on purpose.
        """
        if self.due >= mono:
            return
        if self.is_cron:
            self._set_slot(self._next_wall_after(wall), mono, wall)
        else:
            self._set_slot(mono, mono, wall, jitter=False)

    def align(self, mono: float, wall: float, claimed: float) -> None:
        """Put an interval schedule in step with the slot at `claimed` (Unix time), the last one a node claimed:
        the current slot moves to the nearest time a whole number of periods from it, so that the nodes keep
        their slots at the same times (cron slots are at the same times already)."""
        interval = self.definition.interval
        if self.is_cron or interval is None:
            return
        current = self.slot_wall(mono, wall)
        aligned = claimed + round((current - claimed) / interval) * interval
        if abs(aligned - current) > 0.001:
            self._set_slot(mono + (aligned - wall), mono, wall)

    def misfire_grace(self, slot_wall: float) -> float:
        """How late a missed slot (Unix time) may still be made up by a run: `misfire_grace`, else one period."""
        if self.definition.misfire_grace is not None:
            return self.definition.misfire_grace
        if self.is_cron:
            return self._next_wall_after(slot_wall) - slot_wall
        assert self.definition.interval is not None
        return self.definition.interval

    def slots_between(self, earlier: float, later: float) -> int:
        """How many slots lie strictly between two slots of this schedule (Unix time)."""
        if self.is_cron:
            assert self._zone is not None and self.definition.cron is not None
            count, _ = schedule.cron_slots_until(self.definition.cron, self._zone, earlier, later - 0.001)
            return count - 1
        assert self.definition.interval is not None
        return max(0, round((later - earlier) / self.definition.interval) - 1)

    # -- reading it --------------------------------------------------------------------------------------------

    def slot_wall(self, mono: float, wall: float) -> float:
        """The current slot as Unix time: what the record keeps as the worker's next run."""
        return self.slot if self.is_cron else wall + (self.slot - mono)

    def due_wall(self, mono: float, wall: float) -> float:
        """When the next run is due, as Unix time: what the table shows."""
        return wall + (self.due - mono)

    # -- helpers ----------------------------------------------------------------------------------------------

    def _after(self, mono: float, wall: float) -> float:
        """The first slot strictly after now, on this schedule's own clock."""
        if self.is_cron:
            return self._next_wall_after(wall)
        assert self.definition.interval is not None
        return mono + self.definition.interval

    def _next_wall_after(self, wall: float) -> float:
        if self.is_cron:
            assert self._zone is not None and self.definition.cron is not None
            return schedule.cron_after(self.definition.cron, self._zone, wall)
        assert self.definition.interval is not None
        return wall + self.definition.interval

    def _slot_at(self, mono: float, wall: float, when_wall: float) -> float:
        """Turn a Unix time into a slot on this schedule's own clock."""
        return when_wall if self.is_cron else mono + (when_wall - wall)

    def _set_slot(self, slot: float, mono: float, wall: float, jitter: bool = True) -> None:
        self.slot = slot
        self.offset = self._rng() * self.definition.jitter if jitter and self.definition.jitter else 0.0
        slot_mono = mono + (slot - wall) if self.is_cron else slot
        self.due = slot_mono + self.offset


def retry_delay(definition: WorkerDefinition, failed_attempt: int) -> float:
    """Seconds before the next try after attempt number `failed_attempt` failed: doubling, up to the cap."""
    return float(min(definition.retry_delay * 2.0 ** (failed_attempt - 1), definition.retry_delay_max))
