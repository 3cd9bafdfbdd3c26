from supervisor import worker


@worker(interval=3600, memory_limit="40MB")
def hog(ctx):
    """Allocate (and write) 8 MB at a time until the supervisor stops it over its memory limit."""
    hoard = []
    while True:
        hoard.append(bytearray(8 * 1024 * 1024))
        ctx.sleep(0.05)
