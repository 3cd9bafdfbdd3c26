"""Runs in a fresh interpreter (`isolation = "exec"`), and modules that start threads at import (issue 11, 2).

A module that starts a thread at import cannot be forked safely, so it was rejected as broken, though real
modules do it (sentry_sdk.init(), OpenTelemetry exporters, gRPC clients). Its workers now run in a fresh
interpreter each, which any worker can also ask for. The outcome table under exec isolation is
tests/test_outcomes.py, parametrised over both isolations; here: that an exec run really is a fresh interpreter
in the run's own process, that threads at import are fine there, and the limits, cancellation and `lost`.
"""
from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import psutil

from helpers import Record, pid_alive, spawner_of, title, wait_until, worker_package
from test_limits import FILES, HOG, SPINNERS, assert_stopped_at_memory_limit, failure_of, only_run

INTROSPECT = '''
import json
import os
import sys
import threading

from supervisor import worker


@worker(interval=3600, timeout=30, isolation="exec")
def fresh(ctx):
    """Say where it runs, print to both streams, then fail, so that the failure row keeps the output."""
    seen = {
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "ppid": os.getppid(),
        "cmdline": sys.orig_argv[0:3],  # as exec gave it (ps shows the process title instead)
        "title": open("/proc/self/cmdline", "rb").read().split(b"\\0")[0].decode(),
        "spawner_loaded": "supervisor.spawn.spawner" in sys.modules,
        "request_in_environment": any(k == "SUPERVISOR_RUN_REQUEST" for k in os.environ),
        "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
        "run_id": ctx.run_id,
        "deadline": ctx.deadline,
    }
    with open(os.path.join(os.getcwd(), "seen.json"), "w") as f:
        json.dump(seen, f)
    print("to stdout from a fresh interpreter", flush=True)
    ctx.log.info("to the log from a fresh interpreter")
    raise ValueError("failed on purpose, to keep the output")
'''

THREADED = '''
import json
import os
import threading

from supervisor import worker

# What an exporter or an error reporter does when it is imported.
threading.Thread(target=threading.Event().wait, daemon=True, name="exporter").start()


@worker(interval=3600, timeout=30)
def exported(ctx):
    with open(os.path.join(os.getcwd(), "threads.json"), "w") as f:
        json.dump([t.name for t in threading.enumerate()], f)
'''

PATIENT = '''
from supervisor import worker


@worker(interval=3600, timeout=60, grace=20, isolation="exec")
def patient(ctx):
    """Wait for the stop, then return: a cancellation reaches a fresh interpreter as it reaches a fork."""
    if not ctx.sleep(60):
        print("cancelled, winding down", flush=True)
'''


def test_issue_11_an_exec_run_is_a_fresh_interpreter_in_the_runs_own_process(
    tmp_path: Path, record: Record, start_supervisor: Any
) -> None:
    worker_package(tmp_path, [], extra={"fresh": INTROSPECT})
    supervisor = start_supervisor()
    spawner = spawner_of(supervisor)
    run = only_run(record, "fresh")
    seen = json.loads((tmp_path / "seen.json").read_text())
    # The pid the supervisor knows is the interpreter's: exec kept the process, its group and its parent.
    assert seen["pid"] == run["pid"] == seen["pgid"]
    assert seen["ppid"] == spawner.pid
    assert seen["cmdline"][1:] == ["-m", "supervisor.spawn.exec_child"]
    assert seen["title"] == f"worker-supervisor: run {run['worker']} {run['id'][:8]} (exec)"
    assert not seen["spawner_loaded"] and not seen["request_in_environment"]
    assert seen["fds"][:4] == [0, 1, 2, 3] and seen["run_id"] == run["id"] and seen["deadline"] is not None
    failure = failure_of(record, run)
    assert run["outcome"] == "error" and failure["message"] == "ValueError: failed on purpose, to keep the output"
    assert "in fresh" in failure["traceback"]
    assert "to stdout from a fresh interpreter" in failure["stdout_tail"]
    assert "to the log from a fresh interpreter" in failure["stderr_tail"]
    assert supervisor.stop() == 0


WHOAMI = '''
import os
import sys
from supervisor import worker


@worker(interval=3600, timeout=30)
def whoami(ctx):
    with open(os.path.join(os.getcwd(), f"argv-{os.getpid()}"), "wb") as f:
        f.write("\\0".join(sys.orig_argv).encode())  # as exec gave it (ps shows the title)
'''


def test_issue_11_isolation_from_the_config_reaches_the_run(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    # tests/test_outcomes.py and the limits test above set isolation in the config's [worker.NAME] table: without
    # this, they would pass as fork runs if the setting never reached the spawner.
    worker_package(tmp_path, [], extra={"whoami": WHOAMI})
    supervisor = start_supervisor(config='[worker.whoami]\nisolation = "exec"\n')
    run = only_run(record, "whoami")
    argv = (tmp_path / f"argv-{run['pid']}").read_bytes().split(b"\0")
    assert argv[1:3] == [b"-m", b"supervisor.spawn.exec_child"], argv
    assert supervisor.stop() == 0


def test_issue_11_a_module_that_starts_a_thread_at_import_runs_its_workers_by_exec(
    tmp_path: Path, record: Record, start_supervisor: Any
) -> None:
    worker_package(tmp_path, [], extra={"exported": THREADED})
    supervisor = start_supervisor()
    run = only_run(record, "exported")
    assert run["outcome"] == "succeeded", (dict(run), supervisor.log())
    # The thread runs where it belongs: in the run's own interpreter, started by its own import.
    assert "exporter" in json.loads((tmp_path / "threads.json").read_text())
    # One warning that says why and what it costs; nothing recorded as broken.
    warnings = [line for line in supervisor.log().splitlines() if "started thread(s) exporter at import" in line]
    assert len(warnings) == 1 and "fresh interpreter" in warnings[0] and "milliseconds" in warnings[0], warnings
    assert record.worker("workers.exported") is None
    spawner = spawner_of(supervisor)
    assert spawner.num_threads() == 1 and "workers.exported" in title(spawner).split()  # left out of the fork server
    assert supervisor.stop() == 0


def test_issue_11_memory_cpu_and_open_files_limits_hold_in_an_exec_run(
    tmp_path: Path, record: Record, start_supervisor: Any
) -> None:
    worker_package(tmp_path, [], extra={"hog": HOG, "spinners": SPINNERS, "files": FILES})
    exec_all = "".join(f'[worker.{name}]\nisolation = "exec"\n' for name in ("hog", "spinner", "hoarder", "modest"))
    supervisor = start_supervisor(config=exec_all)
    assert_stopped_at_memory_limit(record, supervisor, "hog")
    spinner = only_run(record, "spinner")
    assert spinner["outcome"] == "limit" and spinner["signal"] == signal.SIGXCPU, dict(spinner)
    hoarder = only_run(record, "hoarder")
    assert hoarder["outcome"] == "limit", (dict(hoarder), supervisor.log())
    assert "reached its limit of 32 open files" in failure_of(record, hoarder)["message"]
    assert only_run(record, "modest")["outcome"] == "succeeded"
    assert supervisor.stop() == 0


def test_issue_11_an_exec_run_sees_its_cancellation(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, [], extra={"patient": PATIENT})
    supervisor = start_supervisor()
    wait_until(lambda: [r for r in record.runs("patient", finished=False) if r["pid"]], timeout=60, what="a run")
    wait_until(lambda: "(exec)" in title(
        psutil.Process(record.runs("patient", finished=False)[0]["pid"])), timeout=30,
        what="the run's interpreter")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(60) == 0
    run = only_run(record, "patient")
    # Within its grace (20 s), by its own return: not killed at the end of it.
    assert run["outcome"] == "succeeded", dict(run)


def test_issue_11_an_exec_run_dies_with_a_killed_supervisor_and_is_recorded_lost(
    tmp_path: Path, record: Record, start_supervisor: Any
) -> None:
    worker_package(tmp_path, [], extra={"patient": PATIENT})
    supervisor = start_supervisor()
    (run,) = wait_until(lambda: [r for r in record.runs("patient", finished=False) if r["pid"]], timeout=60,
                        what="a run")
    wait_until(lambda: "(exec)" in title(psutil.Process(run["pid"])), timeout=30,
               what="the run's interpreter")
    supervisor.signal(signal.SIGKILL)
    supervisor.wait(10)
    wait_until(lambda: not pid_alive(run["pid"]), timeout=2.0, what="the run's interpreter to die")
    second = start_supervisor()
    wait_until(lambda: record.query("select outcome from run where id = ? and outcome = 'lost'", run["id"]),
               timeout=30, what="the run to be recorded lost")
    assert second.stop() == 0


EVERY_SECOND_EXEC = 'from supervisor import worker\n\n@worker(interval=1, isolation="exec")\ndef tick(ctx):\n    pass\n'


def test_issue_11_exec_runs_after_the_first_start_in_an_interpreter_started_ahead(
    tmp_path: Path, record: Record, start_supervisor: Any
) -> None:
    # Like the fork standby, a fresh interpreter waits for the next exec run, so that a run pays for its module's
    # import but not for the interpreter's start.
    worker_package(tmp_path, [], extra={"tick": EVERY_SECOND_EXEC})
    supervisor = start_supervisor()
    wait_until(lambda: record.runs("tick"), timeout=60, what="the first run")
    spawner = spawner_of(supervisor)

    def fresh_standby() -> psutil.Process | None:
        run_pids = {r["pid"] for r in record.query("select pid from run where pid is not null")}
        waiting = [p for p in spawner.children()
                   if p.pid not in run_pids and "standby (exec)" in title(p)]
        return waiting[0] if len(waiting) == 1 else None

    standby = wait_until(fresh_standby, timeout=30, what="an interpreter waiting for the next exec run")
    # Found as soon as it is forked; asleep, on one thread, once the interpreter has started and waits for its run
    # (unless the run came first: then the run's row below is the proof).
    def waiting() -> bool:
        try:
            return standby.status() == psutil.STATUS_SLEEPING and standby.num_threads() == 1
        except psutil.NoSuchProcess:
            return True

    wait_until(waiting, timeout=30, what="the interpreter to wait")
    run = wait_until(lambda: [r for r in record.runs("tick") if r["pid"] == standby.pid and r["finished_at"]],
                     timeout=30, what="a run in that interpreter")[0]
    assert run["outcome"] == "succeeded"
    assert supervisor.stop() == 0
    assert not pid_alive(standby.pid)
