"""The live table's rows, from the supervisor's own state: every worker, then every broken module.

Only the supervisor drawing its table on a terminal asks for them (`status` reads the database instead). A run's
CPU and memory are sampled here, once per drawing, so a supervisor off a terminal pays nothing for them.
"""
from __future__ import annotations

from typing import Callable

import psutil

from .. import schedule
from ..operate.dashboard import WorkerView
from ..outcome import WorkerState
from .scheduling import utc
from .usage import ResourceSampler
from .worker_status import Run, WorkerStatus


class TableRows:
    """Build the rows of the live table; sample each run's usage at most once per drawing."""

    def __init__(self, wall_clock: Callable[[], float]) -> None:
        self.wall_clock = wall_clock
        self._sampled: set[str] = set()  # runs whose usage was measured for the table being drawn

    def views(self, workers: dict[str, WorkerStatus], broken: dict[str, str], stopping: bool,
              now: float, nodes: dict[str, str] | None = None) -> list[WorkerView]:
        """Return the table's rows: every worker, then every broken module. `nodes`: the node that claimed each
        worker's last slot, when this supervisor is one of several nodes."""
        self._sampled = set()
        rows = []
        wall = self.wall_clock()
        for name, s in sorted(workers.items()):
            next_run = None
            if s.state is not WorkerState.BROKEN and not stopping:
                if s.retry_at is not None:
                    next_run = utc(wall + s.retry_at - now)
                elif not s.paused:
                    next_run = utc(s.timetable.due_wall(now, wall))
            state = s.state.value
            if s.paused and s.state is WorkerState.IDLE:
                state = "quarantined" if s.quarantined else WorkerState.PAUSED.value
            cpu_percent, rss = self._usage(s.run)
            rows.append(
                WorkerView(
                    name=name,
                    state=state,
                    pid=s.run.pid if s.run else None,
                    last_outcome=s.last_outcome,
                    last_run_at=s.last_run_at,
                    duration=s.last_duration,
                    next_run_at=next_run,
                    successes=s.successes,
                    failures=s.failures,
                    last_error=s.last_error,
                    running_since=s.run.started_at if s.run else None,
                    timeout=s.definition.timeout,
                    consecutive_failures=s.consecutive_failures,
                    cpu_percent=cpu_percent,
                    rss=rss,
                    schedule=schedule.describe(s.definition.interval, s.definition.cron, s.definition.timezone),
                    running=len(s.runs),
                    queued=s.queued_since is not None,
                    retry_attempt=s.retry_attempt if s.retry_at is not None else None,
                    last_failure_at=s.last_failure_at,
                    node=None if nodes is None else nodes.get(name),
                )
            )
        for module, error in sorted(broken.items()):
            if module not in workers:
                rows.append(WorkerView(module, WorkerState.BROKEN.value, None, None, None, None, None, 0, 0, error))
        return rows

    def _usage(self, run: Run | None) -> tuple[float | None, int | None]:
        if run is None or run.pid is None:
            return None, None
        if run.usage is None:
            try:
                run.usage = ResourceSampler(run.pid)
            except psutil.Error:
                return None, None
        if run.id not in self._sampled:
            run.usage.sample()
            self._sampled.add(run.id)
        return run.usage.cpu_percent, run.usage.rss
