"""The journal: a local append-only file of records not yet known to be in the database.

The supervisor appends every record here before anything else (a write to the page cache: microseconds, and
it survives a SIGKILL of the supervisor), the recorder applies them to the database from here and reports how
far it got, and once everything is applied the supervisor empties the file. What is left at start-up is
replayed; records are idempotent (records.py), so a record applied just before a crash and replayed after it
is counted once.
"""
from __future__ import annotations

import json
import os
from typing import Iterator

from ..process import write_all
from .records import Record

READ_CHUNK = 1 << 20


class Journal:
    """The supervisor's (writing) end of the journal file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.size = os.fstat(self.fd).st_size

    def append(self, record: Record) -> int:
        """Append one record; return the journal's size after it (the offset the record ends at)."""
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace") + b"\n"
        write_all(self.fd, line)
        self.size += len(line)
        return self.size

    def truncate(self) -> None:
        """Empty the journal (everything in it is in the database)."""
        os.ftruncate(self.fd, 0)
        self.size = 0

    def close(self) -> None:
        """Close the file."""
        os.close(self.fd)


def read_records(fd: int, start: int, end: int, limit: int = READ_CHUNK) -> tuple[list[Record], int]:
    """Read whole records between `start` and `end` (about `limit` bytes, or one record if it is larger);
    return them and where they end.

    A line cut short (a writer killed mid-write) is never returned: it ends no record.
    """
    data = os.pread(fd, min(end - start, limit), start)
    cut = data.rfind(b"\n") + 1
    while cut == 0 and start + len(data) < end:  # one record larger than `limit`: read on to its end only
        more = os.pread(fd, min(end - start - len(data), limit), start + len(data))
        if not more:
            break
        newline = more.find(b"\n")
        data += more
        if newline >= 0:
            cut = len(data) - len(more) + newline + 1
    return [json.loads(line) for line in data[:cut].splitlines() if line.strip()], start + cut


def replay(path: str) -> Iterator[tuple[list[Record], int]]:
    """Yield the records left in a journal file in batches, each with the offset it ends at."""
    if not os.path.exists(path):
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        end = os.fstat(fd).st_size
        offset = 0
        while offset < end:
            batch, following = read_records(fd, offset, end)
            if following == offset:
                return  # only a torn last line is left
            yield batch, following
            offset = following
    finally:
        os.close(fd)
