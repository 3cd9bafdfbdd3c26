"""A run's resource limits: the kernel's (CPU time, open files), set in the child, and memory, watched from outside.

CPU time and open files are per-process limits the kernel enforces exactly and for free (setrlimit in the child,
inherited by what it starts). Memory is watched by the supervisor instead (see MemoryWatch): RLIMIT_AS counts
address space, not memory, and no rlimit covers a run's descendants together.
"""
from __future__ import annotations

import errno
import math
import resource
import signal
from typing import Any, Iterable

import psutil

from .outcome import Outcome, Verdict
from .worker import WorkerDefinition

# After the soft CPU limit's SIGXCPU, a run that catches it is killed (SIGKILL) this many CPU seconds later.
CPU_LIMIT_SLACK = 1
MEMORY_SAMPLE_INTERVAL = 0.2  # seconds between samples of a limited run's memory


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


class MemoryWatch:
    """Measures the memory of runs that have a limit, a few times a second, and names those over it.

    A run's memory is the USS (pages no other process shares) of its child and every descendant, summed. Not
    RSS: a child forked from the spawner shares the spawner's imported modules page for page, and RSS would
    charge each run for all of them; USS charges it only for what it allocated or wrote itself.
    """

    def __init__(self, interval: float = MEMORY_SAMPLE_INTERVAL) -> None:
        self.interval = interval
        self._next = 0.0
        self._processes: dict[str, psutil.Process] = {}

    def next_at(self, runs: Iterable[Any]) -> float | None:
        """When the next sample is due, if any run in progress has a memory limit."""
        return self._next if any(run.definition.memory_limit and run.pid for run in runs) else None

    def due(self, now: float) -> bool:
        return now >= self._next

    def check(self, runs: list[Any], now: float) -> list[tuple[Any, Verdict]]:
        """Sample each run in `runs` (they have a limit and a pid); return those over it, each with its verdict."""
        self._next = now + self.interval
        over = []
        for run in runs:
            used = self.tree_memory(run.id, run.pid)
            limit = run.definition.memory_limit
            if used is not None and used > limit:
                message = f"used {_mb(used)} of memory, over its limit of {_mb(limit)}"
                over.append((run, Verdict(Outcome.LIMIT, message)))
        return over

    def tree_memory(self, run_id: str, pid: int) -> int | None:
        """The USS of a run's child and its descendants, in bytes; None if the child is gone."""
        process = self._processes.get(run_id)
        if process is None:
            try:
                process = self._processes[run_id] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                return None
        try:
            members = [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            return None
        total = 0
        for member in members:
            try:
                total += member.memory_full_info().uss
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue  # a descendant that just ended holds nothing
        return total

    def forget(self, run_id: str) -> None:
        self._processes.pop(run_id, None)


def cpu_limit_verdict(definition: WorkerDefinition, signum: int | None, cpu_time: float | None) -> Verdict | None:
    """The verdict of a run the kernel ended at its CPU limit (SIGXCPU, or SIGKILL past it), else None."""
    if not definition.cpu_limit or signum is None:
        return None
    over = signum == signal.SIGXCPU or (
        signum == signal.SIGKILL and cpu_time is not None and cpu_time >= definition.cpu_limit
    )
    if not over:
        return None
    spent = f"{cpu_time:.2f}s" if cpu_time else "all its"
    return Verdict(Outcome.LIMIT, f"used {spent} of CPU time, its limit is {definition.cpu_limit:g}s ({signal.Signals(signum).name})")


def open_files_verdict(definition: WorkerDefinition, result: dict[str, object] | None) -> Verdict | None:
    """The verdict of a run that failed because it reached its limit of open files (EMFILE), else None."""
    error = result.get("error") if result else None
    if not definition.open_files or not isinstance(error, dict):
        return None
    if f"[Errno {errno.EMFILE}]" not in str(error.get("message", "")):
        return None
    return Verdict(
        Outcome.LIMIT,
        f"reached its limit of {definition.open_files} open files: {error.get('message')}",
        str(error.get("traceback", "")),
    )


def _mb(octets: int) -> str:
    return f"{octets / 1e6:.0f} MB"
