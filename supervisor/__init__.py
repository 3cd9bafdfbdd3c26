"""worker-supervisor: periodic workers, each run in its own forked child, so none can take the supervisor down.

Only the worker API lives at this level; it is what worker modules import, in the spawner and in every run,
so it must stay light (no database, no terminal code).
"""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import ConfigError, StoreUnavailable, SupervisorError, WorkerDefinitionError
from .outcome import Outcome, WorkerState
from .worker import FunctionWorker, RunContext, Worker, WorkerDefinition, register, worker

__all__ = [
    "CommandWorker",
    "ConfigError",
    "FunctionWorker",
    "Outcome",
    "RunContext",
    "StoreUnavailable",
    "SupervisorError",
    "Worker",
    "WorkerDefinition",
    "WorkerDefinitionError",
    "WorkerState",
    "register",
    "worker",
]


def __getattr__(name: str) -> object:
    # CommandWorker brings the run's exec machinery with it: loaded only by the modules that declare one.
    if name == "CommandWorker":
        from .spawn.command import CommandWorker

        return CommandWorker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
