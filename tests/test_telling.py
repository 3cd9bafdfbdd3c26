"""When the supervisor tells its recorder of new records (record/recording.py, Telling), on an invented monotonic
clock: a failure at once, a success at once when the supervisor is not busy and in batches when it is, a start
within DEFER_LIMIT. make bench measures what this buys (due to finished record, throughput); here is the rule.
"""
from __future__ import annotations

from supervisor.record.recording import DEFER_LIMIT, QUIET, Telling, Urgency


def tellings(telling: Telling, appends: list[tuple[float, Urgency]], until: float, step: float = 0.001) -> list[float]:
    """Drive the rule as the loop does: append each record at its time, and tell the recorder whenever it is due,
    checking every `step` (the loop's passes). Return when the recorder was told."""
    told = []
    pending = sorted(appends, key=lambda a: a[0])
    now = 0.0
    while now <= until:
        while pending and pending[0][0] <= now:
            telling.appended(pending.pop(0)[1], now)
        if telling.is_due(now):
            telling.told(now)
            told.append(round(now, 3))
        now = round(now + step, 3)
    return told


def test_a_failure_and_a_lone_success_are_told_at_once_and_a_start_within_the_limit() -> None:
    assert tellings(Telling(), [(1.0, Urgency.NOW)], until=2.0) == [1.0]
    assert tellings(Telling(), [(1.0, Urgency.SOON)], until=2.0) == [1.0]
    assert tellings(Telling(), [(1.0, Urgency.LATER)], until=2.0) == [1.0 + DEFER_LIMIT]
    # A start, then its run's quick end: one telling, at the end, with both (one row in the database).
    assert tellings(Telling(), [(1.0, Urgency.LATER), (1.03, Urgency.SOON)], until=2.0) == [1.03]


def test_successes_of_a_quiet_supervisor_are_each_told_at_once() -> None:
    every = QUIET * 5  # a run every 100 ms: the supervisor is not busy
    appends = [(round(1.0 + i * every, 3), Urgency.SOON) for i in range(10)]
    assert tellings(Telling(), appends, until=3.0) == [t for t, _ in appends]


def test_successes_of_a_busy_supervisor_are_told_in_batches_about_every_defer_limit() -> None:
    # 200 successes 5 ms apart: one telling, then one per DEFER_LIMIT, each taking every success since.
    appends = [(round(1.0 + i * 0.005, 3), Urgency.SOON) for i in range(200)]
    told = tellings(Telling(), appends, until=3.0)
    assert told[0] == 1.0
    gaps = [round(b - a, 3) for a, b in zip(told, told[1:])]
    assert gaps and all(abs(gap - DEFER_LIMIT) <= 0.0015 for gap in gaps), gaps  # the loop's 1 ms passes
    assert len(told) <= 1 + (appends[-1][0] - 1.0) / DEFER_LIMIT + 1
    assert told[-1] >= appends[-1][0]  # the last success is told too, within DEFER_LIMIT of it
    assert told[-1] - appends[-1][0] <= DEFER_LIMIT


def test_a_failure_is_never_held_back_by_a_batch() -> None:
    appends = [(round(1.0 + i * 0.005, 3), Urgency.SOON) for i in range(10)] + [(1.022, Urgency.NOW)]
    told = tellings(Telling(), appends, until=2.0)
    assert 1.022 in told
