"""A worker that raises now and then, like a job calling a service that sometimes says no."""
from __future__ import annotations

import random
from datetime import timedelta

from supervisor import RunContext, worker


class UpstreamUnavailable(Exception):
    """The service this job depends on did not answer."""


def fetch_exchange_rates() -> dict[str, float]:
    if random.random() < 0.3:
        raise UpstreamUnavailable("rates service answered 503")
    return {"EUR": 1.0, "USD": 1.08}


@worker(interval=timedelta(seconds=3), timeout=10, retries=2, retry_delay="500ms")
def sync_rates(ctx: RunContext) -> None:
    """Fetch exchange rates; the traceback of a failure is stored with the run."""
    rates = fetch_exchange_rates()
    ctx.log.info("fetched %d rates", len(rates))
