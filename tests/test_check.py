"""`supervisor check`: the config and the worker modules, validated by importing them in a spawner, never here.

Some tests call supervisor.operate.check.check() in this process, so the autouse no_leaks fixture sees any spawner or
descriptor it leaves behind and sys.modules shows whether worker code was imported here; the others run the
command itself and look at its lines and exit code.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from helpers import worker_package
from supervisor.operate.check import check

GOOD = textwrap.dedent(
    """
    import os
    from datetime import timedelta
    from pathlib import Path

    from supervisor import Worker, worker

    # Proof of where this module is imported: the pid of the process that imported it.
    Path("imported-by").write_text(str(os.getpid()))


    @worker(interval=60, timeout=30)
    def sync_rates(ctx):
        pass


    class Cleanup(Worker):
        name = "cleanup"
        interval = timedelta(minutes=5)
        grace = 10

        def run(self, ctx):
            pass
    """
)
RAISES = "raise RuntimeError('the settings module is missing')\n"
NEGATIVE = "from supervisor import worker\n\n\n@worker(interval=-5)\ndef negative(ctx):\n    pass\n"
# Named to sort first: the modules after it are imported by the fresh spawner started without it.
# `python -m supervisor` names itself as typed (issue 11), as Python 3.14's argparse does.
PROG = f"{os.path.basename(sys.executable)} -m supervisor"
SEGFAULT = "import ctypes\n\nctypes.string_at(0)\n"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `python -m supervisor check ARGS` in `cwd`; check that no spawner of it outlived it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    with subprocess.Popen([sys.executable, "-m", "supervisor", "check", *args], cwd=cwd, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL) as process:
        out, err = process.communicate(timeout=120)
    # Each spawner must be stopped and reaped by the check itself: one it left would be reparented away from
    # this test (so no_leaks would not see it), but its command line still names the check's pid.
    assert not spawners_of(process.pid), err
    imported_by = cwd / "imported-by"
    if imported_by.exists():
        assert int(imported_by.read_text()) != process.pid, "the check imported worker code itself"
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def spawners_of(pid: int) -> list[psutil.Process]:
    """Every spawner process started for the supervisor (or check) with this pid, wherever it was reparented."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "supervisor.spawn.spawner" in cmdline and "--supervisor-pid" in cmdline and str(pid) in cmdline:
            found.append(process)
    return found


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in the test's directory: the spawner imports worker packages from its cwd, as `run` does."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- in this process ----------------------------------------------------------------------------------------------


def test_valid_package_is_imported_in_a_spawner_only(in_tmp: Path) -> None:
    worker_package(in_tmp, [], name="ck_good", extra={"jobs": GOOD})
    findings = check(["ck_good"], 30.0, {})
    assert findings.problems == [] and findings.exit_code == 0
    assert {(d.name, d.interval, d.timeout, d.grace, d.module) for d in findings.workers} == {
        ("sync_rates", 60.0, 30.0, 5.0, "ck_good.jobs"),
        ("cleanup", 300.0, None, 10.0, "ck_good.jobs"),
    }
    # Imported once, by another process; never here.
    assert int((in_tmp / "imported-by").read_text()) != os.getpid()
    assert not [name for name in sys.modules if name.startswith("ck_good")]


def test_broken_modules_are_each_named_and_the_rest_still_checked(in_tmp: Path) -> None:
    worker_package(in_tmp, [], name="ck_bad", extra={"a_segfault": SEGFAULT, "b_raises": RAISES, "c_negative": NEGATIVE,
                                                     "d_good": GOOD})
    findings = check(["ck_bad"], 30.0, {})
    texts = [p.text for p in findings.problems]
    assert findings.exit_code == 1, texts
    assert len(texts) == 3, texts
    segfault, raises, negative = texts
    assert segfault.startswith("module ck_bad.a_segfault is broken: crashed the spawner while importing (killed by SIGSEGV)")
    assert segfault.endswith("ck_bad/a_segfault.py:3"), segfault  # faulthandler's frame in the module
    assert raises.startswith("module ck_bad.b_raises is broken: import failed: RuntimeError: the settings module is missing")
    assert raises.endswith("ck_bad/b_raises.py:1"), raises
    assert negative == (
        "invalid worker: interval must be a positive duration (seconds, a timedelta, or text like '90s', '5m', '1h'),"
        " got -5 (worker 'negative' in ck_bad.c_negative)"
    )
    assert findings.broken_modules == ["ck_bad.a_segfault", "ck_bad.b_raises"]
    # The good module after the crash was imported by the second spawner, and its workers are listed.
    assert {d.name for d in findings.workers} == {"sync_rates", "cleanup"}
    assert not [name for name in sys.modules if name.startswith("ck_bad")]


def test_module_that_hangs_at_import_is_cut_off_after_the_import_timeout(in_tmp: Path) -> None:
    worker_package(in_tmp, ["import_hangs"], name="ck_hang", extra={"z_good": GOOD})
    findings = check(["ck_hang"], 2.0, {})
    assert [p.text for p in findings.problems] == [
        "module ck_hang.import_hangs is broken: import did not finish within 2s (--import-timeout)"
    ]
    assert {d.name for d in findings.workers} == {"sync_rates", "cleanup"}


def test_module_that_starts_a_thread_at_import_is_named_and_its_workers_run_by_exec(in_tmp: Path) -> None:
    # Issue 11: not broken any more; its workers are valid, and run in a fresh interpreter each.
    worker_package(in_tmp, ["import_thread"], name="ck_thread", extra={"z_good": GOOD})
    findings = check(["ck_thread"], 30.0, {"threaded": {"isolation": "fork"}})
    assert findings.problems == []
    (note,) = findings.notes
    assert note.startswith("module ck_thread.import_thread starts thread(s) rogue at import"), note
    isolation = {d.name: d.isolation for d in findings.workers}
    assert isolation == {"sync_rates": "fork", "cleanup": "fork", "threaded": "exec"}  # whatever the config says


def test_overrides_apply_and_unknown_ones_are_problems(in_tmp: Path) -> None:
    worker_package(in_tmp, [], name="ck_over", extra={"jobs": GOOD})
    overrides: dict[str, dict[str, float | None]] = {"sync_rates": {"interval": 300.0}, "sync_rate": {"timeout": 5.0}}
    findings = check(["ck_over"], 30.0, overrides, "supervisor.toml")
    (problem,) = findings.problems
    assert problem.text == "[worker.sync_rate] in supervisor.toml names no worker; did you mean 'sync_rates'?"
    assert problem.exit_code == 2
    (rates,) = [d for d in findings.workers if d.name == "sync_rates"]
    assert rates.interval == 300.0 and findings.overridden == {"sync_rates"}


def test_an_empty_package_is_a_problem(in_tmp: Path) -> None:
    worker_package(in_tmp, [], name="ck_empty", extra={"nothing": "VALUE = 1\n"})
    findings = check(["ck_empty"], 30.0, {})
    assert [p.text for p in findings.problems] == [
        "no workers found in ck_empty; define one with @worker(...) or a Worker subclass"
    ]
    assert findings.exit_code == 1


# -- the command ---------------------------------------------------------------------------------------------------


def test_check_command_lists_valid_workers_and_exits_0(tmp_path: Path) -> None:
    worker_package(tmp_path, [], extra={"jobs": GOOD})
    config = tmp_path / "supervisor.toml"
    config.write_text("[worker.sync_rates]\ninterval = 300\ntimeout = 12.5\n")
    result = cli("--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[-1] == "2 valid worker(s) in workers; 0 problem(s)"
    (rates,) = [line for line in lines if line.startswith("sync_rates ")]
    assert rates.split() == ["sync_rates", "every", "5m", "(config)", "timeout", "12.5s", "grace", "5s", "workers.jobs"]
    (cleanup,) = [line for line in lines if line.startswith("cleanup ")]
    assert cleanup.split() == ["cleanup", "every", "5m", "no", "timeout", "grace", "10s", "workers.jobs"]
    assert (tmp_path / "imported-by").exists()  # by a spawner: cli() checked it was not the check's own process


def test_check_command_names_every_broken_module_and_worker_and_exits_1(tmp_path: Path) -> None:
    worker_package(tmp_path, [], extra={"a_segfault": SEGFAULT, "b_raises": RAISES, "c_negative": NEGATIVE, "d_good": GOOD})
    result = cli(cwd=tmp_path)
    out, err = result.stdout, result.stderr
    assert result.returncode == 1, err
    problems = err.splitlines()
    assert len(problems) == 3 and all(line.startswith(f"{PROG}: error: ") for line in problems), err
    assert "Traceback" not in err
    assert "module workers.a_segfault is broken" in problems[0] and "SIGSEGV" in problems[0]
    assert "module workers.b_raises is broken" in problems[1] and "RuntimeError" in problems[1]
    assert "worker 'negative' in workers.c_negative" in problems[2] and "interval" in problems[2]
    assert out.splitlines()[-1] == "2 valid worker(s) in workers; 3 problem(s)"
    assert any(line.startswith("sync_rates ") for line in out.splitlines())


def test_check_command_unknown_override_has_a_suggestion(tmp_path: Path) -> None:
    worker_package(tmp_path, [], extra={"jobs": GOOD})
    config = tmp_path / "supervisor.toml"
    config.write_text("[worker.cleanpu]\ninterval = 30\n")
    result = cli("--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line == f"{PROG}: error: [worker.cleanpu] in {config} names no worker; did you mean 'cleanup'?"


def test_check_command_missing_package_is_a_config_error(tmp_path: Path) -> None:
    result = cli("--workers", "no_such_package", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{PROG}: error: cannot import worker package 'no_such_package'"), line
    assert "Traceback" not in result.stderr


def test_check_does_not_open_the_database(tmp_path: Path) -> None:
    worker_package(tmp_path, [], extra={"jobs": GOOD})
    # Unreachable, and a SQLite file that must not be created: check never touches either. It takes no --db
    # (issue 11: its --help lists only what it uses); a config file shared with `run` names the database.
    config = tmp_path / "shared.toml"
    for url in ("postgresql://postgres@127.0.0.1:1/nothing", f"sqlite:///{tmp_path}/never.db"):
        config.write_text(f"database = {url!r}\n")
        result = cli("--config", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert not (tmp_path / "never.db").exists()
    result = cli("--db", f"sqlite:///{tmp_path}/never.db", cwd=tmp_path)
    assert result.returncode == 2 and "unrecognized arguments: --db" in result.stderr
