"""Tests of supervisor/supervise/timetable.py and the cron half of schedule.py, on invented clocks: no waiting for real time.

Wall times are built in the zone under test and turned into Unix times; the monotonic clock is an arbitrary
number that moves with the wall clock (MONO_AT_START at the first wall time), as it does on a real machine.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from supervisor.schedule import check_cron, cron_after, cron_slots_until, describe, format_duration, zone
from supervisor.supervise.timetable import Timetable, retry_delay
from supervisor.worker import WorkerDefinition

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
MONO_AT_START = 5_000.0


def at(year: int, month: int, day: int, hour: int, minute: int = 0, tz: ZoneInfo = BERLIN, fold: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=tz, fold=fold).timestamp()


def local(moment: float, tz: ZoneInfo = BERLIN) -> str:
    return datetime.fromtimestamp(moment, tz).strftime("%Y-%m-%d %H:%M %Z")


def definition(**settings: object) -> WorkerDefinition:
    return WorkerDefinition(name="w", module="m", **settings)  # type: ignore[arg-type]


class Clocks:
    """A wall clock and a monotonic clock that advance together."""

    def __init__(self, wall: float) -> None:
        self.start = wall
        self.wall = wall

    @property
    def mono(self) -> float:
        return MONO_AT_START + (self.wall - self.start)

    def to(self, wall: float) -> Clocks:
        self.wall = wall
        return self


def run_slots(timetable: Timetable, clocks: Clocks, count: int) -> list[float]:
    """Let `count` runs happen, each at its due time; return the Unix times they were due."""
    slots = []
    for _ in range(count):
        clocks.to(timetable.due_wall(clocks.mono, clocks.wall))
        slots.append(clocks.wall)
        timetable.advance(clocks.mono, clocks.wall)
    return slots


# -- cron across daylight saving -----------------------------------------------------------------------------


def test_daily_cron_in_berlin_across_spring_forward_runs_after_the_gap_then_at_its_time() -> None:
    # 2026-03-29: clocks go from 02:00 to 03:00 in Berlin; 02:30 does not exist that day.
    clocks = Clocks(at(2026, 3, 27, 12))
    timetable = Timetable(definition(cron="30 2 * * *", timezone="Europe/Berlin"))
    timetable.begin(clocks.mono, clocks.wall, None)
    slots = run_slots(timetable, clocks, 4)
    assert [local(s) for s in slots] == [
        "2026-03-28 02:30 CET",
        "2026-03-29 03:00 CEST",  # the first minute after the gap, once
        "2026-03-30 02:30 CEST",
        "2026-03-31 02:30 CEST",
    ]
    # 24 h of real time between the ordinary days, 23.5 h across the change (cron's rule, not 24 h drift).
    assert slots[1] - slots[0] == 23.5 * 3600
    assert slots[3] - slots[2] == 24 * 3600


def test_daily_cron_in_berlin_across_fall_back_runs_once_on_the_repeated_hour() -> None:
    # 2026-10-25: clocks go from 03:00 back to 02:00; 02:30 happens twice that day, the job runs once.
    clocks = Clocks(at(2026, 10, 24, 12))
    timetable = Timetable(definition(cron="30 2 * * *", timezone="Europe/Berlin"))
    timetable.begin(clocks.mono, clocks.wall, None)
    slots = run_slots(timetable, clocks, 3)
    assert [local(s) for s in slots] == ["2026-10-25 02:30 CEST", "2026-10-26 02:30 CET", "2026-10-27 02:30 CET"]
    assert slots[1] - slots[0] == 25 * 3600  # the day was 25 hours long


def test_hourly_cron_over_the_repeated_hour_counts_real_hours() -> None:
    # Every hour at :15 in New York on 2026-11-01 (fall back at 02:00 EDT -> 01:00 EST): 01:15 happens twice.
    start = at(2026, 11, 1, 0, 0, tz=NEW_YORK)
    slots = []
    moment = start
    for _ in range(4):
        moment = cron_after("15 * * * *", NEW_YORK, moment)
        slots.append(moment)
    gaps = [b - a for a, b in zip(slots, slots[1:])]
    # cron's rule for a repeated hour: a job that runs every hour runs in both copies of it.
    assert all(gap == 3600 for gap in gaps), [local(s, NEW_YORK) for s in slots]


def test_cron_is_evaluated_in_its_own_zone_not_the_servers() -> None:
    moment = at(2026, 6, 1, 12, tz=ZoneInfo("UTC"))
    slot = cron_after("0 9 * * *", NEW_YORK, moment)
    assert local(slot, NEW_YORK) == "2026-06-01 09:00 EDT"  # 12:00 UTC is 08:00 in New York
    assert datetime.fromtimestamp(slot, timezone.utc).hour == 13


def test_cron_after_is_strictly_after_a_slot() -> None:
    slot = at(2026, 1, 5, 3, tz=BERLIN)
    assert local(cron_after("0 3 * * *", BERLIN, slot)) == "2026-01-06 03:00 CET"
    assert local(cron_after("0 3 * * *", BERLIN, slot - 0.001)) == "2026-01-05 03:00 CET"


def test_macros_and_bad_expressions() -> None:
    assert local(cron_after("@daily", BERLIN, at(2026, 1, 5, 3))) == "2026-01-06 00:00 CET"
    assert check_cron("*/5 * * * *") == "*/5 * * * *"
    for bad in ("61 * * * *", "* * *", "", "every day", 5):
        with pytest.raises(ValueError, match="cron expression"):
            check_cron(bad)


def test_unknown_zone_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a known time zone"):
        zone("Mars/Olympus_Mons")


def test_counting_the_slots_of_an_outage() -> None:
    first = at(2026, 1, 5, 3, 0)
    count, last = cron_slots_until("*/10 * * * *", BERLIN, first, first + 3600)
    assert (count, local(last)) == (7, "2026-01-05 04:00 CET")


def test_the_slots_between_two_claims_and_how_late_a_missed_one_may_still_run() -> None:
    # What a node counts when its claim wins a slot after others went unclaimed (supervise/cluster.py).
    nightly = Timetable(definition(cron="30 2 * * *", timezone="Europe/Berlin"))
    # Across spring forward (29 March 2026): 02:30 does not exist that day and runs at 03:00, once.
    assert nightly.slots_between(at(2026, 3, 27, 2, 30), at(2026, 3, 31, 2, 30)) == 3
    assert nightly.slots_between(at(2026, 3, 30, 2, 30), at(2026, 3, 31, 2, 30)) == 0
    assert nightly.misfire_grace(at(2026, 3, 30, 2, 30)) == 24 * 3600
    hourly = Timetable(definition(cron="0 * * * *", misfire_grace=600))
    assert hourly.misfire_grace(at(2026, 1, 5, 3)) == 600
    every = Timetable(definition(interval=10))
    assert every.slots_between(100.0, 100.0 + 40.002) == 3 and every.misfire_grace(100.0) == 10


# -- the first slot: run at start, wait a period, the record after a restart --------------------------------


def test_an_interval_worker_runs_at_start_and_a_cron_worker_waits_for_its_slot() -> None:
    clocks = Clocks(at(2026, 1, 5, 10, 7))
    interval = Timetable(definition(interval=60.0))
    interval.begin(clocks.mono, clocks.wall, None)
    assert interval.due == clocks.mono
    cron = Timetable(definition(cron="0 * * * *", timezone="Europe/Berlin"))
    cron.begin(clocks.mono, clocks.wall, None)
    assert local(cron.due_wall(clocks.mono, clocks.wall)) == "2026-01-05 11:00 CET"


def test_run_at_start_can_be_turned_either_way() -> None:
    clocks = Clocks(at(2026, 1, 5, 10, 7))
    waits = Timetable(definition(interval=60.0, run_at_start=False))
    waits.begin(clocks.mono, clocks.wall, None)
    assert waits.due == clocks.mono + 60
    runs = Timetable(definition(cron="0 * * * *", run_at_start=True))
    runs.begin(clocks.mono, clocks.wall, None)
    assert runs.due == clocks.mono
    runs.advance(clocks.mono, clocks.wall)
    assert datetime.fromtimestamp(runs.due_wall(clocks.mono, clocks.wall)).minute == 0  # then on its schedule


def test_a_recorded_slot_still_ahead_is_kept_across_a_restart() -> None:
    clocks = Clocks(at(2026, 1, 5, 10, 0))
    timetable = Timetable(definition(interval=3600.0))
    catchup = timetable.begin(clocks.mono, clocks.wall, clocks.wall + 1200)
    assert (catchup.missed, catchup.run_now) == (0, False)
    assert timetable.due == clocks.mono + 1200


def test_a_recorded_slot_further_than_the_new_schedule_allows_is_brought_in() -> None:
    # The interval was 1 day when recorded and is 1 minute now: the next run is within a minute, not tomorrow.
    clocks = Clocks(at(2026, 1, 5, 10, 0))
    timetable = Timetable(definition(interval=60.0))
    timetable.begin(clocks.mono, clocks.wall, clocks.wall + 86_000)
    assert timetable.due == clocks.mono + 60


def test_missed_slots_within_the_grace_are_made_up_by_one_run_now() -> None:
    # Every 10 minutes; the record says 10:00 was next; the supervisor comes back at 10:35: 10:00..10:30 missed.
    clocks = Clocks(at(2026, 1, 5, 10, 35))
    timetable = Timetable(definition(interval=600.0))
    catchup = timetable.begin(clocks.mono, clocks.wall, at(2026, 1, 5, 10, 0))
    assert (catchup.missed, catchup.run_now, catchup.skipped) == (4, True, 3)
    assert timetable.due == clocks.mono
    timetable.advance(clocks.mono, clocks.wall)
    assert local(timetable.due_wall(clocks.mono, clocks.wall)) == "2026-01-05 10:40 CET"  # back on the grid


def test_missed_slots_past_the_grace_are_skipped_and_counted() -> None:
    clocks = Clocks(at(2026, 1, 5, 10, 35))
    timetable = Timetable(definition(interval=600.0, misfire_grace=60.0))
    catchup = timetable.begin(clocks.mono, clocks.wall, at(2026, 1, 5, 10, 0))
    assert (catchup.missed, catchup.run_now, catchup.skipped) == (4, False, 4)
    assert local(timetable.due_wall(clocks.mono, clocks.wall)) == "2026-01-05 10:40 CET"


def test_a_daily_cron_job_missed_during_an_outage_is_made_up_once_when_back() -> None:
    # Down from 02:00 to 09:00 over three nights: the 03:00 job missed three times, made up by one run.
    clocks = Clocks(at(2026, 1, 8, 9, 0))
    timetable = Timetable(definition(cron="0 3 * * *", timezone="Europe/Berlin"))
    catchup = timetable.begin(clocks.mono, clocks.wall, at(2026, 1, 6, 3, 0))
    assert (catchup.missed, catchup.run_now) == (3, True)
    timetable.advance(clocks.mono, clocks.wall)
    assert local(timetable.due_wall(clocks.mono, clocks.wall)) == "2026-01-09 03:00 CET"


def test_a_cron_slot_older_than_its_grace_is_not_made_up() -> None:
    clocks = Clocks(at(2026, 1, 6, 9, 0))
    timetable = Timetable(definition(cron="0 3 * * *", timezone="Europe/Berlin", misfire_grace=3600.0))
    catchup = timetable.begin(clocks.mono, clocks.wall, at(2026, 1, 6, 3, 0))
    assert (catchup.missed, catchup.run_now, catchup.skipped) == (1, False, 1)
    assert local(timetable.due_wall(clocks.mono, clocks.wall)) == "2026-01-07 03:00 CET"


def test_a_zero_grace_never_makes_up() -> None:
    clocks = Clocks(at(2026, 1, 5, 10, 0) + 1)
    timetable = Timetable(definition(interval=600.0, misfire_grace=0.0))
    catchup = timetable.begin(clocks.mono, clocks.wall, at(2026, 1, 5, 10, 0))
    assert not catchup.run_now and catchup.missed == 1


# -- the following slots -------------------------------------------------------------------------------------


def test_interval_slots_stay_on_the_monotonic_grid_and_count_what_was_missed() -> None:
    clocks = Clocks(at(2026, 1, 5, 10, 0))
    timetable = Timetable(definition(interval=10.0))
    timetable.begin(clocks.mono, clocks.wall, None)
    start = timetable.due
    clocks.to(clocks.wall + 35)  # the loop was busy for 35 s
    assert timetable.advance(clocks.mono, clocks.wall) == 3
    assert timetable.due == start + 40


def test_a_cron_schedule_behind_by_hours_skips_to_the_next_slot_and_counts() -> None:
    clocks = Clocks(at(2026, 1, 5, 10, 0))
    timetable = Timetable(definition(cron="*/15 * * * *", timezone="Europe/Berlin"))
    timetable.begin(clocks.mono, clocks.wall, None)  # 10:15
    clocks.to(at(2026, 1, 5, 12, 5))
    assert timetable.advance(clocks.mono, clocks.wall) == 7  # 10:30 .. 12:00
    assert local(timetable.due_wall(clocks.mono, clocks.wall)) == "2026-01-05 12:15 CET"


def test_a_wall_clock_step_moves_a_cron_slot_but_not_an_interval_slot() -> None:
    clocks = Clocks(at(2026, 1, 5, 10, 0))
    cron = Timetable(definition(cron="0 11 * * *", timezone="Europe/Berlin"))
    cron.begin(clocks.mono, clocks.wall, None)
    interval = Timetable(definition(interval=3600.0, run_at_start=False))
    interval.begin(clocks.mono, clocks.wall, None)
    mono = clocks.mono
    wall_after_step = clocks.wall + 1800  # NTP steps the clock 30 minutes forward; monotonic time did not move
    cron.follow_wall_clock(mono, wall_after_step)
    interval.follow_wall_clock(mono, wall_after_step)
    assert cron.due == mono + 1800  # 11:00 is now only 30 minutes away
    assert interval.due == mono + 3600


def test_jitter_delays_each_run_within_its_bound_but_keeps_the_grid() -> None:
    draws = iter([0.5, 0.9, 0.1])
    clocks = Clocks(at(2026, 1, 5, 10, 0))
    timetable = Timetable(definition(interval=60.0, jitter=10.0, run_at_start=False), rng=lambda: next(draws))
    timetable.begin(clocks.mono, clocks.wall, None)
    assert timetable.due == clocks.mono + 60 + 5
    first_slot = timetable.slot
    clocks.to(timetable.due_wall(clocks.mono, clocks.wall))
    timetable.advance(clocks.mono, clocks.wall)
    assert timetable.slot == first_slot + 60  # the grid is not pushed by the jitter
    assert timetable.due == timetable.slot + 9


def test_resume_runs_an_overdue_interval_worker_now_and_a_cron_worker_at_its_next_slot() -> None:
    clocks = Clocks(at(2026, 1, 5, 10, 0))
    interval = Timetable(definition(interval=60.0))
    interval.begin(clocks.mono, clocks.wall, None)
    cron = Timetable(definition(cron="0 * * * *", timezone="Europe/Berlin"))
    cron.begin(clocks.mono, clocks.wall, None)
    clocks.to(at(2026, 1, 5, 13, 20))  # paused for hours
    interval.resume(clocks.mono, clocks.wall)
    cron.resume(clocks.mono, clocks.wall)
    assert interval.due == clocks.mono
    assert local(cron.due_wall(clocks.mono, clocks.wall)) == "2026-01-05 14:00 CET"


# -- retries and words ---------------------------------------------------------------------------------------


def test_retry_delay_doubles_up_to_its_cap() -> None:
    d = definition(interval=60.0, retries=6, retry_delay=0.5, retry_delay_max=3.0)
    assert [retry_delay(d, attempt) for attempt in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_schedules_in_words() -> None:
    assert describe(300.0, None, None) == "every 5m"
    assert describe(None, "0 3 * * *", "Europe/Berlin") == "cron 0 3 * * * (Europe/Berlin)"
    assert [format_duration(s) for s in (0.25, 1, 90, 3600, 5400, 86400 + 61)] == [
        "250ms", "1s", "1m30s", "1h", "1h30m", "1d1m1s"
    ]


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({}, "interval or cron is not set"),
        ({"interval": 60.0, "cron": "* * * * *"}, "not both"),
        ({"interval": 60.0, "timezone": "UTC"}, "timezone applies only to a cron schedule"),
        ({"interval": 60.0, "max_running": 3}, "needs overlap = 'allow'"),
        ({"interval": 60.0, "retry_delay": 10.0, "retry_delay_max": 5.0}, "shorter than retry_delay"),
    ],
)
def test_settings_that_do_not_hold_together(settings: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        definition(**settings)


def test_allow_without_max_running_allows_two() -> None:
    assert definition(interval=1.0, overlap="allow").concurrency == 2
    assert definition(interval=1.0, overlap="allow", max_running=5).concurrency == 5
    assert definition(interval=1.0, overlap="queue").concurrency == 1


def test_the_first_wall_time_of_a_test_day_is_what_it_says() -> None:
    # Guards the helpers above: a wrong zone would make every DST test pass for the wrong reason.
    assert local(at(2026, 3, 29, 3, 0)) == "2026-03-29 03:00 CEST"
    assert datetime.fromtimestamp(at(2026, 10, 25, 2, 30, fold=1), BERLIN).utcoffset() == timedelta(hours=1)
