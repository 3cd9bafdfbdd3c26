import ctypes
import os

from supervisor import worker


@worker(interval=1.0)
def crash_once(ctx):
    """Segfault on the first run, succeed on every run after: a failure, then the recovery."""
    marker = os.path.join(os.getcwd(), "crashed-once")
    if not os.path.exists(marker):
        open(marker, "w").close()
        print("\x1b[2J\x1b[31mrogue escape codes from the worker\x1b[0m", flush=True)
        ctypes.string_at(0)
