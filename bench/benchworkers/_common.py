"""What the benchmark's workers do, and which of them a module declares (read from the environment).

Environment (set by bench/run.py; the supervisor's spawner and APScheduler's pool processes inherit it):
  BENCH_OUT       file the runs append their measurements to, one line per run
  BENCH_SCENARIO  latency | crash | busy | idle
  BENCH_WORKERS   how many workers are registered in all
  BENCH_ACTIVE    how many of them run (the rest are due only in an hour and never run at start-up)
  BENCH_INTERVAL  seconds between runs of an active worker
  BENCH_ISOLATION fork (default) | exec: how the active workers' runs get their code (exec: a fresh interpreter)

A measurement is taken on the first line of the run and written with one unbuffered append (a few
microseconds after the clock was read, so the write is not part of what is measured).
"""
from __future__ import annotations

import os
import time
from typing import Callable

from supervisor import RunContext, Worker, worker

from ._emit import crash, emit

IDLE_INTERVAL = 3600.0


def latency(ctx: RunContext) -> None:
    """Start latency: from the run's slot (`ctx.due_at`) to this, its first line."""
    now = time.time()
    late = now - ctx.due_at  # type: ignore[operator]
    emit(f"{ctx.run_id} {late:.9f} {now:.6f}\n")


def segfault(ctx: RunContext) -> None:
    """Crash to record: the failure row of this run is looked for by another connection."""
    crash(ctx.run_id)


def trivial(ctx: RunContext) -> None:
    """Nothing at all: the cost of a run is all the supervisor's."""


def idle(ctx: RunContext) -> None:
    """Never runs while measured: due an hour after start."""


ACTIVE = {"latency": latency, "crash": segfault, "busy": trivial, "idle": trivial}


def workers() -> list[Worker]:
    """The workers this benchmark scenario registers: BENCH_ACTIVE that run, the rest idle."""
    scenario = os.environ.get("BENCH_SCENARIO", "idle")
    total = int(os.environ.get("BENCH_WORKERS", "10"))
    active = int(os.environ.get("BENCH_ACTIVE", "0" if scenario == "idle" else "1"))
    interval = float(os.environ.get("BENCH_INTERVAL", "1"))
    found: list[Worker] = []
    isolation = os.environ.get("BENCH_ISOLATION", "fork")
    for i in range(active):
        found.append(worker(ACTIVE[scenario], name=f"{scenario}-{i:04d}", interval=interval, timeout=30,
                            isolation=isolation))
    for i in range(total - active):
        found.append(worker(idle, name=f"idle-{i:04d}", interval=IDLE_INTERVAL, run_at_start=False, timeout=30))
    return found


def aps_jobs(module: str) -> tuple[Callable[[float, str], None], Callable[[str], None], Callable[[], None]]:
    """The APScheduler peer's job functions (latency, crash, trivial), made to belong to `module`.

    APScheduler pickles a job's function by reference (module and name), so a pool process imports the module
    the function says it belongs to: they must belong to lean.py or heavy.py, whose import (numpy, 200 MB) is
    part of what a fresh pool process pays, and be bound there under these names.
    """

    def aps_latency(due: float, tag: str) -> None:
        """Start latency from its scheduled time `due`."""
        late = time.time() - due
        emit(f"{tag} {late:.9f}\n")

    def aps_crash(token: str) -> None:
        """Write the time and segfault."""
        crash(token)

    def aps_trivial() -> None:
        """Nothing."""

    for job in (aps_latency, aps_crash, aps_trivial):
        job.__module__, job.__qualname__ = module, job.__name__
    return aps_latency, aps_crash, aps_trivial
