"""`supervisor history` and `supervisor failures`, run as real commands against a real record (SQLite and
PostgreSQL), and the one-line errors of every reading command: unknown worker, bad flag, unreadable config,
unreachable database.

The record is filled by applying records (supervisor/record/records.py) through a Store, as the recorder does.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from dbtools import query
from recordtools import apply_records, failure_id
from supervisor.record import records
from supervisor.outcome import Outcome, Verdict
from supervisor.record.records import Record
from supervisor.record.store import Store, utcnow
from supervisor.worker import WorkerDefinition

NODE = socket.gethostname()
# `python -m supervisor` names itself as typed (issue 11), as Python 3.14's argparse does.
PROG = f"{os.path.basename(sys.executable)} -m supervisor"
T0 = datetime(2024, 3, 1, 12, 0, 0)  # naive UTC, as the record holds it
# POSIX TZ strings count west of Greenwich as positive: "XYZ-3" is UTC+3, so 12:00 UTC shows as 15:00.
TZ = "XYZ-3"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/jobs/heartbeat.py", line 12, in run\n'
    "    check_disk()\n"
    "ValueError: disk /dev/sda1 is 97% full\n"
)
ESC_STDERR = "checking disks\n\x1b[2J\x1b]0;owned\x07cleared your screen\nfaulthandler: Segmentation fault\n"


def cli(*args: str, cwd: Path | None = None, tz: str = TZ) -> subprocess.CompletedProcess[str]:
    """Run `python -m supervisor ARGS` as a user would; COLUMNS keeps rich from wrapping the tables."""
    env = {**os.environ, "COLUMNS": "200", "TZ": tz}
    for name in [n for n in env if n.startswith("SUPERVISOR_")]:
        del env[name]  # the settings under test come from the flags alone
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """The command failed with `code` and said so in exactly one line, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith(f"{PROG}: error: "), line
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


# -- filling the record ----------------------------------------------------------------------------------------


def definition(name: str, module: str) -> WorkerDefinition:
    return WorkerDefinition(name=name, module=module, interval=60.0, timeout=30.0, grace=5.0)


def whole_run(run: str, worker: str, at: datetime, verdict: Verdict, pid: int, attempt: int = 1, **end: object) -> list[Record]:
    """The records of one run, start to end, as the supervisor writes them."""
    return [
        records.run_started(run, worker, attempt, at, at + timedelta(seconds=60), NODE, 4000),
        records.run_spawned(run, worker, pid),
        records.run_finished(run, worker, attempt, at, at + timedelta(seconds=1.5), 1.5, verdict, NODE, 4000, pid=pid,
                             **end),  # type: ignore[arg-type]  # the end's optional fields, by name
    ]


@pytest.fixture
def filled(store_url: str) -> str:
    """A record with two workers, a broken module, and heartbeat's runs ending every way the tests look at."""
    fill(store_url)
    return store_url


def fill(url: str) -> None:
    """Apply the records of `filled` to the database at `url`."""
    batch: list[Record] = [records.workers_synced([definition("heartbeat", "workers.heartbeat"),
                                                   definition("cleanup", "workers.cleanup")], [], T0)]
    batch += whole_run("run0ok", "heartbeat", T0, Verdict(Outcome.SUCCEEDED, ""), 101, exit_code=0)
    batch += whole_run("run1error", "heartbeat", T0 + timedelta(minutes=1),
                       Verdict(Outcome.ERROR, "ValueError: disk /dev/sda1 is 97% full\nsecond line of the message",
                               TRACEBACK), 102, exit_code=1, stderr="warning: low disk\n", stdout="checked 3 disks\n")
    batch += whole_run("run2crash", "heartbeat", T0 + timedelta(minutes=2), Verdict(Outcome.CRASH, "crashed with SIGSEGV"),
                       103, attempt=2, signal=11, stderr=ESC_STDERR, stdout="partial output\n")
    batch.append(records.run_started("run3live", "heartbeat", 1, T0 + timedelta(minutes=3), None, NODE, 4000))
    batch += whole_run("run4cleanup", "cleanup", T0 + timedelta(minutes=4), Verdict(Outcome.EXIT, "exited with status 3 without a result"),
                       104, exit_code=3)
    batch.append(records.broken("workers.bad", "workers.bad", "import failed: RuntimeError: no config", T0 + timedelta(minutes=5),
                                traceback="Traceback (most recent call last):\nRuntimeError: no config\n"))
    apply_records(url, batch)


# -- history ---------------------------------------------------------------------------------------------------


def test_history_lists_a_workers_runs_newest_first_in_local_time(filled: str) -> None:
    result = cli("history", "heartbeat", "--db", filled)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    lines = out.splitlines()

    def line_of(text: str) -> str:
        (found,) = [line for line in lines if text in line]
        return found

    # Local time (UTC+3), not the record's UTC; newest first; the unfinished run shows as running.
    ok, error, crash, live = (line_of(f"2024-03-01 15:0{m}:00") for m in (0, 1, 2, 3))
    assert [lines.index(x) for x in (live, crash, error, ok)] == sorted(lines.index(x) for x in (live, crash, error, ok))
    assert "12:0" not in out
    assert "succeeded" in ok and "exit 0" in ok and " 101 " in ok and "1.5s" in ok and "run0ok" in ok
    assert "error" in error and "exit 1" in error and " 102 " in error
    assert "crash" in crash and "SIGSEGV" in crash and " 103 " in crash and " 2 " in crash  # attempt 2
    assert "running" in live and "run3live" in live
    assert "run4cleanup" not in out  # another worker's run
    assert "heartbeat" in out


def test_history_limit_keeps_the_newest(filled: str) -> None:
    result = cli("history", "heartbeat", "--limit", "2", "--db", filled)
    assert result.returncode == 0, result.stderr
    assert "run3live" in result.stdout and "run2crash" in result.stdout
    assert "run1error" not in result.stdout and "run0ok" not in result.stdout


def test_a_broken_module_has_no_runs_and_a_worker_may_have_no_failures(filled: str) -> None:
    result = cli("history", "workers.bad", "--db", filled)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no runs of workers.bad recorded"
    store = Store(filled)
    store.open()
    try:
        store.apply(whole_run("run5ok", "cleanup", T0 + timedelta(minutes=6), Verdict(Outcome.SUCCEEDED, ""), 105, exit_code=0))
        store.apply([records.workers_synced([definition("fresh", "workers.fresh")], [], T0 + timedelta(minutes=7))])
    finally:
        store.close()
    result = cli("failures", "fresh", "--db", filled)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no failures of fresh recorded"
    # heartbeat and cleanup are retired now (no longer defined), and their history is still there.
    result = cli("history", "cleanup", "--db", filled)
    assert result.returncode == 0, result.stderr
    assert "cleanup (retired)" in result.stdout and "run5ok" in result.stdout and "run4cleanup" in result.stdout


def test_history_of_an_unknown_worker_is_one_line_with_a_suggestion(filled: str) -> None:
    line = assert_one_error_line(cli("history", "heartbeet", "--db", filled), 1,
                                 "no worker named 'heartbeet' in the database", "did you mean 'heartbeat'?")
    assert line.endswith(f"({filled})")
    assert_one_error_line(cli("history", "zzzzzz", "--db", filled), 1, "no worker named 'zzzzzz'", f"`{PROG} status`")


# -- failures ----------------------------------------------------------------------------------------------------


def test_failures_lists_every_failure_newest_first_one_line_each(filled: str) -> None:
    result = cli("failures", "--db", filled)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    expected = [  # (worker, kind, message start), newest first
        ("workers.bad", "import", "import failed: RuntimeError: no config"),
        ("cleanup", "exit", "exited with status 3 without a result"),
        ("heartbeat", "crash", "crashed with SIGSEGV"),
        ("heartbeat", "error", "ValueError: disk /dev/sda1 is 97% full…"),
    ]
    ids = {(row["worker"], row["kind"]): int(row["id"]) for row in query(filled, "select id, worker, kind from failure")}
    found = []
    for worker, kind, message in expected:
        (line,) = [line for line in lines if message in line]
        assert f" {worker} " in line and f" {kind} " in line, line
        assert line.split()[1] == str(ids[worker, kind]), line  # the id comes first, after the table's border
        found.append(lines.index(line))
    assert found == sorted(found)
    assert "second line of the message" not in result.stdout  # cut to its first line
    assert "2024-03-01 15:05:00" in result.stdout  # local time


def test_failures_of_one_worker_and_limit(filled: str) -> None:
    result = cli("failures", "heartbeat", "--db", filled)
    assert result.returncode == 0, result.stderr
    assert "crashed with SIGSEGV" in result.stdout and "ValueError" in result.stdout
    assert "cleanup" not in result.stdout and "workers.bad" not in result.stdout

    result = cli("failures", "--limit", "1", "--db", filled)
    assert result.returncode == 0, result.stderr
    assert "workers.bad" in result.stdout
    assert "heartbeat" not in result.stdout and "cleanup" not in result.stdout


def test_failure_in_full_shows_traceback_and_tails(filled: str) -> None:
    rows = query(filled, "select id, kind from failure where worker = 'heartbeat'")
    ids = {row["kind"]: int(row["id"]) for row in rows}

    result = cli("failures", "--id", str(ids["error"]), "--db", filled)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"failure  {ids['error']}" in out or f"failure   {ids['error']}" in out
    assert "heartbeat" in out and "run1error" in out and "exit 1" in out
    assert "2024-03-01 15:01:01" in out  # when it was recorded (its end), local time
    # The traceback, whole and line by line (the highlighter must not lose or merge lines).
    for line in TRACEBACK.splitlines():
        assert line.strip() in out, line
    assert "traceback" in out and "stderr (tail)" in out and "stdout (tail)" in out
    assert "warning: low disk" in out and "checked 3 disks" in out
    assert "second line of the message" in out  # in full here

    result = cli("failures", "--id", str(ids["crash"]), "--db", filled)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "SIGSEGV" in out and "crash" in out and "run2crash" in out
    # The escape sequences a worker printed are defused, and its lines stay lines.
    assert "\x1b" not in out and "\x07" not in out
    assert "]0;owned" in out and "cleared your screen" in out
    stderr_lines = [line for line in out.splitlines() if "checking disks" in line or "cleared your screen" in line]
    assert len(stderr_lines) == 2, out
    assert "partial output" in out


def test_failure_of_a_broken_module_in_full(filled: str) -> None:
    result = cli("failures", "--id", str(failure_id(filled, "workers.bad")), "--db", filled)
    assert result.returncode == 0, result.stderr
    assert "workers.bad" in result.stdout and "import" in result.stdout
    assert "RuntimeError: no config" in result.stdout
    assert "no run" in result.stdout
    assert "(nothing captured)" in result.stdout


def test_failures_errors_are_one_line(filled: str) -> None:
    assert_one_error_line(cli("failures", "--id", "999999", "--db", filled), 1, "no failure with id 999999", f"`{PROG} failures`")
    assert_one_error_line(cli("failures", "cleanpu", "--db", filled), 1, "no worker named 'cleanpu'", "did you mean 'cleanup'?")
    assert_one_error_line(cli("failures", "cleanup", "--id", "1", "--db", filled), 2, "not both")


# -- errors shared by the reading commands --------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["history"], "the following arguments are required: WORKER"),
        (["history", "x", "--limit", "0"], "argument --limit: must be a positive whole number"),
        (["history", "x", "--limit", "many"], "argument --limit"),
        (["failures", "--id", "x"], "argument --id"),
        (["failures", "--id", "99999999999999"], "argument --id"),
        (["failures", "--bogus"], "unrecognized arguments: --bogus"),
        (["check", "--bogus"], "unrecognized arguments: --bogus"),
        (["check", "--import-timeout", "-1"], "import_timeout must be a positive number"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    assert_one_error_line(cli(*args, cwd=tmp_path), 2, fragment, "(see --help)" if "argument" in fragment else "")


@pytest.mark.parametrize("command", [["history", "heartbeat"], ["failures"], ["check"]])
def test_unreadable_config_is_one_line_and_exit_2(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "nowhere.toml"
    assert_one_error_line(cli(*command, "--config", str(missing), cwd=tmp_path), 2, "cannot read the config file", str(missing))
    broken = tmp_path / "broken.toml"
    broken.write_text("database = 'sqlite:///x.db'\ndatabse = 1\n")
    assert_one_error_line(cli(*command, "--config", str(broken), cwd=tmp_path), 2, "unknown setting 'databse'",
                          "did you mean 'database'?", f"{broken}:2")


@pytest.mark.parametrize("command", [["history", "heartbeat"], ["failures"], ["failures", "--id", "1"]])
def test_unreachable_database_is_one_line_and_exit_1(tmp_path: Path, command: list[str]) -> None:
    # Nothing listens on port 1; the password must not appear in the error.
    url = "postgresql://postgres:s3cret@127.0.0.1:1/nothing"
    result = cli(*command, "--db", url, cwd=tmp_path)
    assert_one_error_line(result, 1, "cannot open the database", "check --db or SUPERVISOR_DB",
                                 "postgresql://postgres:***@127.0.0.1:1/nothing")
    assert "s3cret" not in result.stderr + result.stdout
    # A SQLite file that is not there is a mistaken --db, not a database to create.
    result = cli(*command, "--db", f"sqlite:///{tmp_path}/typo.db", cwd=tmp_path)
    assert_one_error_line(result, 1, "no database file there", "--db")
    assert not (tmp_path / "typo.db").exists()


# -- status (issue 11) ----------------------------------------------------------------------------------------------


def test_status_dims_an_error_the_worker_recovered_from_and_gives_its_age(store_url: str) -> None:
    now = utcnow().replace(microsecond=0)  # naive UTC, as the record holds it
    batch: list[Record] = [records.workers_synced([definition("healed", "workers.healed"),
                                                   definition("sick", "workers.sick")], [], now - timedelta(hours=4))]
    batch += whole_run("h1", "healed", now - timedelta(hours=3), Verdict(Outcome.ERROR, "ValueError: disk full"), 201,
                       exit_code=1)
    batch += whole_run("h2", "healed", now - timedelta(hours=1), Verdict(Outcome.SUCCEEDED, ""), 202, exit_code=0)
    batch += whole_run("s1", "sick", now - timedelta(hours=1), Verdict(Outcome.ERROR, "KeyError: 'rates'"), 203,
                       exit_code=1)
    apply_records(store_url, batch)
    result = cli("status", "--db", store_url)
    # No supervisor runs on this record: status says so first, and exits 2 (issue 13).
    assert result.returncode == 2, result.stderr
    assert result.stdout.splitlines()[0] in ("no supervisor is running",
                                             "no supervisor is alive (none has run on this database yet)")
    healed = next(line for line in result.stdout.splitlines() if line.startswith("healed "))
    sick = next(line for line in result.stdout.splitlines() if line.startswith("sick "))
    # The failure was recorded 1.5 s into the run that began 3 hours ago.
    assert healed.rstrip().endswith("(3.0h ago) ValueError: disk full"), healed
    assert sick.rstrip().endswith("KeyError: 'rates'") and "ago)" not in sick, sick
