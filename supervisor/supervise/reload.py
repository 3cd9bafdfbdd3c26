"""A reload (SIGHUP, or `reload` through the database): the config read again, the workers imported again by a new
spawner, runs in progress left alone.

What a reload changes, and what it leaves:
- the config file is read again, with the flags and environment the supervisor started with; a config that does
  not load (a syntax error, a bad value) changes nothing: the error is logged (and answered, for a `reload`
  command) and the running config stays;
- the workers' sources, their `[worker.NAME]` overrides and the command workers are handed to a new spawner,
  which imports the modules afresh (changed code takes effect), and new runs start from it; the old spawner keeps
  its runs in progress (they are its children) and exits when the last has ended: gunicorn's HUP;
- added workers are scheduled, removed ones stop being scheduled, a changed schedule starts afresh from the current
  slot (Scheduler.place); counters, pauses and quarantine carry on;
- `max_children`, the log level and the `[notify]` tables apply at once (a notifier starts if there was none);
  the database, the journal and the node's settings need a
  restart, and a reload that changes them says so.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

from ..config import Config
from ..errors import SupervisorError
from ..worker import WorkerDefinition
from .operator_commands import OperatorCommands
from .scheduling import Scheduler
from .service import ServiceManager
from .spawner_keeper import SpawnerKeeper

log = logging.getLogger("supervisor")

APPLIED = ("workers", "overrides", "commands", "max_children", "log_level", "notify")
"""What a reload applies; every other setting takes effect at the next start."""
IGNORED = ("config_file", "log_format")


class Reloader:
    """Reads the config again, hands it to a new spawner, and says what the reload changed."""

    def __init__(self, reread: Callable[[], Config] | None, current: Config | None, keeper: SpawnerKeeper,
                 scheduler: Scheduler, service: ServiceManager, commands: OperatorCommands) -> None:
        self.reread = reread
        """Loads the config as the supervisor's start did (flags, environment, file); None: nothing to reread."""
        self.current = current
        self.keeper, self.scheduler, self.service, self.commands = keeper, scheduler, service, commands
        self.on_notify: Callable[[Any], None] | None = None
        """Takes the reloaded [notify] tables (the alerts')."""
        commands.on_reload = self.command
        self.before: dict[str, WorkerDefinition] | None = None
        """The workers as they were when a reload began, until the new spawner reports its own."""
        self.answers: list[int] = []
        """`reload` commands to answer once the new spawner is ready."""

    def reload(self, source: str) -> str | None:
        """Read the config again and hand it to a new spawner; runs in progress go on. Return the error that kept
        the running config, if one did."""
        config, problem = self.read()
        if config is None:
            log.error("reload (%s): %s; the running config stays", source, problem)
            return problem
        self.service.reloading()
        for name in self.restart_needed(config):
            log.warning("reload (%s): %s changed; it takes effect at the next start", source, name)
        self.current = config
        self.before = {name: status.definition for name, status in self.scheduler.workers.items()}
        self.keeper.reconfigure(config.workers, config.overrides, config.commands, config.config_file)
        self.scheduler.max_children = config.max_children
        if self.on_notify is not None:
            self.on_notify(config.notify)
        logging.getLogger().setLevel(config.log_level.upper())
        renewed = self.keeper.renew()
        log.info("reload (%s): config read again%s; %s", source, f" from {config.config_file}" if config.config_file
                 else "", "a new spawner imports the workers; runs in progress finish on the old one" if renewed
                 else "the next spawner takes it")
        return None

    def command(self, number: int) -> None:
        """An operator's `reload` through the database: reload, and answer once it is done (or failed)."""
        problem = self.reload("reload command")
        if problem is not None:
            self.commands.answer_reload(number, f"not reloaded: {problem}")
        else:
            self.answers.append(number)

    def spawner_ready(self, defined: dict[str, WorkerDefinition]) -> None:
        """A spawner is ready: if a reload started it, say what changed (and answer the commands that asked)."""
        if self.before is None:
            return
        changes = describe_changes(self.before, defined)
        log.info("reload: %s", changes)
        self.before = None
        self.service.reloaded()
        for number in self.answers:
            self.commands.answer_reload(number, f"reloaded: {changes}")
        self.answers.clear()

    def read(self) -> tuple[Config | None, str | None]:
        """The config read again, or None and why not (one line)."""
        if self.reread is None:
            return None, "the config cannot be read again (this supervisor was not started by the command line)"
        try:
            return self.reread(), None
        except SupervisorError as exc:
            return None, str(exc)
        except (OSError, ValueError) as exc:
            return None, f"{type(exc).__name__}: {exc}"

    def restart_needed(self, new: Config) -> list[str]:
        """The settings that changed but apply only at the next start."""
        if self.current is None:
            return []
        return [f.name for f in dataclasses.fields(Config) if f.name not in (*APPLIED, *IGNORED)
                and getattr(self.current, f.name) != getattr(new, f.name)]


def describe_changes(before: dict[str, WorkerDefinition], after: dict[str, WorkerDefinition]) -> str:
    """Say what a reload changed, by worker name: `added: c; removed: d; changed: b (interval 5s → 10s)`."""
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = []
    for name in sorted(set(before) & set(after)):
        differences = _differences(before[name], after[name])
        if differences:
            changed.append(f"{name} ({', '.join(differences)})")
    parts = [f"{label}: {', '.join(names)}" for label, names in (("added", added), ("removed", removed),
                                                                   ("changed", changed)) if names]
    return "; ".join(parts) or "no worker changed"


def _differences(old: WorkerDefinition, new: WorkerDefinition) -> list[str]:
    found = []
    for f in dataclasses.fields(WorkerDefinition):
        was, now = getattr(old, f.name), getattr(new, f.name)
        if was != now:
            found.append(f"{f.name} {_shown(was)} → {_shown(now)}")
    return found


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}s"
    return "none" if value is None else str(value)
