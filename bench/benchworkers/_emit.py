"""How a benchmark job reports: one unbuffered append per measurement, and the crash every system is given.

Imports nothing but the standard library, so that the RQ and Celery peers' job module (peerjobs.py) does not
load the supervisor package into their workers.
"""
from __future__ import annotations

import ctypes
import os
import time


def emit(line: str) -> None:
    """Append one line to BENCH_OUT (a run's child has closed every inherited descriptor, so open it here)."""
    fd = os.open(os.environ["BENCH_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def crash(token: str) -> None:
    """Write the time, then segfault (a NULL dereference, as a buggy C extension would)."""
    now = time.time()
    emit(f"{token} {now:.6f}\n")
    ctypes.string_at(0)
