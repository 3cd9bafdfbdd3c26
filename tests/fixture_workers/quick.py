from supervisor import worker


@worker(interval=0.1)
def quick(ctx):
    """Succeed every 0.1 s: a steady stream of runs to record while the database misbehaves."""
