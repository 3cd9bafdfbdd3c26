"""Issue 11: a process a run starts in a session of its own dies with the supervisor tree, whatever part dies first.

Most tests run the `escaper` worker, whose run starts a process with `start_new_session=True` (out of the run's
process group, so the group kill that stops a run misses it) and waits; the others `daemonizer`, whose run
leaves a daemon behind (double fork) and ends. Then part of the tree is SIGKILLed, and the escaped process must be
dead within 2 s: when nothing of the tree is left to act, by the guard, or without the guard once the next
supervisor has started. Each runs twice: with the supervisor's cgroup (where the kernel lets us make one) and without (SUPERVISOR_CGROUP=0: the
subreaper and the record of escaped processes alone).

An escaped process that outlives a failing test is init's child, not ours, so the `escaped` fixture kills it.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from helpers import Record, SupervisorProcess, helper_of, spawner_of, wait_until, worker_package
from supervisor.cgroup import PREFIX, Cgroup, own_directory, sweep_stale

DEADLINE = 2.0  # seconds from the kill by which nothing the run started may be alive


@pytest.fixture(params=["cgroup", "no-cgroup"])
def containment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run with the supervisor's cgroup (skipped where none can be made) or with the cgroup turned off; without
    the guard (guard.py) unless a test asks for it, so that each other layer is tested on its own."""
    monkeypatch.setenv("SUPERVISOR_GUARD", "0")
    if request.param == "cgroup":
        probe, why = Cgroup.create()
        if probe is None:
            pytest.skip(f"no cgroup v2 with cgroup.kill can be made here: {why}")
        probe.remove()
    else:
        monkeypatch.setenv("SUPERVISOR_CGROUP", "0")
    return str(request.param)


@pytest.fixture
def escaped() -> Iterator[list[psutil.Process]]:
    """Escaped processes a test found; killed afterwards if still alive (psutil checks the start time too), and
    the cgroups of its SIGKILLed supervisors removed (a clean stop removes its own)."""
    found: list[psutil.Process] = []
    yield found
    for process in found:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    sweep_stale()


def alive(process: psutil.Process) -> bool:
    """Tell whether the process (the same one: psutil compares start times) runs and is not a zombie."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone(process: psutil.Process) -> bool:
    """Tell whether the process has been reaped (a zombie is not gone: nobody collected it)."""
    return not process.is_running()


def start_escaping_run(tmp_path: Path, start_supervisor: Any, escaped: list[psutil.Process]) -> tuple[
        SupervisorProcess, psutil.Process, psutil.Process, psutil.Process]:
    """Start a supervisor whose run has an escaped process; return (supervisor, spawner, run, escaped process)."""
    worker_package(tmp_path, ["escaper"])
    supervisor = start_supervisor()
    pid_file = wait_until(lambda: list(tmp_path.glob("escaped-*.pid")), timeout=60, what="the escaped process")[0]
    process = psutil.Process(int(pid_file.read_text()))
    escaped.append(process)
    spawner = spawner_of(supervisor)
    run_id = pid_file.name[len("escaped-"):-len(".pid")]
    (run,) = [p for p in spawner.children() if p.pid == process.ppid()]
    # Out of the run's group and session, so killing the run's group misses it; still in the supervisor's tree.
    assert os.getsid(process.pid) == process.pid != os.getpgid(run.pid) == run.pid
    assert process.pid in {p.pid for p in supervisor.descendants()}, run_id
    return supervisor, spawner, run, process


def start_daemonizing_run(tmp_path: Path, start_supervisor: Any, escaped: list[psutil.Process],
                          record: Record) -> tuple[SupervisorProcess, psutil.Process, psutil.Process]:
    """Start a supervisor whose run left a daemon and ended; return (supervisor, spawner, daemon)."""
    worker_package(tmp_path, ["daemonizer"])
    supervisor = start_supervisor()
    pid_file = wait_until(lambda: list(tmp_path.glob("daemon-*.pid")), timeout=60, what="the daemon")[0]
    daemon = psutil.Process(int(pid_file.read_text()))
    escaped.append(daemon)
    spawner = spawner_of(supervisor)
    # The middle process exits at once: the spawner, as subreaper, adopts the daemon.
    wait_until(lambda: daemon.ppid() == spawner.pid, timeout=10, what="the spawner to adopt the daemon")
    wait_until(lambda: record.outcomes("daemonizer") == ["succeeded"], timeout=30, what="the run's end")
    return supervisor, spawner, daemon


def kill_both_then_start_again(tmp_path: Path, start_supervisor: Any, containment: str, supervisor: SupervisorProcess,
                               spawner: psutil.Process, process: psutil.Process) -> None:
    """SIGKILL the supervisor and its spawner at once, then check the next start sweeps `process`."""
    if containment == "no-cgroup":
        # Without a cgroup, only what the spawner noted can be swept: wait until its survey has.
        wait_until(lambda: process.pid in noted(tmp_path), timeout=10, what="the spawner to note the escaped process")
    # Both at once, as the OOM killer or `kill -9` of the tree would: stopped first, so that neither acts on the
    # other's death (the supervisor would adopt and kill it; the spawner would shut down on its SIGTERM).
    supervisor.signal(signal.SIGSTOP)
    spawner.kill()
    supervisor.signal(signal.SIGKILL)
    supervisor.wait(10)
    wait_until(lambda: not alive(spawner), timeout=DEADLINE, what="the spawner to die")
    # Nothing of the tree is left to act: this is what the next start is for. (With no cgroup and no subreaper
    # above, the escaped process is init's now.)
    assert alive(process)
    left_behind = cgroups_of(supervisor.pid)
    assert len(left_behind) == (1 if containment == "cgroup" else 0)

    second = start_supervisor()
    # The sweep is part of the second supervisor's start-up, before its spawner starts.
    wait_until(lambda: "spawner ready" in second.log(), timeout=60, what="the second supervisor's spawner")
    assert not alive(process)
    # Any supervisor that starts beside it sweeps a cgroup whose owner is gone (that of a test running meanwhile
    # may come first), but only this one reads this journal's record.
    assert not any(path.exists() for path in left_behind)
    if containment == "no-cgroup":
        assert "left running" in second.log()
    assert second.stop() == 0


def cgroups_of(pid: int) -> list[Path]:
    """The supervisor cgroups of supervisor `pid` (present or left behind)."""
    return list(Path(own_directory()).glob(f"{PREFIX}{pid}.*"))


def noted(tmp_path: Path) -> set[int]:
    """The pids the record of escaped processes names (see escaped.py)."""
    try:
        data = json.loads((tmp_path / "supervisor.db.pending.escaped").read_text())
    except (FileNotFoundError, ValueError):
        return set()
    return {pid for pid, _start in data["processes"]}


def check_contained(containment: str, supervisor: SupervisorProcess, spawner: psutil.Process) -> None:
    """With a cgroup, the spawner is in the supervisor's cgroup."""
    if containment == "cgroup":
        (cgroup,) = cgroups_of(supervisor.pid)
        assert str(spawner.pid) in (cgroup / "cgroup.procs").read_text().split()


def test_issue_11_a_killed_spawner_takes_what_its_runs_started_along(
    tmp_path: Path, start_supervisor: Any, escaped: list[psutil.Process], containment: str
) -> None:
    supervisor, spawner, run, process = start_escaping_run(tmp_path, start_supervisor, escaped)
    check_contained(containment, supervisor, spawner)
    spawner.kill()
    killed_at = time.monotonic()
    wait_until(lambda: not alive(process) and not alive(run), timeout=DEADLINE,
               what="the run and its escaped process to die")
    assert time.monotonic() - killed_at < DEADLINE
    # The supervisor (its subreaper now) reaped it: no zombie piles up over a long run of spawner deaths.
    wait_until(lambda: gone(process), timeout=10, what="the escaped process to be reaped")
    assert supervisor.alive()

    # A new spawner carries on, its run escapes again, and a clean stop takes that one along too.
    newer = wait_until(lambda: [p for p in tmp_path.glob("escaped-*.pid") if int(p.read_text()) != process.pid],
                       timeout=60, what="a run of the new spawner")[0]
    second = psutil.Process(int(newer.read_text()))
    escaped.append(second)
    assert supervisor.stop() == 0
    assert not alive(second)
    assert cgroups_of(supervisor.pid) == []  # the cgroup is removed at a clean stop
    assert noted(tmp_path) == set()


def test_issue_11_a_killed_supervisor_takes_what_its_runs_started_along(
    tmp_path: Path, start_supervisor: Any, escaped: list[psutil.Process], containment: str
) -> None:
    supervisor, spawner, run, process = start_escaping_run(tmp_path, start_supervisor, escaped)
    # The spawner gets SIGTERM (its parent-death signal) and kills its runs' groups and what it adopted.
    supervisor.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: not alive(process) and not alive(run) and not alive(spawner), timeout=DEADLINE,
               what="the spawner, the run and its escaped process to die")
    assert time.monotonic() - killed_at < DEADLINE
    supervisor.wait(10)


def test_issue_11_what_a_double_sigkill_leaves_is_swept_by_the_next_start(
    tmp_path: Path, start_supervisor: Any, escaped: list[psutil.Process], containment: str
) -> None:
    supervisor, spawner, run, process = start_escaping_run(tmp_path, start_supervisor, escaped)
    kill_both_then_start_again(tmp_path, start_supervisor, containment, supervisor, spawner, process)
    assert not alive(run)  # its parent-death signal


def test_issue_11_a_daemon_a_finished_run_left_dies_with_a_killed_spawner(
    tmp_path: Path, start_supervisor: Any, escaped: list[psutil.Process], containment: str, record: Record
) -> None:
    supervisor, spawner, daemon = start_daemonizing_run(tmp_path, start_supervisor, escaped, record)
    spawner.kill()
    killed_at = time.monotonic()
    wait_until(lambda: not alive(daemon), timeout=DEADLINE, what="the daemon to die")
    assert time.monotonic() - killed_at < DEADLINE
    wait_until(lambda: gone(daemon), timeout=10, what="the daemon to be reaped")
    assert supervisor.stop() == 0


def test_issue_11_a_daemon_a_finished_run_left_is_swept_after_a_double_sigkill(
    tmp_path: Path, start_supervisor: Any, escaped: list[psutil.Process], containment: str, record: Record
) -> None:
    # With no run going, the spawner still notes what the ended run left it (no-cgroup).
    supervisor, spawner, daemon = start_daemonizing_run(tmp_path, start_supervisor, escaped, record)
    kill_both_then_start_again(tmp_path, start_supervisor, containment, supervisor, spawner, daemon)


def test_issue_11_a_spawner_meeting_its_dead_supervisors_channel_still_shuts_down(
    tmp_path: Path, start_supervisor: Any, escaped: list[psutil.Process], containment: str
) -> None:
    supervisor, spawner, run, process = start_escaping_run(tmp_path, start_supervisor, escaped)
    # The race, made to happen every time: the spawner is held still while its run ends and its supervisor is
    # SIGKILLed, so that when it goes on it reaps the run and reports its exit on the closed channel (EPIPE) in
    # the same pass that sees its SIGTERM. It used to exit right there, leaving the escaped process to init.
    spawner.suspend()
    run.kill()
    wait_until(lambda: process.ppid() == spawner.pid, timeout=10, what="the spawner (subreaper) to adopt the process")
    supervisor.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    supervisor.wait(10)
    spawner.resume()
    wait_until(lambda: not alive(process) and not alive(spawner), timeout=DEADLINE,
               what="the spawner and the escaped process to die")
    assert time.monotonic() - killed_at < DEADLINE


def kill_both(tmp_path: Path, containment: str, supervisor: SupervisorProcess, spawner: psutil.Process,
              process: psutil.Process) -> float:
    """SIGKILL the supervisor and its spawner at once; return when."""
    if containment == "no-cgroup":
        # Without a cgroup, only what the spawner noted can be killed: wait until its survey has.
        wait_until(lambda: process.pid in noted(tmp_path), timeout=10, what="the spawner to note the escaped process")
    supervisor.signal(signal.SIGSTOP)  # so that neither acts on the other's death (see kill_both_then_start_again)
    spawner.kill()
    supervisor.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    supervisor.wait(10)
    return killed_at


@pytest.mark.parametrize("leaves", ["escaper", "daemonizer"])
def test_issue_11_the_guard_takes_what_the_runs_started_along_when_both_are_sigkilled(
    tmp_path: Path, start_supervisor: Any, escaped: list[psutil.Process], containment: str, record: Record,
    monkeypatch: pytest.MonkeyPatch, leaves: str
) -> None:
    # Nothing of the tree is left to act, but the guard outlives it, and does at once what the next start would.
    monkeypatch.delenv("SUPERVISOR_GUARD")
    if leaves == "escaper":
        supervisor, spawner, _run, process = start_escaping_run(tmp_path, start_supervisor, escaped)
    else:
        supervisor, spawner, process = start_daemonizing_run(tmp_path, start_supervisor, escaped, record)
    guard = helper_of(supervisor, "guard")
    assert os.getpgid(guard.pid) == guard.pid and guard.num_threads() == 1
    killed_at = kill_both(tmp_path, containment, supervisor, spawner, process)
    wait_until(lambda: not alive(process), timeout=DEADLINE, what="the escaped process to die")
    assert time.monotonic() - killed_at < DEADLINE
    wait_until(lambda: not alive(guard), timeout=10, what="the guard to end once its work is done")
    assert not any(path.exists() for path in cgroups_of(supervisor.pid))


def test_issue_11_a_clean_stop_ends_the_guard(tmp_path: Path, start_supervisor: Any, escaped: list[psutil.Process],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUPERVISOR_GUARD", raising=False)
    supervisor, _spawner, _run, process = start_escaping_run(tmp_path, start_supervisor, escaped)
    guard = helper_of(supervisor, "guard")
    assert supervisor.stop() == 0
    assert not alive(guard) and not alive(process)
