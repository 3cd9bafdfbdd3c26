"""Tests of supervisor/schedule.py: `next_due` keeps due times on the grid and counts skipped slots."""
from __future__ import annotations

import random

import pytest

from supervisor.schedule import next_due
from supervisor.units import parse_duration


def test_on_time_returns_the_next_slot_and_misses_nothing() -> None:
    assert next_due(100.0, 10.0, 100.0) == (110.0, 0)
    assert next_due(100.0, 10.0, 105.5) == (110.0, 0)


def test_just_before_the_next_slot_misses_nothing() -> None:
    assert next_due(100.0, 10.0, 109.999) == (110.0, 0)


def test_a_late_caller_gets_a_slot_on_the_grid_not_now_plus_interval() -> None:
    # The run started late (at 103.7); the next due time stays at 110, not 113.7.
    due, missed = next_due(100.0, 10.0, 103.7)
    assert (due, missed) == (110.0, 0)


def test_slots_in_the_past_are_skipped_and_counted() -> None:
    # Slots 110, 120, 130 are already in the past at 135: three missed, next is 140.
    assert next_due(100.0, 10.0, 135.0) == (140.0, 3)


def test_one_slot_missed() -> None:
    assert next_due(100.0, 10.0, 111.0) == (120.0, 1)


@pytest.mark.parametrize(
    ("previous", "interval", "now", "expected"),
    [
        # A slot exactly at `now` is not ahead of now: it counts as missed and the next one is returned.
        (100.0, 10.0, 110.0, (120.0, 1)),
        (0.0, 1.0, 2.0, (3.0, 2)),
        (0.0, 0.25, 1.0, (1.25, 4)),
    ],
)
def test_a_slot_exactly_at_now_is_missed(previous: float, interval: float, now: float, expected: tuple[float, int]) -> None:
    assert next_due(previous, interval, now) == expected


def test_far_behind_skips_many_slots_in_one_step() -> None:
    due, missed = next_due(0.0, 60.0, 1_000_000.0)
    assert missed == 16_666  # slots 60 .. 999_960
    assert due == 1_000_020.0


def test_result_is_ahead_of_now_and_the_slot_before_it_is_not() -> None:
    rng = random.Random(20240101)
    for _ in range(20_000):
        previous = rng.uniform(0, 10_000)
        interval = rng.choice([0.25, 1.0, 60.0, rng.uniform(0.01, 100.0)])
        now = previous + rng.uniform(0, 500) * interval
        due, missed = next_due(previous, interval, now)
        assert due > now, (previous, interval, now, due)
        assert missed >= 0
        # On the grid: previous + (missed + 1) * interval.
        assert due == pytest.approx(previous + (missed + 1) * interval, rel=1e-12, abs=1e-9)
        # Nothing ahead of now was skipped: the slot before `due` is not after now.
        assert due - interval <= now + 1e-9 * max(1.0, abs(now))


def test_result_is_strictly_ahead_of_now_when_now_lands_on_a_slot_with_float_intervals() -> None:
    # 0.1 * 20 == 2.0 in floats: the slot at 2.0 is not ahead of now, so the next due time must be after it.
    due, missed = next_due(0.0, 0.1, 2.0)
    assert due > 2.0, f"next_due returned {due!r}, which is not ahead of now=2.0"
    assert due == pytest.approx(2.1)
    assert missed == 20


def test_result_is_never_behind_now() -> None:
    # Found by a random search: rounding in `due + missed * interval` lands one ulp before `now`.
    previous, interval, now = 17743.670707245918, 44.817966821875395, 52163.86922644622
    due, missed = next_due(previous, interval, now)
    assert due > now, f"next_due returned {due!r}, behind now={now!r}"
    assert due - interval <= now


def test_repeated_use_does_not_drift() -> None:
    # Each call is late by a varying amount; the due times must stay exactly on start + k * interval.
    start, interval = 1000.0, 0.25
    due = start
    rng = random.Random(7)
    for _ in range(10_000):
        now = due + rng.uniform(0.0, 0.2)  # late, but less than one interval
        due, missed = next_due(due, interval, now)
        assert missed == 0
    assert due == start + 10_000 * interval


def test_drift_free_with_a_non_representable_interval() -> None:
    start, interval = 0.0, 0.1
    due = start
    total_missed = 0
    for step in range(1, 2001):
        now = due + 0.05 + (0.1 if step % 7 == 0 else 0.0)  # every 7th call is a full slot late
        due, missed = next_due(due, interval, now)
        total_missed += missed
    slots = round((due - start) / interval)
    assert slots == 2000 + total_missed
    assert due == pytest.approx(start + slots * interval, abs=1e-9)


@pytest.mark.parametrize("interval", [0.0, -1.0, -0.001])
def test_non_positive_interval_is_rejected(interval: float) -> None:
    with pytest.raises(ValueError, match="interval must be positive"):
        next_due(0.0, interval, 10.0)



@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("5m", 300.0), ("1h", 3600.0), ("1h30m", 5400.0), ("1h 30m", 5400.0), ("2d", 172800.0),
     ("250ms", 0.25), ("1.5h", 5400.0), ("0.5", 0.5), ("45", 45.0), (" 10S ", 10.0)],
)
def test_parse_duration_in_human_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "5x", "five minutes", "-5m", "5m-", "1h30", "s5", True, None, [5]])
def test_parse_duration_rejects_what_is_not_a_duration(text: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
