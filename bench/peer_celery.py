"""The Celery peer (issue 16): one Celery worker with a prefork pool of `--concurrency` processes. Run by bench/run.py.

  --variant fresh    `--max-tasks-per-child=1`: every task in a pool process of its own, replaced after it
  --variant reused   the pool's processes run task after task (Celery's default)

Redis (BENCH_REDIS, a database number of the benchmark's own) is both the broker and the result backend, and
every task stores its result (`ignore_result=False`): that stored result is the record looked for. The tasks are
the plain functions of benchworkers/peerjobs.py, registered under fixed names so that the benchmark's client
and the worker agree. The worker runs as `celery worker` does from the command line (`app.worker_main`), at
Celery's default log level; it writes --ready (JSON) on `worker_ready` (the pool started, the consumer
listening) and stops on SIGTERM (Celery's warm shutdown).

The benchmark's side is `Client` (imported by bench/run.py): it submits with `task.delay()` and reads the
stored results (`celery-task-meta-<id>`: SUCCESS, FAILURE) on another connection.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Iterable

import redis
from celery import Celery, signals

from benchworkers import peerjobs

NAMES = {"fresh": "Celery, fresh process per task (prefork, max_tasks_per_child=1)",
         "reused": "Celery, reused pool (prefork)"}
JOBS = (peerjobs.first_line, peerjobs.trivial, peerjobs.crash, peerjobs.gate)
RESULT_KEY = "celery-task-meta-"


def make_app(url: str) -> Celery:
    app = Celery("bench", broker=url, backend=url)
    app.conf.update(task_ignore_result=False, broker_connection_retry_on_startup=True)
    for job in JOBS:
        app.task(name=f"peerjobs.{job.__name__}", ignore_result=False)(job)
    return app


class Client:
    """Submits the tasks, and reads their stored results over another connection."""

    def __init__(self, url: str) -> None:
        self.app = make_app(url)
        self.watcher = redis.Redis.from_url(url)

    def submit(self, job: str, *args: object) -> str:
        return self.app.tasks[f"peerjobs.{job}"].delay(*args).id

    def states(self, ids: Iterable[str]) -> dict[str, str]:
        """The ids whose stored result says finished (SUCCESS) or failed (FAILURE), with which."""
        ids = list(ids)
        found = {}
        for task_id, raw in zip(ids, self.watcher.mget([RESULT_KEY + i for i in ids])):
            if raw is not None:
                status = json.loads(raw)["status"]
                if status in ("SUCCESS", "FAILURE"):
                    found[task_id] = "finished" if status == "SUCCESS" else "failed"
        return found

    def kept(self, task_id: str) -> str:
        """What Celery keeps of the task's end: the stored result (state, exception, traceback)."""
        raw = self.watcher.get(RESULT_KEY + task_id)
        if raw is None:
            return "no result stored"
        meta = json.loads(raw)
        return (f"status: {meta['status']}\nresult: {json.dumps(meta.get('result'))}\n"
                f"traceback: {meta.get('traceback')}")

    def close(self) -> None:
        self.app.close()
        self.watcher.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=sorted(NAMES), required=True)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--result", help="unused (bench/run.py's Peer passes it to every peer)")
    args = parser.parse_args()
    app = make_app(os.environ["BENCH_REDIS"])

    @signals.worker_ready.connect
    def ready(**_: object) -> None:
        with open(args.ready + ".tmp", "w") as f:
            json.dump({"pid": os.getpid()}, f)
        os.replace(args.ready + ".tmp", args.ready)

    argv = ["worker", "--pool=prefork", f"--concurrency={args.concurrency}", f"--hostname=bench-{args.variant}@%h"]
    if args.variant == "fresh":
        argv.append("--max-tasks-per-child=1")
    app.worker_main(argv)


if __name__ == "__main__":
    main()
