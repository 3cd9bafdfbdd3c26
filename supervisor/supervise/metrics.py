"""Prometheus metrics of the supervisor, built from the loop's own state at the moment of each scrape.

The loop already sees every run end; it keeps a few plain counts per worker here (`RunMetrics`), and a scrape
(metrics_http.py, served by the loop itself) or the textfile (written by the loop) turns them and the workers'
statuses into metric families through prometheus-client's collector types. No lock and no thread: the loop is
the only one that reads or writes them, so a scrape sees one consistent moment, and it stays true while the
database is down (the database is a record, not the heartbeat).

Names follow Prometheus' conventions: a prefix, base units, `_total` counters, timestamps rather than ages ("the
key metric of a batch job is the last time it succeeded"). No run id, pid or host label: Prometheus adds
`instance`, and the cardinality stays one series per worker (and outcome).
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .. import __version__, schedule
from ..errors import ConfigError
from ..outcome import Outcome, WorkerState

if TYPE_CHECKING:
    from .worker_status import WorkerStatus

log = logging.getLogger("supervisor")

PREFIX = "worker_supervisor_"
BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
"""Run duration buckets (seconds): from a quick check to a four-hour batch."""
STATES = ("idle", "running", "paused", "quarantined", "broken")
TEXTFILE_INTERVAL = 15.0


def prometheus() -> Any:
    """The prometheus_client module, or one clear error naming the extra that brings it."""
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError("metrics need prometheus-client: pip install 'worker-supervisor[metrics]'",
                          "--metrics / --metrics-textfile") from None
    return prometheus_client


@dataclass
class WorkerCounts:
    """What the loop counted of one worker's runs since the supervisor started."""

    outcomes: dict[str, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    duration_sum: float = 0.0
    duration_count: int = 0
    last_success: float | None = None
    last_run: float | None = None


class RunMetrics:
    """The loop's counts per worker, and the state every scrape reads from the loop (`source`)."""

    def __init__(self, source: Callable[[], MetricsSource]) -> None:
        self.source = source
        self.workers: dict[str, WorkerCounts] = {}
        self.heartbeat = 0.0
        """Unix time of the loop's last pass."""
        self.spawner_restarts = 0

    def run_ended(self, worker: str, outcome: Outcome, duration: float, finished: float) -> None:
        counts = self.workers.setdefault(worker, WorkerCounts())
        counts.outcomes[outcome.value] = counts.outcomes.get(outcome.value, 0) + 1
        for i, bound in enumerate(BUCKETS):
            if duration <= bound:
                counts.buckets[i] += 1
        counts.duration_sum += duration
        counts.duration_count += 1
        counts.last_run = finished
        if outcome is Outcome.SUCCEEDED:
            counts.last_success = finished

    def seed(self, worker: str, last_success: float | None, last_run: float | None) -> None:
        """What the record says of a worker's last runs, before this supervisor ran it (after a restart, the last
        success is still known: an alert on its age must not fire because the supervisor restarted)."""
        counts = self.workers.setdefault(worker, WorkerCounts())
        counts.last_success = counts.last_success or last_success
        counts.last_run = counts.last_run or last_run

    def collect(self) -> Iterator[Any]:
        """The metric families, from the loop's state now (prometheus_client's collector protocol)."""
        from prometheus_client import core  # present: MetricsExport asked for it first (prometheus())
        source = self.source()
        names = sorted(source.workers)
        runs = core.CounterMetricFamily(PREFIX + "runs", "Finished runs, by worker and outcome.",
                                        labels=["worker", "outcome"])
        durations = core.HistogramMetricFamily(PREFIX + "run_duration_seconds", "Wall time of finished runs.",
                                               labels=["worker"])
        skipped = core.CounterMetricFamily(PREFIX + "skipped_slots", "Slots not run: busy, missed, or past the "
                                           "misfire grace.", labels=["worker"])
        running = core.GaugeMetricFamily(PREFIX + "running", "Runs in progress.", labels=["worker"])
        last_success = core.GaugeMetricFamily(PREFIX + "last_success_timestamp_seconds",
                                              "When the last successful run ended (Unix time).", labels=["worker"])
        last_run = core.GaugeMetricFamily(PREFIX + "last_run_timestamp_seconds",
                                          "When the last run ended, whatever its outcome (Unix time).",
                                          labels=["worker"])
        next_run = core.GaugeMetricFamily(PREFIX + "next_run_timestamp_seconds",
                                          "When the next run is due (Unix time).", labels=["worker"])
        period = core.GaugeMetricFamily(PREFIX + "schedule_period_seconds", "The interval, or the time between a cron "
                                        "schedule's current slot and the next.", labels=["worker"])
        streak = core.GaugeMetricFamily(PREFIX + "consecutive_failures", "Failures in a row now.", labels=["worker"])
        state = core.GaugeMetricFamily(PREFIX + "worker_state", "1 for the worker's current state.",
                                       labels=["worker", "state"])
        info = core.GaugeMetricFamily(PREFIX + "worker_info", "The worker's schedule and kind.",
                                      labels=["worker", "schedule", "kind"])
        for name in names:
            status = source.workers[name]
            counts = self.workers.get(name) or WorkerCounts()
            for outcome, count in sorted(counts.outcomes.items()):
                runs.add_metric([name, outcome], count)
            cumulative = list(zip((f"{b:g}" for b in BUCKETS), counts.buckets))
            durations.add_metric([name], [*cumulative, ("+Inf", counts.duration_count)], counts.duration_sum)
            skipped.add_metric([name], status.skipped)
            running.add_metric([name], len(status.runs))
            if counts.last_success is not None:
                last_success.add_metric([name], counts.last_success)
            if counts.last_run is not None:
                last_run.add_metric([name], counts.last_run)
            now = source.now
            if not status.paused and status.state is not WorkerState.BROKEN:
                next_run.add_metric([name], status.timetable.due_wall(now, source.wall))
            period.add_metric([name], _period(status, source.wall))
            streak.add_metric([name], status.consecutive_failures)
            current = _state_of(status)
            for each in STATES:
                state.add_metric([name, each], 1.0 if each == current else 0.0)
            definition = status.definition
            info.add_metric([name, schedule.describe(definition.interval, definition.cron, definition.timezone),
                             "command" if definition.command is not None else "python"], 1)
        yield from (runs, durations, skipped, running, last_success, last_run, next_run, period, streak, state, info)
        yield core.GaugeMetricFamily(PREFIX + "pending_records", "Records waiting in the journal for the database.",
                                     value=source.pending_records)
        yield core.GaugeMetricFamily(PREFIX + "database_up", "1 while the database takes the records, 0 while it "
                                     "fails.", value=0.0 if source.database_failing else 1.0)
        yield core.GaugeMetricFamily(PREFIX + "loop_heartbeat_timestamp_seconds", "When the supervisor's loop last "
                                     "passed (Unix time).", value=self.heartbeat)
        yield core.CounterMetricFamily(PREFIX + "spawner_restarts", "Spawners started again after one died.",
                                       value=self.spawner_restarts)
        alerts = core.CounterMetricFamily(PREFIX + "alerts", "Alerts by sink and result: delivered or failed (each "
                                          "try's end), and (sink *) held by the cap or dropped.",
                                          labels=["sink", "result"])
        for (sink, result), count in sorted(source.alerts.items()):
            alerts.add_metric([sink, result], count)
        yield alerts
        build = core.GaugeMetricFamily(PREFIX + "build_info", "The running release.", labels=["version", "python"])
        build.add_metric([__version__, ".".join(map(str, sys.version_info[:3]))], 1)
        yield build


@dataclass(frozen=True)
class MetricsSource:
    """The loop's state a scrape reads: the workers, the clocks, the record's health."""

    workers: dict[str, WorkerStatus]
    now: float
    wall: float
    pending_records: int
    database_failing: bool
    alerts: dict[tuple[str, str], int] = field(default_factory=dict)
    """Alert deliveries by (sink, delivered|failed), and events (*, held|dropped) (supervise/alerts.py)."""


def _state_of(status: WorkerStatus) -> str:
    if status.state is WorkerState.BROKEN:
        return "broken"
    if status.runs:
        return "running"
    if status.paused:
        return "quarantined" if status.quarantined else "paused"
    return "idle"


def _period(status: WorkerStatus, wall: float) -> float:
    """The interval, or the time from a cron schedule's current slot to the next (an alert on "no success in two
    periods" reads this)."""
    definition = status.definition
    if definition.interval is not None:
        return definition.interval
    assert definition.cron is not None
    slot = status.timetable.slot
    return schedule.cron_after(definition.cron, schedule.zone(definition.timezone), slot) - slot


class Textfile:
    """The metrics written to a file every 15 s for node_exporter's textfile collector (atomically: a temporary
    file renamed over it, as prometheus_client does)."""

    def __init__(self, path: str, registry: Any) -> None:
        self.path = os.path.abspath(path)
        self.registry = registry
        self.next_write = 0.0
        self.failed = False

    def tend(self, now: float) -> None:
        if now < self.next_write:
            return
        self.next_write = now + TEXTFILE_INTERVAL
        try:
            prometheus().write_to_textfile(self.path, self.registry)
            self.failed = False
        except OSError as exc:
            if not self.failed:  # once per failing spell: the next write says nothing until one succeeds
                log.error("metrics textfile %s: %s", self.path, exc.strerror or exc)
            self.failed = True


class MetricsExport:
    """The metrics of one supervisor: the counts, the registry, and where they go (a port, a file, or both)."""

    def __init__(self, listen: str | None, textfile: str | None, selector: Any,
                 source: Callable[[], MetricsSource], clock: Callable[[], float]) -> None:
        from .metrics_http import MetricsServer

        client = prometheus()
        self.counts = RunMetrics(source)
        self.registry = client.CollectorRegistry(auto_describe=False)
        self.registry.register(self.counts)
        self.server = None if listen is None else MetricsServer(
            listen, selector, lambda: client.generate_latest(self.registry), clock)
        self.textfile = None if textfile is None else Textfile(textfile, self.registry)
        if self.server is not None:
            host, port = self.server.address[0], self.server.port
            log.info("metrics on http://%s/metrics", f"[{host}]:{port}" if ":" in host else f"{host}:{port}")

    def seed(self, stored: dict[str, Any]) -> None:
        """Each worker's last success and last run as the record has them (see RunMetrics.seed)."""
        for name, row in stored.items():
            self.counts.seed(name, _unix(getattr(row, "last_success_at", None)), _unix(getattr(row, "last_run_at", None)))

    def tend(self, now: float, wall: float) -> None:
        """After each pass of the loop: its heartbeat, the textfile when due, idle scrapers dropped."""
        self.counts.heartbeat = wall
        if self.textfile is not None:
            self.textfile.tend(now)
        if self.server is not None:
            self.server.expire(now)

    def next_time(self) -> float | None:
        times = [t for t in (self.textfile.next_write if self.textfile else None,
                             self.server.next_time() if self.server else None) if t is not None]
        return min(times, default=None)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def _unix(moment: Any) -> float | None:
    """A timestamp column (naive UTC) as Unix time."""
    if moment is None:
        return None
    from datetime import timezone

    return float(moment.replace(tzinfo=timezone.utc).timestamp())
