"""The spawner: a lean, single-threaded fork server that imports the worker modules and forks one child per run.

It is started by the supervisor as `python -m supervisor.spawn.spawner` (a fresh interpreter, so nothing of the
supervisor's threads, database connections or terminal state is in it) and talks to it over one message
socket (see protocol.py). Worker code is imported here and only here: a module that raises, segfaults or hangs
at import harms this process, which the supervisor restarts without that module.

The loop blocks in one place, `select`, over the control socket and a wakeup pipe that SIGCHLD and SIGTERM
write to. Handlers only record; reaping and replies happen in the loop. Between requests it keeps one standby
child forked ahead (standby.py), so that a run's start does not wait for a fork.
"""
from __future__ import annotations

import argparse
import faulthandler
import gc
import json
import logging
import os
import resource
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import replace
from types import ModuleType
from typing import Any, NoReturn

from . import discovery
from .. import escaped
from ..cgroup import join as join_cgroup
from .child import Streams, run_child
from .standby import StandbySlot, fork_with_sigterm_blocked
from .command import CONFIG_ORIGIN, CommandWorker
from .fence import Fence
from ..errors import WorkerDefinitionError
from ..process import (
    become_subreaper,
    children_of,
    die_with_parent,
    drain,
    signal_group,
    thread_count,
)
from ..protocol import COMMANDS_ENV, EXIT_RESTART, STACK_SIGNAL, clip, receive, send
from ..worker import Worker
from ..process_title import set_title

# If the final reaping at shutdown takes longer than this, SIGALRM's default action ends the spawner anyway.
SHUTDOWN_ALARM = 10
STANDBY_DELAY = 0.01  # seconds after a run starts before the next standby child is forked


class Spawner:
    """Import the workers, then fork runs on request and report each run's exit."""

    def __init__(
        self,
        control: socket.socket,
        supervisor_pid: int,
        sources: list[str],
        excluded: set[str],
        commands: list[dict[str, Any]] | None = None,
    ) -> None:
        self.control = control
        self.supervisor_pid = supervisor_pid
        self.sources = sources
        self.excluded = excluded
        self.commands = commands or []
        """The config's command workers, as keyword arguments of CommandWorker."""
        self.workers: dict[str, Worker] = {}
        self.runs: dict[int, str] = {}  # pid -> run id, until reaped
        self.pids: dict[str, int] = {}  # run id -> pid, until reaped
        self.pending_signals: list[int] = []
        self.stopping = False
        self.streams: Streams | None = None
        """The runs' stdio and log handler, made once after the imports (see child.Streams)."""
        self.standby = StandbySlot(fresh=False, wanted=True)
        self.fresh_standby = StandbySlot(fresh=True, wanted=False)
        """A fresh interpreter waiting for the next run with isolation = "exec" (see standby.py): wanted from the
        first such run on, so that a spawner that has none keeps none."""
        self.standby_after = 0.0
        """Not before this (monotonic) time: a run just started has the first milliseconds to itself."""
        self.escape_record: escaped.EscapeRecord | None = None
        """Where to note the runs' groups and what left them, when no cgroup holds them (escaped.py)."""
        self.next_survey = 0.0
        self.fence = Fence()
        """On a shared PostgreSQL: the deadline by which the runs must end unless the node's lease is renewed."""
        self.survey_wanted = False
        """A run ended since the last survey: what it left running is ours now, and to be noted even if no run goes."""

    # -- start-up: imports --------------------------------------------------------------------------------

    def load_workers(self) -> None:
        """Import every module of every source, add the config's command workers, report them all, then `ready`."""
        for source in self.sources:
            module = self._import(source)
            if module is None:
                continue
            for name in discovery.submodules(module):
                self._import(name)
        for number, spec in enumerate(self.commands, 1):
            self._add_command(spec, number)
        # After the imports, so that what a module made of logging at import is replaced in the runs, as before.
        self.streams = Streams()
        self.streams.take_logging()
        # Each worker's logger exists before any fork, so a run finds its ctx.log instead of making it (a Logger, and
        # the logging module's lock and dicts written in every child).
        for name in self.workers:
            logging.getLogger(f"worker.{name}")
        # What the imports made lives as long as the spawner. Out of the collector's sight, no collection (here, or
        # in a run) walks it: each would write to its pages, and every write to a page shared with a child since a
        # fork is a copy, in the spawner after each run's fork, or in the run itself (gunicorn's preload advice).
        gc.freeze()
        send(self.control, "ready", pid=os.getpid())

    def _import(self, name: str) -> ModuleType | None:
        if name in self.excluded:
            return None
        send(self.control, "importing", module=name)
        threads_before = threading.active_count()
        try:
            module = discovery.import_module(name)
        except BaseException as exc:  # a module's import is arbitrary code; all of it is a failure to report
            send(
                self.control,
                "broken",
                module=name,
                # A source that cannot be found at all is a mistake in the configuration, not a broken module.
                missing=isinstance(exc, ModuleNotFoundError) and exc.name == name and name in self.sources,
                error=f"import failed: {type(exc).__qualname__}: {clip(str(exc), 2000)}",
                traceback=clip("".join(traceback.format_exception(exc))),
            )
            return None
        if threading.active_count() > threads_before:
            # The thread runs in this process now, and every fork would copy it mid-flight into a run: this
            # spawner must go. The module's workers run in a fresh interpreter each (exec_child.py); the next
            # spawner leaves the module out.
            names = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
            for worker in discovery.workers_in(module):
                self._add(worker, name, isolation="exec")
            send(self.control, "threaded", module=name, threads=names)
            os._exit(EXIT_RESTART)
        if thread_count() > 1:
            print(f"spawner: {name} left {thread_count() - 1} native thread(s) running", file=sys.stderr)
        for worker in discovery.workers_in(module):
            self._add(worker, name)
        return module

    def _add(self, worker: Worker, module: str, isolation: str | None = None) -> None:
        """Report a worker found in `module` (where a fresh interpreter finds it again: exec_child.py)."""
        try:
            definition = worker.definition()
            if isolation is not None:
                definition = replace(definition, isolation=isolation)
            if definition.name in self.workers:
                other = self.workers[definition.name].module
                raise WorkerDefinitionError(f"name {definition.name!r} is already used by a worker in {other}", module)
        except WorkerDefinitionError as exc:
            name = worker.name if isinstance(worker.name, str) else worker.default_name()
            send(self.control, "broken", module=module, worker=name, error=str(exc), traceback="")
            return
        self.workers[definition.name] = worker
        send(self.control, "worker", definition=definition.to_dict(), module=module)

    def _add_command(self, spec: dict[str, Any], number: int) -> None:
        """Add a command worker the config declares; one that cannot even be built is reported broken."""
        name = spec.get("name")
        name = name if isinstance(name, str) else f"command #{number}"
        try:
            worker = CommandWorker(**spec, origin=CONFIG_ORIGIN)
        except WorkerDefinitionError as exc:
            error = str(exc)
        except TypeError as exc:  # a key that clashes with one of its parameters, such as "origin"
            error = f"{exc} (worker {name!r} in {CONFIG_ORIGIN})"
        else:
            self._add(worker, CONFIG_ORIGIN)
            return
        send(self.control, "broken", module=CONFIG_ORIGIN, worker=name, error=error, traceback="")

    # -- the loop -------------------------------------------------------------------------------------------

    def serve(self) -> None:
        """Serve spawn and signal requests until the supervisor goes away or asks us to stop."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, self._record_signal)
        # From now on the supervisor's death arrives as SIGTERM (handled here, so the runs' groups are killed)
        # as well as EOF on the control socket; until now SIGKILL was right, since an import can block signals.
        signal.signal(signal.SIGTERM, self._record_signal)
        # SIGHUP comes from the kernel when the supervisor dies while we are stopped (SIGSTOP): our process group is
        # then orphaned. Its default action would end us without killing what the runs started outside their groups.
        signal.signal(signal.SIGHUP, self._record_signal)
        if not die_with_parent(signal.SIGTERM, self.supervisor_pid):
            self.stopping = True
        selector = selectors.DefaultSelector()
        selector.register(self.control, selectors.EVENT_READ, "control")
        selector.register(wake_r, selectors.EVENT_READ, "wakeup")
        self.reap()  # a child could have died before the handler was installed
        while not self.stopping:
            for key, _ in selector.select(_earliest(self.keep_standbys(), self.survey(), self.keep_fence())):
                if key.data == "wakeup":
                    drain(wake_r)
                    self.handle_signals()
                else:
                    self.handle_control()
        self.shutdown()

    def keep_standbys(self) -> float | None:
        """Fork the next runs' children ahead of their requests, unless they wait already; return how long the loop
        may wait before it is time to (None: no need to wake for it)."""
        if self.stopping:
            return None
        streams = self._streams()
        return _earliest(*(slot.keep(self.workers, streams, self.standby_after)
                           for slot in (self.standby, self.fresh_standby)))

    def survey(self) -> float | None:
        """While runs go, note their groups and every process that left them in the escape record, at most every
        SURVEY_INTERVAL; return how long the loop may wait before the next survey (None: none is needed).

        Polled, unlike everything else here: no event tells us that a process changed its session. Only without a
        cgroup, which holds everything without looking.
        """
        record = self.escape_record
        now = time.monotonic()
        if record is None or self.stopping or (not self.runs and record.empty and not self.survey_wanted):
            # Idle: the first survey comes SURVEY_INTERVAL after runs start, not in the middle of the first start.
            self.next_survey = now + escaped.SURVEY_INTERVAL
            return None
        if now < self.next_survey:
            return self.next_survey - now
        others = {slot.child.pid for slot in (self.standby, self.fresh_standby) if slot.child is not None}
        record.write(*escaped.survey(os.getpid(), set(self.runs), others))
        self.next_survey = now + escaped.SURVEY_INTERVAL
        self.survey_wanted = False
        return escaped.SURVEY_INTERVAL

    def keep_fence(self) -> float | None:
        """Kill every run if the node's lease is about to run out (fence.py); return how long the loop may wait
        before it must look again (None: no deadline)."""
        if self.fence.passed(bool(self.runs)):
            fenced = sorted(self.runs.values())
            for pid in list(self.runs):
                signal_group(pid, signal.SIGKILL)
            self.fence.deadline = None  # until the next renewal: a run started after it is the supervisor's doing
            send(self.control, "fenced", runs=fenced)
        return self.fence.wait(bool(self.runs))

    def _record_signal(self, signum: int, frame: object) -> None:
        # Only record; the loop does the work (reaping here would re-enter the loop's own waitpid calls).
        self.pending_signals.append(signum)

    def handle_signals(self) -> None:
        """Act on the signals recorded since the last pass."""
        pending, self.pending_signals = self.pending_signals, []
        if signal.SIGTERM in pending or signal.SIGHUP in pending:
            self.stopping = True
        self.reap()

    def handle_control(self) -> None:
        """Handle every message waiting on the control socket."""
        while True:
            try:
                message, fds = receive(self.control, block=False)
            except BlockingIOError:
                return
            except ConnectionResetError:
                message, fds = None, []
            if message is None:
                self.stopping = True
                return
            op = message.get("op")
            if op == "spawn":
                self.spawn_run(message, fds)
            elif op == "signal":
                self.signal_run(str(message["run"]), int(message["signal"]))
            elif op == "dump_stack":
                self.dump_stack(str(message["run"]))
            elif op == "fence":
                self.fence.renew(float(message["until"]))
            else:
                for fd in fds:
                    os.close(fd)
                print(f"spawner: unknown request {op!r}", file=sys.stderr)

    def spawn_run(self, request: dict[str, object], fds: list[int]) -> None:
        """Fork one child for the run in `request`, on the pipe ends that came with it."""
        run_id = str(request["run"])
        worker = self.workers.get(str(request["worker"]))
        settings = request.get("settings")
        fresh = isinstance(settings, dict) and settings.get("isolation") == "exec"
        # A worker of a module this spawner left out (it started threads at import) runs in a fresh interpreter,
        # which imports its module: this spawner needs no copy of it, only the module's name.
        known = worker is not None or (fresh and isinstance(settings, dict) and bool(settings.get("module")))
        if not known or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            send(self.control, "spawn_failed", run=run_id, error=f"no worker named {request['worker']!r} here")
            return
        (self.fresh_standby if fresh else self.standby).wanted = True
        # Forking the next standby at once would compete for the CPU with this run's start (and, for a run that
        # crashes at once, delay reaping it by the fork): wait until the run is a few milliseconds old.
        self.standby_after = time.monotonic() + STANDBY_DELAY
        pid = self._hand_to_standby(request, fds, fresh)
        if pid is None:
            try:
                pid = fork_with_sigterm_blocked(
                    lambda mask: run_child(
                        worker, request, fds, spawner_pid=os.getppid(), signal_mask=mask, streams=self._streams()
                    )
                )
            except OSError as exc:
                for fd in fds:
                    os.close(fd)
                send(self.control, "spawn_failed", run=run_id, error=f"fork failed: {exc}")
                return
        for fd in fds:
            os.close(fd)
        self.runs[pid] = run_id
        self.pids[run_id] = pid
        send(self.control, "spawned", run=run_id, pid=pid)

    def _streams(self) -> Streams:
        if self.streams is None:
            self.streams = Streams()
        return self.streams

    def _hand_to_standby(self, request: dict[str, object], fds: list[int], fresh: bool) -> int | None:
        """Give the run to the standby child of its kind; return its pid, or None if there is none that can take it.

        A fork standby could take an exec run too (it execs once it has the run), but a fresh one is faster.
        """
        standby = (self.fresh_standby.take() or self.standby.take()) if fresh else self.standby.take()
        if standby is None:
            return None
        if standby.hand_over(request, fds):
            return standby.pid
        return None  # it died; reap() collects it

    def signal_run(self, run_id: str, sig: int) -> None:
        """Signal a run's whole process group, if the run has not been reaped (its pid may be reused after)."""
        pid = self.pids.get(run_id)
        if pid is not None:
            signal_group(pid, sig)

    def dump_stack(self, run_id: str) -> None:
        """Ask a Python run's own process (not its group: its children are not ours to ask) for its stack."""
        pid = self.pids.get(run_id)
        if pid is not None:
            try:
                os.kill(pid, STACK_SIGNAL)
            except ProcessLookupError:
                pass

    def reap(self) -> None:
        """Collect every exited child and report the runs among them."""
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run_id = self.runs.pop(pid, None)
            if run_id is None:
                if not self.standby.ended(pid, _describe_status(status)):
                    self.fresh_standby.ended(pid, _describe_status(status))
                continue  # otherwise an orphaned grandchild we adopted as subreaper; nothing to report
            del self.pids[run_id]
            self.survey_wanted = True
            # The run is over: whatever it left running in its group goes with it. The group id cannot have
            # been reused while any member is alive, so this reaches only the run's own leftovers.
            signal_group(pid, signal.SIGKILL)
            send(
                self.control,
                "exited",
                run=run_id,
                pid=pid,
                status=status,
                cpu=usage.ru_utime + usage.ru_stime,
                maxrss=usage.ru_maxrss * 1024,
            )

    def shutdown(self) -> None:
        """Kill every run's group, the standby and every adopted orphan, reap them all, and empty the escape record."""
        self.standby.close()
        self.fresh_standby.close()
        signal.alarm(SHUTDOWN_ALARM)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        for pid in list(self.runs):
            signal_group(pid, signal.SIGKILL)
        while True:
            # Killing a run can orphan its escaped descendants onto us (we are their subreaper): repeat.
            for pid in children_of(os.getpid()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            run_id = self.runs.pop(pid, None)
            if run_id is not None:
                self.pids.pop(run_id, None)
                try:
                    send(self.control, "exited", run=run_id, pid=pid, status=status, cpu=0.0, maxrss=0)
                except OSError:
                    pass  # the supervisor is gone
        if self.escape_record is not None:
            self.escape_record.write([], [])  # every process it named is dead and reaped


def _earliest(*waits: float | None) -> float | None:
    """The shortest of the waits that are not None (None if all are)."""
    known = [wait for wait in waits if wait is not None]
    return min(known) if known else None


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.WEXITSTATUS(status)}"


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of `python -m supervisor.spawn.spawner`; only the supervisor starts it."""
    parser = argparse.ArgumentParser(prog="supervisor.spawn.spawner")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--supervisor-pid", type=int, required=True)
    parser.add_argument("--source", action="append", default=[])
    parser.add_argument("--exclude", action="append", default=[])
    parser.add_argument("--cgroup", help="the supervisor's cgroup for our tree (cgroup.py)")
    parser.add_argument("--escape-record", help="where to note escaped processes without a cgroup (escaped.py)")
    args = parser.parse_args(argv)
    set_title(" ".join(["spawner", *args.source, *(["except", *args.exclude] if args.exclude else [])]), "ws-spawner")
    commands = json.loads(os.environ.pop(COMMANDS_ENV, "[]"))
    # Until the loop runs, the supervisor's death must end us outright: an import may hang with signals blocked.
    if not die_with_parent(signal.SIGKILL, args.supervisor_pid):
        os._exit(1)
    # Before any import: a module may start a process at import, and every run's process must be born inside.
    in_cgroup = False
    if args.cgroup:
        try:
            join_cgroup(args.cgroup)
            in_cgroup = True
        except OSError as exc:
            print(f"spawner: could not join cgroup {args.cgroup}: {exc}", file=sys.stderr)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle, not ours
    # Core dumps turn a crash's detection from under a millisecond into hundreds: off for every run (each child
    # inherits the limit, so none pays for setting it) unless asked for.
    if os.environ.get("SUPERVISOR_CORE_DUMPS") != "1":
        _, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    faulthandler.enable(all_threads=True)
    become_subreaper()
    control = socket.socket(fileno=args.control_fd)
    control.setblocking(True)
    os.set_inheritable(control.fileno(), False)
    spawner = Spawner(control, args.supervisor_pid, args.source, set(args.exclude), commands)
    if args.escape_record and not in_cgroup:
        spawner.escape_record = escaped.EscapeRecord(args.escape_record)
    try:
        spawner.load_workers()
        spawner.serve()
    except ConnectionError:
        # The supervisor is gone: a report met its closed channel (it was SIGKILLed as a run ended) before its
        # death's SIGTERM was acted on. Stop as that SIGTERM would have: a bare exit here would leave whatever
        # the runs started outside their groups to init.
        spawner.shutdown()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
