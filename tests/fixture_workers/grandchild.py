import os
import subprocess
import sys
import time

from supervisor import worker


@worker(interval=0.3, timeout=0.8, grace=0.5)
def grandchild(ctx):
    """Start a grandchild that would sleep for ever, note its pid in the run's stdout, and hang."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    with open(os.path.join(os.getcwd(), f"grandchild-{ctx.run_id}.pid"), "w") as f:
        f.write(str(child.pid))
    while True:
        time.sleep(1)
