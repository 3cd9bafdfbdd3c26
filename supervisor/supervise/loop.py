"""The supervisor loop: wait for the next event or deadline, then hand each to the part that deals with it.

One thread, blocking in one place: `selector.select(timeout=until the next deadline)` over a wakeup pipe that
signal handlers write to, a timerfd, the spawner's channel, output and pidfd, the recorder's, and every running
child's result, stdout and stderr pipes. Signal handlers only record the signal; everything else happens here,
in order. What is done lives elsewhere, each in a module named for it: a run's life (runs.py), which worker runs
when (scheduling.py), the spawner's life (spawner_keeper.py), operators' commands (operator_commands.py), the
table's rows (table_rows.py), the record (recording.py), and keeping what runs start from outliving us
(containment.py).
"""
from __future__ import annotations

import logging
import selectors
import signal
import socket
import time
from typing import Any, Callable, Protocol

from ..config import Config
from ..record import records
from .containment import Containment
from ..operate.dashboard import Footer, WorkerView
from .operator_commands import OperatorCommands
from ..outcome import Outcome, StopReason, Verdict, signal_name
from ..process import signal_group
from ..protocol import Message
from ..record.recording import Recording, RecordingSettings
from .cluster import ClusterSettings
from .node_runs import NodeRuns
from .runs import RunKeeper
from .signals import SignalInbox
from .scheduling import DueRun, Scheduler
from .spawner_keeper import SpawnerKeeper
from .spawner_link import SpawnerLink
from ..record.store import utcnow
from .alerts import Alerts
from .metrics import MetricsExport, MetricsSource
from ..notify.settings import NotifySettings
from .reload import Reloader
from .service import ServiceManager
from .table_rows import TableRows
from .timer import precise_timer
from .worker_status import Run, WorkerStatus

log = logging.getLogger("supervisor")

FLUSH_TIMEOUT = 5.0  # at shutdown, how long a healthy database gets to take the last records
EPOLL_RESOLUTION = 0.001  # epoll's timeout counts whole milliseconds
# SIGCHLD: a process the supervisor adopted as subreaper ended, or its death orphaned more (containment.py).
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


class Display(Protocol):
    """Where the supervisor shows its workers: the live table on a terminal, nothing otherwise."""

    refresh_interval: float

    def update(self, views: list[WorkerView], footer: Footer) -> None: ...

    def stop(self) -> None: ...


class Supervisor:
    """Run every worker the spawner reports on its schedule, each run in its own child, and record each end."""

    def __init__(
        self,
        recording: RecordingSettings,
        sources: list[str],
        overrides: dict[str, dict[str, Any]] | None = None,
        display: Display | None = None,
        clock: Callable[[], float] = time.monotonic,
        import_timeout: float = 60.0,
        stored: dict[str, Any] | None = None,
        max_children: int | None = None,
        commands: list[dict[str, Any]] | None = None,
        wall_clock: Callable[[], float] = time.time,
        config_file: str | None = None,
        cluster: ClusterSettings | None = None,
        reread: Callable[[], Config] | None = None,
        config: Config | None = None,
        metrics: tuple[str | None, str | None] = (None, None),
        notify: NotifySettings | None = None,
    ) -> None:
        self.recording_settings = recording
        self.display = display
        self.clock = clock
        self.wall_clock = wall_clock
        self.stopping = False
        self.finished = False
        self.exit_code = 0
        self.service = ServiceManager()
        """systemd's notify socket and watchdog (first: its variables leave our environment before any helper
        starts, so that no run inherits them)."""
        self.signals = SignalInbox(HANDLED_SIGNALS)
        self.next_refresh = 0.0
        self.started_at = utcnow()
        self.selector = selectors.DefaultSelector()
        self.recording = Recording(recording, self.selector)
        self.containment = Containment(recording.journal)
        """What keeps the processes runs start from outliving us: cgroup, subreapers, guard, record of escapes."""
        self.scheduler = Scheduler(stored or {}, clock, wall_clock, max_children)
        node = cluster.node_name if cluster is not None else socket.gethostname()
        self.run_keeper = RunKeeper(self.recording, self.selector, self.scheduler.workers, node, clock)
        self.keeper = SpawnerKeeper(sources, overrides or {}, commands or [], config_file, import_timeout,
                                    self.recording, self.selector, self.containment, self.scheduler.mark_broken)
        self.commands = OperatorCommands(self.scheduler, self.keeper.broken, self.recording,
                                         f"by {node}, pid {self.run_keeper.pid}", clock, wall_clock,
                                         claimed=cluster is not None)
        self.table = TableRows(wall_clock)
        self.reloader = Reloader(reread, config, self.keeper, self.scheduler, self.service, self.commands)
        self.alerts = Alerts(notify or NotifySettings(), self.recording, self.selector, node, self.run_keeper.pid)
        """Failures told to people (supervise/alerts.py, through the notifier process)."""
        self.reloader.on_notify = self.alerts.reconfigure
        listen, textfile = metrics
        self.metrics = None if listen is None and textfile is None else MetricsExport(
            listen, textfile, self.selector, self.metrics_source, clock)
        """Prometheus metrics (run --metrics, --metrics-textfile), served by this loop itself (metrics.py)."""
        self.node_runs = None if cluster is None else NodeRuns(
            cluster, recording.url, (self.scheduler, self.run_keeper, self.commands), self.spawners,
            self.start_run, self.selector, clock)
        """This node's share of the runs on a shared PostgreSQL; None on SQLite (one supervisor per database)."""
        self.cluster = None if self.node_runs is None else self.node_runs.cluster
        if self.cluster is not None:
            self.cluster.on_lost = self.alerts.lost  # a dead node's runs, declared here: told as `lost`
        # Deadlines to the tenth of a millisecond (timer.py); only on the real clock, which the timer counts too.
        self.timer = precise_timer() if clock is time.monotonic else None
        if self.timer is not None:
            self.selector.register(self.timer.fd, selectors.EVENT_READ, ("timer", None))

    @property
    def workers(self) -> dict[str, WorkerStatus]:
        """Every worker's status, by name."""
        return self.scheduler.workers

    @property
    def runs(self) -> dict[str, Run]:
        """The runs in progress, by id."""
        return self.run_keeper.runs

    @property
    def stored(self) -> dict[str, Any]:
        """Worker rows read at start-up, so counters and schedules carry on from the record."""
        return self.scheduler.stored

    @stored.setter
    def stored(self, rows: dict[str, Any]) -> None:
        self.scheduler.stored = rows

    @property
    def spawner(self) -> SpawnerLink | None:
        """The spawner, while there is one."""
        return self.keeper.link

    # -- life -------------------------------------------------------------------------------------------------

    def catch_signals(self) -> None:
        """From now on, SIGTERM, SIGINT and SIGHUP are recorded for the loop, which acts on them once it runs.

        Called as early as possible (before start-up's database work), so that a stop requested while the
        supervisor starts is a clean stop, not the default action's abrupt end.
        """
        self.signals.catch(self.selector, ("wakeup", None))

    def start(self) -> None:
        """Catch signals (if not yet), sweep what an earlier supervisor left running, start the recorder and the
        spawner."""
        self.catch_signals()
        self.containment.start()
        self.recording.start()
        self.alerts.start()
        if self.cluster is not None:
            self.cluster.start()
        self.keeper.start()

    def run(self) -> int:
        """Supervise until a SIGTERM or SIGINT has stopped every run; return the exit code."""
        self.start()
        try:
            while not self.finished:
                self.run_once()
        finally:
            self.close()
        return self.exit_code

    def run_once(self, timeout: float | None = None) -> None:
        """Wait for the next event or deadline (at most `timeout` seconds), then handle everything due."""
        now = self.clock()
        wait = self.next_wakeup(now)
        if timeout is not None:
            wait = timeout if wait is None else min(wait, timeout)
        timeout = wait
        if self.timer is not None:
            # The timer wakes us on time; epoll's own timeout is only a backstop, a millisecond behind it.
            self.timer.arm(wait if wait else None)
            timeout = None if wait is None else wait and wait + EPOLL_RESOLUTION
        for key, events in self.selector.select(timeout):
            kind, target = key.data
            if target == "message" and events & selectors.EVENT_WRITE:
                if isinstance(kind, SpawnerLink):
                    kind.flush()  # a retiring spawner's
                else:
                    self.flush_to(kind)
                if not events & selectors.EVENT_READ:
                    continue
            if kind == "wakeup":
                self.signals.woken()
            elif kind == "timer":
                assert self.timer is not None
                self.timer.clear()
            elif kind == "spawner":
                if self.spawner is None:
                    # Its death was handled earlier in this same pass (the pidfd's event came first), which
                    # read what was left on its channel and pipe: these events are stale.
                    continue
                {"message": self.handle_messages, "output": self.keeper.read_output, "exit": self.handle_spawner_exit}[
                    target
                ]()
            elif kind == "run":
                self.run_keeper.read_pipe(target, key.fd)
            elif isinstance(kind, SpawnerLink):
                self.handle_retiring(kind, target)
            elif kind == "notifier":
                self.alerts.handle(target)
            elif kind == "metrics":
                assert self.metrics is not None and self.metrics.server is not None
                self.metrics.server.handle(target, events)
            elif kind == "coordinator":
                assert self.cluster is not None
                self.cluster.handle(target)
            elif kind == "recorder":
                self.recording.handle(target)
                for command in self.recording.take_commands():
                    self.commands.handle(command, self.stopping)
        now = self.clock()
        self.handle_signals(now)
        self.run_keeper.enforce_deadlines(now)
        self.run_keeper.enforce_memory_limits(now)
        self.start_due_runs(now)
        if self.cluster is not None:
            self.cluster.tend(now, list(self.runs))
        if self.service.active:  # the status line counts every worker: only for a service manager that listens
            self.service.tend(now, self.behind(now), self.status_line())
        if self.metrics is not None:
            self.metrics.tend(now, self.wall_clock())
        self.recording.check(now)
        self.maybe_finish(now)
        self.refresh(now)
        for helper in (*self.spawners(), self.recording.recorder, self.cluster.coordinator if self.cluster else None,
                       self.alerts.notifier):
            if helper is not None:
                helper.sync_interest(self.selector)
        self.alerts.tend()

    def flush_to(self, helper: str) -> None:
        """The channel to a helper has room again: send what waits for it."""
        if helper == "spawner" and self.spawner is not None:
            self.spawner.flush()
        elif helper == "notifier" and self.alerts.notifier is not None:
            self.alerts.notifier.flush()
        elif helper == "coordinator" and self.cluster is not None and self.cluster.coordinator is not None:
            self.cluster.coordinator.flush()
        elif helper == "recorder":
            self.recording.flush()

    def handle_signals(self, now: float) -> None:
        """Act on signals recorded since the last pass: TERM and INT stop, a second one stops at once."""
        pending = self.signals.take()
        if signal.SIGCHLD in pending:
            self.containment.reap_orphans(self._helpers())
        for signum in pending:
            if signum in (signal.SIGTERM, signal.SIGINT):
                if self.stopping:
                    log.warning("%s again: killing %d run(s) now", signal_name(signum), len(self.runs))
                    self.run_keeper.kill_all_now(now)
                else:
                    log.info("%s: stopping; %d run(s) in progress", signal_name(signum), len(self.runs))
                    self.begin_shutdown(now)
            elif signum == signal.SIGHUP and not self.stopping:
                self.reloader.reload("SIGHUP")

    def begin_shutdown(self, now: float) -> None:
        """Stop scheduling and ask every running child to stop (SIGTERM now, SIGKILL after its grace)."""
        self.stopping = True
        self.service.stopping(f"stopping: {len(self.runs)} run(s) in progress")
        if self.node_runs is not None:
            self.node_runs.stopping()
        for run in self.runs.values():
            if run.stop_reason is None:
                self.run_keeper.stop(run, StopReason.SHUTDOWN, now)

    def maybe_finish(self, now: float) -> None:
        """Once stopping and no run is left, close the spawner and end the loop."""
        if not self.stopping or self.runs or self.finished:
            return
        if self.cluster is not None:
            self.cluster.stop()
        self.keeper.stop()
        self.finished = True

    def close(self) -> None:
        """Release every descriptor and handler, and write what is still queued."""
        for old in list(self.keeper.retiring):
            if not old.exited:
                old.kill()
                old.reap()
            self.keeper.drop_retired(old)
        if self.spawner is not None:
            if not self.spawner.exited:
                self.spawner.kill()
                self.spawner.reap()
            self.keeper.drop()
        for run in list(self.runs.values()):
            self.run_keeper.close_pipes(run)
        if self.cluster is not None:
            self.cluster.close()
        self.containment.close(self._helpers())
        # Rows of the last runs are written before we exit, unless the database is failing: then the journal
        # keeps them for the next start, and we do not make the stop wait on it.
        self.recording.close(timeout=0.0 if self.recording.failing else min(FLUSH_TIMEOUT, self.recording_settings.write_timeout))
        self.signals.release(self.selector)
        if self.timer is not None:
            self.selector.unregister(self.timer.fd)
            self.timer.close()
        if self.metrics is not None:
            self.metrics.close()
        self.alerts.close()
        self.selector.close()
        self.service.close()
        if self.display is not None:
            self.display.update(self.views(), self.footer())
            self.display.stop()

    def _helpers(self) -> set[int]:
        """The pids of our helper processes not yet reaped: children of ours, but not orphans to kill."""
        helpers = (*self.spawners(), self.recording.recorder, self.cluster.coordinator if self.cluster else None,
                   self.alerts.notifier)
        return {helper.pid for helper in helpers if helper is not None and not helper.exited}

    def spawners(self) -> list[SpawnerLink]:
        """Every spawner alive or not yet reaped: the current one, and those a reload retired."""
        return [*self.keeper.retiring, *([self.spawner] if self.spawner is not None else [])]

    # -- the spawner's reports ----------------------------------------------------------------------------------

    def handle_messages(self, link: SpawnerLink | None = None) -> None:
        """Hand every report waiting from the spawner (or from a retiring one) to the part it is for."""
        link = link or self.spawner
        assert link is not None
        current = link is self.spawner
        for message in link.messages():
            op = message["op"]
            if op == "exited":
                self.handle_exited(message)
            elif op == "spawned":
                self.run_keeper.spawned(message)
                run = self.runs.get(message["run"])
                if run is not None:
                    self.alerts.run_started(run)
            elif not current:
                continue  # a retiring spawner reports only on its runs
            elif op == "worker":
                self.keeper.take_worker(message)
            elif op == "threaded":
                self.keeper.take_threaded(message)
            elif op == "broken":
                self.keeper.take_broken(message)
            elif op == "ready":
                self.handle_ready()
            elif op == "fenced" and self.node_runs is not None:
                self.node_runs.fenced(message)
            elif op == "spawn_failed":
                run = self.runs.get(message["run"])
                if run is not None:
                    self.finish_run(run, Verdict(Outcome.ERROR, f"could not start: {message['error']}"), None, None)
        if link.channel_closed:
            link.unwatch(self.selector, link.control)

    def handle_ready(self) -> None:
        """Take the spawner's worker list: keep known workers' schedules, place new ones (from the record)."""
        defined = self.keeper.defined()
        next_runs = self.scheduler.place(defined, self.clock(), self.wall_clock())
        broken = [name for name in self.keeper.broken if name not in defined]
        self.recording.record(records.workers_synced(list(defined.values()), broken, utcnow(), next_runs))
        self.keeper.ready(defined)
        if self.node_runs is not None:
            self.node_runs.spawner_ready(defined)
        self.service.ready(self.status_line())
        self.keeper.release_idle({r.spawner for r in self.runs.values()})
        self.reloader.spawner_ready(defined)
        if self.metrics is not None:
            self.metrics.seed(self.stored)
        self.alerts.seed(self.stored)
        if self.keeper.reload_waiting:
            self.keeper.reload_waiting = False
            self.keeper.renew()  # a reload came while it imported: the new config gets a spawner of its own

    def handle_spawner_exit(self) -> None:
        """The spawner died: record the module it was importing, or the runs it took down, and start another."""
        self.handle_messages()  # reports it sent before dying come first
        self.keeper.read_output()
        self.keeper.exited(self.stopping, self.clock())
        if self.metrics is not None and not self.stopping:
            self.metrics.counts.spawner_restarts += 1
        for run in [run for run in self.runs.values() if run.spawner is self.spawner]:
            # Runs die with their spawner (PDEATHSIG); anything left in their groups goes now.
            if run.pid is not None:
                signal_group(run.pid, signal.SIGKILL)
            run.stop_reason = run.stop_reason or StopReason.SPAWNER_LOST
            self.finish_run(run, None, None, None)
        # What the runs started outside their groups: in the spawner's cgroup, and adopted by us (subreaper).
        self.containment.spawner_died(self._helpers())
        self.keeper.drop()

    def handle_retiring(self, link: SpawnerLink, what: str) -> None:
        """An event of a spawner a reload retired: its runs' reports, its output, or its exit."""
        if link not in self.keeper.retiring:
            return  # its exit was handled earlier in this pass
        if what == "message":
            self.handle_messages(link)
        elif what == "output":
            link.log_output(self.selector, log, logging.INFO, "spawner")
        else:
            self.handle_messages(link)
            exit_code, signum = link.reap()
            for run in [run for run in self.runs.values() if run.spawner is link]:
                # It died before its runs ended (killed, or crashed): they went with it.
                log.error("spawner (pid %d) of the previous config died (%s) with its run of %s", link.pid,
                          f"signal {signum}" if signum else f"status {exit_code}", run.definition.name)
                if run.pid is not None:
                    signal_group(run.pid, signal.SIGKILL)
                run.stop_reason = run.stop_reason or StopReason.SPAWNER_LOST
                self.finish_run(run, None, None, None)
            self.keeper.drop_retired(link)

    # -- runs ---------------------------------------------------------------------------------------------------

    def start_due_runs(self, now: float) -> None:
        """Start every run that is owed (oldest first, within the cap on children); restart a dead spawner.

        On a shared PostgreSQL a run owed is first claimed (cluster.py); it starts when the claim is won.
        """
        self.keeper.tend(now)
        if self.stopping and self.node_runs is not None:
            self.node_runs.answer_triggers()  # claims still out when the stop began are decided meanwhile
        if self.stopping or self.keeper.serving() is None:
            return
        wall = self.wall_clock()
        for due in self.scheduler.take_due(now, wall, len(self.runs)):
            if self.node_runs is not None:
                self.node_runs.offer(due, now)
            else:
                self.start_run(due, now, wall)
        if self.node_runs is not None:
            self.node_runs.take_news(now, wall)

    def start_run(self, due: DueRun, now: float, wall: float, run_id: str | None = None) -> None:
        name = due.status.definition.name
        spawner = self.keeper.serving() or self.spawner  # during a reload, the old spawner until the new is ready
        self.run_keeper.start(spawner, due.status, now, wall, due.attempt, due.slot,  # type: ignore[arg-type]
                              self.keeper.found_in.get(name), run_id)
        self.scheduler.attend(due.status, now)

    def handle_exited(self, message: Message) -> None:
        """A run's child was reaped: drain its pipes, classify it and record it."""
        run = self.runs.get(message["run"])
        if run is None:
            return
        self.finish_run(
            run,
            None,
            int(message["status"]),
            (float(message.get("cpu", 0.0)), int(message.get("maxrss", 0))),
        )

    def finish_run(
        self, run: Run, verdict: Verdict | None, status: int | None, usage: tuple[float, int] | None
    ) -> None:
        """Classify the ended run (unless `verdict` is given), bring its worker up to date, and record it."""
        end = self.run_keeper.end(run, verdict, status, usage)
        if self.cluster is not None:
            self.cluster.run_ended(run.id)
        ended = self.scheduler.run_ended(run, end.verdict, end.duration, self.clock(), self.stopping)
        if self.metrics is not None:
            self.metrics.counts.run_ended(run.definition.name, end.verdict.outcome, end.duration, self.wall_clock())
        self.run_keeper.record_end(end, ended)
        if run.spawner in self.keeper.retiring:
            self.keeper.release_idle({r.spawner for r in self.runs.values()})  # its last run may have ended
        worker = self.workers.get(run.definition.name)
        if worker is not None:
            quarantined = worker.quarantined and ended.decided == worker.pause_reason
            self.alerts.run_ended(run, end.verdict, worker, end.exit_code, end.signal, end.duration, quarantined)
        if worker is not None and ended.decided:
            log.warning("%s: %s", run.definition.name, ended.decided)
            if worker.quarantined:
                self.recording.record(records.worker_paused(worker.definition.name, True, utcnow(), worker.pause_reason))

    # -- time and the table ----------------------------------------------------------------------------------

    def next_wakeup(self, now: float) -> float | None:
        """Return how long the loop may sleep before something is due (None: until an event)."""
        times = self.keeper.next_times(self.stopping)
        if self.keeper.serving() is not None and not self.stopping:
            times += self.scheduler.next_times(now, len(self.runs))
        times += self.run_keeper.next_times()
        if self.cluster is not None:
            times += self.cluster.next_times()
        for helper_time in (self.service.next_time(), self.metrics.next_time() if self.metrics else None,
                            self.alerts.next_time(now)):
            if helper_time is not None:
                times.append(helper_time)
        recording = self.recording.next_deadline()
        if recording is not None:
            times.append(recording)
        if self.display is not None:
            times.append(self.next_refresh)
        if self.stopping and not self.runs:
            return 0.0
        return max(0.0, min(times) - now) if times else None

    def refresh(self, now: float) -> None:
        """Redraw the table, at most `refresh_interval` apart."""
        if self.display is None or now < self.next_refresh:
            return
        self.next_refresh = now + self.display.refresh_interval
        self.display.update(self.views(now), self.footer())

    def views(self, now: float | None = None) -> list[WorkerView]:
        """Return the table's rows: every worker, then every broken module."""
        now = self.clock() if now is None else now
        nodes = None if self.cluster is None else self.cluster.last_node
        return self.table.views(self.workers, self.keeper.broken, self.stopping, now, nodes)

    def metrics_source(self) -> MetricsSource:
        """What a scrape reads of the loop, now."""
        return MetricsSource(self.workers, self.clock(), self.wall_clock(), self.recording.pending,
                             self.recording.failing is not None, self.alerts.results)

    def behind(self, now: float) -> float:
        """How long due work has waited to start (0 while stopping: then nothing is meant to start)."""
        if self.stopping:
            return 0.0
        return max(self.scheduler.behind(now), self.run_keeper.waiting_on_spawner(now))

    def status_line(self) -> str:
        """One line for the service manager (`systemctl status`): the whole supervisor at a glance."""
        failing = sum(1 for worker in self.workers.values() if worker.consecutive_failures)
        database = "database failing" if self.recording.failing else "database ok"
        return (f"{len(self.workers)} workers · {len(self.runs)} running · {failing} failing · "
                f"{self.recording.pending} records waiting · {database}")

    def footer(self) -> Footer:
        """The line under the table: records waiting, the database's health, uptime, the node."""
        cluster = self.cluster
        return Footer(self.recording.pending, self.recording.failing, self.started_at,
                      None if cluster is None else cluster.settings.node_name, 0 if cluster is None else cluster.alive)
