import json
import os
import time

from supervisor import RunContext, worker


@worker(interval=0.3, timeout=30)
def introspect(ctx: RunContext):
    """Write what ctx says into a file, log a line, and fail so the run's stderr is kept."""
    seen = {
        "run_id": ctx.run_id,
        "worker": ctx.worker,
        "attempt": ctx.attempt,
        "remaining": ctx.remaining(),
        "cancelled": ctx.cancelled,
        "pgid_is_pid": os.getpgid(0) == os.getpid(),
        "stdin": os.readlink("/proc/self/fd/0"),
        "open_fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
        "monotonic": time.monotonic(),
        "deadline": ctx.deadline,
    }
    with open(os.path.join(os.getcwd(), f"ctx-{ctx.run_id}.json"), "w") as f:
        json.dump(seen, f)
    ctx.log.info("hello from the run's logger")
    print("hello from print")
    raise RuntimeError("introspected")
