"""Pure schedule arithmetic: when a worker is next due. Takes `now`, reads no clock."""
from __future__ import annotations

import math


def next_due(previous_due: float, interval: float, now: float) -> tuple[float, int]:
    """Return the next due time after `previous_due` that is still ahead of `now`, and how many slots were missed.

    Due times stay on the grid `previous_due + k * interval`, so a slow run or a busy loop never makes the
    schedule drift; when the supervisor falls behind, the slots already in the past are skipped (and counted),
    not run in a burst.
    """
    if interval <= 0:
        raise ValueError(f"interval must be positive, got {interval!r}")
    due = previous_due + interval
    if due > now:
        return due, 0
    missed = math.floor((now - due) / interval) + 1
    following = previous_due + (missed + 1) * interval
    # Floating point can land the slot on `now` or a rounding step behind it; step on until it is ahead.
    while following <= now:
        missed += 1
        following = previous_due + (missed + 1) * interval
    return following, missed
