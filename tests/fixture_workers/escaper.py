import os
import subprocess
import sys

from supervisor import worker


@worker(interval=0.2, timeout=600)
def escaper(ctx):
    """Start a process in a session of its own (out of the run's process group, as a daemon would), note its pid in
    a file, and wait to be stopped."""
    forever = "import signal\nwhile True: signal.pause()"
    child = subprocess.Popen([sys.executable, "-c", forever], start_new_session=True)
    # Renamed into place: the test reads the file as soon as it exists, never half written.
    path = os.path.join(os.getcwd(), f"escaped-{ctx.run_id}.pid")
    with open(path + ".tmp", "w") as f:
        f.write(str(child.pid))
    os.replace(path + ".tmp", path)
    while ctx.sleep(3600):  # False once the supervisor asks the run to stop
        pass
