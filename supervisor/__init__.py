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
