"""The floors: what the operating system, Python and the database cost at least, from a parent of the spawner's size.

Run by bench/run.py as its own process, which imports what the spawner imports (supervisor.spawn.spawner and the
worker module, through the same discovery), so that every fork here copies the same page tables as the
spawner's forks. Prints one JSON object.

  fork     os.fork() -> first line in the child (start latency floor); the whole fork + small result over a
           pipe + reap cycle
  insert   one Peewee row inserted and committed, one transaction per row (the store's pragmas on SQLite)
  rate     `cores` children in flight, one row per run: fork + pipe + reap + insert, runs per second; and the
           same without the rows
  crash    a child writes the time and segfaults; the parent reaps it and commits a failure row
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import struct
import sys
import time
import uuid

from typing import Any

import supervisor.spawn.spawner  # noqa: F401  (what the spawner imports, so the parent is the spawner's size)
from supervisor.spawn import discovery

PACK = struct.Struct("d")
# Peewee is imported only for the row floors: the spawner never imports it, and the fork floor's parent
# must be the spawner's size.
database: Any = None
Row: Any = None


def open_database(url: str) -> None:
    """Connect to `url` the way the store does (its pragmas on SQLite) and create the floor's table."""
    global database, Row
    import peewee

    from supervisor.record.store import connect

    database = connect(url)

    class FloorRow(peewee.Model):
        """A row like a run's: an id, the worker, two times, an outcome and a message."""

        id = peewee.CharField(primary_key=True, max_length=32)
        worker = peewee.CharField(max_length=200)
        started_at = peewee.DateTimeField()
        finished_at = peewee.DateTimeField()
        outcome = peewee.CharField(max_length=20)
        message = peewee.TextField(default="")

        class Meta:
            table_name = "floor_row"

    FloorRow._meta.set_database(database)
    Row = FloorRow
    database.connect()
    database.drop_tables([Row], safe=True)
    database.create_tables([Row], safe=True)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def insert_row(outcome: str = "succeeded", message: str = "") -> None:
    """Insert and commit one row (autocommit: one transaction, as the recorder's smallest batch)."""
    now = _now()
    with database.atomic():
        Row.insert(id=uuid.uuid4().hex, worker="floor", started_at=now, finished_at=now, outcome=outcome,
                   message=message).execute()


def read_all(fd: int) -> bytes:
    data = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return data
        data += chunk


def fork_once() -> tuple[float, float]:
    """One fork: (fork -> child's first line, whole cycle through the reap), in seconds."""
    r, w = os.pipe()
    sys.stdout.flush()
    t0 = time.time()
    pid = os.fork()
    if pid == 0:
        t1 = time.time()
        os.write(w, PACK.pack(t1))
        os._exit(0)
    os.close(w)
    (t1,) = PACK.unpack(read_all(r))
    os.close(r)
    os.waitpid(pid, 0)
    t2 = time.time()
    return t1 - t0, t2 - t0


def measure_fork(samples: int, gap: float) -> dict[str, list[float]]:
    starts, cycles = [], []
    for _ in range(3):
        fork_once()  # warm-up
    for _ in range(samples):
        start, cycle = fork_once()
        starts.append(start)
        cycles.append(cycle)
        time.sleep(gap)
    return {"fork_start": starts, "fork_cycle": cycles}


def measure_insert(samples: int, gap: float) -> dict[str, list[float]]:
    times = []
    for _ in range(10):
        insert_row()
    for _ in range(samples):
        t0 = time.perf_counter()
        insert_row()
        times.append(time.perf_counter() - t0)
        time.sleep(gap)
    return {"insert": times}


def _spawn_trivial() -> tuple[int, int]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, b'{"ok": true}')
        os._exit(0)
    os.close(w)
    return pid, r


def measure_rate(seconds: float, in_flight: int, rows: bool) -> float:
    """Runs per second with `in_flight` children at once, each run reaped (and recorded by one row)."""
    sys.stdout.flush()
    running = dict(_spawn_trivial() for _ in range(in_flight))
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        pid, _status = os.wait()
        r = running.pop(pid)
        read_all(r)
        os.close(r)
        if rows:
            insert_row()
        done += 1
        new_pid, new_r = _spawn_trivial()
        running[new_pid] = new_r
    elapsed = time.perf_counter() - start
    for pid, r in running.items():
        os.waitpid(pid, 0)
        os.close(r)
    return done / elapsed


def crash_once() -> float:
    """A child writes the time and segfaults; return the time from then to its failure row's commit."""
    r, w = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        os.write(w, PACK.pack(time.time()))
        ctypes.string_at(0)
        os._exit(0)
    os.close(w)
    _pid, status = os.waitpid(pid, 0)
    (t0,) = PACK.unpack(read_all(r))
    os.close(r)
    insert_row("crash", f"killed by signal {os.WTERMSIG(status)}")
    return time.time() - t0


def measure_crash(samples: int, gap: float) -> dict[str, list[float]]:
    crash_once()
    times = []
    for _ in range(samples):
        times.append(crash_once())
        time.sleep(gap)
    return {"crash": times}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--module", required=True, help="the worker module the spawner would import")
    parser.add_argument("--db", help="database URL for the row floors")
    parser.add_argument("--what", action="append", required=True, choices=("fork", "insert", "rate", "crash", "size"))
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.02)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--in-flight", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    discovery.workers_in(discovery.import_module(args.module))
    result: dict[str, object] = {}
    result["rss"] = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    if args.db:
        open_database(args.db)
    for what in args.what:
        if what == "fork":
            result.update(measure_fork(args.samples, args.gap))
        elif what == "insert":
            result.update(measure_insert(args.samples, args.gap))
        elif what == "rate":
            result["rate_fork"] = measure_rate(args.seconds, args.in_flight, rows=False)
            result["rate_fork_row"] = measure_rate(args.seconds, args.in_flight, rows=True)
        elif what == "crash":
            result.update(measure_crash(args.samples, args.gap))
    if args.db:
        database.drop_tables([Row], safe=True)
        database.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
