"""A cron job that writes to its own database in one transaction, as a nightly batch would (here: every minute).

Its rows are committed when the block ends, or not at all: a crash or an exception half-way leaves nothing.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

import peewee

from supervisor import RunContext, worker


class Entry(peewee.Model):
    minute = peewee.CharField(unique=True)
    total = peewee.IntegerField()


@worker(cron="* * * * *", timezone="UTC", jitter="5s", timeout="30s", retries=2, retry_delay="2s",
        database="sqlite:///example-ledger.db")
def close_the_minute(ctx: RunContext) -> None:
    """Record one ledger entry per minute; a retry of a run that already wrote its entry changes nothing."""
    with ctx.transaction() as db:
        Entry.bind(db)
        db.create_tables([Entry])
        # The minute the run is for (its jitter is a few seconds), so a retry of a run that wrote it adds nothing.
        minute = datetime.fromtimestamp(ctx.due_at or time.time(), timezone.utc).strftime("%Y-%m-%d %H:%M")
        Entry.insert(minute=minute, total=Entry.select().count()).on_conflict_ignore().execute()
    ctx.log.info("ledger entry for %s written", minute)
