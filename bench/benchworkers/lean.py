"""A lean worker module: it imports nothing beyond the worker API."""
from __future__ import annotations

from supervisor import register

from . import _common

register(*_common.workers())


# The APScheduler peer's jobs, bound here so that a pool process imports this module (see _common.aps_jobs).
aps_latency, aps_crash, aps_trivial = _common.aps_jobs(__name__)
