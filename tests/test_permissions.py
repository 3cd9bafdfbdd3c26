"""Who can read and write the SQLite record (issue 11): its files are private by default, `database_group` lets a
group of monitoring users read it, the reading commands need no write access, and a directory the database cannot
live in is one line saying which and what is wrong.

The users are real: the record is made as root and read as `nobody` through setpriv (so these tests need root and
are skipped without it), in directories whose modes are what an administrator would set.
"""
from __future__ import annotations

import grp
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers import Record, wait_until, worker_package

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv to act as another user")


@pytest.fixture
def shared() -> Iterator[Path]:
    """A fresh directory that every user may pass through (not list), as /var/lib: the readers are other users.

    Not under tmp_path: pytest keeps its base directory 0700, and any pytest session that starts meanwhile makes
    it 0700 again, so another user could not reach a file there by its full path (SQLite opens by full path)."""
    path = Path(tempfile.mkdtemp(prefix="ws-permissions-", dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def monitoring_group() -> grp.struct_group:
    """A group `nobody` is not in, standing for the monitoring users' group."""
    for name in ("users", "staff", "adm"):
        try:
            return grp.getgrnam(name)
        except KeyError:
            continue
    pytest.skip("no group to stand for the monitoring users (users, staff or adm)")


def environment() -> dict[str, str]:
    env = {n: v for n, v in os.environ.items() if not n.startswith("SUPERVISOR_")}
    return {**env, "COLUMNS": "200", "PYTHONDONTWRITEBYTECODE": "1"}


def as_nobody(*args: str, cwd: Path, groups: list[int]) -> subprocess.CompletedProcess[str]:
    """Run `python -m supervisor ARGS` as the user nobody, with only `groups` as its supplementary groups."""
    who = ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", *who, "--", sys.executable, "-m", "supervisor", *args],
        cwd=cwd, env=environment(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


def as_nobody_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `python -c CODE` as nobody."""
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
                           sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60)


def one_error_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    (line,) = result.stderr.splitlines()
    # The program's name is as it was called (`python -m supervisor`, `worker-supervisor`).
    assert re.match(r"^\S+( -m supervisor)?: error: ", line) and "Traceback" not in result.stdout, result.stderr
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def modes(directory: Path) -> dict[str, tuple[int, int]]:
    """Each database file in `directory`: (permission bits, group)."""
    found = {}
    for name in ("supervisor.db", "supervisor.db-wal", "supervisor.db-shm"):
        try:
            st = os.stat(directory / name)
        except FileNotFoundError:
            continue
        found[name] = (stat.S_IMODE(st.st_mode), st.st_gid)
    return found


def test_issue_11_the_record_is_private_by_default(tmp_path: Path, record: Record, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["raises"])
    supervisor = start_supervisor()
    wait_until(lambda: record.failures("raises"), what="a failure on record")
    files = modes(tmp_path)
    assert set(files) == {"supervisor.db", "supervisor.db-wal", "supervisor.db-shm"}, files
    assert {mode for mode, _group in files.values()} == {0o600}, files
    assert supervisor.stop() == 0


def test_issue_11_a_monitoring_group_reads_the_record_with_no_write_access(
    tmp_path: Path, shared: Path, start_supervisor: Any
) -> None:
    group = monitoring_group()
    home = shared / "state"
    home.mkdir()
    os.chown(home, 0, group.gr_gid)
    home.chmod(0o750)  # what an administrator gives the record's directory: the group may enter, not write
    worker_package(tmp_path, ["raises"])
    db = home / "supervisor.db"
    supervisor = start_supervisor("--database-group", group.gr_name, url=f"sqlite:///{db}")
    wait_until(lambda: Record(db).failures("raises"), what="a failure on record")
    expected = {name: (0o640, group.gr_gid) for name in ("supervisor.db", "supervisor.db-wal", "supervisor.db-shm")}
    assert modes(home) == expected
    url = f"sqlite:///{db}"
    readings = {
        "status": ["status", "--db", url],
        "history": ["history", "raises", "--db", url],
        "failures": ["failures", "--db", url],
        "failure": ["failures", "--id", "1", "--db", url],
    }

    def read_all(when: str, status_line: str) -> None:
        before = modes(home)
        for what, args in readings.items():
            result = as_nobody(*args, cwd=home, groups=[group.gr_gid])
            # status exits 2 when it finds no supervisor running (issue 13); every reading succeeds.
            code = 2 if what == "status" and status_line == "no supervisor is running" else 0
            assert result.returncode == code, (when, what, result.stdout, result.stderr, modes(home), os.listdir(home))
            assert "raises" in result.stdout, (when, what, result.stdout)
            if what == "status":
                assert result.stdout.splitlines()[0].startswith(status_line), (when, result.stdout)
        assert modes(home) == before, when  # reading created or changed nothing

    # The lock file is the supervisor's user's alone: a monitoring user cannot tell from it, and says so.
    read_all("while the supervisor runs", f"supervisor: unknown (cannot read {db}.lock: Permission denied)")
    # A monitoring user may not send commands, and is told so in one line (it was SQLite's "attempt to write a
    # readonly database" and a hint to check the URL).
    line = one_error_line(as_nobody("trigger", "raises", "--db", url, cwd=home, groups=[group.gr_gid]), 1)
    assert "writes to the database" in line and "may only read" in line, line
    # A user outside the group is told what stops it, in one line.
    line = one_error_line(as_nobody("status", "--db", url, cwd=home, groups=[]), 1, "supervisor.db")
    assert "permission denied" in line.lower(), line
    assert supervisor.stop() == 0
    # Stopped cleanly, SQLite removes the -wal and -shm files; a reader who cannot create them reads the file.
    assert set(modes(home)) == {"supervisor.db"}
    read_all("after the supervisor stopped", "no supervisor is running")
    assert sorted(os.listdir(home)) == ["supervisor.db", "supervisor.db.pending"]
    assert stat.S_IMODE(os.stat(home / "supervisor.db.pending").st_mode) == 0o600


def test_a_reader_without_write_access_is_told_to_let_run_make_the_schema(shared: Path) -> None:
    home = shared / "state"
    home.mkdir()
    home.chmod(0o755)
    (home / "supervisor.db").write_bytes(b"")  # a record no supervisor has made the tables of yet
    (home / "supervisor.db").chmod(0o644)
    line = one_error_line(as_nobody("status", "--db", f"sqlite:///{home}/supervisor.db", cwd=home, groups=[]), 1,
                          "start `run` once")
    assert "schema" in line, line
    assert sorted(os.listdir(home)) == ["supervisor.db"]


def interpreter_for_nobody(cwd: Path) -> tuple[str, dict[str, str]]:
    """An interpreter `nobody` may start again from within itself (as `check` starts a spawner), and the
    environment that lets it import our package and its dependencies.

    This one's, if nobody may execute it; else (a virtualenv whose python links into root's home, as here) the
    system's python of the same version, given our checkout and the virtualenv's site-packages on its path.
    """
    probe = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'pass'], check=True)"
    if as_nobody_python(probe, cwd=cwd).returncode == 0:
        return sys.executable, environment()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/bin:/usr/local/bin")
    if system is None:
        pytest.skip(f"nobody may not execute {sys.executable}, and there is no system {version}")
    import supervisor

    paths = [os.path.dirname(os.path.dirname(supervisor.__file__)), *sysconfig.get_paths().values()]
    return system, {**environment(), "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def test_issue_11_check_needs_no_write_access(tmp_path: Path, shared: Path) -> None:
    # `check` imports the workers in a spawner, a fresh interpreter: nobody must be able to start one.
    python, env = interpreter_for_nobody(tmp_path)
    home = shared / "state"
    home.mkdir()
    home.chmod(0o755)
    worker_package(home, ["raises"])
    result = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", python,
                             "-m", "supervisor", "check", "--workers", "workers"],
                            cwd=home, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "raises" in result.stdout and sorted(os.listdir(home)) == ["workers"]


def test_issue_11_run_in_an_unusable_directory_says_which_directory_and_what_is_wrong(
    tmp_path: Path, shared: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    locked = shared / "locked"
    locked.mkdir()
    locked.chmod(0o755)  # nobody may enter, not write
    worker_package(locked, ["raises"])
    cases = [
        (tmp_path / "missing" / "x.db", f"directory {tmp_path}/missing does not exist"),
        (tmp_path / "a-file" / "x.db", f"{tmp_path}/a-file is not a directory"),
    ]
    for path, what in cases:
        result = subprocess.run([sys.executable, "-m", "supervisor", "run", "--db", f"sqlite:///{path}"],
                                cwd=locked, env=environment(), capture_output=True, text=True, timeout=60)
        one_error_line(result, 1, what)
    result = as_nobody("run", "--db", "sqlite:///x.db", cwd=locked, groups=[])
    one_error_line(result, 1, f"directory {locked} is not writable", "-wal")
    assert sorted(os.listdir(locked)) == ["workers"]


def test_a_directory_the_group_cannot_enter_is_said_at_start(tmp_path: Path, start_supervisor: Any) -> None:
    group = monitoring_group()
    home = tmp_path / "state"
    home.mkdir()
    home.chmod(0o700)
    worker_package(tmp_path, ["raises"])
    db = home / "supervisor.db"
    supervisor = start_supervisor("--database-group", group.gr_name, url=f"sqlite:///{db}")
    wait_until(lambda: "cannot enter" in supervisor.log(), what="the warning about the directory")
    (line,) = [line for line in supervisor.log().splitlines() if "cannot enter" in line]
    assert f"members of group {group.gr_name} cannot enter {home}" in line and "chmod g+x" in line, line
    assert supervisor.stop() == 0


def test_an_unknown_database_group_is_one_line(tmp_path: Path) -> None:
    worker_package(tmp_path, ["raises"])
    result = subprocess.run([sys.executable, "-m", "supervisor", "run", "--database-group", "no-such-group-here"],
                            cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=60)
    one_error_line(result, 2, "no group named 'no-such-group-here'")
    assert sorted(os.listdir(tmp_path)) == ["workers"]
