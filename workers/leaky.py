"""A worker that leaks memory now and then, as a job with an unbounded cache would. Its limit stops it."""
from __future__ import annotations

import random

from supervisor import RunContext, worker


@worker(interval="15s", timeout="20s", memory_limit="100MB", quarantine_after=10)
def build_index(ctx: RunContext) -> None:
    """Usually holds 20 MB; sometimes grows to 200 MB, and is killed at 100 MB with outcome `limit`."""
    target = 200 if random.random() < 0.3 else 20
    chunks = []
    for _ in range(target // 10):
        chunks.append(bytearray(b"x" * (10 * 1000 * 1000)))  # written, so the pages are really ours
        ctx.sleep(0.1)
    ctx.log.info("index built with %d MB", 10 * len(chunks))
