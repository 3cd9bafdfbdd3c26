"""The spawner forks each run's child ahead of time (a standby); a run's start hands it the run instead of forking."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from helpers import Record, pid_alive, spawner_of, wait_until, worker_package

EVERY_SECOND = "from supervisor import worker\n\n@worker(interval=1)\ndef tick(ctx):\n    pass\n"


def standby_of(spawner: psutil.Process, record: Record) -> psutil.Process | None:
    """The spawner's one child that no run row names, once it is the only such child."""
    run_pids = {r["pid"] for r in record.query("select pid from run where pid is not null")}
    waiting = [p for p in spawner.children() if p.pid not in run_pids]
    return waiting[0] if len(waiting) == 1 else None


def test_a_runs_child_is_forked_before_the_run_and_waits_in_a_group_of_its_own(
    tmp_path: Path, record: Record, start_supervisor: Any
) -> None:
    worker_package(tmp_path, [], extra={"tick": EVERY_SECOND})
    supervisor = start_supervisor()
    wait_until(lambda: record.runs("tick"), timeout=60, what="the first run")
    spawner = spawner_of(supervisor)
    standby = wait_until(lambda: standby_of(spawner, record), timeout=30, what="a standby child")
    # Ready before it is needed: asleep, in a process group of its own (so a run's group kill reaches only it).
    assert standby.status() == psutil.STATUS_SLEEPING
    assert os.getpgid(standby.pid) == standby.pid
    # The next run is that very process, and another standby takes its place.
    run = wait_until(lambda: [r for r in record.runs("tick") if r["pid"] == standby.pid and r["finished_at"]],
                     timeout=30, what="a run in the standby child")[0]
    assert run["outcome"] == "succeeded"
    successor = wait_until(lambda: standby_of(spawner, record), timeout=30, what="the next standby")
    assert successor.pid != standby.pid
    assert supervisor.stop() == 0
    assert not pid_alive(successor.pid)


def test_a_standby_killed_before_its_run_costs_no_run(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, [], extra={"tick": EVERY_SECOND})
    supervisor = start_supervisor()
    wait_until(lambda: record.runs("tick"), timeout=60, what="the first run")
    spawner = spawner_of(supervisor)
    standby = wait_until(lambda: standby_of(spawner, record), timeout=30, what="a standby child")
    before = len(record.runs("tick"))
    standby.kill()  # as the OOM killer or an operator might
    wait_until(lambda: f"standby child {standby.pid} ended unused (signal SIGKILL)" in supervisor.log(), timeout=30,
               what="the spawner to notice")
    # The next runs are forked directly, then from a new standby; none is lost, and none is the dead one.
    runs = wait_until(lambda: (lambda rows: rows if len(rows) >= before + 2 else None)(
        [r for r in record.runs("tick") if r["finished_at"]]), timeout=30, what="two more runs")
    assert all(r["outcome"] == "succeeded" for r in runs)
    assert standby.pid not in {r["pid"] for r in runs}
    wait_until(lambda: standby_of(spawner, record), timeout=30, what="a new standby")
    assert supervisor.alive()
    assert supervisor.stop() == 0


def test_a_stop_reaches_a_run_started_in_a_standby(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    # SIGTERM is blocked from the standby's fork until its run's handler is in place; then it must be unblocked,
    # or the run would never see the stop and be killed at the end of its grace.
    source = (
        "import os\nfrom supervisor import worker\n\n@worker(interval=3600, run_at_start=False, grace=10)\n"
        "def waits(ctx):\n    if not ctx.sleep(60):\n"
        "        open(os.path.join(os.getcwd(), 'cancelled'), 'w').close()\n"
    )
    worker_package(tmp_path, [], extra={"waits": source})
    supervisor = start_supervisor()
    spawner = spawner_of(supervisor)
    standby = wait_until(lambda: standby_of(spawner, record), timeout=60, what="a standby child")
    # Nothing is due for an hour: the run comes from a trigger, and must be the child that was waiting for it.
    triggered = subprocess.run([sys.executable, "-m", "supervisor", "trigger", "waits", "--db", supervisor.url],
                               cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert triggered.returncode == 0, triggered.stderr
    (run,) = wait_until(lambda: [r for r in record.runs("waits", finished=False) if r["pid"]], timeout=30, what="a run")
    assert run["pid"] == standby.pid
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0
    assert (tmp_path / "cancelled").exists()
    (ended,) = record.runs("waits")
    assert ended["outcome"] in ("succeeded", "cancelled"), dict(ended)
