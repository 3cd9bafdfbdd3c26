"""A run's kernel limits (CPU time, open files), set by the run's child on itself before the worker's code runs.

Apart from limits.py (the supervisor's side, which watches memory with psutil) so that the child, and the fresh
interpreter of an exec run above all, imports neither psutil nor anything else it does not use.
"""
from __future__ import annotations

import math
import os
import resource
from typing import Any

# After the soft CPU limit's SIGXCPU, a run that catches it is killed (SIGKILL) this many CPU seconds later.
CPU_LIMIT_SLACK = 1


def apply_limits(settings: dict[str, Any]) -> None:
    """Set the run's kernel limits on this process (the run's child, before the worker's code runs)."""
    oom_score = settings.get("oom_score_adj")
    if oom_score is not None:
        set_oom_score(int(oom_score))
    cpu = settings.get("cpu_limit")
    if cpu:
        # Whole seconds is what the kernel counts. Nothing to deduct: fork gives the child CPU counters of its own,
        # starting at zero (the spawner's CPU is not inherited), so the bootstrap's fraction of a millisecond is
        # all the run has used. (Adding it before rounding up made every whole limit one second longer.)
        soft = max(1, math.ceil(float(cpu)))
        hard = soft + CPU_LIMIT_SLACK
        # Under a lower hard limit already set (systemd LimitCPU=), raising it would fail the run's start.
        _, current = resource.getrlimit(resource.RLIMIT_CPU)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    files = settings.get("open_files")
    if files:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = int(files) if hard == resource.RLIM_INFINITY else min(int(files), hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def set_oom_score(value: int) -> None:
    """Make this process the OOM killer's likelier victim (`value`, -1000..1000). Going below what was inherited
    needs CAP_SYS_RESOURCE: without it the run keeps the inherited score, which is then the higher one anyway."""
    # os.open, not open(): a text file object is a codec lookup and three objects, in every run's start.
    try:
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return  # no /proc: the inherited score stands
    try:
        os.write(fd, str(value).encode())
    except OSError:
        pass  # not allowed to lower it: the inherited score stands
    finally:
        os.close(fd)
