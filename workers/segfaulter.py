"""A worker that segfaults now and then, as a buggy C extension would. Only its own child dies."""
from __future__ import annotations

import ctypes
import random

from supervisor import RunContext, worker


def parse_with_buggy_extension(data: bytes) -> int:
    if random.random() < 0.25:
        ctypes.string_at(0)  # dereferences NULL: SIGSEGV, with faulthandler's Python stack on stderr
    return len(data)


@worker(interval=4, timeout=10)
def import_feed(ctx: RunContext) -> None:
    """Parse a feed; a quarter of the time the 'extension' crashes."""
    ctx.log.info("parsed %d bytes", parse_with_buggy_extension(b"<feed/>" * 100))
