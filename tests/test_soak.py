"""Hundreds of crashing and succeeding runs: exact records, and no descriptor, process or memory creep."""
from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from helpers import Record, worker_package
from supervisor.supervise.loop import Supervisor
from supervisor.record.recording import RecordingSettings, prepare

WORKERS = ["healthy", "segfault", "raises", "exit3", "sigkill_self"]
TARGET_RUNS = 1000


@pytest.mark.slow
def test_hundreds_of_runs_agree_with_counters_and_leak_nothing(tmp_path: Path, db: Path, record: Record, monkeypatch: pytest.MonkeyPatch) -> None:
    worker_package(tmp_path, WORKERS)
    monkeypatch.chdir(tmp_path)  # the spawner imports `workers` from the current directory
    settings = RecordingSettings(url=f"sqlite:///{db}", journal=str(tmp_path / "journal"))
    supervisor = Supervisor(settings, ["workers"], overrides={name: {"interval": 0.01} for name in WORKERS}, stored=prepare(settings))
    me = psutil.Process()
    supervisor.start()
    try:
        baseline_fds: set[int] | None = None
        rss_at_quarter = 0
        deadline = time.monotonic() + 240
        while (done := sum(s.successes + s.failures for s in supervisor.workers.values())) < TARGET_RUNS:
            assert time.monotonic() < deadline, f"only {done} runs recorded"
            supervisor.run_once(timeout=1.0)
            if supervisor.spawner is None or not supervisor.spawner.ready or supervisor.recording.recorder is None:
                continue
            # Every descriptor the supervisor holds is either one it had from the start or a pipe of a run
            # still in flight: nothing accumulates.
            run_fds = {fd for run in supervisor.runs.values() for fd in run.fds}
            fds = {int(fd) for fd in os.listdir("/proc/self/fd")} - run_fds
            fds = {fd for fd in fds if os.path.exists(f"/proc/self/fd/{fd}")}
            if baseline_fds is None:
                baseline_fds = fds
            assert fds == baseline_fds
            # Our children are the spawner, the recorder and the guard; the spawner has no more children than runs
            # in flight (no zombies pile up).
            spawner = psutil.Process(supervisor.spawner.pid)
            helpers = {spawner.pid, supervisor.recording.recorder.pid, supervisor.containment.guard}
            assert {p.pid for p in me.children()} == helpers - {None}
            assert len(spawner.children()) <= len(supervisor.runs) + 1  # +1: an exit not yet reported
            if not rss_at_quarter and done >= TARGET_RUNS // 4:
                rss_at_quarter = me.memory_info().rss
        rss_growth = me.memory_info().rss - rss_at_quarter
        assert rss_growth < 8 * 1024 * 1024, f"RSS grew by {rss_growth} bytes over {TARGET_RUNS * 3 // 4} runs"
        supervisor.begin_shutdown(time.monotonic())
        while not supervisor.finished:
            supervisor.run_once(timeout=1.0)
    finally:
        supervisor.close()

    assert not me.children()
    for name in WORKERS:
        row = record.worker(name)
        runs = record.runs(name)
        failures = record.failures(name)
        # A run the stop ended is `interrupted`: counted neither way, and no failure.
        counted = [r for r in runs if r["outcome"] != "interrupted"]
        assert row["success_count"] + row["failure_count"] == len(counted), name
        assert row["failure_count"] == len(failures) == sum(r["outcome"] != "succeeded" for r in counted), name
        assert {f["run_id"] for f in failures} == {r["id"] for r in counted if r["outcome"] != "succeeded"}
    assert record.query("select count(*) as n from run where finished_at is null")[0]["n"] == 0
    assert sum(1 for r in record.runs("segfault") if r["outcome"] == "crash") == record.worker("segfault")["failure_count"]
    assert all(r["outcome"] in ("succeeded", "interrupted") for r in record.runs("healthy"))
