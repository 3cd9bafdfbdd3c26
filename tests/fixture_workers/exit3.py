import sys

from supervisor import worker


@worker(interval=0.3)
def exit3(ctx):
    sys.exit(3)
