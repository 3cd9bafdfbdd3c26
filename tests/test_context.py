"""What a run sees: its context, its own process group, only its own descriptors, a logger into its capture."""
from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

from helpers import Record, wait_until, worker_package


def test_run_context_and_captured_output(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["introspect"])
    supervisor = start_supervisor()
    (run, *_) = wait_until(lambda: record.runs("introspect"), timeout=60, what="a finished run")
    seen = json.loads((tmp_path / f"ctx-{run['id']}.json").read_text())
    assert seen["run_id"] == run["id"]
    assert seen["worker"] == "introspect" and seen["attempt"] == 1
    assert seen["cancelled"] is False
    assert 0 < seen["remaining"] <= 30
    assert abs(seen["deadline"] - seen["monotonic"] - seen["remaining"]) < 1
    assert seen["pgid_is_pid"] is True
    assert seen["stdin"] == "/dev/null"
    # stdin, stdout, stderr, the result pipe, the run's own cancellation pipe (two ends) and the directory
    # listing itself; the spawner's control socket, wakeup pipe and epoll fd were not inherited.
    assert len(seen["open_fds"]) <= 7, seen["open_fds"]

    (failure, *_) = record.failures("introspect")
    assert "hello from the run's logger" in failure["stderr_tail"]
    assert "worker.introspect" in failure["stderr_tail"]
    assert "hello from print" in failure["stdout_tail"]
    assert supervisor.stop() == 0


def test_tick_during_a_run_is_skipped_and_counted(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["slow", "healthy"])
    supervisor = start_supervisor()
    # slow runs for 60 s on a 0.2 s interval: its ticks pass while it runs, and none starts a second run.
    wait_until(lambda: supervisor.log().count("slow: still running") >= 5, timeout=60, what="skipped ticks")
    assert len(record.runs("slow", finished=False)) == 1
    assert record.worker("slow")["status"] == "running"
    # The skips travel with the run's own record, so a replayed record cannot count them twice.
    assert supervisor.stop() == 0
    logged = sum(int(line.rsplit("skipped ", 1)[1].split()[0]) for line in supervisor.log().splitlines()
                 if "slow: still running" in line)
    assert record.worker("slow")["skipped_count"] == logged >= 5
    assert len(record.runs("slow")) == 1


DRAWS = '''import os
import random
import resource

from supervisor import RunContext, worker


@worker(interval=0.1, timeout=30)
def draws(ctx: RunContext):
    """Note the run's first random draw and its core-dump limit."""
    with open(os.path.join(os.getcwd(), f"draw-{ctx.run_id}"), "w") as f:
        f.write(f"{random.random()!r} {resource.getrlimit(resource.RLIMIT_CORE)[0]}")
'''


def test_each_run_draws_its_own_random_numbers_and_dumps_no_core(
    tmp_path: Path, record: Record, start_supervisor: Any
) -> None:
    # Every run is a copy of one spawner: without a reseed after the fork, each would draw the same "random"
    # numbers (the stdlib reseeds its generator in every child; the spawner does not, and must not need to). Core
    # dumps are off in every run, set once in the spawner and inherited, unless SUPERVISOR_CORE_DUMPS=1.
    worker_package(tmp_path, [], extra={"draws": DRAWS})
    # Started with core dumps allowed (most machines default to none, which would hide a run that allows them).
    before = resource.getrlimit(resource.RLIMIT_CORE)
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (before[1], before[1]))
    try:
        allowed = resource.getrlimit(resource.RLIMIT_CORE)[0]
        supervisor = start_supervisor()
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, before)
    wait_until(lambda: len(list(tmp_path.glob("draw-*"))) >= 5, timeout=60, what="five runs")
    assert supervisor.stop() == 0
    seen = [path.read_text().split() for path in tmp_path.glob("draw-*")]
    draws = [draw for draw, _ in seen]
    assert len(set(draws)) == len(draws), draws
    assert {core for _, core in seen} == {"0"}, f"core limit {allowed} at the start"
