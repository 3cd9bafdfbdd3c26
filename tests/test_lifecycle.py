"""Stopping and killing the supervisor: children stop with it, and every run ends up recorded."""
from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import psutil

from helpers import Record, pid_alive, title, wait_until, worker_package

LONG = "[worker.grandchild]\ntimeout = 600\n"


def running(record: Record, worker: str) -> list[Any]:
    """Runs of `worker` that have a pid and no end yet."""
    return [r for r in record.runs(worker, finished=False) if r["finished_at"] is None and r["pid"]]


def test_sigkill_leaves_no_process_and_next_start_marks_runs_lost(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["slow", "grandchild", "healthy"])
    supervisor = start_supervisor(config=LONG)
    wait_until(lambda: running(record, "slow") and running(record, "grandchild"), timeout=60, what="runs in progress")
    grandchild_file = wait_until(lambda: list(tmp_path.glob("grandchild-*.pid")), timeout=30, what="the grandchild")[0]
    grandchild = int(grandchild_file.read_text())
    in_flight = {r["id"] for r in running(record, "slow") + running(record, "grandchild")}
    family = [p.pid for p in supervisor.descendants()]
    assert grandchild in family and len(family) >= 4  # spawner, two runs, the grandchild

    supervisor.signal(signal.SIGKILL)
    supervisor.wait(10)
    killed_at = time.monotonic()
    wait_until(lambda: not any(pid_alive(pid) for pid in family), timeout=2.0, what="every descendant to die")
    assert time.monotonic() - killed_at < 2.0

    # The next start finds the runs the dead supervisor left unfinished and records them as lost.
    second = start_supervisor(config=LONG)
    wait_until(lambda: all(r["outcome"] == "lost" for r in record.query(
        f"select outcome from run where id in ({','.join('?' * len(in_flight))})", *in_flight)), timeout=30,
        what="the interrupted runs to be marked lost")
    lost = record.query("select * from failure where kind = 'lost'")
    assert {f["run_id"] for f in lost} >= in_flight
    assert second.stop() == 0


def test_sigterm_stops_runs_within_grace_and_records_them(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["slow"])
    supervisor = start_supervisor()
    (run,) = wait_until(lambda: running(record, "slow"), timeout=60, what="a slow run in progress")
    child = run["pid"]
    supervisor.signal(signal.SIGTERM)
    sent = time.monotonic()
    assert supervisor.wait(5 + 1 + 5) == 0  # slow's grace is 5 s; allow start-up noise on a loaded machine
    took = time.monotonic() - sent
    assert took < 5 + 1, took
    # The child got SIGTERM (its ctx.cancelled woke it), ended cleanly, and its row was written before exit.
    assert (tmp_path / f"cancelled-{run['id']}").exists()
    assert not pid_alive(child)
    (final,) = [r for r in record.runs("slow") if r["id"] == run["id"]]
    assert final["outcome"] == "succeeded" and final["finished_at"] is not None
    assert record.query("select count(*) as n from run where finished_at is null")[0]["n"] == 0


def test_sigint_kills_a_child_that_ignores_sigterm_after_its_grace(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["ignores_term"])
    # Quarantined after one failure: the stop must not count as one.
    config = "[worker.ignores_term]\ntimeout = 600\ngrace = 0.5\nquarantine_after = 1\n"
    supervisor = start_supervisor(config=config)
    (run,) = wait_until(lambda: running(record, "ignores_term"), timeout=60, what="a run in progress")
    supervisor.signal(signal.SIGINT)
    assert supervisor.wait(10) == 0
    (final,) = [r for r in record.runs("ignores_term") if r["id"] == run["id"]]
    # Our own stop ended it: `interrupted`, no failure, nothing counted, no quarantine; logged as a warning.
    assert final["outcome"] == "interrupted" and final["signal"] == signal.SIGKILL
    assert not record.failures("ignores_term")
    row = record.worker("ignores_term")
    assert row is not None
    assert (row["failure_count"], row["consecutive_failures"], row["success_count"], row["paused"]) == (0, 0, 0, 0)
    assert row["last_outcome"] == "interrupted"
    assert re.search(r"WARNING .*ignores_term: pid \d+ interrupted in .*stopped by SIGKILL at supervisor shutdown",
                     supervisor.log()), supervisor.log()
    assert not pid_alive(run["pid"])
    # The next start runs it again: it was not quarantined.
    again = start_supervisor(config=config)
    wait_until(lambda: [r for r in running(record, "ignores_term") if r["id"] != run["id"]], timeout=60,
               what="a run after the restart")
    assert again.stop() == 0


def test_a_killed_spawner_is_replaced_and_its_runs_recorded(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["slow", "healthy"])
    supervisor = start_supervisor()
    (run,) = wait_until(lambda: running(record, "slow"), timeout=60, what="a slow run in progress")
    # Runs are the spawner's children, not the supervisor's, so its direct children are the spawner and recorder.
    (spawner,) = [p for p in psutil.Process(supervisor.pid).children() if "worker-supervisor: spawner" in title(p)]
    spawner.kill()
    # The run died with its spawner, is recorded as killed, and a new spawner carries on with both workers.
    final = wait_until(lambda: [r for r in record.runs("slow") if r["id"] == run["id"]], timeout=30, what="the run's row")[0]
    assert final["outcome"] == "killed"
    assert "spawner" in record.failures("slow")[0]["message"]
    wait_until(lambda: len(running(record, "slow")) == 1, timeout=30, what="a new slow run")
    before = len(record.runs("healthy"))
    wait_until(lambda: len(record.runs("healthy")) >= before + 3, timeout=30, what="healthy runs after the restart")
    assert not pid_alive(run["pid"])
    assert supervisor.alive()
    assert supervisor.stop() == 0


def test_hundreds_of_runs_requested_at_once_do_not_deadlock_the_channel(tmp_path: Path, record: Record,
                                                                        start_supervisor: Any) -> None:
    # 600 workers due at the same moment: more spawn requests than the channel holds, and more replies than the
    # other direction holds. A supervisor that blocked on a full channel while the spawner blocked on the other
    # would hang here for ever (it did, before requests waited in an outbox).
    many = "from supervisor import worker\n\n" + "".join(
        f"@worker(name='w{i}', interval=3600)\ndef w{i}(ctx):\n    pass\n\n" for i in range(600)
    )
    worker_package(tmp_path, [], extra={"many": many})
    supervisor = start_supervisor()
    wait_until(lambda: len(record.query("select id from run where finished_at is not null")) == 600, timeout=120,
               what="600 runs recorded")
    assert supervisor.stop() == 0
    assert record.query("select count(*) as n from run where outcome = 'succeeded'")[0]["n"] == 600


def test_ps_shows_each_process_role_and_the_worker_a_run_runs(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["slow", "healthy"])
    supervisor = start_supervisor()
    (run,) = wait_until(lambda: running(record, "slow"), timeout=60, what="a slow run in progress")
    tree = {p.pid: p for p in psutil.Process(supervisor.pid).children(recursive=True)}
    titles = {title(p) for p in tree.values()}
    assert title(psutil.Process(supervisor.pid)) == f"worker-supervisor: supervisor sqlite:///{tmp_path / 'supervisor.db'}"
    assert "worker-supervisor: spawner workers" in titles and "worker-supervisor: recorder" in titles
    assert title(tree[run["pid"]]) == f"worker-supervisor: run slow {run['id'][:8]}"
    # `top` and `pgrep` show the short name: the worker's, for a run.
    assert psutil.Process(run["pid"]).name() == "slow"
    assert psutil.Process(supervisor.pid).name() == "ws-supervisor"
    # The next run's child, forked ahead: a few milliseconds after each run's start, so not at every moment.
    def standby_names() -> set[str]:
        names = set()
        for child in psutil.Process(supervisor.pid).children(recursive=True):
            try:
                names.add(child.name())
            except psutil.NoSuchProcess:
                pass
        return names

    wait_until(lambda: "ws-standby" in standby_names(), timeout=30, step=0.01, what="a standby child")
    assert supervisor.stop() == 0


STUCK = '''
import select
from supervisor import worker


def wait_for_upstream():
    select.select([], [], [])  # for ever, in C: no Python runs until a signal


@worker(interval=600, timeout=1, grace=1)
def stuck(ctx):
    wait_for_upstream()
'''


def test_a_run_that_hangs_past_its_timeout_leaves_the_stack_it_hung_in(tmp_path: Path, record: Record,
                                                                       start_supervisor: Any) -> None:
    worker_package(tmp_path, [], extra={"stuck": STUCK})
    supervisor = start_supervisor()
    (run,) = wait_until(lambda: record.runs("stuck"), timeout=60, what="the stuck run recorded")
    assert run["outcome"] == "timeout"
    (failure,) = record.failures("stuck")
    # faulthandler's dump, taken at the timeout before the stop: the function it hung in, and the line.
    assert "(most recent call first)" in failure["stderr_tail"], failure["stderr_tail"]
    assert re.search(r'File ".*stuck\.py", line 7 in wait_for_upstream', failure["stderr_tail"]), failure["stderr_tail"]
    assert 'line 12 in stuck' in failure["stderr_tail"]
    assert "stack at the timeout" in failure["message"]
    assert supervisor.stop() == 0
