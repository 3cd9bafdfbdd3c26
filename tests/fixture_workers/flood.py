import os
import sys

from supervisor import worker

MEGABYTE = b"x" * 1023 + b"\n"


@worker(interval=0.3)
def flood(ctx):
    """Write 50 MB to stderr (more than any pipe holds), then fail, so the stored tail can be checked."""
    chunk = MEGABYTE * 1024
    for _ in range(50):
        os.write(2, chunk)
    sys.stderr.write("THE-END-OF-THE-FLOOD\n")
    raise RuntimeError("flooded")
