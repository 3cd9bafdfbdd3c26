"""The spawner's life, as the supervisor keeps it: start it, take its reports of modules and workers, and start
another when it dies, leaving out the module that took it down.

The spawner imports the worker modules (the supervisor never does) and reports each worker's definition, each
module that is broken or starts threads at import, then `ready`. This module turns those reports into the worker
list the scheduler places (`defined`), records what is broken, and decides how a dead spawner is replaced: at
once without the module it was importing, or after a backoff that doubles while it keeps dying.
"""
from __future__ import annotations

import logging
import os
import selectors
from dataclasses import replace
from typing import Any, Callable

from ..record import records
from ..config import unknown_worker_table
from .containment import Containment
from ..errors import ConfigError, HelperStartError
from ..outcome import signal_name
from ..protocol import EXIT_RESTART, Message
from ..record.recording import Recording
from .spawner_link import SpawnerLink
from ..record.store import utcnow
from ..worker import WorkerDefinition

log = logging.getLogger("supervisor")

RESTART_BACKOFF_FIRST = 0.5
SPAWNER_EXIT_TIMEOUT = 5.0  # after we close its channel, the spawner has this long to kill the runs and exit
RESTART_BACKOFF_MAX = 30.0


class SpawnerKeeper:
    """The current spawner (None while there is none), and what its reports taught us about the workers."""

    def __init__(
        self,
        sources: list[str],
        overrides: dict[str, dict[str, Any]],
        commands: list[dict[str, Any]],
        config_file: str | None,
        import_timeout: float,
        recording: Recording,
        selector: selectors.BaseSelector,
        containment: Containment,
        on_broken_module: Callable[[str, str], None],
    ) -> None:
        self.sources = sources
        self.overrides = overrides
        self.commands = commands
        """Command workers declared in the config; the spawner makes them (the supervisor runs no worker code)."""
        self.config_file = config_file
        """The file the overrides come from, to name in an error."""
        self.import_timeout = import_timeout
        """A module whose import takes longer than this is taken as hung, recorded broken and left out."""
        self.recording = recording
        self.selector = selector
        self.containment = containment
        self.on_broken_module = on_broken_module
        """Told each module that is broken now, and why (the scheduler shows its workers broken)."""
        self.link: SpawnerLink | None = None
        self.broken: dict[str, str] = {}  # module (or worker) -> why
        self.excluded: set[str] = set()
        self.reported: list[WorkerDefinition] = []
        self.found_in: dict[str, str] = {}
        """The module each worker was found in: where a fresh interpreter imports it (isolation = "exec")."""
        self.threaded: dict[str, list[WorkerDefinition]] = {}
        """Modules that started threads at import, with their workers: left out of every spawner, their runs
        are fresh interpreters."""
        self.restart_at: float | None = None
        self.restart_delay = RESTART_BACKOFF_FIRST
        self.ever_ready = False
        self.retiring: list[SpawnerLink] = []
        """Spawners a reload replaced: each keeps its runs in progress, takes no new ones, and is let go (it exits)
        once its last run has ended. Their events come to the loop with the link itself as the owner."""
        self.reload_waiting = False
        """A reload came while the spawner was still importing: it is carried out once that one is ready."""

    # -- start and end ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start a spawner that imports every source module except the excluded (and threaded) ones."""
        self.restart_at = None
        self.reported = []
        link = SpawnerLink(self.sources, self.excluded | set(self.threaded), self.commands,
                           self.containment.spawner_args())
        link.start()
        self.link = link
        link.watch(self.selector, "spawner")
        log.debug("spawner started (pid %d)", link.pid)

    # -- a reload: a new spawner takes the new runs, the old one keeps its own -------------------------------------

    def reconfigure(self, sources: list[str], overrides: dict[str, dict[str, Any]], commands: list[dict[str, Any]],
                    config_file: str | None) -> None:
        """Take a reloaded config for the next spawner. Modules once broken are tried again: their code may be
        fixed now (a broken one is recorded again by the new spawner)."""
        self.sources, self.overrides, self.commands, self.config_file = sources, overrides, commands, config_file
        self.excluded, self.threaded, self.broken = set(), {}, {}

    def renew(self) -> bool:
        """Start a new spawner for the reloaded config; the current one retires. Return whether one was started
        (False: none runs now, or it is still importing; the reload then happens when it is ready)."""
        old = self.link
        if old is None:
            return False  # a restart is due: it takes the new config
        if not old.ready:
            self.reload_waiting = True
            return False
        old.unwatch(self.selector)
        old.watch(self.selector, old)
        self.retiring.append(old)
        self.link = None
        self.start()
        return True

    def serving(self) -> SpawnerLink | None:
        """The spawner new runs go to: the current one once ready; until then, during a reload, the one it replaces
        (a reload never holds due runs back while the new spawner imports: they start on the old code)."""
        if self.link is not None and self.link.ready:
            return self.link
        return next((old for old in reversed(self.retiring) if old.ready and not old.channel_closed and not old.exited),
                    None)

    def release_idle(self, busy: set[SpawnerLink]) -> None:
        """Let go of the retiring spawners no run needs (`busy`: the spawners that have runs), unless one still
        stands in for a new spawner that is not ready yet."""
        if self.link is None or not self.link.ready:
            return
        for old in self.retiring:
            if old not in busy:
                self.release(old)

    def release(self, old: SpawnerLink) -> None:
        """A retiring spawner's last run has ended: close its channel, and it exits (reaped on its pidfd)."""
        if not old.channel_closed and not old.exited:
            old.unwatch(self.selector, old.control)
            old.close_channel()
            old.channel_closed = True  # nothing more to read from it; its exit comes on its pidfd
            log.info("spawner (pid %d) of the previous config: its last run ended; it exits", old.pid)

    def drop_retired(self, old: SpawnerLink) -> None:
        """A retiring spawner exited and is reaped: forget it."""
        old.unwatch(self.selector)
        old.close()
        self.retiring.remove(old)

    def drop(self) -> None:
        """Let go of the spawner (exited and reaped, or about to be)."""
        assert self.link is not None
        self.link.unwatch(self.selector)
        self.link.close()
        self.link = None

    def tend(self, now: float) -> bool:
        """Start a spawner if one is due, give up on an import that takes too long; return whether the spawner is
        ready for runs."""
        if self.link is None:
            if self.restart_at is not None and now >= self.restart_at:
                try:
                    self.start()
                except HelperStartError as exc:  # out of processes (a run's fork bomb): try again, later and later
                    log.error("%s; trying again in %.1fs", exc, self.restart_delay)
                    self.restart_at = now + self.restart_delay
                    self.restart_delay = min(self.restart_delay * 2, RESTART_BACKOFF_MAX)
            return False
        if not self.link.ready:
            deadline = self.import_deadline()
            if deadline is not None and now >= deadline:
                self.give_up_on_import()
            return False
        return True

    def next_times(self, stopping: bool) -> list[float]:
        """When the loop must wake for the spawner: its restart, or the deadline of the import in progress."""
        if self.link is None:
            return [self.restart_at] if self.restart_at is not None and not stopping else []
        deadline = self.import_deadline()
        return [] if deadline is None else [deadline]

    def stop(self) -> None:
        """At the end: let the spawners go (each kills its runs' groups and exits), and reap them."""
        for old in list(self.retiring):
            if not old.exited:
                old.close_channel()
                old.await_exit(SPAWNER_EXIT_TIMEOUT)
        if self.link is None or self.link.exited:
            return
        if self.link.ready:
            self.link.close_channel()
        else:
            self.link.kill()  # still importing: it reads no requests, and an import may never return
        self.link.await_exit(SPAWNER_EXIT_TIMEOUT)

    def exited(self, stopping: bool, now: float) -> None:
        """The spawner died and is reaped: record the module it was importing, if any, and say when the next one
        starts (the caller ends the runs it took down, then `drop`s it)."""
        assert self.link is not None
        link = self.link
        exit_code, signum = link.reap()
        how = f"killed by {signal_name(signum)}" if signum is not None else f"exited with status {exit_code}"
        delay = 0.0
        if stopping:
            pass  # it was told to go
        elif link.importing is not None:
            module = link.importing
            message = f"crashed the spawner while importing ({how})"
            # The culprit is left out, so the next spawner makes progress: no backoff needed.
            self.record_broken_module(module, message, link.output.text(), exit_code, signum)
        elif not link.ready and exit_code == EXIT_RESTART:
            pass  # it reported a module that must be left out (a thread at import) and asked to restart
        else:
            log.error("spawner (pid %d) %s; starting another in %.1fs", link.pid, how, self.restart_delay)
            delay = self.restart_delay
            self.restart_delay = min(self.restart_delay * 2, RESTART_BACKOFF_MAX)
        if not stopping:
            self.restart_at = now + delay

    def import_deadline(self) -> float | None:
        """When the import in progress is taken as hung (None: the spawner is ready, killed, or not there)."""
        if self.link is None or self.link.ready or self.link.killed:
            return None
        return self.link.import_deadline(self.import_timeout)

    def give_up_on_import(self) -> None:
        """The import in progress took too long: record its module broken and kill the spawner."""
        assert self.link is not None
        module = self.link.importing
        if module is not None:
            message = f"import did not finish within {self.import_timeout:g}s"
            self.record_broken_module(module, message, self.link.output.text(), None, None)
            self.link.importing = None  # recorded; its death is not a crash to record again
        else:
            log.error("spawner (pid %d) did not become ready within %gs", self.link.pid, self.import_timeout)
        self.link.kill()

    def read_output(self) -> None:
        """Log what the spawner or module code printed, line by line."""
        assert self.link is not None
        self.link.log_output(self.selector, log, logging.INFO, "spawner")

    # -- its reports ------------------------------------------------------------------------------------------------

    def take_worker(self, message: Message) -> None:
        """A worker the spawner found."""
        definition = WorkerDefinition.from_dict(message["definition"])
        self.reported.append(definition)
        self.found_in[definition.name] = str(message.get("module", definition.module))

    def take_broken(self, message: Message) -> None:
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
        self.record_broken_module(module, str(message["error"]), "", None, None, str(message.get("traceback", "")))

    def take_threaded(self, message: Message) -> None:
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

    def record_broken_module(
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
        self.on_broken_module(module, error)

    def defined(self) -> dict[str, WorkerDefinition]:
        """The spawner is ready: its workers with the config's overrides; record those the overrides make invalid,
        and refuse (at the first start) a `[worker.NAME]` table that names no worker."""
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
        return defined

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

    def ready(self, defined: dict[str, WorkerDefinition]) -> None:
        """The worker list is placed: say so, and start the backoff afresh."""
        assert self.link is not None
        names = sorted(defined)
        log.info(
            "spawner ready (pid %d): %d worker(s)%s%s",
            self.link.pid,
            len(defined),
            f": {', '.join(names[:20])}" + (f" and {len(names) - 20} more" if len(names) > 20 else "") if names else "",
            f"; {len(self.excluded)} module(s) left out as broken" if self.excluded else "",
        )
        self.restart_delay = RESTART_BACKOFF_FIRST
        self.ever_ready = True
