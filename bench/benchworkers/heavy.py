"""A heavy worker module: it imports large modules and holds about 200 MB, as a data job's module does.

The memory is real (written, so resident), half in one numpy array and half in many small Python objects,
whose pages a forked child touches (reference counts) and so copies.
"""
from __future__ import annotations

import asyncio  # noqa: F401  (large standard modules a real job module tends to pull in)
import decimal  # noqa: F401
import email.mime.multipart  # noqa: F401
import http.client  # noqa: F401
import json  # noqa: F401
import sqlite3  # noqa: F401
import ssl  # noqa: F401
import xml.etree.ElementTree  # noqa: F401

import numpy

from supervisor import register

from . import _common

BALLAST_ARRAY = numpy.ones(100 * 2**20 // 8)  # 100 MB, every page written
BALLAST_OBJECTS = [f"row-{i:08d}" for i in range(1_000_000)]  # ~100 MB of small objects and the list

register(*_common.workers())


# The APScheduler peer's jobs, bound here so that a pool process imports this module (see _common.aps_jobs).
aps_latency, aps_crash, aps_trivial = _common.aps_jobs(__name__)
