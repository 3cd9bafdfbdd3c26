"""The job functions of the RQ and Celery peers (bench/peer_rq.py, bench/peer_celery.py): plain functions.

They report the way the supervisor's runs do (_emit.emit: one unbuffered append to BENCH_OUT per job, the
clock read on the job's first line), so that every system is measured by the same lines.
"""
from __future__ import annotations

import os
import time

from ._emit import crash as _crash
from ._emit import emit


def first_line(token: str, submitted_at: float) -> None:
    """Submit to first line: `submitted_at` is the client's clock just before it enqueued the job."""
    now = time.time()
    emit(f"{token} {now - submitted_at:.9f} {now:.6f}\n")


def trivial() -> None:
    """Nothing at all: the cost of a job is all the system's."""


def crash(token: str) -> None:
    """Write the time, then segfault (a NULL dereference, as a buggy C extension would)."""
    _crash(token)


def gate(key: str) -> None:
    """Hold this job's worker until the benchmark pushes to `key` (Redis, BENCH_REDIS): the throughput window
    opens with every worker warm, every job queued, and all of them released at once."""
    import redis

    with redis.Redis.from_url(os.environ["BENCH_REDIS"]) as r:
        r.incr(key + ":held")
        r.blpop([key], timeout=120)
