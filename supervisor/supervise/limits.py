"""A run's resource limits, the supervisor's side: what the child is told to set, memory watched from outside, and
how a run that hit a limit is told from one that failed otherwise.

CPU time and open files are per-process limits the kernel enforces exactly and for free (setrlimit in the child,
inherited by what it starts: run_limits.py, which the child imports instead of this module and psutil). Memory is
watched by the supervisor instead (see MemoryWatch): RLIMIT_AS counts address space, not memory, and no rlimit
covers a run's descendants together.
"""
from __future__ import annotations

import errno
import math
import signal
from typing import Any

import psutil

from ..outcome import Outcome, Verdict
from ..worker import WorkerDefinition

# wait4 reports a run's precise CPU time, but the kernel enforces RLIMIT_CPU on its tick-sampled clock, which on a
# busy (virtual) machine runs ahead of it: SIGXCPU at a 1 s limit has come with 0.85 s reported, SIGKILL at a 6 s
# hard limit with 5.6 s. So a SIGKILL counts as the limit's from this fraction of the limit on.
CPU_CLOCK_TOLERANCE = 0.8
MEMORY_SAMPLE_INTERVAL = 0.2  # seconds between samples of a limited run's memory


def run_settings(definition: WorkerDefinition) -> dict[str, Any]:
    """What the child of a run of `definition` applies itself: its kernel limits, its database URL, and how it
    gets the worker's code (a fork of the spawner, or a fresh interpreter: exec_child.py)."""
    return {
        "cpu_limit": definition.cpu_limit,
        "open_files": definition.open_files,
        "oom_score_adj": definition.oom_score_adj,
        "database": definition.database,
        "isolation": definition.isolation,
    }


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
        self._members: dict[str, list[psutil.Process]] = {}  # each run's tree at its last sample

    @property
    def next_sample(self) -> float:
        """When the next sample is due (while any run in progress has a memory limit)."""
        return self._next

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
        self._members[run_id] = members
        total = 0
        for member in members:
            try:
                total += member.memory_full_info().uss
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue  # a descendant that just ended holds nothing
            except psutil.AccessDenied:
                # We may not read its pages (a setuid program the run started, or a process that made itself
                # non-dumpable): charge its RSS, which anyone may read. Letting the error out would end the loop,
                # and charging nothing would leave the process free of the limit.
                try:
                    total += member.memory_info().rss
                except psutil.Error:
                    continue
        return total

    def kill_descendants(self, run_id: str) -> None:
        """SIGKILL the run's descendants seen at its last sample, those that left its process group included.

        Killing the run's group reaches every descendant but those that made a session or group of their own
        (`start_new_session=True`, a daemon's double fork); without this they outlive the run, unwatched, with
        the very memory it was stopped for. psutil checks that each pid is still the process it saw (start time),
        so a reused pid is never hit.
        """
        for member in self._members.get(run_id, [])[1:]:  # the run's child itself goes with its group
            try:
                member.kill()
            except psutil.Error:
                continue  # already gone, or not ours to kill

    def forget(self, run_id: str) -> None:
        """Drop what was kept of a run that ended."""
        self._processes.pop(run_id, None)
        self._members.pop(run_id, None)


def cpu_limit_verdict(definition: WorkerDefinition, signum: int | None, cpu_time: float | None) -> Verdict | None:
    """The verdict of a run the kernel ended at its CPU limit (SIGXCPU, or SIGKILL past it), else None."""
    if not definition.cpu_limit or signum is None:
        return None
    over = signum == signal.SIGXCPU or (
        signum == signal.SIGKILL and cpu_time is not None and cpu_time >= definition.cpu_limit * CPU_CLOCK_TOLERANCE
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
    """Megabytes, whole when they are; else to the tenth, rounded up, so a run just over its limit never reads as
    "used 150 MB, over its limit of 150 MB"."""
    if octets % 1_000_000 == 0:
        return f"{octets // 1_000_000} MB"
    return f"{math.ceil(octets / 100_000) / 10:.1f} MB"
