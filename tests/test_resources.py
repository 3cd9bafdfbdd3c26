"""The table's CPU and memory figures for a run come from the run's whole process tree."""
from __future__ import annotations

import subprocess
import sys
import time

from helpers import wait_until
from supervisor.supervise.usage import ResourceSampler

# A child that holds 64 MB, starts a grandchild that spins, and says when both are up.
TREE = """
import subprocess, sys
ballast = bytearray(64 * 1024 * 1024)
spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
print("up", flush=True)
sys.stdin.readline()
spinner.kill()
spinner.wait()
"""


def test_sampler_adds_up_the_run_and_its_descendants() -> None:
    child = subprocess.Popen([sys.executable, "-c", TREE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "up"
        sampler = ResourceSampler(child.pid)
        sampler.sample()  # the first cpu_percent of a process is 0.0 by definition: it starts the measurement
        started = time.monotonic()

        def busy() -> bool:
            sampler.sample()
            return time.monotonic() - started > 0.2 and (sampler.cpu_percent or 0) > 20

        wait_until(busy, timeout=30, what="the spinning grandchild's CPU to show")
        assert sampler.rss is not None and sampler.rss > 64 * 1024 * 1024
        assert len(sampler.known) == 2
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(30)
        child.stdout.close()  # type: ignore[union-attr]
    sampler.sample()  # everything it measured is gone: no error, the last figures stay
