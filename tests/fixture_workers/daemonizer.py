import os
import subprocess
import sys

from supervisor import worker

# The middle process of a daemon's double fork: it starts the daemon, notes its pid in a file and exits at once,
# leaving the daemon an orphan in a session of its own (the middle one was started in a new session).
MIDDLE = """
import os, subprocess, sys
daemon = subprocess.Popen([sys.executable, "-c", "import signal\\nwhile True: signal.pause()"])
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(daemon.pid))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
"""


@worker(interval=3600, timeout=60)
def daemonizer(ctx):
    """Leave a daemon behind, as daemon(3) does (a new session, a second fork, the middle process gone), and
    return: the run succeeds at once, and the daemon is the spawner's to adopt."""
    path = os.path.join(os.getcwd(), f"daemon-{ctx.run_id}.pid")
    subprocess.Popen([sys.executable, "-c", MIDDLE, path], start_new_session=True).wait()
