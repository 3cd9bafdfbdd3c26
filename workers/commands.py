"""External programs as workers: the run's child becomes the program (exec); its exit status is the outcome."""
from __future__ import annotations

from supervisor import CommandWorker, register

register(
    CommandWorker(name="load-average", command=["cat", "/proc/loadavg"], interval="10s", timeout="5s"),
    # A shell only when asked for; this one fails now and then, and its stderr is kept with the failure.
    CommandWorker(
        name="flaky-script",
        command='test $(( $(date +%s) % 3 )) -ne 0 || { echo "no luck this time" >&2; exit 3; }',
        shell=True,
        interval="7s",
    ),
)
