"""trigger, pause and resume act on a running supervisor within a second, through the database alone."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from dbtools import query, query_or_empty
from helpers import SupervisorProcess, cpu_load, title, wait_until, worker_package

# Once a minute, and the first run at start: any other run within the test comes from a trigger.
RARE = "from supervisor import worker\n\n@worker(interval=60)\ndef rare(ctx):\n    pass\n"


def control(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor", *args, "--db", url], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


def runs(url: str, worker: str) -> int:
    return len(query_or_empty(url, "select id from run where worker = ? and finished_at is not null", worker))


def check_trigger_pause_resume(tmp_path: Path, url: str, supervisor: SupervisorProcess) -> None:
    wait_until(lambda: runs(url, "rare") == 1 and runs(url, "healthy") >= 1, timeout=60, what="the first runs")

    sent = time.monotonic()
    triggered = control(tmp_path, url, "trigger", "rare")
    assert triggered.returncode == 0, triggered.stderr
    # On PostgreSQL the answer also names the node that took the trigger (every supervisor there is a node).
    assert triggered.stdout.startswith("trigger rare: run started") and " (by " in triggered.stdout
    wait_until(lambda: runs(url, "rare") == 2, timeout=10, what="the triggered run")
    took = time.monotonic() - sent
    print(f"trigger to finished run: {took * 1000:.0f} ms")
    assert took < 1.0 + 0.5  # a second to act, plus the command line's own start-up

    paused = control(tmp_path, url, "pause", "healthy")
    assert paused.returncode == 0 and paused.stdout.startswith("pause healthy: paused"), paused.stdout + paused.stderr
    after_pause = runs(url, "healthy")
    (row,) = query(url, "select paused from worker where name = ?", "healthy")
    assert row["paused"]
    status = control(tmp_path, url, "status")
    assert "paused" in status.stdout
    # Paused: no run for a while (healthy runs every 0.2 s, so five ticks pass) and none in progress.
    rare_before = runs(url, "rare")
    control(tmp_path, url, "trigger", "rare")
    wait_until(lambda: runs(url, "rare") == rare_before + 1, timeout=10, what="a run to mark time by")
    # healthy would have run several times in the trigger's round trip; paused, it adds at most the run that
    # was already in flight when the pause arrived.
    assert runs(url, "healthy") <= after_pause + 1

    resumed = control(tmp_path, url, "resume", "healthy")
    assert resumed.returncode == 0 and resumed.stdout.startswith("resume healthy: resumed")
    now = runs(url, "healthy")
    wait_until(lambda: runs(url, "healthy") >= now + 2, timeout=10, what="runs after resume")


def test_trigger_pause_resume_on_sqlite(tmp_path: Path, db: Path, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["healthy"], extra={"rare": RARE})
    url = f"sqlite:///{db}"
    supervisor = start_supervisor(url=url)
    check_trigger_pause_resume(tmp_path, url, supervisor)
    assert supervisor.stop() == 0


def test_trigger_pause_resume_on_postgres(tmp_path: Path, pg_url: str, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["healthy"], extra={"rare": RARE})
    supervisor = start_supervisor(url=pg_url)
    check_trigger_pause_resume(tmp_path, pg_url, supervisor)
    assert supervisor.stop() == 0


def test_pause_survives_a_restart_and_unknown_workers_are_one_line(tmp_path: Path, db: Path, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["healthy"])
    url = f"sqlite:///{db}"
    first = start_supervisor(url=url)
    wait_until(lambda: runs(url, "healthy") >= 1, timeout=60, what="a run")
    assert first.stop() == 0
    paused = control(tmp_path, url, "pause", "healthy", "--wait", "0.2")
    assert paused.returncode == 0 and "recorded" in paused.stdout  # nobody running: it waits in the record
    before = runs(url, "healthy")
    second = start_supervisor(url=url)
    wait_until(lambda: "spawner ready" in second.log(), timeout=60, what="the second supervisor")
    rare_line = control(tmp_path, url, "trigger", "healthy")  # a trigger runs a paused worker once
    assert rare_line.returncode == 0, rare_line.stderr
    wait_until(lambda: runs(url, "healthy") == before + 1, timeout=10, what="the triggered run")
    assert second.stop() == 0
    assert runs(url, "healthy") == before + 1  # and nothing else: it stayed paused

    unknown = control(tmp_path, url, "trigger", "helthy")
    assert unknown.returncode == 1
    assert unknown.stderr.count("\n") == 1 and "did you mean 'healthy'?" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def recorder_of(supervisor: SupervisorProcess) -> psutil.Process:
    def find() -> psutil.Process | None:
        for child in psutil.Process(supervisor.process.pid).children():
            if "worker-supervisor: recorder" in title(child):
                return child
        return None

    return wait_until(find, timeout=30, what="the recorder")


def wakeups(process: psutil.Process) -> int:
    return int(process.num_ctx_switches().voluntary)


def check_an_idle_recorder_sleeps_until_a_command_comes(tmp_path: Path, url: str, start_supervisor: Any) -> None:
    # Nothing is due for a minute: the recorder has nothing to write, and no command to look for until one is
    # announced (PostgreSQL: NOTIFY; SQLite: inotify on the database's files). It must neither poll (waking twice
    # a second) nor miss the command.
    worker_package(tmp_path, [], extra={"rare": RARE})
    supervisor = start_supervisor(url=url)
    wait_until(lambda: runs(url, "rare") == 1, timeout=60, what="the first run")
    recorder = recorder_of(supervisor)
    # Start-up's records are written within a few seconds; from then on it waits.
    last = [wakeups(recorder)]

    def settled() -> bool:
        now = wakeups(recorder)
        unchanged, last[0] = now == last[0], now
        return unchanged

    wait_until(settled, timeout=30, step=0.5, what="the recorder to stop writing")
    before, quiet_since = wakeups(recorder), time.monotonic()
    wait_until(lambda: time.monotonic() - quiet_since >= 3, timeout=10, step=0.1, what="three quiet seconds")
    # A poll twice a second would have woken it at least six times; SQLite's safety look (every 5 s) once at most.
    assert wakeups(recorder) - before <= 2

    # Sent through the Store the command line uses, and timed from the command's row: a command-line process of
    # its own would add its interpreter's start-up, seconds on a loaded machine, to what is measured.
    from supervisor.operate.report import open_store

    store = open_store(url, 10_000)
    try:
        command = store.send_command("rare", "trigger")
        sent = time.monotonic()
        wait_until(lambda: runs(url, "rare") == 2, timeout=10, what="the triggered run")
        assert time.monotonic() - sent < 1.0 + 0.5  # as prompt as when it polled
        assert store.command_result(command)
    finally:
        store.close()
    assert supervisor.stop() == 0


def test_on_sqlite_an_idle_recorder_sleeps_until_a_command_comes(tmp_path: Path, db: Path, start_supervisor: Any) -> None:
    check_an_idle_recorder_sleeps_until_a_command_comes(tmp_path, f"sqlite:///{db}", start_supervisor)


def test_on_postgres_an_idle_recorder_sleeps_until_a_command_comes(
    tmp_path: Path, pg_url: str, start_supervisor: Any
) -> None:
    check_an_idle_recorder_sleeps_until_a_command_comes(tmp_path, pg_url, start_supervisor)


def test_on_postgres_a_command_reaches_a_recorder_whose_connection_was_terminated(
    tmp_path: Path, pg_url: str, start_supervisor: Any
) -> None:
    worker_package(tmp_path, [], extra={"rare": RARE})
    supervisor = start_supervisor(url=pg_url)
    wait_until(lambda: runs(pg_url, "rare") == 1, timeout=60, what="the first run")
    recorder = recorder_of(supervisor)
    database = pg_url.rsplit("/", 1)[1]
    # The server ends the recorder's session (as a restart or an operator would); it was listening on it.
    ended = query(pg_url, "select pg_terminate_backend(pid) as ended from pg_stat_activity "
                  "where datname = ? and pid <> pg_backend_pid() and application_name = 'worker-supervisor'", database)
    assert ended and all(row["ended"] for row in ended)
    triggered = control(tmp_path, pg_url, "trigger", "rare")
    assert triggered.returncode == 0, triggered.stderr
    wait_until(lambda: runs(pg_url, "rare") == 2, timeout=10, what="the run triggered after the reconnection")
    assert recorder.is_running()  # the same recorder, connected again: nothing had to restart it
    assert supervisor.stop() == 0


def check_every_trigger_is_taken_up_promptly(tmp_path: Path, url: str, start_supervisor: Any, count: int) -> None:
    # Issue 11 (4a): of 304 triggers, one waited 5.0 s (SQLite's safety look) before the supervisor took it up: a
    # wakeup was missed. Sent one after another, as fast as they are answered, through the same Store the command
    # line uses, right after start-up too (where one of the misses was), on a loaded machine (where they show).
    from supervisor.operate.report import open_store

    worker_package(tmp_path, [], extra={"rare": RARE})
    supervisor = start_supervisor(url=url)
    wait_until(lambda: query_or_empty(url, "select name from worker where name = ?", "rare"), timeout=60,
               what="the worker's row")
    store = open_store(url, 10_000)
    waits: list[float] = []
    try:
        with cpu_load():
            for _ in range(count):
                command = store.send_command("rare", "trigger")
                sent = time.monotonic()
                wait_until(lambda: store.command_result(command), timeout=30, step=0.001, what=f"command {command}")
                waits.append(time.monotonic() - sent)
    finally:
        store.close()
    waits.sort()
    print(f"{len(waits)} triggers: p50 {waits[len(waits) // 2] * 1000:.1f} ms, max {waits[-1] * 1000:.1f} ms")
    # The safety look comes after 5 s; a missed wakeup shows as a wait near it. A loaded machine may take a
    # few hundred milliseconds now and then, never seconds.
    assert waits[-1] < 2.0, waits[-5:]
    assert supervisor.stop() == 0


def test_issue_11_every_trigger_is_taken_up_promptly_on_sqlite(tmp_path: Path, db: Path, start_supervisor: Any) -> None:
    check_every_trigger_is_taken_up_promptly(tmp_path, f"sqlite:///{db}", start_supervisor, 400)


def test_issue_11_every_trigger_is_taken_up_promptly_on_postgres(tmp_path: Path, pg_url: str, start_supervisor: Any) -> None:
    check_every_trigger_is_taken_up_promptly(tmp_path, pg_url, start_supervisor, 200)


BROKEN = "from supervisor import worker\n\n@worker(interval=-5)\ndef misdefined(ctx):\n    pass\n"


def test_issue_11_trigger_of_a_broken_worker_answers_at_once_with_its_reason(
    tmp_path: Path, db: Path, start_supervisor: Any
) -> None:
    # It waited its whole --wait, then blamed "no running supervisor", though one was running.
    worker_package(tmp_path, [], extra={"rare": RARE, "misdefined": BROKEN})
    url = f"sqlite:///{db}"
    supervisor = start_supervisor(url=url)
    wait_until(lambda: query_or_empty(url, "select status from worker where name = ? and status = 'broken'",
                                      "misdefined"), timeout=60, what="the broken worker's row")
    sent = time.monotonic()
    triggered = control(tmp_path, url, "trigger", "misdefined", "--wait", "30")
    assert time.monotonic() - sent < 30  # answered, not waited out
    assert triggered.returncode == 1
    (line,) = triggered.stderr.splitlines()
    assert "'misdefined' is broken" in line and "interval" in line, line
    assert "no running supervisor" not in line
    assert supervisor.stop() == 0


def test_issue_11_a_command_nobody_takes_up_is_withdrawn_and_never_fires_later(
    tmp_path: Path, db: Path, start_supervisor: Any
) -> None:
    # It stayed queued for good and fired at the next start, hours later.
    quiet = "from supervisor import worker\n\n@worker(interval=3600, run_at_start=False)\ndef quiet(ctx):\n    pass\n"
    worker_package(tmp_path, [], extra={"quiet": quiet})
    url = f"sqlite:///{db}"
    first = start_supervisor(url=url)
    wait_until(lambda: "spawner ready" in first.log(), timeout=60, what="the first supervisor")
    assert first.stop() == 0

    unanswered = control(tmp_path, url, "trigger", "quiet", "--wait", "0.3")
    assert unanswered.returncode == 1
    (line,) = unanswered.stderr.splitlines()
    assert "no running supervisor took up the trigger of 'quiet' within 0.3s" in line and "withdrawn" in line, line
    (withdrawn,) = query(url, "select done_at, result from command")
    assert withdrawn["done_at"] is not None and withdrawn["result"].startswith("withdrawn")

    # One left by a command line that was killed before it could withdraw it expires instead.
    from supervisor.operate.report import open_store

    store = open_store(url, 10_000)
    try:
        orphan = store.send_command("quiet", "trigger")
    finally:
        store.close()
    import sqlite3

    with sqlite3.connect(db) as connection:
        connection.execute("update command set created_at = datetime(created_at, '-11 minutes') where id = ?", (orphan,))
    connection.close()

    second = start_supervisor(url=url)
    wait_until(lambda: "spawner ready" in second.log(), timeout=60, what="the second supervisor")
    answered = control(tmp_path, url, "trigger", "quiet")
    assert answered.returncode == 0, answered.stderr
    wait_until(lambda: runs(url, "quiet") >= 1, timeout=10, what="the run of the fresh trigger")
    assert second.stop() == 0
    assert runs(url, "quiet") == 1  # the fresh trigger's run, and neither of the old ones
    (expired,) = query(url, "select result from command where id = ?", orphan)
    assert expired["result"].startswith("expired"), expired


def test_issue_11_pause_of_a_paused_worker_says_it_already_was(tmp_path: Path, db: Path, start_supervisor: Any) -> None:
    worker_package(tmp_path, [], extra={"rare": RARE})
    url = f"sqlite:///{db}"
    supervisor = start_supervisor(url=url)
    wait_until(lambda: runs(url, "rare") == 1, timeout=60, what="the first run")
    first = control(tmp_path, url, "pause", "rare")
    assert first.returncode == 0 and first.stdout.startswith("pause rare: paused (by "), first.stdout + first.stderr
    again = control(tmp_path, url, "pause", "rare")
    assert again.returncode == 0 and again.stdout.startswith("pause rare: already paused"), again.stdout + again.stderr
    resumed = control(tmp_path, url, "resume", "rare")
    assert resumed.returncode == 0 and resumed.stdout.startswith("resume rare: resumed"), resumed.stdout
    again = control(tmp_path, url, "resume", "rare")
    assert again.returncode == 0 and again.stdout.startswith("resume rare: not paused"), again.stdout + again.stderr
    assert supervisor.stop() == 0
