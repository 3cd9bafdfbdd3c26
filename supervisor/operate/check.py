"""`supervisor check`: validate the config and the workers it names, without starting anything.

Worker modules are imported exactly as `run` imports them: in a spawner process (supervisor.spawn.spawner), never in
this one, since a module may raise, segfault, hang or start threads at import. A module that crashes or hangs
the spawner is left out and a fresh spawner imports the rest, as `run` does, so one check reports every broken
module, not only the first. Every spawner is stopped and reaped before the check returns.
"""
from __future__ import annotations

import os
import re
import selectors
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import unknown_worker_table
from .dashboard import printable
from ..outcome import signal_name
from ..protocol import EXIT_RESTART, Message
from ..schedule import describe as describe_schedule, format_duration
from ..supervise.spawner_link import SpawnerLink
from ..worker import WorkerDefinition

EXIT_WAIT = 5.0
"""Seconds a spawner gets to exit after its channel is closed, before it is killed."""
BROKEN = 1
CONFIG = 2


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong, as one line, and the exit code it calls for (1 broken code, 2 a mistaken config)."""

    text: str
    exit_code: int = BROKEN


@dataclass
class Findings:
    """What a check found: the valid workers (with the config's overrides applied) and the problems."""

    workers: list[WorkerDefinition] = field(default_factory=list)
    overridden: set[str] = field(default_factory=set)
    """Workers whose schedule a [worker.NAME] table changes."""
    problems: list[Problem] = field(default_factory=list)
    broken_modules: list[str] = field(default_factory=list)
    invalid_workers: list[str] = field(default_factory=list)
    found_in: dict[str, str] = field(default_factory=dict)
    """The module each worker was found in."""
    threaded: dict[str, list[str]] = field(default_factory=dict)
    """Modules that started threads at import (with the threads' names): their workers run by exec."""
    exec_workers: list[WorkerDefinition] = field(default_factory=list)
    """The workers of those modules, as the spawner that imported them reported them (isolation exec)."""

    @property
    def notes(self) -> list[str]:
        """What is valid but worth a warning: modules whose workers must run in a fresh interpreter each."""
        return [
            f"module {module} starts thread(s) {', '.join(threads) or '(unnamed)'} at import: its workers run in a "
            'fresh interpreter each (isolation = "exec"), tens of milliseconds a run instead of about 2'
            for module, threads in self.threaded.items()
        ]

    @property
    def exit_code(self) -> int:
        """0 when everything is valid, else the highest exit code any problem calls for."""
        return max((p.exit_code for p in self.problems), default=0)

    def add(self, text: str, exit_code: int = BROKEN) -> None:
        """Note a problem once (a restarted spawner reports the same invalid workers again)."""
        problem = Problem(_one_line(text), exit_code)
        if problem not in self.problems:
            self.problems.append(problem)


def check(
    sources: list[str],
    import_timeout: float,
    overrides: dict[str, dict[str, Any]],
    config_path: str | None = None,
    commands: list[dict[str, Any]] | None = None,
) -> Findings:
    """Import the worker modules in spawner processes, and check what they define against the config's overrides.

    `commands` are the config's command workers (keyword arguments of CommandWorker), checked by the spawner too.
    """
    findings = Findings()
    definitions = import_workers(sources, import_timeout, findings, commands) + findings.exec_workers
    for definition in definitions:
        if overrides.get(definition.name):
            try:
                definition = definition.overridden(overrides[definition.name])
            except ValueError as exc:  # the config's settings do not hold together with the code's
                findings.add(f"invalid worker: {exc} (worker {definition.name!r} with its [worker.{definition.name}] "
                             f"settings{' in ' + config_path if config_path else ''})", CONFIG)
                continue
            findings.overridden.add(definition.name)
        if findings.found_in.get(definition.name) in findings.threaded:
            definition = replace(definition, isolation="exec")  # as `run` does: a fork would copy the threads
        findings.workers.append(definition)
    known = [d.name for d in definitions] + findings.invalid_workers
    for name in overrides:
        if name not in known:
            # A worker of a module that did not import is unknown here, so the table may be right after all.
            problem = unknown_worker_table(name, known, config_path, findings.broken_modules)
            findings.add(problem, BROKEN if findings.broken_modules else CONFIG)
    if not definitions and not findings.problems:
        findings.add(f"no workers found in {', '.join(sources)}; define one with @worker(...) or a Worker subclass")
    return findings


def import_workers(
    sources: list[str], import_timeout: float, findings: Findings, commands: list[dict[str, Any]] | None = None
) -> list[WorkerDefinition]:
    """Import every module of `sources` in a spawner, as `run` does; return the valid definitions, note problems."""
    excluded: set[str] = set()
    while True:
        before = len(excluded)
        link = SpawnerLink(sources, excluded, commands)
        link.start()
        try:
            definitions = _watch(link, import_timeout, excluded, findings)
        finally:
            _stop(link)
        if definitions is not None:
            return definitions
        if len(excluded) == before:
            # Every restart leaves one more module out; one that left none out would loop for ever.
            findings.add("the spawner exited during the imports without naming a module to blame")
            return []


def _watch(link: SpawnerLink, import_timeout: float, excluded: set[str], findings: Findings) -> list[WorkerDefinition] | None:
    """Follow one spawner's imports; return its workers once ready, or None when a fresh spawner must go on."""
    reported: list[WorkerDefinition] = []
    selector = selectors.DefaultSelector()
    try:
        selector.register(link.control, selectors.EVENT_READ, "control")
        # Read what the imports print, or a module that prints a lot would block the spawner on a full pipe.
        selector.register(link.output_fd, selectors.EVENT_READ, "output")
        selector.register(link.pidfd, selectors.EVENT_READ, "exit")
        while True:
            wait = link.import_deadline(import_timeout) - time.monotonic()
            if wait <= 0:
                return _hung(link, import_timeout, excluded, findings)
            for key, _ in selector.select(wait):
                if key.data == "output":
                    if link.read_output()[1]:
                        selector.unregister(link.output_fd)
                elif key.data == "control":
                    if _handle(link.messages(), reported, excluded, findings):
                        return reported
                    if link.channel_closed:
                        selector.unregister(link.control)
                else:
                    return _died(link, reported, excluded, findings)
    finally:
        selector.close()


def _handle(messages: list[Message], reported: list[WorkerDefinition], excluded: set[str], findings: Findings) -> bool:
    """Take the spawner's reports; return True once it said it is ready (every import done)."""
    for message in messages:
        op = message["op"]
        if op == "worker":
            definition = WorkerDefinition.from_dict(message["definition"])
            reported.append(definition)
            findings.found_in[definition.name] = str(message.get("module", definition.module))
        elif op == "threaded":
            # Its workers run in a fresh interpreter each, as `run` would run them; the next spawner leaves it out.
            module = str(message["module"])
            excluded.add(module)
            findings.threaded[module] = [str(t) for t in message.get("threads", [])]
            findings.exec_workers += [d for d in reported if findings.found_in.get(d.name) == module]
        elif op == "broken":
            module, worker, error = str(message["module"]), message.get("worker"), str(message["error"])
            if message.get("missing"):
                excluded.add(module)
                findings.add(f"cannot import worker package {module!r} from {os.getcwd()}; check the --workers / "
                             "workers setting and the directory it runs in", CONFIG)
            elif worker is not None:
                if worker not in findings.invalid_workers:
                    findings.invalid_workers.append(str(worker))
                named = f"worker {worker!r}" in error
                findings.add(f"invalid worker: {error}" if named else f"invalid worker {worker!r} in {module}: {error}")
            else:
                _broken_module(module, error + _site(str(message.get("traceback", "")), module, last=True), excluded, findings)
        elif op == "ready":
            return True
    return False


def _died(link: SpawnerLink, reported: list[WorkerDefinition], excluded: set[str], findings: Findings) -> list[WorkerDefinition] | None:
    """The spawner exited before it was ready: blame the module it was importing, as `run` does."""
    if _handle(link.messages(), reported, excluded, findings):  # reports it sent before dying come first
        return reported
    link.read_output()
    exit_code, signum = link.reap()
    how = f"killed by {signal_name(signum)}" if signum is not None else f"exited with status {exit_code}"
    if link.importing is not None:
        module = link.importing
        # faulthandler printed the Python stack of the crash: name the module's own line.
        _broken_module(module, f"crashed the spawner while importing ({how}){_site(link.output.text(), module, last=False)}",
                       excluded, findings)
        return None
    if exit_code == EXIT_RESTART:
        return None  # it reported a module it must not keep (a thread at import), left out now: go on without it
    output = link.output.text().strip().splitlines()
    findings.add(f"the spawner {how} before importing the workers" + (f": {output[-1]}" if output else ""))
    return []


def _hung(link: SpawnerLink, import_timeout: float, excluded: set[str], findings: Findings) -> list[WorkerDefinition] | None:
    """An import took longer than the import timeout: leave its module out and go on, as `run` does."""
    module = link.importing
    link.kill()
    if module is None:
        findings.add(f"the spawner did not start importing within {import_timeout:g}s")
        return []
    _broken_module(module, f"import did not finish within {import_timeout:g}s (--import-timeout)", excluded, findings)
    return None


def _broken_module(module: str, error: str, excluded: set[str], findings: Findings) -> None:
    excluded.add(module)
    if module not in findings.broken_modules:
        findings.broken_modules.append(module)
    findings.add(f"module {module} is broken: {error}")


def _stop(link: SpawnerLink) -> None:
    """End the spawner (EOF on its channel once it is serving, else SIGKILL), reap it, and close every fd."""
    try:
        if not link.exited:
            if link.ready and not link.killed:
                link.close_channel()
                if not _exited_within(link, EXIT_WAIT):
                    link.kill()
            else:
                link.kill()  # still importing: it reads no requests, and an import may never return
            link.reap()
    finally:
        link.close()


def _exited_within(link: SpawnerLink, seconds: float) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(link.pidfd, selectors.EVENT_READ)
        return bool(selector.select(seconds))


_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def _site(text: str, module: str, last: bool) -> str:
    """` at path:line` for the module's own frame in a traceback (`last`: innermost is last) or a faulthandler dump."""
    tail = module.replace(".", "/")
    frames = [m for m in _FRAME.finditer(text) if m.group(1).endswith((f"{tail}.py", f"{tail}/__init__.py"))]
    if not frames:
        return ""
    frame = frames[-1] if last else frames[0]
    return f" at {frame.group(1)}:{frame.group(2)}"


def _one_line(text: str) -> str:
    lines = text.strip().splitlines() or [""]
    return printable(lines[0]) + (" …" if len(lines) > 1 else "")


def describe(definition: WorkerDefinition, overridden: bool) -> list[str]:
    """The columns of a worker's line: name, schedule (interval or cron), timeout, grace, module."""
    timeout = f"timeout {format_duration(definition.timeout)}" if definition.timeout is not None else "no timeout"
    note = " (config)" if overridden else ""
    schedule = printable(describe_schedule(definition.interval, definition.cron, definition.timezone)) + note
    isolation = " (exec)" if definition.isolation == "exec" else ""
    return [printable(definition.name), schedule, timeout, f"grace {format_duration(definition.grace)}",
            printable(definition.module) + isolation]
