"""The kernel's OOM killer takes a run, not the supervisor: the run is recorded `killed`, the supervisor lives on.

The supervisor is started in a memory cgroup of the test's own (cgroup v1 `memory.limit_in_bytes` or v2
`memory.max`, whichever this machine has and lets root write), with the OOM score systemd's unit gives it
(-500). A worker allocates without end; when the cgroup runs out, the kernel's OOM killer picks the process with
the highest score in it: the run (its own score, 200, and the memory it holds), never the supervisor.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from helpers import Record, wait_until, worker_package

HOG = '''
import os
from supervisor import worker


@worker(interval=600, timeout=120)
def hog(ctx):
    with open("/proc/self/oom_score_adj") as adj:
        print("oom_score_adj", adj.read().strip(), flush=True)
    hoard = []
    while True:
        hoard.append(bytearray(16 * 1024 * 1024))  # written, so the pages are really taken
'''
LIMIT = 300 * 1024 * 1024


def memory_cgroup_base() -> Path | None:
    """This process's memory cgroup directory, if root may make children there (v1 or v2)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            if (base / "memory.limit_in_bytes").exists() and os.access(base, os.W_OK):
                return base
        if number == "0" and controllers == "":
            base = Path("/sys/fs/cgroup") / path.lstrip("/")
            if "memory" in (base / "cgroup.subtree_control").read_text(errors="replace").split() and os.access(base, os.W_OK):
                return base
    return None


@pytest.fixture
def memory_cgroup() -> Iterator[Path]:
    base = memory_cgroup_base()
    if base is None:
        pytest.skip("no memory cgroup this user may create children in (needs root and the memory controller)")
    group = base / f"ws-oom-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    if (group / "memory.limit_in_bytes").exists():
        (group / "memory.limit_in_bytes").write_text(str(LIMIT))
        if (group / "memory.memsw.limit_in_bytes").exists():  # no escape into swap
            (group / "memory.memsw.limit_in_bytes").write_text(str(LIMIT))
    else:
        (group / "memory.max").write_text(str(LIMIT))
        (group / "memory.swap.max").write_text("0")
    yield group
    for pid in (group / "cgroup.procs").read_text().split():
        os.kill(int(pid), signal.SIGKILL)
    wait_until(lambda: not (group / "cgroup.procs").read_text().split(), timeout=10, what="the cgroup empty")
    group.rmdir()


def test_the_oom_killer_takes_the_run_and_the_supervisor_records_it(tmp_path: Path, db: Path, record: Record,
                                                                    memory_cgroup: Path) -> None:
    worker_package(tmp_path, ["healthy"], extra={"hog": HOG})
    log_path = tmp_path / "supervisor.log"
    # As systemd starts it with the shipped unit: in its cgroup, at OOMScoreAdjust=-500 (where this machine lets
    # root lower a score; some sandboxes do not, and it stays at 0).
    script = (f"echo $$ > {memory_cgroup / 'cgroup.procs'} && {{ echo -500 > /proc/self/oom_score_adj; }} 2>/dev/null;"
              f" exec {sys.executable} -m supervisor run --db sqlite:///{db}")
    with open(log_path, "wb") as log:
        supervisor = subprocess.Popen(["sh", "-c", script], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        (run,) = wait_until(lambda: record.runs("hog"), timeout=120, what="the hog's run recorded")
        assert run["outcome"] == "killed" and run["signal"] == signal.SIGKILL, dict(run)
        (failure,) = record.failures("hog")
        assert "oom_score_adj 200" in failure["stdout_tail"], failure["stdout_tail"]
        # The supervisor and its neighbours go on.
        assert supervisor.poll() is None
        before = len(record.runs("healthy"))
        wait_until(lambda: len(record.runs("healthy")) >= before + 3, timeout=30, what="healthy runs after the OOM")
        assert int(Path(f"/proc/{supervisor.pid}/oom_score_adj").read_text()) in (-500, 0)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(10)
