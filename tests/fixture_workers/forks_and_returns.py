import os
import sys

from supervisor import worker


@worker(interval=0.3)
def forks_and_returns(ctx):
    """Fork, and let both copies return from the run (as code that forks and forgets to _exit does).

    The run's own process waits for its copy, so the copy's return through the child's bootstrap always comes
    first; the copy says so on stderr, which the run's stderr tail keeps.
    """
    pid = os.fork()
    if pid == 0:
        print(f"copy {os.getpid()} returns", file=sys.stderr, flush=True)
        return
    os.waitpid(pid, 0)
