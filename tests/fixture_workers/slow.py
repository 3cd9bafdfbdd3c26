import os

from supervisor import worker


@worker(interval=0.2, grace=5)
def slow(ctx):
    """Run for a good while; when SIGTERM cancels it, leave a file saying so and end cleanly."""
    if not ctx.sleep(60):
        with open(os.path.join(os.getcwd(), f"cancelled-{ctx.run_id}"), "w") as f:
            f.write("cancelled")
