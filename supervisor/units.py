"""Quantities in human units, as people write them in a config: durations ("90s", "1h30m") and sizes ("512MB")."""
from __future__ import annotations

import re
from datetime import timedelta

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


_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)")


def parse_size(value: object) -> int:
    """Return bytes from a whole number or text like "512MB", "1.5GiB", "800k" (k/M/G are powers of 1000).

    Raise ValueError for anything else; the sign and range are the caller's to check.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip().lower())
        if match and match.group(2) in _SIZE_UNITS:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    raise ValueError(f"not a size: {value!r} (give bytes, or text like '512MB', '2GiB')")
