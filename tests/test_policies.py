"""Run policies with real children and a real SQLite file: overlap, retries, quarantine, catch-up, the cap, cron.

Every check is read from the record, as an operator would: run rows (`attempt`, `started_at`, `finished_at`,
`outcome`) and the worker row (`skipped_count`, `paused`, `pause_reason`, `next_run_at`, `schedule`). A run's
`started_at` is taken when the supervisor asks for it and its `finished_at` when the supervisor has reaped it,
both on the supervisor's own clock, so the intervals in the rows are the supervisor's own view of what was in
progress. Waiting is done with `wait_until`; "nothing more happens" is shown by marking time with the runs of a
neighbour on a 0.2 s interval (`healthy`), never by a sleep.
"""
from __future__ import annotations

import math
import os
import re
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from dbtools import query
from helpers import Record, wait_until, worker_package

# Two timestamps the supervisor takes a few microseconds apart (the monotonic clock that decides, then the wall
# clock that is recorded), rounded to microseconds in the row: a lower bound that the design makes exact is
# checked to within this.
CLOCKS = 0.002
# The largest lateness we accept where the design says "at once" or "at its time", on a loaded 2-core machine.
LATE = 1.5

SLOW_SKIP = """
from supervisor import worker

@worker(interval="200ms")
def slow_skip(ctx):
    ctx.sleep(1)
"""

# Every 0.5 s rather than 0.2 s: a queued run starts as the run before it ends, and waiting for the next slot
# instead would show as a gap of up to 0.5 s, well clear of the loop's own lateness.
SLOW_QUEUE = """
from supervisor import worker

@worker(interval="500ms", overlap="queue")
def slow_queue(ctx):
    ctx.sleep(1)
"""

SLOW_ALLOW = """
from supervisor import worker

@worker(interval="200ms", overlap="allow", max_running=3)
def slow_allow(ctx):
    ctx.sleep(1)
"""

RETRIES = """
import os

from supervisor import worker

BACKOFF = dict(interval=60, retries=3, retry_delay="200ms", retry_delay_max="500ms")


@worker(**BACKOFF)
def always_fails(ctx):
    raise RuntimeError(f"attempt {ctx.attempt} failed on purpose")


@worker(**BACKOFF)
def fails_once(ctx):
    # A file in the supervisor's directory is the memory between runs (each run is a fresh child).
    marker = os.path.join(os.getcwd(), "failed-once")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("the first attempt fails on purpose")
"""

DOOMED = """
from supervisor import worker

@worker(interval="200ms", quarantine_after=3)
def doomed(ctx):
    raise RuntimeError("fails every time")
"""

HOURLY = """
from supervisor import worker

@worker(interval="1h", run_at_start=True)
def hourly(ctx):
    pass
"""

TIGHT = """
from supervisor import worker

@worker(interval="2s", misfire_grace="0s")
def tight(ctx):
    pass
"""

NAPS = """
from supervisor import Worker, register


class Nap(Worker):
    interval = 60  # due at start, and not again within the test

    def run(self, ctx):
        ctx.sleep(0.5)


register(*(Nap(name=f"nap{i}") for i in range(6)))
"""

EVERY_MINUTE = """
from supervisor import worker

@worker(cron="* * * * *", run_at_start=False)
def every_minute(ctx):
    pass
"""


# -- reading the record -------------------------------------------------------------------------------------------


def unix(value: str | datetime) -> float:
    """A naive-UTC timestamp of the record (text in SQLite) as Unix time."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.replace(tzinfo=timezone.utc).timestamp()


def naive_utc(moment: float) -> datetime:
    """Unix time as the naive-UTC datetime the record holds."""
    return datetime.fromtimestamp(moment, timezone.utc).replace(tzinfo=None)


def next_minute(moment: float) -> datetime:
    """The first whole minute strictly after a Unix time, as naive UTC."""
    return naive_utc(moment).replace(second=0, microsecond=0) + timedelta(minutes=1)


def spans(rows: Sequence[Any]) -> list[tuple[float, float]]:
    """(started, finished) of finished runs, as Unix time, in start order."""
    return [(unix(r["started_at"]), unix(r["finished_at"])) for r in rows if r["finished_at"] is not None]


def most_at_once(intervals: Sequence[tuple[float, float]]) -> int:
    """The most runs in progress at one moment. An end and a start at the same instant do not overlap: the
    supervisor records a run's end before it asks for the run that takes its place."""
    events = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    most = now = 0
    for _, change in events:
        now += change
        most = max(most, now)
    return most


def worker_row(record: Record, name: str) -> sqlite3.Row:
    """The worker's row, which must be there."""
    row = record.worker(name)
    assert row is not None, f"no row for worker {name!r}"
    return row


def wait_for_row(predicate: Callable[[], sqlite3.Row | None], what: str) -> sqlite3.Row:
    """`wait_until` for a row: the row once `predicate` finds it."""
    row = wait_until(predicate, timeout=60, what=what)
    assert row is not None
    return row


def all_runs(record: Record, worker: str) -> list[Any]:
    """A worker's runs, finished or not, in start order."""
    return record.runs(worker, finished=False)


def finished(record: Record, worker: str) -> int:
    """How many runs of a worker have finished."""
    return len(record.runs(worker))


def mark_time(record: Record, runs: int = 10) -> None:
    """Let `runs` more runs of `healthy` finish. Their starts are on its 0.2 s grid, so ten of them take well
    over a second: time for several slots of any 0.2 s worker, or a retry of up to 0.5 s, to have come."""
    before = finished(record, "healthy")
    wait_until(lambda: finished(record, "healthy") >= before + runs, timeout=60, what=f"{runs} more healthy runs")


def assert_every_slot_accounted(rows: Sequence[Any], skipped: int, interval: float) -> None:
    """Every slot of the grid is run or counted skipped, once: runs + skipped = slots from the first to the last.

    When a run starts, every slot up to that moment has been dealt with (run, queued into a run, or skipped),
    so the slots up to the last start are a lower bound; no slot after the last run ended can have been
    counted, so the slots up to then are an upper bound. Two slots of slack on each side: one for a slot that
    comes while the loop handles a run's end (dealt with in its next pass), one for a slot on a rounding step
    between the monotonic clock that places slots and the wall clock the rows hold.
    """
    intervals = spans(rows)
    first, last_start, last_end = intervals[0][0], intervals[-1][0], max(end for _, end in intervals)
    accounted = len(intervals) + skipped
    at_least = math.floor((last_start - first) / interval) + 1 - 2
    at_most = math.floor((last_end - first) / interval) + 1 + 2
    assert at_least <= accounted <= at_most, (len(intervals), skipped, at_least, at_most)


def control(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m supervisor ARGS --db URL` as an operator would, with a wide table."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "supervisor", *args, "--db", url], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=env)


def set_next_run_at(db: Path, worker: str, moment: float) -> None:
    """Rewrite a worker's next run in the record, as if the supervisor had been down (none runs meanwhile)."""
    stamp = naive_utc(moment).isoformat(sep=" ", timespec="microseconds")
    query(f"sqlite:///{db}", "update worker set next_run_at = ? where name = ?", stamp, worker)


def first_session(record: Record, start_supervisor: Any, worker: str) -> None:
    """Run a supervisor until `worker` has run once, and stop it cleanly (so its row holds a schedule)."""
    supervisor = start_supervisor()
    wait_until(lambda: finished(record, worker) >= 1, timeout=60, what=f"the first run of {worker}")
    assert supervisor.stop() == 0, supervisor.log()


# -- overlap ------------------------------------------------------------------------------------------------------


def test_overlap_skip_never_runs_twice_at_once_and_counts_the_skipped_slots(
    tmp_path: Path, record: Record, start_supervisor: Any
) -> None:
    worker_package(tmp_path, [], extra={"slow_skip": SLOW_SKIP})
    supervisor = start_supervisor()
    wait_until(lambda: finished(record, "slow_skip") >= 3, timeout=60, what="three runs of slow_skip")
    assert supervisor.stop() == 0, supervisor.log()

    rows = all_runs(record, "slow_skip")
    intervals = spans(rows)
    assert len(intervals) == len(rows) >= 3
    assert most_at_once(intervals) == 1, intervals
    for (_, end), (start, _) in zip(intervals, intervals[1:]):
        # The next run is for the first slot after the run ended: within one interval (plus lateness).
        assert end <= start <= end + 0.2 + LATE, (end, start)
    # A run of 1 s or more lets at least four slots pass after its own (at +0.2 ... +0.8 s). By the time the
    # next run starts, each of them is the next run's slot or skipped: at least three skipped per such gap.
    full_then_another = sum(r["duration"] >= 1.0 for r in rows[:-1])
    assert full_then_another >= 2  # the last run may have been cut short by the stop
    skipped = worker_row(record, "slow_skip")["skipped_count"]
    assert skipped >= 3 * full_then_another, skipped
    assert_every_slot_accounted(rows, skipped, 0.2)


def test_overlap_queue_runs_one_queued_slot_as_soon_as_the_run_ends(
    tmp_path: Path, record: Record, start_supervisor: Any
) -> None:
    worker_package(tmp_path, [], extra={"slow_queue": SLOW_QUEUE})
    supervisor = start_supervisor()
    wait_until(lambda: finished(record, "slow_queue") >= 4, timeout=60, what="four runs of slow_queue")
    assert supervisor.stop() == 0, supervisor.log()

    rows = all_runs(record, "slow_queue")
    intervals = spans(rows)
    assert len(intervals) == len(rows) >= 4
    assert most_at_once(intervals) == 1, intervals
    for (_, end), (start, _) in zip(intervals, intervals[1:]):
        # A slot always comes during a 1 s run, so the next run is the queued one, asked for in the same pass
        # of the loop that recorded the end: never before it, and only the loop's own work after it.
        assert end <= start < end + 0.25, (end, start)
    assert "one run queued" in supervisor.log()
    # Two slots pass during each 1 s run: one is queued, the other skipped (and counted).
    skipped = worker_row(record, "slow_queue")["skipped_count"]
    assert skipped >= 1, skipped
    assert_every_slot_accounted(rows, skipped, 0.5)


def test_overlap_allow_runs_up_to_max_running_at_once(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, [], extra={"slow_allow": SLOW_ALLOW})
    supervisor = start_supervisor()
    wait_until(lambda: most_at_once(spans(all_runs(record, "slow_allow"))) >= 3, timeout=60,
               what="three runs of slow_allow in progress at once")
    assert supervisor.stop() == 0, supervisor.log()

    rows = all_runs(record, "slow_allow")
    intervals = spans(rows)
    assert len(intervals) == len(rows)
    assert most_at_once(intervals) == 3, intervals
    skipped = worker_row(record, "slow_allow")["skipped_count"]
    assert_every_slot_accounted(rows, skipped, 0.2)


# -- retries ------------------------------------------------------------------------------------------------------


def test_a_failing_run_is_retried_with_doubling_capped_delays_then_given_up(
    tmp_path: Path, record: Record, start_supervisor: Any
) -> None:
    worker_package(tmp_path, ["healthy"], extra={"retries": RETRIES})
    supervisor = start_supervisor()
    wait_until(lambda: finished(record, "always_fails") >= 4, timeout=60, what="four attempts of always_fails")
    mark_time(record)  # a fifth attempt would come within 0.5 s of the fourth's end; the next slot is in 60 s
    assert supervisor.stop() == 0, supervisor.log()

    rows = all_runs(record, "always_fails")
    assert [r["attempt"] for r in rows] == [1, 2, 3, 4], supervisor.log()
    assert [r["outcome"] for r in rows] == ["error"] * 4
    gaps = [unix(b["started_at"]) - unix(a["finished_at"]) for a, b in zip(rows, rows[1:])]
    for gap, delay in zip(gaps, [0.2, 0.4, 0.5]):  # 0.2 doubling, capped at 0.5
        assert delay - CLOCKS <= gap <= delay + LATE, (gaps, delay)
    row = worker_row(record, "always_fails")
    assert (row["failure_count"], row["consecutive_failures"], row["success_count"]) == (4, 4, 0)
    assert "attempt 4 of 4 in 0.5s" in supervisor.log()


def test_a_retry_that_succeeds_ends_the_retries(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["healthy"], extra={"retries": RETRIES})
    supervisor = start_supervisor()
    wait_until(lambda: finished(record, "fails_once") >= 2, timeout=60, what="two attempts of fails_once")
    mark_time(record)
    assert supervisor.stop() == 0, supervisor.log()

    rows = all_runs(record, "fails_once")
    assert [(r["attempt"], r["outcome"]) for r in rows] == [(1, "error"), (2, "succeeded")], supervisor.log()
    gap = unix(rows[1]["started_at"]) - unix(rows[0]["finished_at"])
    assert 0.2 - CLOCKS <= gap <= 0.2 + LATE
    row = worker_row(record, "fails_once")
    assert (row["failure_count"], row["success_count"], row["consecutive_failures"]) == (1, 1, 0)


# -- quarantine ---------------------------------------------------------------------------------------------------


def test_quarantine_after_failures_in_a_row_and_resume(tmp_path: Path, db: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["healthy"], extra={"doomed": DOOMED})
    url = f"sqlite:///{db}"
    supervisor = start_supervisor()

    def quarantined() -> sqlite3.Row | None:
        row = record.worker("doomed")
        return row if row is not None and row["paused"] and row["pause_reason"] else None

    row = wait_for_row(quarantined, "doomed to be quarantined")
    assert "quarantine" in row["pause_reason"]
    assert row["consecutive_failures"] == 3
    assert [r["outcome"] for r in all_runs(record, "doomed")] == ["error"] * 3
    mark_time(record)  # doomed would have had about ten slots by now
    assert len(all_runs(record, "doomed")) == 3
    status = control(tmp_path, url, "status")
    assert status.returncode == 0, status.stderr
    (line,) = [line for line in status.stdout.splitlines() if "doomed" in line]
    assert "quarantined" in line, status.stdout

    resumed = control(tmp_path, url, "resume", "doomed")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("resume doomed: resumed (was quarantined after 3 failures in a row)"), resumed.stdout
    # Runs come again, and only the failures since the resume count: three more, not one, before the next quarantine.
    # (The resume command cleared `paused` in the row before it returned; only a new quarantine sets it again.)
    row = wait_for_row(lambda: quarantined() if len(record.runs("doomed")) > 3 else None,
                       "doomed to be quarantined again")
    assert len(all_runs(record, "doomed")) == 6, supervisor.log()
    assert row["consecutive_failures"] == 6
    mark_time(record)
    assert len(all_runs(record, "doomed")) == 6
    assert supervisor.stop() == 0, supervisor.log()
    assert supervisor.log().count("doomed: quarantined after 3 failures in a row") == 2


# -- catch-up after a restart -------------------------------------------------------------------------------------


def test_a_slot_missed_while_down_is_made_up_by_one_run_at_start(
    tmp_path: Path, db: Path, record: Record, start_supervisor: Any
) -> None:
    worker_package(tmp_path, ["healthy"], extra={"hourly": HOURLY})
    first_session(record, start_supervisor, "hourly")
    assert finished(record, "hourly") == 1
    missed = time.time() - 600  # the record says it was due ten minutes ago: within the default grace (1h)
    set_next_run_at(db, "hourly", missed)

    started = time.time()
    supervisor = start_supervisor()
    wait_until(lambda: finished(record, "hourly") >= 2, timeout=60, what="the catch-up run")
    mark_time(record)
    assert supervisor.stop() == 0, supervisor.log()

    rows = all_runs(record, "hourly")
    assert len(rows) == 2, rows  # one run makes up for the missed slot, and no more (the next is 50 minutes on)
    assert started <= unix(rows[1]["started_at"]) <= started + 30  # at start, not at a slot
    assert "hourly: 1 slot(s) missed while no supervisor ran it; one run now makes up for them" in supervisor.log()
    row = worker_row(record, "hourly")
    assert row["skipped_count"] == 0  # the one missed slot was run
    assert abs(unix(row["next_run_at"]) - (missed + 3600)) < 0.01  # back on the grid of the missed slot


def test_slots_missed_past_the_misfire_grace_are_skipped_and_the_grid_kept(
    tmp_path: Path, db: Path, record: Record, start_supervisor: Any
) -> None:
    worker_package(tmp_path, [], extra={"tight": TIGHT})
    first_session(record, start_supervisor, "tight")
    before = len(all_runs(record, "tight"))
    assert worker_row(record, "tight")["skipped_count"] == 0
    # Down for a minute: about thirty slots of 2 s passed, none within a grace of 0 s. The next slot on the grid
    # (recorded + k * 2 s) comes within 2 s of the start.
    recorded = time.time() - 61.3
    set_next_run_at(db, "tight", recorded)

    started = time.time()
    supervisor = start_supervisor()

    def first_new_run() -> sqlite3.Row | None:
        # One read, so the run row and the skips it brought are seen together.
        rows = record.query(
            "select (select count(*) from run where worker = 'tight') as runs, skipped_count from worker where name = 'tight'"
        )
        return rows[0] if rows and rows[0]["runs"] > before else None

    seen = wait_for_row(first_new_run, "tight's first run after the restart")
    assert seen["runs"] == before + 1  # the next one is 2 s later
    found = re.search(r"tight: (\d+) slot\(s\) missed while no supervisor ran it; skipped \(past its misfire grace\)",
                      supervisor.log())
    assert found, supervisor.log()
    missed = int(found.group(1))
    # Every slot from the recorded one to the start was missed, and the skips arrive with the next run's record.
    assert missed >= math.floor((started - recorded) / 2) + 1
    assert seen["skipped_count"] == missed
    slot = recorded + 2 * missed  # the first slot after the start, on the old grid
    assert slot > started  # not a catch-up of a slot already past at start
    run = all_runs(record, "tight")[before]
    assert slot - CLOCKS <= unix(run["started_at"]) <= slot + LATE  # no run before the slot

    assert supervisor.stop() == 0, supervisor.log()
    rows = all_runs(record, "tight")[before:]
    row = worker_row(record, "tight")
    # Every slot since the recorded one was run or skipped, and the next one is on the same grid.
    assert abs(unix(row["next_run_at"]) - (recorded + 2 * (row["skipped_count"] + len(rows)))) < 0.01


def test_a_next_run_still_ahead_survives_a_restart(tmp_path: Path, db: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["healthy"], extra={"hourly": HOURLY})
    first_session(record, start_supervisor, "hourly")
    ahead = time.time() + 3600
    set_next_run_at(db, "hourly", ahead)

    supervisor = start_supervisor()
    wait_until(lambda: "spawner ready" in supervisor.log(), timeout=60, what="the second supervisor")
    mark_time(record)  # hourly would have run in the first pass, beside healthy's first run
    assert supervisor.stop() == 0, supervisor.log()
    assert len(all_runs(record, "hourly")) == 1
    assert abs(unix(worker_row(record, "hourly")["next_run_at"]) - ahead) < 0.01


# -- the global cap -----------------------------------------------------------------------------------------------


def test_max_children_caps_runs_of_all_workers_at_once(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, [], extra={"naps": NAPS})
    names = [f"nap{i}" for i in range(6)]
    supervisor = start_supervisor("--max-children", "2")
    wait_until(lambda: all(finished(record, name) >= 1 for name in names), timeout=60, what="a run of every nap")
    assert supervisor.stop() == 0, supervisor.log()

    rows = [r for name in names for r in all_runs(record, name)]
    assert len(rows) == 6 and all(r["outcome"] == "succeeded" for r in rows)
    intervals = spans(rows)
    assert most_at_once(intervals) == 2, sorted(intervals)
    # Six runs of at least 0.5 s, two at a time: at least three rounds from the first start to the last end.
    assert max(end for _, end in intervals) - min(start for start, _ in intervals) >= 1.5 - CLOCKS


# -- cron ---------------------------------------------------------------------------------------------------------


def test_a_cron_worker_waits_for_its_next_whole_minute(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["healthy"], extra={"every_minute": EVERY_MINUTE})
    started = time.time()
    supervisor = start_supervisor()

    def scheduled() -> sqlite3.Row | None:
        row = record.worker("every_minute")
        return row if row is not None and row["next_run_at"] else None

    row = wait_for_row(scheduled, "every_minute's row with its next run")
    read = time.time()
    mark_time(record)
    assert supervisor.stop() == 0, supervisor.log()

    assert row["schedule"] == "cron * * * * *"
    next_run = datetime.fromisoformat(row["next_run_at"])  # naive UTC, as every timestamp in the record
    # The first whole minute after the moment it was scheduled, which lies between `started` and `read`.
    first_slot = next_minute(started)
    assert (next_run.second, next_run.microsecond) == (0, 0)
    assert first_slot <= next_run <= next_minute(read), (next_run, naive_utc(started), naive_utc(read))
    # No run before that first slot (a run after it, if the test straddled a minute, is the slot's own).
    for run in all_runs(record, "every_minute"):
        assert datetime.fromisoformat(run["started_at"]) >= first_slot, run["started_at"]
