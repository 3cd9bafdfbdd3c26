"""`health`: each exit status made real by real supervisors, real workers and real databases.

0 healthy; 1 degraded (a worker failing, broken, quarantined or overdue); 2 down (no supervisor alive, or the
database unreadable), on SQLite and on PostgreSQL (which another host reads, through a proxy that can fail).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from helpers import Record, SupervisorProcess, TcpProxy, wait_until, worker_package

QUARANTINED = '''
from supervisor import worker


@worker(interval=0.2, quarantine_after=2)
def gives_up(ctx):
    raise RuntimeError("never works")
'''


def health(url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor", "health", "--db", url, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_healthy_then_degraded_by_each_kind_of_trouble_then_down(tmp_path: Path, db: Path, record: Record) -> None:
    url = f"sqlite:///{db}"
    worker_package(tmp_path, ["healthy"])
    supervisor = SupervisorProcess(tmp_path, url)
    try:
        wait_until(lambda: len(record.runs("healthy")) >= 2, timeout=60, what="healthy runs")
        ok = health(url, cwd=tmp_path)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.startswith("healthy: 1 worker(s); supervisor: running (pid"), ok.stdout
        # Overdue: the supervisor frozen (its lock still held) while its worker's runs come due.
        supervisor.signal(signal.SIGSTOP)
        try:
            late = wait_until(lambda: (h := health(url, cwd=tmp_path)).returncode == 1 and h, timeout=30,
                              what="the worker overdue")
        finally:
            supervisor.signal(signal.SIGCONT)
        assert "overdue: healthy: due at" in late.stdout, late.stdout
        assert supervisor.stop() == 0
        # Down: no supervisor.
        down = health(url, "--json", cwd=tmp_path)
        assert down.returncode == 2
        document = json.loads(down.stdout)
        assert document["health"] == "down" and document["problems"][0]["kind"] == "supervisor"
        assert document["workers"][0]["name"] == "healthy" and document["supervisor"]["alive"] is False
    finally:
        supervisor.stop()
    # Degraded: a failing worker, a broken module, a quarantined worker; a paused one is not a problem.
    worker_package(tmp_path, ["raises", "import_raises"], extra={"quarantined": QUARANTINED})
    again = SupervisorProcess(tmp_path, url)
    try:
        wait_until(lambda: (record.worker("gives_up") or {"paused": 0})["paused"] and record.runs("raises"),
                   timeout=60, what="a quarantine and a failure")
        pause = subprocess.run([sys.executable, "-m", "supervisor", "pause", "healthy", "--db", url], cwd=tmp_path,
                               capture_output=True, text=True, timeout=60)
        assert pause.returncode == 0, pause.stderr
        wait_until(lambda: (record.worker("healthy") or {"paused": 0})["paused"], timeout=30, what="healthy paused")
        degraded = health(url, cwd=tmp_path)
        assert degraded.returncode == 1, degraded.stdout
        lines = degraded.stdout.splitlines()
        assert lines[0].startswith("degraded: ")
        kinds = {line.split(":")[0].strip(): line for line in lines[1:]}
        assert set(kinds) == {"failing", "broken", "quarantined"}, lines
        assert "raises" in kinds["failing"] and "ValueError" in kinds["failing"]
        assert "import_raises" in kinds["broken"] and "gives_up" in kinds["quarantined"]
        assert "healthy" not in degraded.stdout  # paused on purpose
        # The same record as JSON, for scripts: status, history, failures, one failure in full.
        def reading(*args: str) -> dict:  # type: ignore[type-arg]
            done = subprocess.run([sys.executable, "-m", "supervisor", *args, "--json", "--db", url], cwd=tmp_path,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode in (0, 2), done.stderr
            return json.loads(done.stdout)  # type: ignore[no-any-return]
        status = reading("status")
        assert {w["name"]: w["state"] for w in status["workers"]}["gives_up"] == "quarantined"
        runs = reading("history", "raises")["runs"]
        assert runs and runs[0]["outcome"] == "error" and runs[0]["started_at"].endswith("Z")
        listed = reading("failures", "raises")["failures"]
        full = reading("failures", "--id", str(listed[0]["id"]))["failure"]
        assert "fail_loudly" in full["traceback"] and full["message"] == "ValueError: the worker raised on purpose"
    finally:
        again.stop()


def test_an_unreadable_database_is_down_in_one_line(tmp_path: Path, pg_url: str) -> None:
    proxy = TcpProxy(5432)
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/{pg_url.rsplit('/', 1)[1]}"
    worker_package(tmp_path, ["healthy"])
    supervisor = SupervisorProcess(tmp_path, pg_url)  # the supervisor reaches it directly; `health` through the proxy
    try:
        wait_until(lambda: health(url, cwd=tmp_path).returncode == 0, timeout=60, what="healthy, from another host")
        proxy.set("cut")
        down = health(url, cwd=tmp_path)
        assert down.returncode == 2, down.stdout + down.stderr
        assert down.stdout.startswith("down: the record cannot be read; 1 problem(s)")
        assert len(down.stdout.splitlines()) == 2 and "database: " in down.stdout and "Traceback" not in down.stderr
        assert "127.0.0.1" in down.stdout and not down.stderr
        proxy.set("forward")
        assert health(url, cwd=tmp_path).returncode == 0
    finally:
        supervisor.stop()
        proxy.close()
    missing = health(f"sqlite:///{tmp_path / 'nothing.db'}", "--json", cwd=tmp_path)
    assert missing.returncode == 2 and json.loads(missing.stdout)["problems"][0]["kind"] == "database"
