"""Pure schedule arithmetic: when a worker is next due. Takes `now`, reads no clock."""
from __future__ import annotations

import math
import os
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError


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


# -- cron ----------------------------------------------------------------------------------------------------

# The macros cron understands; cronsim takes only the five fields.
CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Counting the slots a long outage missed stops here (an every-minute schedule down for a week is 10,080).
MAX_COUNTED_SLOTS = 100_000


def cron_fields(expression: str) -> str:
    """Return the five-field form of a cron expression (macros such as `@daily` expanded)."""
    text = " ".join(expression.split())
    return CRON_MACROS.get(text.lower(), text)


def check_cron(expression: object) -> str:
    """Return the expression if cronsim can evaluate it; raise ValueError saying what is wrong otherwise."""
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError(f"must be a cron expression such as '*/5 * * * *' or '@daily', got {expression!r}")
    try:
        CronSim(cron_fields(expression), datetime(2000, 1, 1, tzinfo=timezone.utc))
    except CronSimError as exc:
        raise ValueError(f"is not a valid cron expression ({exc}): {expression!r}") from None
    return expression


def zone(name: str | None) -> tzinfo:
    """Return the named IANA time zone, or the server's own zone for None; raise ValueError if unknown."""
    if name is None:
        return local_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"is not a known time zone (an IANA name such as 'Europe/Berlin' or 'UTC'): {name!r}") from None


def local_zone() -> tzinfo:
    """The server's time zone with its daylight-saving rules (TZ, else /etc/localtime), not just today's offset."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as file:
            return ZoneInfo.from_file(file, key="localtime")
    except (OSError, ValueError):
        return timezone.utc


def cron_after(expression: str, tz: tzinfo, moment: float) -> float:
    """Return the first slot of `expression` in zone `tz` strictly after `moment` (both Unix timestamps).

    Daylight saving follows cron's own rules (as cronsim implements them): a time that does not exist on the
    day clocks go forward runs at the first minute after the gap, and a time that happens twice on the day they
    go back runs once, at its first occurrence.
    """
    start = datetime.fromtimestamp(moment, tz)
    slot = next(CronSim(cron_fields(expression), start))
    if slot.timestamp() <= moment:  # cronsim works in whole minutes: step past a slot that is `moment` itself
        slot = next(CronSim(cron_fields(expression), start + timedelta(minutes=1)))
    return slot.timestamp()


def cron_slots_until(expression: str, tz: tzinfo, first: float, end: float) -> tuple[int, float]:
    """Count the slots from `first` (itself a slot) up to and including `end`; return the count and the last one.

    Used after an outage: how many runs were missed, and how long ago the latest of them was due.
    """
    count, last = 1, first
    iterator = CronSim(cron_fields(expression), datetime.fromtimestamp(first, tz))
    while count < MAX_COUNTED_SLOTS:
        following = next(iterator).timestamp()
        if following > end:
            break
        count, last = count + 1, following
    return count, last


def describe(interval: float | None, cron: str | None, timezone_name: str | None) -> str:
    """Say a schedule in a few words for the table and `check`: "every 5m", "cron 0 3 * * * (Europe/Berlin)"."""
    if cron is not None:
        return f"cron {cron}" + (f" ({timezone_name})" if timezone_name else "")
    assert interval is not None
    return f"every {format_duration(interval)}"


def format_duration(seconds: float) -> str:
    """Write seconds as people do: 90 -> "1m30s", 0.25 -> "250ms", 7200 -> "2h"."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    parts, rest = [], seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            whole = int(rest // size)
            parts.append(f"{whole}{unit}")
            rest -= whole * size
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return "".join(parts)
