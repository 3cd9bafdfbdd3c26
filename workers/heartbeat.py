"""A worker that always succeeds: the shape of most real jobs."""
from __future__ import annotations

import os
import shutil

from supervisor import RunContext, Worker


class DiskUsage(Worker):
    """Log how full the current directory's disk is, every 2 seconds."""

    name = "disk-usage"
    interval = 2
    timeout = 10

    def run(self, ctx: RunContext) -> None:
        usage = shutil.disk_usage(os.getcwd())
        ctx.log.info("disk %.1f%% full", 100 * usage.used / usage.total)
