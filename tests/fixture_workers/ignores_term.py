import signal

from supervisor import worker


@worker(interval=0.3, timeout=0.5, grace=0.5)
def ignores_term(ctx):
    """Ignore SIGTERM and block for ever: only SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        signal.pause()
