"""Filling a record for tests as the supervisor would: records applied through the Store, and finding them again.

The command line's and the web page's tests read a record made this way, with every kind of run in it, without
waiting for a real supervisor to produce each one (the tests with a real supervisor are elsewhere).
"""
from __future__ import annotations

from dbtools import query
from supervisor.record.records import Record
from supervisor.record.store import Store


def apply_records(url: str, batch: list[Record]) -> None:
    """Apply `batch` to the database at `url` through a Store of its own, as the recorder does."""
    store = Store(url)
    store.open()
    try:
        store.apply(batch)
    finally:
        store.close()


def failure_id(url: str, worker: str) -> int:
    """The id of the one failure row of `worker`."""
    (row,) = query(url, "select id from failure where worker = ?", worker)
    return int(row["id"])
