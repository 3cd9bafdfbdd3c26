"""Worker modules that break at import: the spawner takes the blow, the supervisor records it and carries on."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from helpers import Record, title, wait_until, worker_package


def test_modules_that_segfault_thread_or_raise_at_import(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["healthy", "import_segfault", "import_thread", "import_raises", "raises"])
    supervisor = start_supervisor()
    wait_until(lambda: len(record.runs("healthy")) >= 5, timeout=60, what="healthy runs")
    wait_until(lambda: len(record.runs("raises")) >= 2, timeout=60, what="runs of the other module")
    assert supervisor.alive(), supervisor.log()
    # Nothing the modules did reached the supervisor: it still has one thread (the spawner took the thread).
    assert psutil.Process(supervisor.pid).num_threads() == 1

    segfault = record.worker("workers.import_segfault")
    assert segfault["status"] == "broken"
    assert "SIGSEGV" in segfault["last_error"]
    (failure,) = record.failures("workers.import_segfault")
    assert failure["kind"] == "import" and failure["run_id"] is None
    assert "Segmentation fault" in failure["stderr_tail"]
    assert "import_segfault.py" in failure["stderr_tail"]  # faulthandler named the line that crashed

    # Issue 11: a module that starts a thread at import is no longer broken: its worker runs in a fresh
    # interpreter each time (isolation = "exec"), said once in the log.
    assert record.worker("workers.import_thread") is None
    wait_until(lambda: len(record.runs("threaded")) >= 2, timeout=60, what="runs of the threaded module's worker")
    assert {r["outcome"] for r in record.runs("threaded")} == {"succeeded"}
    assert supervisor.log().count("module workers.import_thread started thread(s) rogue at import") == 1

    raised = record.worker("workers.import_raises")
    assert raised["status"] == "broken"
    (failure,) = record.failures("workers.import_raises")
    assert "this module cannot be imported" in failure["traceback"]

    # The spawner now running is single-threaded too, and imported none of the broken (or threaded) modules.
    (spawner,) = [p for p in psutil.Process(supervisor.pid).children() if "worker-supervisor: spawner" in title(p)]
    assert spawner.num_threads() == 1
    assert {"workers.import_segfault", "workers.import_thread", "workers.import_raises"} <= set(title(spawner).split())
    assert supervisor.stop() == 0


def test_invalid_worker_definition_is_recorded_by_name(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    bad = "from supervisor import worker\n\n@worker(interval=-5)\ndef negative(ctx):\n    pass\n"
    worker_package(tmp_path, ["healthy"], extra={"bad_interval": bad})
    supervisor = start_supervisor()
    wait_until(lambda: len(record.runs("healthy")) >= 2, timeout=60, what="healthy runs")
    row = wait_until(lambda: record.worker("negative"), timeout=10, what="the invalid worker's row")
    assert row["status"] == "broken"
    assert "interval must be a positive duration (seconds, a timedelta, or text like" in row["last_error"]
    assert "got -5" in row["last_error"]
    assert "worker 'negative' in workers.bad_interval" in row["last_error"]
    assert supervisor.stop() == 0


def test_module_that_hangs_at_import_is_left_out_after_the_import_timeout(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["healthy", "import_hangs"])
    supervisor = start_supervisor("--import-timeout", "1")
    wait_until(lambda: len(record.runs("healthy")) >= 3, timeout=60, what="healthy runs once the hang is cut off")
    row = record.worker("workers.import_hangs")
    assert row["status"] == "broken" and "import did not finish within 1s" in row["last_error"]
    assert supervisor.stop() == 0


def test_missing_worker_package_is_one_error_line(tmp_path: Path, start_supervisor: Any) -> None:
    supervisor = start_supervisor("--workers", "no_such_package")
    assert supervisor.wait(30) == 2
    (line,) = supervisor.log().strip().splitlines()[-1:]
    assert line.startswith(f"{os.path.basename(sys.executable)} -m supervisor: error: cannot import worker package 'no_such_package'"), supervisor.log()
    assert "Traceback" not in supervisor.log()


def test_issue_11_run_refuses_a_worker_table_that_names_no_worker(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    # `check` rejected the file, `run` ignored the table silently: a typo in a production override never applied.
    worker_package(tmp_path, ["healthy"])
    supervisor = start_supervisor(config="[worker.helthy]\ntimeout = 5\n")
    assert supervisor.wait(60) == 2
    lines = supervisor.log().strip().splitlines()
    assert "[worker.helthy]" in lines[-1] and "names no worker" in lines[-1], supervisor.log()
    assert "did you mean 'healthy'?" in lines[-1] and str(tmp_path / "supervisor.toml") in lines[-1]
    assert "Traceback" not in supervisor.log()
    assert record.runs("healthy") == []  # refused before any run


def test_issue_11_a_worker_table_for_a_worker_of_a_broken_module_is_no_reason_to_refuse(
    tmp_path: Path, record: Record, start_supervisor: Any
) -> None:
    # The broken module may define it: said in the log, and the workers that imported run.
    worker_package(tmp_path, ["healthy", "import_raises"])
    supervisor = start_supervisor(config="[worker.import_raises_worker]\ntimeout = 5\n")
    wait_until(lambda: len(record.runs("healthy")) >= 1, timeout=60, what="a healthy run")
    assert "[worker.import_raises_worker]" in supervisor.log() and "names no worker" in supervisor.log()
    assert supervisor.stop() == 0


@pytest.mark.parametrize("command", ["run", "check"])
def test_issue_11_a_helper_that_cannot_be_started_is_one_error_line(tmp_path: Path, command: str) -> None:
    # A user who may not execute the interpreter (here: a copy without its execute bits) got a PermissionError
    # traceback out of posix_spawn when `check` or `run` started the spawner or the recorder.
    worker_package(tmp_path, ["healthy"])
    unusable = tmp_path / "python"
    unusable.write_bytes(b"")
    unusable.chmod(0o644)
    args = ["run", "--db", f"sqlite:///{tmp_path}/x.db"] if command == "run" else ["check"]
    program = (f"import sys\nsys.executable = {str(unusable)!r}\nfrom supervisor.operate.cli import main\n"
               f"sys.exit(main({[*args, '--workers', 'workers']!r}))\n")
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "cannot start" in line and "Permission denied" in line and str(unusable) in line, done.stderr


def test_issue_11_a_spawner_that_cannot_be_restarted_is_tried_again_not_the_supervisors_end(
    tmp_path: Path, record: Record
) -> None:
    # Out of processes (a run's fork bomb), or an interpreter gone: the restart of a dead spawner failed, and the
    # exception ended the supervisor. Here the interpreter is made unusable (SIGUSR1) while the spawner is killed.
    worker_package(tmp_path, ["healthy"])
    unusable = tmp_path / "python"
    unusable.write_bytes(b"")
    unusable.chmod(0o644)
    program = (
        "import signal, sys\n"
        "usable = sys.executable\n"
        f"signal.signal(signal.SIGUSR1, lambda *_: setattr(sys, 'executable', {str(unusable)!r}))\n"
        "signal.signal(signal.SIGUSR2, lambda *_: setattr(sys, 'executable', usable))\n"
        "from supervisor.operate.cli import main\n"
        f"sys.exit(main(['run', '--db', 'sqlite:///{tmp_path}/supervisor.db', '--workers', 'workers']))\n"
    )
    log_path = tmp_path / "supervisor.operate.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-c", program], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_until(lambda: "spawner ready" in log_path.read_text(), timeout=60, what="the spawner")
        (spawner,) = [p for p in psutil.Process(process.pid).children() if "worker-supervisor: spawner" in title(p)]
        process.send_signal(signal.SIGUSR1)
        spawner.kill()
        wait_until(lambda: log_path.read_text().count("cannot start supervisor.spawn.spawner: Permission denied") >= 2,
                   timeout=30, what="two failed restarts")
        assert process.poll() is None, log_path.read_text()
        process.send_signal(signal.SIGUSR2)
        wait_until(lambda: log_path.read_text().count("spawner ready") == 2, timeout=60, what="the restarted spawner")
        before = len(record.runs("healthy"))
        wait_until(lambda: len(record.runs("healthy")) >= before + 2, timeout=30, what="runs after the restart")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
