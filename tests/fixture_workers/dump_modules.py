"""Write the run's `sorted(sys.modules)` to modules-<pid>.json in the current directory (tests/test_boundaries.py).

It imports nothing but the standard library's json, os and sys and `supervisor.worker`, so that whatever else
its process holds was imported by the supervisor's own code (the spawner, the child, exec_child), not by it.
"""
import json
import os
import sys

from supervisor import worker


@worker(interval=3600, timeout=30)
def dump_modules(ctx):
    """Dump the module names this process holds; write then rename, so a reader never sees half a file."""
    path = os.path.join(os.getcwd(), f"modules-{os.getpid()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"modules": sorted(sys.modules), "argv": sys.argv}, f)
    os.rename(path + ".tmp", path)
