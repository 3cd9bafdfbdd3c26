"""The supervisor loop: schedule runs, ask the spawner for them, read their pipes, enforce deadlines, record.

One thread, blocking in one place: `selector.select(timeout=until the next deadline)` over a wakeup pipe that
signal handlers write to, the spawner's channel, its output and its pidfd, and every running child's result,
stdout and stderr pipes. Signal handlers only record the signal; everything else happens here, in order.
"""
from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import socket
import time

import psutil
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

from .dashboard import Footer, WorkerView
from . import records
from .config import unknown_worker_table
from .errors import ConfigError, HelperStartError
from .recording import Recording, RecordingSettings
from .outcome import Outcome, StopReason, Verdict, WorkerState, classify, signal_name
from .process import decode_status, open_pipe, read_available, set_nonblocking, signal_group
from .protocol import Message
from .spawner import EXIT_RESTART
from .spawner_link import SpawnerLink
from .limits import MemoryWatch, cpu_limit_verdict, open_files_verdict, run_settings
from .usage import ResourceSampler
from .store import utcnow
from .timer import precise_timer
from . import schedule
from .agenda import Agenda
from .containment import Containment
from .timetable import Timetable
from .worker import WorkerDefinition
from .worker_status import Run, StartReason, WorkerStatus

log = logging.getLogger("supervisor")

SPAWNER_EXIT_TIMEOUT = 5.0  # after we close its channel, the spawner has this long to kill the runs and exit
FLUSH_TIMEOUT = 5.0  # at shutdown, how long a healthy database gets to take the last records
EPOLL_RESOLUTION = 0.001  # epoll's timeout counts whole milliseconds
RESULT_LIMIT = 1 << 20  # a result message larger than this is not a result; cut and reported as garbled
RESTART_BACKOFF_FIRST = 0.5
RESTART_BACKOFF_MAX = 30.0
FULL_PASS_INTERVAL = 60.0  # every worker is looked at this often (cron slots follow a wall clock step)
# SIGCHLD: a process the supervisor adopted as subreaper ended, or its death orphaned more (containment.py).
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


class Display(Protocol):
    """Where the supervisor shows its workers: the live table on a terminal, nothing otherwise."""

    refresh_interval: float

    def update(self, views: list[WorkerView], footer: Footer) -> None: ...

    def stop(self) -> None: ...


class Supervisor:
    """Run every worker the spawner reports on its interval, each run in its own child, and record each end."""

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
    ) -> None:
        self.recording_settings = recording
        self.stored = stored or {}
        """Worker rows read at start-up, so counters carry on from the record."""
        self.node = socket.gethostname()
        self.pid = os.getpid()
        self.import_timeout = import_timeout
        """A module whose import takes longer than this is taken as hung, recorded broken and left out."""
        self.sources = sources
        self.overrides = overrides or {}
        self.config_file = config_file
        """The file the overrides come from, to name in an error."""
        self.commands = commands or []
        """Command workers declared in the config; the spawner makes them (the supervisor runs no worker code)."""
        self.display = display
        self.clock = clock
        self.wall_clock = wall_clock
        self.max_children = max_children
        """At most this many runs of all workers at once (None: no cap); runs owed beyond it wait their turn."""
        self.waiting_for_room: set[str] = set()
        self.agenda = Agenda()
        """When each worker next wants attention, so a pass looks only at the workers that are due."""
        self.next_full_pass = 0.0
        self.run_deadlines = Agenda()
        """When each run next needs the loop (its timeout, then the end of its grace), keyed by run id: with
        200 runs in flight, walking them all on every pass was most of the supervisor's CPU between runs."""
        self.memory = MemoryWatch()
        self.memory_limited: set[str] = set()
        """Runs in progress that have a memory limit and a pid: the ones the memory watch samples."""
        self.workers: dict[str, WorkerStatus] = {}
        self.runs: dict[str, Run] = {}
        self.broken: dict[str, str] = {}  # module (or worker) -> why
        self.excluded: set[str] = set()
        self.spawner: SpawnerLink | None = None
        self.reported: list[WorkerDefinition] = []
        self.found_in: dict[str, str] = {}
        """The module each worker was found in: where a fresh interpreter imports it (isolation = "exec")."""
        self.threaded: dict[str, list[WorkerDefinition]] = {}
        """Modules that started threads at import, with their workers: left out of every spawner, their runs
        are fresh interpreters."""
        self.restart_at: float | None = None
        self.restart_delay = RESTART_BACKOFF_FIRST
        self.stopping = False
        self.ever_ready = False
        self.finished = False
        self.exit_code = 0
        self.pending_signals: list[int] = []
        self._signals_caught = False
        self.next_refresh = 0.0
        self.started_at = utcnow()
        self.commands_done: set[int] = set()
        self._sampled: set[str] = set()  # runs whose usage was measured for the table being drawn
        self.selector = selectors.DefaultSelector()
        self.recording = Recording(recording, self.selector)
        self.containment = Containment(recording.journal)
        """What keeps the processes runs start from outliving us: cgroup, subreaper, record of escaped ones."""
        # Deadlines to the tenth of a millisecond (timer.py); only on the real clock, which the timer counts too.
        self.timer = precise_timer() if clock is time.monotonic else None
        if self.timer is not None:
            self.selector.register(self.timer.fd, selectors.EVENT_READ, ("timer", None))

    # -- life -------------------------------------------------------------------------------------------------

    def catch_signals(self) -> None:
        """From now on, SIGTERM, SIGINT and SIGHUP are recorded for the loop, which acts on them once it runs.

        Called as early as possible (before start-up's database work), so that a stop requested while the
        supervisor starts is a clean stop, not the default action's abrupt end.
        """
        if self._signals_caught:
            return
        self._signals_caught = True
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, self._record_signal)
        self.selector.register(self._wake_r, selectors.EVENT_READ, ("wakeup", None))

    def start(self) -> None:
        """Catch signals (if not yet), sweep what an earlier supervisor left running, start the recorder and the
        spawner."""
        self.catch_signals()
        self.containment.start()
        self.recording.start()
        self.start_spawner()

    def run(self) -> int:
        """Supervise until a SIGTERM or SIGINT has stopped every run; return the exit code."""
        self.start()
        try:
            while not self.finished:
                self.run_once()
        finally:
            self.close()
        return self.exit_code

    def _record_signal(self, signum: int, frame: object) -> None:
        # Only record: logging, signalling runs and writing rows happen in the loop (see run_once).
        self.pending_signals.append(signum)

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
                self.flush_to(kind)
                if not events & selectors.EVENT_READ:
                    continue
            if kind == "wakeup":
                read_available(self._wake_r)
            elif kind == "timer":
                assert self.timer is not None
                self.timer.clear()
            elif kind == "spawner":
                if self.spawner is None:
                    # Its death was handled earlier in this same pass (the pidfd's event came first), which
                    # read what was left on its channel and pipe: these events are stale.
                    continue
                {"message": self.handle_messages, "output": self.read_spawner_output, "exit": self.handle_spawner_exit}[
                    target
                ]()
            elif kind == "run":
                self.read_run_pipe(target, key.fd)
            elif kind == "recorder":
                self.recording.handle(target)
                for command in self.recording.take_commands():
                    self.handle_command(command)
        now = self.clock()
        self.handle_signals(now)
        self.enforce_deadlines(now)
        self.enforce_memory_limits(now)
        self.start_due_runs(now)
        self.recording.check(now)
        self.maybe_finish(now)
        self.refresh(now)
        for helper in (self.spawner, self.recording.recorder):
            if helper is not None:
                helper.sync_interest(self.selector)

    def flush_to(self, helper: str) -> None:
        """The channel to a helper has room again: send what waits for it."""
        if helper == "spawner" and self.spawner is not None:
            self.spawner.flush()
        elif helper == "recorder":
            self.recording.flush()

    def handle_signals(self, now: float) -> None:
        """Act on signals recorded since the last pass: TERM and INT stop, a second one stops at once."""
        pending, self.pending_signals = self.pending_signals, []
        if signal.SIGCHLD in pending:
            self.containment.reap_orphans(self._helpers())
        for signum in pending:
            if signum in (signal.SIGTERM, signal.SIGINT):
                if self.stopping:
                    log.warning("%s again: killing %d run(s) now", signal_name(signum), len(self.runs))
                    for run in self.runs.values():
                        run.kill_at = now
                        self._watch_deadline(run)
                else:
                    log.info("%s: stopping; %d run(s) in progress", signal_name(signum), len(self.runs))
                    self.begin_shutdown(now)
            elif signum == signal.SIGHUP:
                log.info("SIGHUP: nothing to reload yet")

    def handle_command(self, command: Message) -> None:
        """Act on an operator's trigger, pause or resume, and record what was done."""
        worker, action, number = str(command["worker"]), str(command["action"]), int(command["id"])
        status = self.workers.get(worker)
        if number in self.commands_done or (status is None and worker not in self.broken):
            return  # a repeat, or another supervisor's worker (they share the database)
        self.commands_done.add(number)
        now = utcnow()
        if status is None:  # broken here: its module did not import, or its definition is invalid
            result = f"not run: the worker is broken: {self.broken[worker]}"
            log.info("%s: %s: %s", worker, action, result)
            self.recording.record(records.command_done(number, f"{result} (by {self.node}, pid {self.pid})", now))
            return
        if action == "trigger":
            if status.state is WorkerState.BROKEN:
                result = "not run: the worker is broken"
            elif not status.has_room:
                result = f"not run: a run is in progress (pid {status.run.pid if status.run else '?'})"
            elif self.stopping:
                result = "not run: the supervisor is stopping"
            else:
                status.triggered = True
                result = "run started"
        elif action == "pause":
            result = "already paused" if status.paused else "paused"
            status.pause()
            self.recording.record(records.worker_paused(worker, True, now))
        elif action == "resume" and not status.paused:
            result = "not paused"
        elif action == "resume":
            was = status.pause_reason
            status.resume(self.clock(), self.wall_clock())
            result = f"resumed (was {was})" if was else "resumed"
            self.recording.record(records.worker_paused(worker, False, now))
        else:
            result = f"unknown action {action!r}"
        self._attend(status, self.clock())
        log.info("%s: %s: %s", worker, action, result)
        self.recording.record(records.command_done(number, f"{result} (by {self.node}, pid {self.pid})", now))

    def begin_shutdown(self, now: float) -> None:
        """Stop scheduling and ask every running child to stop (SIGTERM now, SIGKILL after its grace)."""
        self.stopping = True
        for run in self.runs.values():
            if run.stop_reason is None:
                self.stop_run(run, StopReason.SHUTDOWN, now)

    def maybe_finish(self, now: float) -> None:
        """Once stopping and no run is left, close the spawner and end the loop."""
        if not self.stopping or self.runs or self.finished:
            return
        if self.spawner is not None and not self.spawner.exited:
            if self.spawner.ready:
                self.spawner.close_channel()
            else:
                self.spawner.kill()  # still importing: it reads no requests, and an import may never return
            self._await_spawner_exit()
        self.finished = True

    def _await_spawner_exit(self) -> None:
        assert self.spawner is not None
        ready = selectors.DefaultSelector()
        ready.register(self.spawner.pidfd, selectors.EVENT_READ)
        if not ready.select(SPAWNER_EXIT_TIMEOUT):
            log.error("spawner (pid %d) did not exit in %gs; killing it", self.spawner.pid, SPAWNER_EXIT_TIMEOUT)
            self.spawner.kill()
        ready.close()
        self.spawner.reap()

    def close(self) -> None:
        """Release every descriptor and handler, and write what is still queued."""
        if self.spawner is not None:
            if not self.spawner.exited:
                self.spawner.kill()
                self.spawner.reap()
            self._drop_spawner()
        for run in list(self.runs.values()):
            self._close_pipes(run)
        self.containment.close(self._helpers())
        # Rows of the last runs are written before we exit, unless the database is failing: then the journal
        # keeps them for the next start, and we do not make the stop wait on it.
        self.recording.close(timeout=0.0 if self.recording.failing else min(FLUSH_TIMEOUT, self.recording_settings.write_timeout))
        signal.set_wakeup_fd(-1)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        self.selector.unregister(self._wake_r)
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self.timer is not None:
            self.selector.unregister(self.timer.fd)
            self.timer.close()
        self.selector.close()
        if self.display is not None:
            self.display.update(self.views(), self.footer())
            self.display.stop()

    # -- the spawner ------------------------------------------------------------------------------------------

    def start_spawner(self) -> None:
        """Start a spawner that imports every source module except the excluded ones."""
        self.restart_at = None
        self.reported = []
        link = SpawnerLink(self.sources, self.excluded | set(self.threaded), self.commands, self.containment.spawner_args())
        link.start()
        self.spawner = link
        link.watch(self.selector, "spawner")
        log.debug("spawner started (pid %d)", link.pid)

    def _helpers(self) -> set[int]:
        """The pids of our helper processes not yet reaped: children of ours, but not orphans to kill."""
        helpers = (self.spawner, self.recording.recorder)
        return {helper.pid for helper in helpers if helper is not None and not helper.exited}

    def _drop_spawner(self) -> None:
        assert self.spawner is not None
        self.spawner.unwatch(self.selector)
        self.spawner.close()
        self.spawner = None

    def handle_messages(self) -> None:
        """Act on every report waiting from the spawner."""
        assert self.spawner is not None
        for message in self.spawner.messages():
            op = message["op"]
            if op == "exited":
                self.handle_exited(message)
            elif op == "spawned":
                self.handle_spawned(message)
            elif op == "worker":
                definition = WorkerDefinition.from_dict(message["definition"])
                self.reported.append(definition)
                self.found_in[definition.name] = str(message.get("module", definition.module))
            elif op == "threaded":
                self.handle_threaded(message)
            elif op == "broken":
                self.handle_broken(message)
            elif op == "ready":
                self.handle_ready()
            elif op == "spawn_failed":
                run = self.runs.get(message["run"])
                if run is not None:
                    self.finish_run(run, Verdict(Outcome.ERROR, f"could not start: {message['error']}"), None, None)
        if self.spawner.channel_closed:
            self.spawner.unwatch(self.selector, self.spawner.control)

    def handle_broken(self, message: Message) -> None:
        """Record a module that failed to import, or a worker whose definition is invalid."""
        module = str(message["module"])
        worker = message.get("worker")
        if message.get("missing") and not self.ever_ready:
            raise ConfigError(f"cannot import worker package {module!r} from {os.getcwd()}", "--workers / workers setting")
        if worker is not None:
            log.error("worker %s in %s is invalid: %s", worker, module, message["error"])
            self.broken[str(worker)] = str(message["error"])
            self.recording.record(records.broken(str(worker), module, str(message["error"]), utcnow()))
            return
        self._record_broken_module(module, str(message["error"]), "", None, None, str(message.get("traceback", "")))

    def handle_threaded(self, message: Message) -> None:
        """A module started threads at import: its workers run in a fresh interpreter each, from now on.

        The spawner reported the module's workers (marked `exec`) and exits; the next one leaves the module out.
        """
        module, threads = str(message["module"]), ", ".join(map(str, message.get("threads", [])))
        found = [d for d in self.reported if self.found_in.get(d.name) == module]
        self.threaded[module] = found
        self.reported = [d for d in self.reported if d not in found]
        log.warning(
            "module %s started thread(s) %s at import, and a fork would copy them into every run: its %d worker(s) "
            "run in a fresh interpreter each (isolation = \"exec\"), which costs every run an interpreter's start "
            "and the module's import (tens of milliseconds instead of about 2); set isolation = \"exec\" on them "
            "to say it is meant",
            module,
            threads or "(unnamed)",
            len(found),
        )

    def _record_broken_module(
        self,
        module: str,
        error: str,
        stderr: str,
        exit_code: int | None,
        signum: int | None,
        traceback: str = "",
    ) -> None:
        """Leave a module out of every later spawner, record it, and show its workers as broken."""
        log.error("module %s is broken: %s", module, error)
        self.broken[module] = error
        self.excluded.add(module)
        self.recording.record(records.broken(module, module, error, utcnow(), traceback, stderr, exit_code, signum))
        for status in self.workers.values():
            if status.definition.module == module:
                status.state = WorkerState.BROKEN
                status.last_error = error
                self.agenda.set(status.definition.name, None)

    def handle_ready(self) -> None:
        """Take the spawner's worker list: keep known workers' schedules, place new ones (from the record)."""
        assert self.spawner is not None
        now, wall = self.clock(), self.wall_clock()
        defined: dict[str, WorkerDefinition] = {}
        for definition in [*self.reported, *(d for found in self.threaded.values() for d in found)]:
            try:
                overridden = definition.overridden(self.overrides.get(definition.name))
                if self.found_in.get(definition.name) in self.threaded:
                    overridden = replace(overridden, isolation="exec")  # a fork would copy the module's threads
                defined[definition.name] = overridden
            except ValueError as exc:  # the config's values do not hold together with the code's
                message = f"with its [worker.{definition.name}] settings: {exc}"
                log.error("worker %s in %s is invalid %s", definition.name, definition.module, message)
                self.broken[definition.name] = message
                self.recording.record(records.broken(definition.name, definition.module, message, utcnow()))
        self._refuse_unknown_tables(defined)
        for name in list(self.workers):
            if name not in defined and not self.workers[name].runs:
                del self.workers[name]
                self.agenda.set(name, None)
        for name, definition in defined.items():
            status = self.workers.get(name)
            if status is None:
                status = self.workers[name] = self._new_status(definition, now, wall)
            else:
                if _schedule_of(status.definition) != _schedule_of(definition):
                    timetable = Timetable(definition)
                    timetable.begin(now, wall, status.timetable.slot_wall(now, wall))
                    status.timetable = timetable
                status.definition = status.timetable.definition = definition
            if status.state is WorkerState.BROKEN:
                status.state = WorkerState.RUNNING if status.runs else WorkerState.IDLE
            self._attend(status, now)
        broken = [name for name in self.broken if name not in defined]
        next_runs = {name: _utc(s.timetable.slot_wall(now, wall)) for name, s in self.workers.items()}
        self.recording.record(records.workers_synced(list(defined.values()), broken, utcnow(), next_runs))
        log.info(
            "spawner ready (pid %d): %d worker(s)%s",
            self.spawner.pid,
            len(defined),
            f", {len(self.excluded)} module(s) left out as broken" if self.excluded else "",
        )
        self.restart_delay = RESTART_BACKOFF_FIRST
        self.ever_ready = True

    def _refuse_unknown_tables(self, defined: dict[str, WorkerDefinition]) -> None:
        """At the first start, refuse a `[worker.NAME]` table that names no worker, as `check` does: a typo in an
        override would otherwise never apply. One that a broken module may define is only logged."""
        known = [*defined, *(name for name in self.broken if name not in self.excluded)]
        for name in self.overrides:
            if name in known:
                continue
            problem = unknown_worker_table(name, known, self.config_file, sorted(self.excluded))
            if self.excluded or self.ever_ready:
                log.error("%s", problem)
            else:
                raise ConfigError(problem)

    def _new_status(self, definition: WorkerDefinition, now: float, wall: float) -> WorkerStatus:
        """A worker this supervisor has not scheduled yet: carry on its counters and schedule from the record."""
        status = WorkerStatus(definition=definition, timetable=Timetable(definition))
        row = self.stored.get(definition.name)
        recorded_next = None
        if row is not None:
            status.successes, status.failures = row.success_count, row.failure_count
            status.consecutive_failures, status.skipped = row.consecutive_failures, row.skipped_count
            status.last_outcome, status.last_error = row.last_outcome, row.last_error
            status.last_run_at, status.last_duration = row.last_run_at, row.last_duration
            status.paused, status.pause_reason = bool(row.paused), getattr(row, "pause_reason", None)
            status.failures_before_resume = status.consecutive_failures if status.quarantined else 0
            if row.next_run_at is not None:
                recorded_next = row.next_run_at.replace(tzinfo=timezone.utc).timestamp()
        catchup = status.timetable.begin(now, wall, recorded_next)
        if catchup.missed:
            status.skipped += catchup.skipped
            status.unrecorded_skips += catchup.skipped
            log.info(
                "%s: %d slot(s) missed while no supervisor ran it; %s",
                definition.name,
                catchup.missed,
                "one run now makes up for them" if catchup.run_now else "skipped (past its misfire grace)",
            )
        return status

    def read_spawner_output(self) -> None:
        """Log what the spawner or module code printed, line by line."""
        assert self.spawner is not None
        self.spawner.log_output(self.selector, log, logging.INFO, "spawner")

    def handle_spawner_exit(self) -> None:
        """The spawner died: record the module it was importing, or the runs it took down, and start another."""
        assert self.spawner is not None
        link = self.spawner
        self.handle_messages()  # reports it sent before dying come first
        self.read_spawner_output()
        exit_code, signum = link.reap()
        how = f"killed by {signal_name(signum)}" if signum is not None else f"exited with status {exit_code}"
        now = self.clock()
        delay = 0.0
        if self.stopping:
            pass  # it was told to go; the runs it took down are recorded below
        elif link.importing is not None:
            module = link.importing
            message = f"crashed the spawner while importing ({how})"
            # The culprit is left out, so the next spawner makes progress: no backoff needed.
            self._record_broken_module(module, message, link.output.text(), exit_code, signum)
        elif not link.ready and exit_code == EXIT_RESTART:
            pass  # it reported a module that must be left out (a thread at import) and asked to restart
        else:
            log.error("spawner (pid %d) %s; starting another in %.1fs", link.pid, how, self.restart_delay)
            delay = self.restart_delay
            self.restart_delay = min(self.restart_delay * 2, RESTART_BACKOFF_MAX)
        for run in list(self.runs.values()):
            # Runs die with their spawner (PDEATHSIG); anything left in their groups goes now.
            if run.pid is not None:
                signal_group(run.pid, signal.SIGKILL)
            run.stop_reason = run.stop_reason or StopReason.SPAWNER_LOST
            self.finish_run(run, None, None, None)
        # What the runs started outside their groups: in the spawner's cgroup, and adopted by us (subreaper).
        self.containment.spawner_died(self._helpers())
        self._drop_spawner()
        if not self.stopping:
            self.restart_at = now + delay

    # -- runs ---------------------------------------------------------------------------------------------------

    def start_due_runs(self, now: float) -> None:
        """Start every run that is owed (oldest first, within the cap on children); deal with busy slots."""
        if self.stopping:
            return
        if self.spawner is None:
            if self.restart_at is not None and now >= self.restart_at:
                try:
                    self.start_spawner()
                except HelperStartError as exc:  # out of processes (a run's fork bomb): try again, later and later
                    log.error("%s; trying again in %.1fs", exc, self.restart_delay)
                    self.restart_at = now + self.restart_delay
                    self.restart_delay = min(self.restart_delay * 2, RESTART_BACKOFF_MAX)
            return
        if not self.spawner.ready:
            if now >= self.spawner.import_deadline(self.import_timeout) and not self.spawner.killed:
                self._give_up_on_import()
            return
        wall = self.wall_clock()
        if now >= self.next_full_pass:
            self._attend_all(now, wall)
        owed: list[tuple[float, str]] = []
        for name in [*self.agenda.due(now), *sorted(self.waiting_for_room)]:
            status = self.workers.get(name)
            if status is None or status.state is WorkerState.BROKEN:
                continue
            status.timetable.follow_wall_clock(now, wall)
            done = status.slot_passed_while_busy(now, wall)
            if done:
                log.info("%s: %s", name, done)
            since = status.ready_since(now)
            if since is not None:
                owed.append((since, name))
            else:
                self._attend(status, now)
        owed.sort()
        room = len(owed) if self.max_children is None else max(0, self.max_children - len(self.runs))
        for _, name in owed[:room]:
            status = self.workers[name]
            slot = status.timetable.due
            reason, attempt = status.take_start(now, wall)
            self.start_run(status, now, wall, attempt, slot if reason is StartReason.SLOT else now)
            self._attend(status, now)
        # Runs owed beyond the cap wait here, out of the agenda: each pass offers them the room a run's end made.
        self.waiting_for_room = {name for _, name in owed[room:]}

    def _attend(self, status: WorkerStatus, now: float) -> None:
        """Put the worker on the agenda for the next time it wants the loop: its slot, a retry, a run owed now."""
        name = status.definition.name
        if status.state is WorkerState.BROKEN or self.workers.get(name) is not status:
            self.agenda.set(name, None)
            return
        times = []
        if status.has_room and (status.triggered or status.queued_since is not None):
            times.append(now)
        if not status.paused:
            times.append(status.due)  # also when busy: the slot is then skipped or queued, and counted
            if status.retry_at is not None and status.has_room:  # without room, the end of a run brings it back
                times.append(status.retry_at)
        self.agenda.set(name, min(times) if times else None)

    def _attend_all(self, now: float, wall: float) -> None:
        """Every minute: follow the wall clock with cron slots (a clock step moves them), and re-place everyone."""
        for status in self.workers.values():
            status.timetable.follow_wall_clock(now, wall)
            self._attend(status, now)
        self.next_full_pass = now + FULL_PASS_INTERVAL

    def _give_up_on_import(self) -> None:
        assert self.spawner is not None
        module = self.spawner.importing
        if module is not None:
            message = f"import did not finish within {self.import_timeout:g}s"
            self._record_broken_module(module, message, self.spawner.output.text(), None, None)
            self.spawner.importing = None  # recorded; its death is not a crash to record again
        else:
            log.error("spawner (pid %d) did not become ready within %gs", self.spawner.pid, self.import_timeout)
        self.spawner.kill()

    def start_run(self, status: WorkerStatus, now: float, wall: float, attempt: int, slot: float) -> None:
        """Ask the spawner for a run of this worker (and record that it starts); `slot` is when it was due."""
        assert self.spawner is not None
        definition = status.definition
        run = Run(
            id=os.urandom(16).hex(),  # as random as uuid4().hex, without building a UUID object per run
            definition=definition,
            attempt=attempt,
            started=now,
            started_at=utcnow(),
            deadline=now + definition.timeout if definition.timeout else None,
        )
        ends = [open_pipe() for _ in range(3)]
        for (read_end, _), stream in zip(ends, ("result", "stdout", "stderr")):
            set_nonblocking(read_end)
            run.fds[read_end] = stream
        # The record is written before the request, so a supervisor killed from here on leaves the run to be
        # found lost.
        self.recording.record(
            records.run_started(
                run.id,
                definition.name,
                run.attempt,
                run.started_at,
                _utc(status.timetable.slot_wall(now, wall)),
                self.node,
                self.pid,
                skipped=status.unrecorded_skips,
            ),
            can_wait=True,
        )
        status.unrecorded_skips = 0
        # The spawner link owns the write ends from here: it closes them once the request is sent. If the spawner
        # is already dead, its exit (on its pidfd) ends this run like every other run it had.
        self.spawner.spawn(
            run.id,
            definition.name,
            run.attempt,
            run.deadline,
            [w for _, w in ends],
            {**run_settings(definition), "due_at": wall - (now - slot), "module": self.found_in.get(definition.name)},
        )
        for r, _ in ends:
            self.selector.register(r, selectors.EVENT_READ, ("run", run))
        self.runs[run.id] = run
        self._watch_deadline(run)
        status.runs.append(run)
        status.state = WorkerState.RUNNING
        log.debug("%s: run %s requested (attempt %d)", definition.name, run.id, attempt)

    def handle_spawned(self, message: Message) -> None:
        """Note the pid a run got."""
        run = self.runs.get(message["run"])
        if run is None:
            return
        run.pid = int(message["pid"])
        if run.definition.memory_limit:
            self.memory_limited.add(run.id)
        self.recording.record(records.run_spawned(run.id, run.definition.name, run.pid), can_wait=True)

    def read_run_pipe(self, run: Run, fd: int) -> None:
        """Read what a child wrote on one of its pipes (64 KiB at a time, so it never blocks on a full pipe)."""
        if fd not in run.fds:
            return  # closed earlier in this same pass, when the run ended
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        if data:
            self._feed(run, run.fds[fd], data)
        else:
            self.selector.unregister(fd)
            os.close(fd)
            del run.fds[fd]

    def _feed(self, run: Run, stream: str, data: bytes) -> None:
        if stream == "stderr":
            run.stderr.feed(data)
        elif stream == "stdout":
            run.stdout.feed(data)
        elif len(run.result) < RESULT_LIMIT:
            run.result += data[: RESULT_LIMIT - len(run.result)]

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
        """Classify the ended run (unless `verdict` is given), record it, and free its worker for the next tick."""
        self._close_pipes(run, drain=True)
        exit_code = signum = None
        if status is not None:
            exit_code, signum = decode_status(status)
        if verdict is None:
            result = _parse_result(run.result)
            verdict = (
                run.limit_verdict
                or cpu_limit_verdict(run.definition, signum, usage[0] if usage else None)
                or open_files_verdict(run.definition, result)
                or classify(
                    exit_code,
                    signum,
                    result,
                    run.stop_reason,
                    run.definition.timeout,
                    command=run.definition.command is not None,
                )
            )
        now = self.clock()
        finished_at = utcnow()
        duration = now - run.started
        del self.runs[run.id]
        self.memory.forget(run.id)
        self.memory_limited.discard(run.id)
        self.run_deadlines.set(run.id, None)
        worker = self.workers.get(run.definition.name)
        next_run_at = None
        skipped = 0
        decided = None
        if worker is not None:
            skipped, worker.unrecorded_skips = worker.unrecorded_skips, 0
            decided = worker.run_ended(run, verdict.outcome.failed, now, self.stopping)
            if worker.state is not WorkerState.BROKEN and not worker.runs:
                worker.state = WorkerState.IDLE
            worker.last_outcome = verdict.outcome.value
            worker.last_run_at = run.started_at
            worker.last_duration = duration
            if verdict.outcome.failed:
                worker.last_error = verdict.message
            self._attend(worker, now)
            next_run_at = _utc(worker.timetable.slot_wall(now, self.wall_clock()))
        self.recording.record(
            records.run_finished(
                run.id,
                run.definition.name,
                run.attempt,
                run.started_at,
                finished_at,
                duration,
                verdict,
                self.node,
                self.pid,
                pid=run.pid,
                exit_code=exit_code,
                signal=signum,
                cpu_time=usage[0] if usage else None,
                peak_rss=usage[1] if usage else None,
                stderr=run.stderr.text(),
                stdout=run.stdout.text(),
                next_run_at=next_run_at,
                skipped=skipped,
            ),
            # A failure is on record within milliseconds; a success may wait for the next batch.
            can_wait=not verdict.outcome.failed,
        )
        level = logging.INFO if not verdict.outcome.failed else logging.WARNING
        if verdict.outcome in (Outcome.CRASH, Outcome.KILLED):
            level = logging.ERROR
        log.log(
            level,
            "%s: pid %s %s in %.3fs%s",
            run.definition.name,
            run.pid,
            verdict.outcome.value,
            duration,
            f": {verdict.message}" if verdict.message else "",
        )
        if worker is not None and decided:
            log.warning("%s: %s", run.definition.name, decided)
            if worker.quarantined:
                self.recording.record(records.worker_paused(worker.definition.name, True, utcnow(), worker.pause_reason))

    def _close_pipes(self, run: Run, drain: bool = False) -> None:
        # What the child wrote before it exited is already in the pipes: read it (bounded), then close. We do
        # not wait for EOF, which a grandchild that escaped the run's group could hold back forever.
        for fd, stream in list(run.fds.items()):
            if drain:
                data, _eof = read_available(fd, limit=4 << 20)
                self._feed(run, stream, data)
            self.selector.unregister(fd)
            os.close(fd)
        run.fds.clear()

    def stop_run(self, run: Run, reason: StopReason, now: float) -> None:
        """Ask a run to stop: SIGTERM to its group now, SIGKILL after its grace period."""
        assert self.spawner is not None
        run.stop_reason = reason
        run.kill_at = now + run.definition.grace
        self._watch_deadline(run)
        self.spawner.signal_run(run.id, signal.SIGTERM)
        worker = self.workers.get(run.definition.name)
        if worker is not None:
            worker.state = WorkerState.STOPPING
        log.info("%s: pid %s asked to stop (%s)", run.definition.name, run.pid, reason.value)

    def enforce_deadlines(self, now: float) -> None:
        """Stop runs past their deadline, and kill those still alive past their grace."""
        for run_id in self.run_deadlines.due(now):
            run = self.runs.get(run_id)
            if run is None:
                continue
            if run.stop_reason is None and run.deadline is not None and now >= run.deadline:
                self.stop_run(run, StopReason.TIMEOUT, now)
            elif run.kill_at is not None and now >= run.kill_at and not run.killed and self.spawner is not None:
                run.killed = True
                log.warning("%s: pid %s did not stop within its grace; SIGKILL", run.definition.name, run.pid)
                self.spawner.signal_run(run.id, signal.SIGKILL)
            self._watch_deadline(run)

    def _watch_deadline(self, run: Run) -> None:
        """Put the run's next deadline on its agenda: its timeout until it is asked to stop, then its kill time."""
        when = None
        if run.stop_reason is None:
            when = run.deadline
        elif run.kill_at is not None and not run.killed:
            when = run.kill_at
        self.run_deadlines.set(run.id, when)

    def enforce_memory_limits(self, now: float) -> None:
        """Kill (SIGKILL, at once) the runs whose memory, with their descendants', is over their limit.

        At once, as the kernel's OOM killer would: a run over its memory limit is a danger to the server now,
        and the grace a timeout gets would let it grow further.
        """
        if self.spawner is None or not self.memory_limited or not self.memory.due(now):
            return
        limited = [self.runs[run_id] for run_id in sorted(self.memory_limited) if run_id in self.runs]
        for run, verdict in self.memory.check(limited, now):
            run.stop_reason, run.limit_verdict = StopReason.LIMIT, verdict
            run.kill_at, run.killed = now, True
            self._watch_deadline(run)
            self.memory_limited.discard(run.id)
            self.spawner.signal_run(run.id, signal.SIGKILL)
            # The group kill misses descendants that left the run's group (start_new_session, setsid), and the
            # spawner does not look for them until it shuts down: kill those the memory watch saw, by pid.
            self.memory.kill_descendants(run.id)
            worker = self.workers.get(run.definition.name)
            if worker is not None:
                worker.state = WorkerState.STOPPING
            log.warning("%s: pid %s killed: %s", run.definition.name, run.pid, verdict.message)

    # -- time and the table ----------------------------------------------------------------------------------

    def next_wakeup(self, now: float) -> float | None:
        """Return how long the loop may sleep before something is due (None: until an event)."""
        times: list[float] = []
        if self.spawner is None:
            if self.restart_at is not None and not self.stopping:
                times.append(self.restart_at)
        elif not self.spawner.ready:
            if not self.spawner.killed:
                times.append(self.spawner.import_deadline(self.import_timeout))
        elif not self.stopping:
            attention = self.agenda.next_time()
            if attention is not None:
                times.append(attention)
            if self.waiting_for_room and (self.max_children is None or len(self.runs) < self.max_children):
                times.append(now)
            times.append(self.next_full_pass)
        if self.memory_limited:
            times.append(self.memory.next_sample)
        deadline = self.run_deadlines.next_time()
        if deadline is not None:
            times.append(deadline)
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
        self._sampled = set()
        rows = []
        wall = self.wall_clock()
        for name, s in sorted(self.workers.items()):
            next_run = None
            if s.state is not WorkerState.BROKEN and not self.stopping:
                if s.retry_at is not None:
                    next_run = _utc(wall + s.retry_at - now)
                elif not s.paused:
                    next_run = _utc(s.timetable.due_wall(now, wall))
            state = s.state.value
            if s.paused and s.state is WorkerState.IDLE:
                state = "quarantined" if s.quarantined else WorkerState.PAUSED.value
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
                    cpu_percent=self._usage(s.run)[0],
                    rss=self._usage(s.run)[1],
                    schedule=schedule.describe(s.definition.interval, s.definition.cron, s.definition.timezone),
                    running=len(s.runs),
                    queued=s.queued_since is not None,
                    retry_attempt=s.retry_attempt if s.retry_at is not None else None,
                    last_failure_at=s.last_failure_at,
                )
            )
        for module, error in sorted(self.broken.items()):
            if module not in self.workers:
                rows.append(WorkerView(module, WorkerState.BROKEN.value, None, None, None, None, None, 0, 0, error))
        return rows

    def _usage(self, run: Run | None) -> tuple[float | None, int | None]:
        # Sampled only when the table is drawn, once per drawing: a supervisor off a terminal pays nothing.
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

    def footer(self) -> Footer:
        """The line under the table: records waiting, the database's health, uptime."""
        return Footer(self.recording.pending, self.recording.failing, self.started_at)



def _parse_result(data: bytearray) -> dict[str, object] | None:
    if not data:
        return None
    try:
        parsed = json.loads(bytes(data))
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _schedule_of(definition: WorkerDefinition) -> tuple[object, ...]:
    """The settings that place a worker's slots: a change in any of them starts its timetable afresh."""
    return (definition.interval, definition.cron, definition.timezone, definition.jitter)


def _utc(moment: float) -> datetime:
    """A Unix time as the naive-UTC datetime every record and row holds."""
    return datetime.fromtimestamp(moment, timezone.utc).replace(tzinfo=None)
