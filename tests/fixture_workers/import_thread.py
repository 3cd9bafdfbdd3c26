import threading
import time

from supervisor import worker

threading.Thread(target=time.sleep, args=(3600,), daemon=True, name="rogue").start()


@worker(interval=0.3)
def threaded(ctx):
    pass
