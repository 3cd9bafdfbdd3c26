"""The command line as a user meets it (issue 11): the name it calls itself by, each command's --help, and options
given before the command. Real processes: the console script .venv/bin/worker-supervisor and `python -m supervisor`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.operate.cli import main
from supervisor.config import SETTINGS
from supervisor.record.store import Store

SCRIPT = str(Path(sys.executable).parent / "worker-supervisor")
# As Python 3.14's argparse names a module run with -m: the interpreter's name as typed on a PATH, then the module.
PYTHON_M = f"{os.path.basename(sys.executable)} -m supervisor"
INVOCATIONS = {"console script": ([SCRIPT], "worker-supervisor"),
               "python -m": ([sys.executable, "-m", "supervisor"], PYTHON_M)}


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    env["COLUMNS"] = "200"  # argparse wraps --help to the terminal's width
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("how", INVOCATIONS)
def test_usage_and_errors_use_the_name_the_user_typed(tmp_path: Path, how: str) -> None:
    argv, name = INVOCATIONS[how]
    result = run([*argv, "history"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"{name}: error: the following arguments are required: WORKER (see --help)"]
    helped = run([*argv, "history", "--help"], tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith(f"usage: {name} history "), helped.stdout
    missing = tmp_path / "typo.db"
    result = run([*argv, "status", "--db", f"sqlite:///{missing}"], tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{name}: error: no database file there"), line


def test_main_called_with_arguments_uses_the_installed_name(capsys: pytest.CaptureFixture[str]) -> None:
    # Called from Python (not from a command line), sys.argv[0] is some other program's: the installed name is used.
    assert main(["stats"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("worker-supervisor: error: ")


def help_options(capsys: pytest.CaptureFixture[str], *command: str) -> set[str]:
    """The long options a command's --help lists."""
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    return {word.rstrip(",") for word in capsys.readouterr().out.split() if word.startswith("--")}


RUN_OPTIONS = {"--config", *(s.flag for s in SETTINGS)}  # every setting
DATABASE_OPTIONS = {"--config", "--db", "--statement-timeout"}


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (["run"], RUN_OPTIONS),
        (["status"], DATABASE_OPTIONS | {"--watch", "--json"}),
        (["health"], DATABASE_OPTIONS | {"--json"}),
        (["reload"], DATABASE_OPTIONS | {"--wait"}),
        (["nodes"], DATABASE_OPTIONS | {"--json"}),
        (["web"], DATABASE_OPTIONS | {"--listen"}),
        (["history", "x"], DATABASE_OPTIONS | {"--limit", "--run", "--json"}),
        (["failures"], DATABASE_OPTIONS | {"--limit", "--id", "--json"}),
        (["trigger", "x"], DATABASE_OPTIONS | {"--wait"}),
        (["pause", "x"], DATABASE_OPTIONS | {"--wait"}),
        (["resume", "x"], DATABASE_OPTIONS | {"--wait"}),
        (["prune"], DATABASE_OPTIONS | {"--keep-runs", "--failure-days"}),
        (["check"], {"--config", "--workers", "--import-timeout"}),
        (["systemd-unit"], {"--config", "--user"}),
    ],
)
def test_each_commands_help_lists_its_own_options_only(capsys: pytest.CaptureFixture[str], command: list[str],
                                                        options: set[str]) -> None:
    assert help_options(capsys, *command) == options | {"--help"}


def test_an_option_of_another_command_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "x", "--max-children", "3"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == "worker-supervisor: error: unrecognized arguments: --max-children 3 (see --help)"


@pytest.mark.parametrize("how", INVOCATIONS)
def test_options_before_the_command_apply_to_it(tmp_path: Path, how: str) -> None:
    argv, name = INVOCATIONS[how]
    db = tmp_path / "x.db"
    store = Store(f"sqlite:///{db}")
    store.open()  # what `run` does first: the tables, no workers yet
    store.close()
    result = run([*argv, "--db", f"sqlite:///{db}", "status"], tmp_path)
    assert result.returncode == 2 and result.stderr == "", result.stderr  # 2: no supervisor runs on it (issue 13)
    assert "0 worker(s)" in result.stdout
    # Given on both sides, the one after the command wins (it is the nearer, more specific one).
    result = run([*argv, "--db", f"sqlite:///{tmp_path}/other.db", "status", "--db", f"sqlite:///{db}"], tmp_path)
    assert result.returncode == 2 and result.stderr == "", result.stderr
    assert "0 worker(s)" in result.stdout
    # An option the command does not take is named, with where to look.
    result = run([*argv, "--workers", "jobs", "status"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"{name}: error: status takes no --workers (see {name} status --help)"]


def test_a_reading_commands_statement_timeout_is_not_held_to_runs_write_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "x.db"
    store = Store(f"sqlite:///{db}")
    store.open()
    store.close()
    # status takes no --write-timeout: a limit that only the recorder of `run` has cannot be held against it.
    # 2: no supervisor runs on the record (issue 13), not a refusal of the flag.
    assert main(["status", "--db", f"sqlite:///{db}", "--statement-timeout", "40"]) == 2, capsys.readouterr().err
    assert capsys.readouterr().err == ""
    capsys.readouterr()
    assert main(["run", "--db", f"sqlite:///{db}", "--statement-timeout", "40"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "statement_timeout (40s) must be shorter than write_timeout (30s)" in line
