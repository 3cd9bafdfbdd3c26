import os
import signal
import subprocess
import sys

from supervisor import worker


@worker(interval=0.3, timeout=0.8, grace=0.5)
def grandchild(ctx):
    """Start a grandchild that would block for ever, note its pid in a file, and hang."""
    child = subprocess.Popen([sys.executable, "-c", "import signal\nwhile True: signal.pause()"])
    with open(os.path.join(os.getcwd(), f"grandchild-{ctx.run_id}.pid"), "w") as f:
        f.write(str(child.pid))
    while True:
        signal.pause()
