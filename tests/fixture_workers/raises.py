from supervisor import worker


def fail_loudly():
    raise ValueError("the worker raised on purpose")


@worker(interval=0.3)
def raises(ctx):
    fail_loudly()
