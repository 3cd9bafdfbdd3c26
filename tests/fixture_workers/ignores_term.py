import signal
import time

from supervisor import worker


@worker(interval=0.3, timeout=0.5, grace=0.5)
def ignores_term(ctx):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)
