import os

from supervisor import worker


@worker(interval=0.3)
def abort(ctx):
    os.abort()
