"""A worker that sometimes overruns its timeout and ignores the polite request to stop."""
from __future__ import annotations

import random
import time

from supervisor import RunContext, worker


@worker(interval=5, timeout=2, grace=1)
def rebuild_report(ctx: RunContext) -> None:
    """Usually takes half a second; now and then it hangs (time.sleep ignores ctx.cancelled), so the supervisor
    sends SIGTERM at 2 s and SIGKILL a second later, and records a timeout."""
    time.sleep(6 if random.random() < 0.4 else 0.5)
    ctx.log.info("report rebuilt")
