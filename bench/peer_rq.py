"""The RQ peer (issue 16): one RQ worker process on the benchmark's queue. Run by bench/run.py, twice (2 in flight).

  --variant fork     rq.Worker: forks a work horse for every job and waits for it (RQ's default)
  --variant simple   rq.SimpleWorker: runs every job in the worker process itself, no fork

The worker imports the job module (benchworkers/peerjobs.py) before it starts, as a user's worker imports its
app, so a work horse inherits it. It logs at RQ's default level (INFO, two lines a job) to the log file
bench/run.py gives it. Redis: BENCH_REDIS (a database number of the benchmark's own). Writes --ready (JSON) once
registered in Redis and listening; stops on SIGTERM (RQ's warm shutdown).

The benchmark's side is `Client` (imported by bench/run.py): it submits jobs with `Queue.enqueue` on one
connection, and looks for their status (the `status` field of the job's hash: finished, failed) on another.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Iterable

import redis
from rq import Queue, SimpleWorker, Worker
from rq.job import Job

from benchworkers import peerjobs

QUEUE = "bench"
NAMES = {"fork": "RQ, fork per job (rq.Worker)", "simple": "RQ, no fork (rq.SimpleWorker)"}


class Client:
    """Submits the jobs, and reads their records over another connection."""

    def __init__(self, url: str) -> None:
        self.queue = Queue(QUEUE, connection=redis.Redis.from_url(url))
        self.watcher = redis.Redis.from_url(url)

    def submit(self, job: str, *args: object) -> str:
        return self.queue.enqueue(getattr(peerjobs, job), *args).id

    def states(self, ids: Iterable[str]) -> dict[str, str]:
        """The ids whose record says finished or failed, with which."""
        ids = list(ids)
        with self.watcher.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(Job.key_for(job_id), "status")
            found = pipe.execute()
        return {job_id: status.decode() for job_id, status in zip(ids, found)
                if status in (b"finished", b"failed")}

    def kept(self, job_id: str) -> str:
        """What RQ keeps of the job's end: its status and the latest result's exception text."""
        job = Job.fetch(job_id, connection=self.watcher)
        result = job.latest_result()
        text = f"status: {job.get_status().value}"
        if result is None:
            return text + "\nno result stored"
        return f"{text}\nresult: {result.type.name}\nexc_string: {result.exc_string}"

    def close(self) -> None:
        self.queue.connection.close()
        self.watcher.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=sorted(NAMES), required=True)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--result", help="unused (bench/run.py's Peer passes it to every peer)")
    args = parser.parse_args()
    base = Worker if args.variant == "fork" else SimpleWorker

    class ReadyWorker(base):  # type: ignore[misc, valid-type]
        def bootstrap(self, *a: object, **kw: object) -> None:
            super().bootstrap(*a, **kw)  # registered in Redis, subscribed to its commands, listening
            with open(args.ready + ".tmp", "w") as f:
                json.dump({"pid": os.getpid(), "name": self.name}, f)
            os.replace(args.ready + ".tmp", args.ready)

    connection = redis.Redis.from_url(os.environ["BENCH_REDIS"])
    ReadyWorker([Queue(QUEUE, connection=connection)], connection=connection).work()


if __name__ == "__main__":
    main()
