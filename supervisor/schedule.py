"""Pure schedule arithmetic: when a worker is next due. Takes `now`, reads no clock."""
from __future__ import annotations

import math
import re
from datetime import timedelta


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


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_duration(value: object) -> float:
    """Return seconds from a number, a timedelta, or text in human units: "90s", "5m", "1h30m", "250ms", "2d".

    Raise ValueError for anything else (booleans included); the sign and range are the caller's to check.
    """
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if _NUMBER.fullmatch(text):
            return float(text)
        parts = _PART.findall(text)
        if text and parts and "".join(number + unit for number, unit in parts) == text:
            return sum(float(number) * _UNITS[unit] for number, unit in parts)
    raise ValueError(f"not a duration: {value!r} (give seconds, a timedelta, or text like '90s', '5m', '1h30m')")
