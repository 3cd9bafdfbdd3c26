"""A run's resource limits: the kernel's (CPU time, open files), set in the child, and memory, watched from outside.

CPU time and open files are per-process limits the kernel enforces exactly and for free (setrlimit in the child,
inherited by what it starts). Memory is watched by the supervisor instead (see MemoryWatch): RLIMIT_AS counts
address space, not memory, and no rlimit covers a run's descendants together.
"""
from __future__ import annotations

import math
import resource
from typing import Any

from .worker import WorkerDefinition

# After the soft CPU limit's SIGXCPU, a run that catches it is killed (SIGKILL) this many CPU seconds later.
CPU_LIMIT_SLACK = 1


def run_settings(definition: WorkerDefinition) -> dict[str, Any]:
    """What the child of a run of `definition` applies itself: its kernel limits and its database URL."""
    return {
        "cpu_limit": definition.cpu_limit,
        "open_files": definition.open_files,
        "database": definition.database,
    }


def apply_limits(settings: dict[str, Any]) -> None:
    """Set the run's kernel limits on this process (the run's child, before the worker's code runs)."""
    cpu = settings.get("cpu_limit")
    if cpu:
        # Whole seconds is what the kernel counts; CPU already spent in the spawner before the fork is not ours.
        used = resource.getrusage(resource.RUSAGE_SELF)
        spent = used.ru_utime + used.ru_stime
        soft = math.ceil(spent + float(cpu))
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + CPU_LIMIT_SLACK))
    files = settings.get("open_files")
    if files:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = int(files) if hard == resource.RLIM_INFINITY else min(int(files), hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
