"""The peer: APScheduler 3 with its ProcessPoolExecutor, on the benchmark's workloads. Run by bench/run.py.

  --variant default   ProcessPoolExecutor(max_workers): a pool of long-lived processes (spawn context, as
                      APScheduler 3.11 sets it), reused run after run
  --variant fresh     the same with pool_kwargs={"max_tasks_per_child": 1}: a fresh process per run

Scenarios (the job functions are lean.py's or heavy.py's, so a pool process imports that module):
  latency  `--samples` one-off jobs due `--spacing` apart, each given its due time; after one warm-up run
  crash    one-off jobs that write the time and segfault; a logging handler on APScheduler's "Error running
           job" line commits a failure row (the store's SQLite pragmas; APScheduler sends no event when a pool
           process dies), which bench/run.py looks for from another connection
  busy     `--jobs` jobs every `--interval` (more than the pool can run, so always one due); EVENT_JOB_EXECUTED
           counted over a window
  wait200  200 jobs every 10 s, all on one grid; CPU is measured from outside
  idle     nothing but the idle jobs
Every scenario also registers `--idle` jobs due in an hour. Writes --ready (JSON) once started, --result at
the end of `busy`; stops on SIGTERM.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import logging
import os
import signal
import threading
import time

from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.executors.pool import ProcessPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

UTC = datetime.timezone.utc


def at(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, UTC)


def write_json(path: str, data: object) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(path + ".tmp", path)


class FailureRecorder(logging.Handler):
    """Commit one failure row per "Error running job" line of APScheduler's executor: the user's own record.

    APScheduler keeps no record, and for a pool process that dies (a segfault) it dispatches no event either:
    `EVENT_JOB_ERROR` comes only from an exception inside the job. What it does do is log
    "Error running job <id>" (with BrokenProcessPool) from the executor's future callback, so that is what a
    user can hook to write a row.
    """

    def __init__(self, url: str) -> None:
        super().__init__(logging.ERROR)
        import peewee

        from supervisor.record.store import connect

        self.db = connect(url)

        class Failure(peewee.Model):
            id = peewee.AutoField()
            run = peewee.CharField(max_length=64)
            created_at = peewee.DateTimeField()
            message = peewee.TextField()

            class Meta:
                table_name = "failure"

        Failure._meta.set_database(self.db)
        self.model = Failure
        with self.db.connection_context():
            self.db.create_tables([Failure], safe=True)

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg != "Error running job %s" or not record.args:
            return
        job_id = str(record.args[0])  # type: ignore[index]
        with self.db.atomic():
            self.model.create(run=job_id, created_at=datetime.datetime.now(UTC).replace(tzinfo=None),
                              message=repr(record.exc_info[1]) if record.exc_info else record.getMessage())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--module", required=True)
    parser.add_argument("--variant", choices=("default", "fresh"), required=True)
    parser.add_argument("--scenario", choices=("latency", "crash", "busy", "wait200", "idle"), required=True)
    parser.add_argument("--max-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--idle", type=int, default=0)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--spacing", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="busy: how many jobs")
    parser.add_argument("--interval", type=float, default=0.001, help="busy: seconds between runs of a job")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--db", help="SQLite URL for the crash scenario's failure rows")
    parser.add_argument("--ready", required=True)
    parser.add_argument("--result")
    args = parser.parse_args()

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.scenario == "busy":
        # Every tick that finds the job still running (or queued) logs a warning; that is noise here.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
    importlib.import_module(args.module)  # the scheduler process holds the module too, as an app would
    ref = args.module + ":"
    pool_kwargs = {"max_tasks_per_child": 1} if args.variant == "fresh" else {}
    scheduler = BackgroundScheduler(
        executors={"default": ProcessPoolExecutor(args.max_workers, pool_kwargs=pool_kwargs)},
        timezone=UTC,
    )
    start = time.time()
    for i in range(args.idle):
        scheduler.add_job(ref + "aps_trivial", "interval", seconds=3600, id=f"idle-{i:04d}",
                          next_run_time=at(start + 3600))
    ready: dict[str, object] = {"pid": os.getpid()}
    executed = [0]
    if args.scenario == "latency":
        first = start + args.warmup
        scheduler.add_job(ref + "aps_latency", "date", run_date=at(start + 0.2), args=[start + 0.2, "warm"],
                          id="warm", misfire_grace_time=None)
        for k in range(args.samples):
            due = first + k * args.spacing
            scheduler.add_job(ref + "aps_latency", "date", run_date=at(due), args=[due, "aps"], id=f"probe-{k}",
                              misfire_grace_time=None)
        ready["last_due"] = first + (args.samples - 1) * args.spacing
    elif args.scenario == "crash":
        logging.getLogger("apscheduler.executors.default").addHandler(FailureRecorder(args.db))
        first = start + args.warmup
        for k in range(args.samples):
            token = f"crash-{k:05d}"
            scheduler.add_job(ref + "aps_crash", "date", run_date=at(first + k * args.spacing), args=[token],
                              id=token, misfire_grace_time=None)
        ready["last_due"] = first + (args.samples - 1) * args.spacing
    elif args.scenario == "busy":
        scheduler.add_listener(lambda event: executed.__setitem__(0, executed[0] + 1), EVENT_JOB_EXECUTED)
        for i in range(args.jobs):
            scheduler.add_job(ref + "aps_trivial", "interval", seconds=args.interval, id=f"busy-{i}", coalesce=True,
                              misfire_grace_time=None, next_run_time=at(start + 0.2))
    elif args.scenario == "wait200":
        first = start + args.warmup
        for i in range(200):
            scheduler.add_job(ref + "aps_trivial", "interval", seconds=10, id=f"every10-{i:03d}",
                              next_run_time=at(first), misfire_grace_time=None)
        ready["first_due"] = first
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    scheduler.start()
    write_json(args.ready, ready)
    if args.scenario == "busy":
        time.sleep(args.warmup)
        n0, t0 = executed[0], time.perf_counter()
        time.sleep(args.seconds)
        n1, t1 = executed[0], time.perf_counter()
        write_json(args.result, {"rate": (n1 - n0) / (t1 - t0), "runs": n1 - n0})
    stop.wait()
    scheduler.shutdown(wait=False)
    os._exit(0)


if __name__ == "__main__":
    main()
