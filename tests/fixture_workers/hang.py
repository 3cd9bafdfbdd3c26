from supervisor import worker


@worker(interval=0.3, timeout=0.5, grace=5)
def hang(ctx):
    """Wait until cancelled: stopped at its timeout by SIGTERM alone, well within its grace."""
    while ctx.sleep(60):
        pass
