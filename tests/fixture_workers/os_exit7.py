import os

from supervisor import worker


@worker(interval=0.3)
def os_exit7(ctx):
    os._exit(7)
