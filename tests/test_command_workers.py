"""External commands as workers: each run's child execs the command, whose exit status is the run's outcome.

The process tests run real supervisors on packages of modules that register CommandWorkers; the definition tests
are pure; the config's command workers are checked through `check` and run through a SpawnerLink of our own.
"""
from __future__ import annotations

import grp
import os
import pwd
import selectors
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import pytest

from helpers import Record, pid_alive, wait_until, worker_package
from supervisor import WorkerDefinitionError
from supervisor.operate.check import check, describe
from supervisor.spawn.command import CommandWorker
from supervisor.protocol import COMMANDS_ENV
from supervisor.supervise.spawner_link import SpawnerLink

INTERVAL = 0.3


def command_module(**spec: Any) -> str:
    """Source of a worker module that registers one CommandWorker built from `spec`."""
    return (
        "from supervisor import register\n"
        "from supervisor.spawn.command import CommandWorker\n\n"
        f"register(CommandWorker(**{spec!r}))\n"
    )


def stderr_lines(failure: Any) -> list[str]:
    return [line for line in failure["stderr_tail"].splitlines() if line.strip()]


# -- outcomes of real commands ------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    spec: Callable[[Path], dict[str, Any]]
    outcome: str
    exit_code: int | None = None
    signal: int | None = None
    check: Callable[[Any, Path], None] = field(default=lambda failure, cwd: None)


def stderr_tail_kept(failure: Any, cwd: Path) -> None:
    assert failure["message"] == "exited with status 3"
    assert "about to fail" in failure["stderr_tail"]


def env_and_cwd_reached_it(failure: Any, cwd: Path) -> None:
    lines = stderr_lines(failure)
    assert "GREETING=hello there" in lines, lines
    assert "INHERITED=from the supervisor" in lines, lines  # env is added to the supervisor's environment
    assert f"PWD={os.path.realpath(cwd / 'elsewhere')}" in lines, lines
    assert not any(COMMANDS_ENV in line for line in lines), lines


def argv_taken_literally(failure: Any, cwd: Path) -> None:
    assert stderr_lines(failure) == ["$HOME|a;b|*|`id`|"]


def shell_ran_it(failure: Any, cwd: Path) -> None:
    assert stderr_lines(failure) == ["hi from /bin/sh"]


def no_such_program(failure: Any, cwd: Path) -> None:
    assert failure["message"] == "CommandStartError: cannot run ['no-such-program-cw']: No such file or directory"


def no_such_directory(failure: Any, cwd: Path) -> None:
    assert failure["message"] == (
        f"CommandStartError: cannot run ['true'] in {str(cwd / 'missing')!r}: No such file or directory"
    )


def signals_at_their_defaults(failure: Any, cwd: Path) -> None:
    masks = dict(line.split(":\t") for line in stderr_lines(failure))
    # Nothing blocked (a SIGTERM reaches the command), and no standard signal ignored (SIGPIPE ends a pipeline's
    # writer). Signals 32 and 33 are glibc's own: its posix_spawn, which starts the spawner, marks them ignored,
    # and glibc installs its handlers for them itself in each program that needs them.
    assert int(masks["SigBlk"], 16) == 0, masks
    assert int(masks["SigIgn"], 16) & ((1 << 31) - 1) == 0, masks


CASES = [
    Case("exits0", lambda tmp: {"command": ["sh", "-c", "echo out; echo err >&2"]}, "succeeded", exit_code=0),
    Case("exits3", lambda tmp: {"command": ["sh", "-c", "echo about to fail >&2; exit 3"]}, "exit", exit_code=3,
         check=stderr_tail_kept),
    Case("segv", lambda tmp: {"command": ["sh", "-c", "kill -SEGV $$"]}, "crash", signal=signal.SIGSEGV),
    Case("envcwd", lambda tmp: {"command": ["sh", "-c", '{ echo "GREETING=$GREETING"; echo "INHERITED=$CW_INHERITED"; '
                                            'echo "PWD=$(pwd -P)"; env; } >&2; exit 1'],
                                "env": {"GREETING": "hello there"}, "cwd": str(tmp / "elsewhere")},
         "exit", exit_code=1, check=env_and_cwd_reached_it),
    Case("literal", lambda tmp: {"command": ["sh", "-c", 'printf "%s|" "$@" >&2; echo >&2; exit 1', "sh",
                                             "$HOME", "a;b", "*", "`id`"]},
         "exit", exit_code=1, check=argv_taken_literally),
    Case("shell", lambda tmp: {"command": 'echo "$GREETING from $0" >&2; exit 4', "shell": True,
                               "env": {"GREETING": "hi"}},
         "exit", exit_code=4, check=shell_ran_it),
    Case("nosuch", lambda tmp: {"command": ["no-such-program-cw"]}, "error", exit_code=1, check=no_such_program),
    Case("badcwd", lambda tmp: {"command": ["true"], "cwd": str(tmp / "missing")}, "error", exit_code=1,
         check=no_such_directory),
    Case("signals", lambda tmp: {"command": ["sh", "-c", 'grep -E "^Sig(Blk|Ign)" /proc/self/status >&2; exit 1']},
         "exit", exit_code=1, check=signals_at_their_defaults),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_command_outcome_is_recorded(case: Case, tmp_path: Path, record: Record, start_supervisor: Any,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CW_INHERITED", "from the supervisor")
    (tmp_path / "elsewhere").mkdir()
    spec = {"name": case.name, "interval": INTERVAL, **case.spec(tmp_path)}
    worker_package(tmp_path, [], extra={case.name: command_module(**spec)})
    supervisor = start_supervisor()
    runs = wait_until(lambda: len(record.runs(case.name)) >= 2 and record.runs(case.name), timeout=60,
                      what=f"two finished runs of {case.name}")
    assert supervisor.alive(), supervisor.log()

    failures = {f["run_id"]: f for f in record.failures(case.name)}
    for run in runs:
        assert run["outcome"] == case.outcome, (run["outcome"], dict(failures.get(run["id"], {})), supervisor.log())
        assert run["exit_code"] == case.exit_code
        assert run["signal"] == case.signal
        if case.outcome == "succeeded":
            assert run["id"] not in failures
            continue
        failure = failures[run["id"]]
        assert failure["kind"] == case.outcome
        case.check(failure, tmp_path)
    assert supervisor.stop() == 0


# -- the process a command runs as ---------------------------------------------------------------------------------

SLEEPER = ["sh", "-c", "sleep 600 & echo $! > sleep.pid; wait"]


def running(record: Record, worker: str) -> list[Any]:
    return [r for r in record.runs(worker, finished=False) if r["finished_at"] is None and r["pid"]]


def open_fds(pid: int) -> set[int]:
    return {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}


def test_the_command_replaces_the_child_and_holds_only_its_stdio(tmp_path: Path, record: Record,
                                                                 start_supervisor: Any) -> None:
    worker_package(tmp_path, [], extra={"sleeper": command_module(name="sleeper", command=SLEEPER, interval=600)})
    supervisor = start_supervisor()
    (run,) = wait_until(lambda: running(record, "sleeper"), timeout=60, what="the run in progress")
    pid_file = tmp_path / "sleep.pid"
    sleep_pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=30,
                               what="the sleep's pid"))
    # The run's own process is the command now (no Python left), and the result pipe (fd 3) did not survive exec.
    assert psutil.Process(run["pid"]).cmdline() == SLEEPER
    assert 3 not in open_fds(run["pid"])
    assert open_fds(sleep_pid) == {0, 1, 2}
    assert psutil.Process(sleep_pid).ppid() == run["pid"]

    assert supervisor.stop() == 0
    (stopped,) = record.runs("sleeper")
    assert stopped["outcome"] == "interrupted" and stopped["signal"] == signal.SIGTERM
    wait_until(lambda: not pid_alive(sleep_pid), timeout=10, what="the sleep to be gone")


def test_a_command_past_its_timeout_is_stopped_with_its_process_group(tmp_path: Path, record: Record,
                                                                      start_supervisor: Any) -> None:
    spec = {"name": "sleeper", "command": SLEEPER, "interval": 600, "timeout": 0.5, "grace": 30}
    worker_package(tmp_path, [], extra={"sleeper": command_module(**spec)})
    supervisor = start_supervisor()
    (run,) = wait_until(lambda: record.runs("sleeper"), timeout=60, what="the run to be stopped")
    # SIGTERM alone ended it, well within its 30 s grace: the signal reached the exec'd command.
    assert run["outcome"] == "timeout" and run["signal"] == signal.SIGTERM, supervisor.log()
    (failure,) = record.failures("sleeper")
    assert failure["message"] == "stopped after its timeout of 0.5s"
    sleep_pid = int((tmp_path / "sleep.pid").read_text())
    wait_until(lambda: not pid_alive(sleep_pid), timeout=10, what="the sleep in the run's group to be gone")
    assert supervisor.alive()


@pytest.mark.skipif(os.geteuid() != 0, reason="running a command as another user needs the tests to run as root")
def test_a_command_runs_as_another_user(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("this system has no user 'nobody'")
    script = 'id -u; id -g; id -G; echo "HOME=$HOME USER=$USER LOGNAME=$LOGNAME"'
    spec = {"name": "as_nobody", "command": ["sh", "-c", "{ " + script + "; } >&2; exit 1"], "user": "nobody",
            "interval": 600}
    worker_package(tmp_path, [], extra={"as_nobody": command_module(**spec)})
    supervisor = start_supervisor()
    (run,) = wait_until(lambda: record.runs("as_nobody"), timeout=60, what="the run as nobody")
    assert run["outcome"] == "exit" and run["exit_code"] == 1, supervisor.log()
    (failure,) = record.failures("as_nobody")
    uid, gid, groups, names = stderr_lines(failure)
    assert (int(uid), int(gid)) == (nobody.pw_uid, nobody.pw_gid)
    # nobody's own groups, and not root's: group 0 did not come along.
    assert set(map(int, groups.split())) == set(os.getgrouplist("nobody", nobody.pw_gid))
    assert names == f"HOME={nobody.pw_dir} USER=nobody LOGNAME=nobody"
    assert supervisor.stop() == 0



PDEATHSIG_AFTER_SWITCH = """
import ctypes, os, signal
from supervisor.spawn.command import resolve_identity
from supervisor.process import die_with_parent

die_with_parent(signal.SIGKILL, os.getppid())
resolve_identity("nobody", None).assume()
found = ctypes.c_int()
ctypes.CDLL(None).prctl(2, ctypes.byref(found), 0, 0, 0)  # PR_GET_PDEATHSIG
print(os.getuid(), found.value)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="running a command as another user needs the tests to run as root")
def test_switching_user_keeps_the_parent_death_signal() -> None:
    # The kernel clears it when credentials change; a command that lost it would outlive a killed spawner.
    done = subprocess.run([sys.executable, "-c", PDEATHSIG_AFTER_SWITCH], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == [str(pwd.getpwnam("nobody").pw_uid), str(int(signal.SIGKILL))], done.stderr



CANCELLED_BEFORE_EXEC = """
import logging, os
from supervisor.spawn.command import CommandWorker
from supervisor.worker import RunContext

os.dup2(os.open(os.devnull, os.O_WRONLY), 3)  # where a run's result pipe is
ctx = RunContext("run-1", "echo", 1, None, logging.getLogger(), is_cancelled=lambda: True)
CommandWorker(name="echo", command=["echo", "the command ran"], interval=1).run(ctx)
"""


def test_a_stop_request_that_came_while_starting_ends_the_run_by_sigterm_before_exec() -> None:
    done = subprocess.run([sys.executable, "-c", CANCELLED_BEFORE_EXEC], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (-signal.SIGTERM, ""), done.stderr

# -- definitions ---------------------------------------------------------------------------------------------------


def test_definition_carries_the_argv_the_settings_and_the_declaring_module() -> None:
    definition = CommandWorker(name="backup", command=["tar", "czf", "/tmp/x.tgz", "$HOME"], interval="1h",
                               timeout=30).definition()
    assert definition.command == ("tar", "czf", "/tmp/x.tgz", "$HOME")
    assert (definition.name, definition.interval, definition.timeout, definition.module) == ("backup", 3600.0, 30.0,
                                                                                           __name__)


def test_a_string_is_split_into_words_but_runs_in_a_shell_only_when_asked() -> None:
    assert CommandWorker(name="a", command="echo 'a b' $HOME; x").command_argv() == ("echo", "a b", "$HOME;", "x")
    assert CommandWorker(name="b", command="echo $HOME; x", shell=True).command_argv() == ("/bin/sh", "-c",
                                                                                            "echo $HOME; x")


def test_a_name_is_required() -> None:
    with pytest.raises(WorkerDefinitionError, match="a command worker needs a name"):
        CommandWorker(command=["true"], interval=1)


def test_an_unknown_setting_is_named() -> None:
    with pytest.raises(WorkerDefinitionError, match="unknown setting 'intervall'; did you mean 'interval'"):
        CommandWorker(name="x", command=["true"], intervall=1)


BAD = [
    ({"command": []}, "command must be a non-empty list of strings, got []"),
    ({"command": None}, "command must be a non-empty list of strings, got None"),
    ({"command": "  "}, "command must be a non-empty list of strings, got []"),
    ({"command": ["echo", 3]}, "command must be a non-empty list of strings, got ['echo', 3]"),
    ({"command": "echo 'open"}, "command \"echo 'open\" cannot be split into words: No closing quotation"),
    ({"command": ["echo", "hi"], "shell": True}, "command must be a non-empty string when shell is true"),
    ({"command": ["true"], "shell": "yes"}, "shell must be true or false, got 'yes'"),
    ({"command": ["true"], "env": {"A": 1}}, "env must map variable names to strings, got {'A': 1}"),
    ({"command": ["true"], "env": ["A=1"]}, "env must map variable names to strings"),
    ({"command": ["true"], "env": {"A=B": "1"}}, "env has 'A=B', which is not a variable name"),
    ({"command": ["true"], "cwd": 5}, "cwd must be a directory path, got 5"),
    ({"command": ["true"], "user": "no-such-user-cw"}, "user 'no-such-user-cw' does not exist"),
    ({"command": ["true"], "group": "no-such-group-cw"}, "group 'no-such-group-cw' does not exist"),
    ({"command": ["true"], "user": 4_000_000}, "user 4000000 has no entry in the password database; give its group"),
]


@pytest.mark.parametrize(("settings", "message"), BAD, ids=[m.split(",")[0][:40] for _, m in BAD])
def test_bad_command_settings_are_named(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(WorkerDefinitionError) as caught:
        CommandWorker(name="bad", interval=1, **settings).definition()
    assert caught.value.message.startswith(message), caught.value.message
    assert caught.value.where == f"worker 'bad' in {__name__}"


def test_switching_user_or_group_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 4321)
    monkeypatch.setattr(os, "getegid", lambda: 4321)
    with pytest.raises(WorkerDefinitionError, match=r"^user 'nobody' needs the supervisor to run as root"):
        CommandWorker(name="x", command=["true"], interval=1, user="nobody").definition()
    with pytest.raises(WorkerDefinitionError, match=r"^group 'root' needs the supervisor to run as root"):
        CommandWorker(name="x", command=["true"], interval=1, group="root").definition()
    # Being who we already are is no switch at all.
    CommandWorker(name="x", command=["true"], interval=1, user=4321, group="4321").definition()


def test_the_supervisors_own_user_needs_no_switch() -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name
    own_group = grp.getgrgid(os.getegid()).gr_name
    assert CommandWorker(name="me", command=["true"], interval=1, user=me, group=own_group).definition().command == (
        "true",)


# -- command workers from the config -------------------------------------------------------------------------------

PYTHON_WORKER = "from supervisor import worker\n\n\n@worker(interval=60)\ndef python_one(ctx):\n    pass\n"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in the test's directory: the spawner imports worker packages from its cwd."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_check_reports_the_configs_command_workers(in_tmp: Path) -> None:
    worker_package(in_tmp, [], name="cw_pkg", extra={"jobs": PYTHON_WORKER})
    commands = [
        {"name": "nightly", "command": ["backup", "--all"], "env": {"TOKEN": "s3cret"}, "cwd": "/srv", "interval": "1d",
         "timeout": 600},
        {"name": "bad-user", "command": ["true"], "user": "no-such-user-cw", "interval": 60},
        {"command": ["true"], "interval": 60},
        {"name": "python_one", "command": ["true"], "interval": 60},
        {"name": "clash", "command": ["true"], "interval": 60, "origin": "elsewhere"},
    ]
    findings = check(["cw_pkg"], 30.0, {}, commands=commands)
    assert {(d.name, d.module, d.command, d.interval, d.timeout) for d in findings.workers} == {
        ("python_one", "cw_pkg.jobs", None, 60.0, None),
        ("nightly", "config", ("backup", "--all"), 86400.0, 600.0),
    }
    assert [p.text for p in findings.problems] == [
        "invalid worker: user 'no-such-user-cw' does not exist (worker 'bad-user' in config)",
        "invalid worker 'command #3' in config: a command worker needs a name (command ['true'] in config)",
        "invalid worker 'python_one' in config: name 'python_one' is already used by a worker in cw_pkg.jobs (config)",
        "invalid worker: supervisor.spawn.command.CommandWorker() got multiple values for keyword argument 'origin' "
        "(worker 'clash' in config)",
    ]
    assert findings.invalid_workers == ["bad-user", "command #3", "python_one", "clash"]


@pytest.fixture
def spawner(in_tmp: Path) -> Iterator[Callable[..., SpawnerLink]]:
    """Start SpawnerLinks of our own; each is closed (EOF on its channel), reaped and released afterwards."""
    links: list[SpawnerLink] = []

    def start(commands: list[dict[str, Any]]) -> SpawnerLink:
        link = SpawnerLink([], set(), commands)
        links.append(link)
        link.start()
        return link

    yield start
    for link in links:
        if not link.channel_closed:
            link.close_channel()
        with selectors.DefaultSelector() as selector:
            selector.register(link.pidfd, selectors.EVENT_READ)
            if not selector.select(10):
                link.kill()
        link.reap()
        link.close()


def test_a_config_command_worker_runs_in_the_spawner_without_the_specs_in_its_environment(
    spawner: Callable[..., SpawnerLink]
) -> None:
    link = spawner([{"name": "env_dump", "command": ["sh", "-c", "env >&2"], "env": {"ADDED": "yes"}, "interval": 60}])
    messages: list[dict[str, Any]] = []
    wait_until(lambda: messages.extend(link.messages()) or any(m["op"] == "ready" for m in messages), timeout=30,
               what="the spawner to be ready")
    (reported,) = [m["definition"] for m in messages if m["op"] == "worker"]
    assert (reported["name"], reported["module"]) == ("env_dump", "config")
    assert reported["command"] == ["sh", "-c", "env >&2"]

    pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(3)]
    link.spawn("run-1", "env_dump", 1, None, [w for _, w in pipes])  # the link closes the write ends once sent
    result_r, stdout_r, stderr_r = (r for r, _ in pipes)
    try:
        exited = wait_until(lambda: [m for m in link.messages() if m["op"] == "exited"], timeout=30, what="the exit")
        assert os.waitstatus_to_exitcode(exited[0]["status"]) == 0
        stderr = b""
        while chunk := os.read(stderr_r, 65536):
            stderr += chunk
        assert os.read(result_r, 100) == b""  # exec closed the result pipe: no result message, EOF
    finally:
        for fd in (result_r, stdout_r, stderr_r):
            os.close(fd)
    environment = dict(line.split("=", 1) for line in stderr.decode().splitlines() if "=" in line)
    assert environment["ADDED"] == "yes"
    assert COMMANDS_ENV not in environment


def test_check_describes_a_config_command_worker_on_a_cron_schedule(in_tmp: Path) -> None:
    worker_package(in_tmp, [], name="cw_cron", extra={"jobs": PYTHON_WORKER})
    commands = [{"name": "nightly", "command": ["backup"], "cron": "0 3 * * *", "timezone": "Europe/Berlin"}]
    findings = check(["cw_cron"], 30.0, {}, commands=commands)
    (nightly,) = [d for d in findings.workers if d.name == "nightly"]
    assert describe(nightly, False) == ["nightly", "cron 0 3 * * * (Europe/Berlin)", "no timeout", "grace 5s", "config"]



# -- declared in the config file, run by `python -m supervisor run --config` ----------------------------------------


def test_a_command_worker_declared_in_the_config_runs_and_is_recorded(
    tmp_path: Path, db: Path, record: Record, start_supervisor: Any
) -> None:
    worker_package(tmp_path, ["healthy"])
    supervisor = start_supervisor(
        config='[worker.nightly-export]\n'
        'command = ["sh", "-c", "echo exporting $TABLE >&2; exit 4"]\n'
        'env = { TABLE = "orders" }\n'
        'interval = "1h"\n'
        'timeout = "10s"\n'
    )
    wait_until(lambda: record.outcomes("nightly-export"), timeout=60, what="the command's run")
    assert record.outcomes("nightly-export") == ["exit"]
    (failure,) = record.failures("nightly-export")
    assert failure["message"] == "exited with status 4" and failure["exit_code"] == 4
    assert stderr_lines(failure) == ["exporting orders"]
    row = record.worker("nightly-export")
    assert row is not None and row["module"] == "config" and row["schedule"] == "every 1h"
    assert supervisor.stop() == 0
