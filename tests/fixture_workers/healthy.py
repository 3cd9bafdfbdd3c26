from supervisor import worker


@worker(interval=0.2)
def healthy(ctx):
    """Succeed quickly, every 0.2 s: the neighbour whose schedule must not suffer."""
    print("healthy run", ctx.run_id)
