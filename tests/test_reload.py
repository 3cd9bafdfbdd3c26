"""A reload (SIGHUP): the config and the worker modules read again while a long run goes on undisturbed.

Added workers start, removed ones stop being scheduled, a changed schedule and changed code apply from a new
spawner; the old spawner finishes its run and exits; a broken config changes nothing and is reported.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from helpers import Record, title, wait_until, worker_package

LONG = '''
from supervisor import worker


@worker(interval=3600, timeout=60)
def long(ctx):
    ctx.sleep(12)
'''
BEAT = '''
from supervisor import worker

VERSION = "{version}"


@worker(interval=1)
def beat(ctx):
    print("beat", VERSION)
'''
GONE = '''
from supervisor import worker


@worker(interval=0.5)
def gone(ctx):
    pass
'''
ADDED = '''
from supervisor import worker


@worker(interval=0.5)
def added(ctx):
    pass
'''


SLOW_IMPORT = '''
import os

if not os.path.exists("{gate}.passed"):  # only the reload's spawner waits; a later one imports at once
    with open("{gate}") as gate:
        gate.read()
    open("{gate}.passed", "w").close()
'''


def release(gate: Path) -> None:
    """Let the import waiting on the FIFO go on: open it for writing (which fails until its reader is there)."""
    def opened() -> int | None:
        try:
            return os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: the import has not opened it yet
            return None
    os.close(wait_until(opened, timeout=30, what="the import waiting on its gate"))


def spawners(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children() if "worker-supervisor: spawner" in title(p)]


def test_sighup_applies_added_removed_and_changed_workers_while_a_long_run_goes_on(
        tmp_path: Path, db: Path, record: Record, start_supervisor: Any) -> None:
    package = worker_package(tmp_path, [], extra={"long": LONG, "beat": BEAT.replace("{version}", "v1"), "gone": GONE})
    supervisor = start_supervisor(config="workers = [\"workers\"]\n")
    (long_run,) = wait_until(lambda: [r for r in record.runs("long", finished=False) if r["pid"]], timeout=60,
                             what="the long run")
    wait_until(lambda: record.runs("beat") and record.runs("gone"), timeout=30, what="beat and gone ran")
    (old_spawner,) = spawners(supervisor.pid)
    # The new config: beat every 2 s, with new code; gone removed; added added.
    (tmp_path / "supervisor.toml").write_text("workers = [\"workers\"]\n\n[worker.beat]\ninterval = 2\n")
    (package / "beat.py").write_text(BEAT.replace("{version}", "v2"))
    (package / "gone.py").unlink()
    (package / "added.py").write_text(ADDED)
    # A module whose import waits until the test lets it go (reading a FIFO blocks until someone writes to it):
    # the new spawner is not ready until then.
    gate = tmp_path / "import-gate"
    os.mkfifo(gate)
    (package / "slow_import.py").write_text(SLOW_IMPORT.replace("{gate}", str(gate)))
    supervisor.signal(signal.SIGHUP)
    sighup_at = time.time()
    # Meanwhile beat's slots still run, on the old spawner: a reload holds no due run back.
    wait_until(lambda: len([r for r in record.runs("beat") if _started(r) > sighup_at]) >= 3, timeout=30,
               what="beat running while the new spawner imports")
    assert "reload: " not in supervisor.log()
    release(gate)
    said = wait_until(lambda: re.search(r"reload: (.*)", supervisor.log()), timeout=30, what="the reload's line")
    reloaded_at = time.time()
    assert said.group(1) == "added: added; removed: gone; changed: beat (interval 1s → 2s)", said.group(0)
    # The long run goes on on the old spawner, undisturbed; the new runs come from a new one.
    assert psutil.pid_exists(long_run["pid"]) and psutil.Process(long_run["pid"]).ppid() == old_spawner.pid
    wait_until(lambda: record.runs("added"), timeout=30, what="the added worker's run")
    assert {p.pid for p in spawners(supervisor.pid)} - {old_spawner.pid}
    # The long run ends as it would have, once; then the old spawner exits.
    (ended,) = wait_until(lambda: [r for r in record.runs("long") if r["id"] == long_run["id"]], timeout=30,
                          what="the long run's end")
    assert ended["outcome"] == "succeeded" and len(record.runs("long", finished=False)) == 1
    wait_until(lambda: not psutil.pid_exists(old_spawner.pid) or old_spawner.status() == psutil.STATUS_ZOMBIE,
               timeout=30, what="the old spawner gone")
    # gone is no longer scheduled; beat runs the new code every 2 s.
    settle = time.time() + 5
    wait_until(lambda: time.time() > settle, timeout=10, step=0.1)
    late_gone = [r for r in record.runs("gone") if _started(r) > reloaded_at + 0.5]
    assert not late_gone, late_gone
    # No slot of beat was lost to the reload, however long the new spawner took to import.
    around = sorted(_started(r) for r in record.runs("beat"))
    assert max(b - a for a, b in zip(around, around[1:])) < 2.6, around
    beats = [r for r in record.runs("beat") if _started(r) > reloaded_at + 0.5]
    assert len(beats) >= 2
    spacing = [b - a for a, b in zip(sorted(map(_started, beats)), sorted(map(_started, beats))[1:])]
    # Every 2 s now, not every second (a loaded machine may start one a little late).
    assert all(gap > 1.5 for gap in spacing) and sorted(spacing)[len(spacing) // 2] < 2.5, spacing
    output = record.query("select stdout_tail from output where run_id = ?", beats[-1]["id"])
    assert output and "beat v2" in output[0]["stdout_tail"], output
    # A broken config changes nothing and says why, in one line.
    (tmp_path / "supervisor.toml").write_text("workers = [\"workers\"\n")
    before = len(record.runs("added"))
    supervisor.signal(signal.SIGHUP)
    wait_until(lambda: "the running config stays" in supervisor.log(), timeout=30, what="the broken reload reported")
    line = next(line for line in supervisor.log().splitlines() if "the running config stays" in line)
    assert "supervisor.toml" in line and "ERROR" in line, line
    wait_until(lambda: len(record.runs("added")) >= before + 3, timeout=30, what="runs go on")
    # The same through the database, as an operator on another host would: one line, exit status 1.
    refused = reload_command(tmp_path, db)
    assert refused.returncode == 1 and not refused.stdout, refused
    (line,) = refused.stderr.strip().splitlines()
    assert ": error: reload: not reloaded: " in line and "supervisor.toml" in line, line
    # Fixed, the config loads: the answer says what changed (beat back to its own interval).
    (tmp_path / "supervisor.toml").write_text("workers = [\"workers\"]\n")
    done = reload_command(tmp_path, db)
    assert done.returncode == 0, done
    assert done.stdout.startswith("reload: reloaded: changed: beat (interval 2s → 1s)"), done.stdout
    assert supervisor.stop() == 0


def reload_command(cwd: Path, db: Path) -> subprocess.CompletedProcess[str]:
    """`reload` from another directory (the broken config in the supervisor's own would stop the command line)."""
    elsewhere = cwd / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "supervisor", "reload", "--db", f"sqlite:///{db}"], cwd=elsewhere,
                          capture_output=True, text=True, timeout=90)


def _started(row: Any) -> float:
    from datetime import datetime, timezone

    return datetime.fromisoformat(row["started_at"]).replace(tzinfo=timezone.utc).timestamp()
