"""The supervisor's handle on the spawner: which module it is importing, whether it is ready, run requests."""
from __future__ import annotations

import json
import logging
import selectors
import time
from typing import Any

from .helper import HelperProcess
from ..protocol import COMMANDS_ENV, Message

log = logging.getLogger("supervisor")


class SpawnerLink(HelperProcess):
    """The spawner process, as the supervisor sees it."""

    module = "supervisor.spawn.spawner"

    def __init__(
        self,
        sources: list[str],
        excluded: set[str],
        commands: list[dict[str, Any]] | None = None,
        containment: list[str] | None = None,
    ) -> None:
        """`commands` are the config's command workers, each the keyword arguments of a CommandWorker (JSON-able);
        `containment` the arguments that place the spawner's tree (Containment.spawner_args)."""
        args: list[str] = list(containment or [])
        for source in sources:
            args += ["--source", source]
        for module in sorted(excluded):
            args += ["--exclude", module]
        # Always set, even to none: a value the supervisor inherited must never declare workers.
        super().__init__(args, {COMMANDS_ENV: json.dumps(commands or [])})
        self.ready = False
        self.importing: str | None = None
        """The module the spawner said it is importing and has not yet reported on: the culprit if it dies."""
        self.importing_since = 0.0

    def observe(self, message: Message) -> None:
        op = message["op"]
        if op == "importing":
            self.importing = message["module"]
            self.importing_since = time.monotonic()
        elif op in ("broken", "threaded") and message.get("module") == self.importing:
            self.importing = None  # reported: its exit that follows is not a crash to blame it for
        elif op == "ready":
            self.ready = True
            self.importing = None

    def import_deadline(self, timeout: float) -> float:
        """When the module being imported (or the start-up, before any module) is taken as hung."""
        return max(self.started, self.importing_since) + timeout

    def spawn(
        self,
        run_id: str,
        worker: str,
        attempt: int,
        deadline: float | None,
        fds: list[int],
        settings: dict[str, object] | None = None,
    ) -> None:
        """Ask for a run; `fds` are the write ends of its result, stdout and stderr pipes.

        `settings` are what the child applies itself (its limits, its database), as the supervisor resolved them
        with the config's overrides: the spawner's own copy of the worker knows only what its code says.
        """
        self.send("spawn", fds, run=run_id, worker=worker, attempt=attempt, deadline=deadline, settings=settings or {})

    def signal_run(self, run_id: str, sig: int) -> None:
        """Ask the spawner to signal a run's process group (it alone knows whether the pid is still the run's)."""
        self.send("signal", run=run_id, signal=int(sig))

    def dump_stack(self, run_id: str) -> None:
        """Ask the spawner to have a Python run write its stack to its stderr (faulthandler)."""
        self.send("dump_stack", run=run_id)

    def await_exit(self, timeout: float) -> None:
        """Wait up to `timeout` for the spawner to exit (SIGKILL it then), and reap it."""
        ready = selectors.DefaultSelector()
        ready.register(self.pidfd, selectors.EVENT_READ)
        if not ready.select(timeout):
            log.error("spawner (pid %d) did not exit in %gs; killing it", self.pid, timeout)
            self.kill()
        ready.close()
        self.reap()
