"""Real database faults: a terminated connection, an unreachable server, a server that hangs, a locked file.

In every case runs keep starting on time (the database is a record, not the heartbeat), every run that happened
during the fault reaches the database exactly once, and the supervisor recovers without a restart.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from dbtools import query, query_or_empty, when
from helpers import SupervisorProcess, TcpProxy, wait_until, worker_package

INTERVAL = 0.1
FAST_FAILURE = ("--write-timeout", "3", "--statement-timeout", "2")


@pytest.fixture
def proxy(pg_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy(5432)
    yield proxy
    proxy.close()


def through(url: str, proxy: TcpProxy) -> str:
    """The same database URL, by way of the proxy."""
    return url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")


def runs_logged(supervisor: SupervisorProcess, worker: str = "quick") -> int:
    """How many runs of `worker` the supervisor says it finished (from its log, not the database)."""
    return supervisor.log().count(f"{worker}: pid ")


def recorded_runs(url: str, worker: str = "quick") -> list[dict[str, Any]]:
    """The worker's run rows, read as another process would (none before the supervisor made its tables)."""
    return query_or_empty(url, "select id, started_at, outcome from run where worker = ? order by started_at", worker)


def assert_every_run_once(url: str, supervisor: SupervisorProcess) -> float:
    """After the supervisor stopped: every run it logged is in the database once, counters agree; return the
    largest start delay seen (gap between consecutive starts beyond the interval)."""
    runs = recorded_runs(url)
    logged = sum(1 for line in supervisor.log().splitlines() if "quick: pid " in line and " in " in line)
    assert len(runs) == logged, (len(runs), logged)
    assert len({r["id"] for r in runs}) == len(runs)
    (worker,) = query(url, "select success_count, failure_count from worker where name = ?", "quick")
    assert worker["success_count"] + worker["failure_count"] == len(runs)
    assert not query(url, "select id from run where finished_at is null")
    starts = [when(r["started_at"]) for r in runs]
    delay = max((b - a).total_seconds() - INTERVAL for a, b in zip(starts, starts[1:]))
    print(f"largest start delay: {delay * 1000:.1f} ms over {len(runs)} runs")
    return delay


def test_connection_terminated_by_the_server(tmp_path: Path, pg_url: str, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["quick"])
    supervisor = start_supervisor(*FAST_FAILURE, url=pg_url)
    wait_until(lambda: len(recorded_runs(pg_url)) >= 5, timeout=60, what="runs on PostgreSQL")
    for _ in range(3):
        before = len(recorded_runs(pg_url))
        terminated = query(
            pg_url,
            "select pg_terminate_backend(pid) as done from pg_stat_activity "
            "where application_name = 'worker-supervisor' and datname = current_database() and pid <> pg_backend_pid()",
        )
        assert terminated and all(row["done"] for row in terminated)
        wait_until(lambda: len(recorded_runs(pg_url)) >= before + 5, timeout=30, what="writes after the kill")
    assert supervisor.alive()
    assert supervisor.stop() == 0
    assert assert_every_run_once(pg_url, supervisor) < 1.0


def ride_out(supervisor: SupervisorProcess, seconds: float) -> None:
    """Watch the supervisor through a fault of `seconds`: it stays up and keeps its workers running."""
    began, before = time.monotonic(), runs_logged(supervisor)
    while time.monotonic() - began < seconds:  # the fault lasts this long by design; nothing to wait for
        assert supervisor.alive(), supervisor.log()
        time.sleep(0.1)
    assert runs_logged(supervisor) - before >= seconds / INTERVAL * 0.5, "runs stalled during the fault"


def fault_through_proxy(tmp_path: Path, pg_url: str, proxy: TcpProxy, start_supervisor: Any, mode: str,
                        seconds: float, noticed: str) -> SupervisorProcess:
    """Run a supervisor through the proxy, put the proxy in `mode` for `seconds`, restore it, and wait until
    the backlog is written; return the (stopped) supervisor."""
    worker_package(tmp_path, ["quick"])
    # A node alone rides out an outage for as long as its lease holds (docs/design.md, "Several nodes"): the
    # lease is set longer than the faults here, as it is where the database's failover is slow.
    supervisor = start_supervisor(*FAST_FAILURE, "--lease", "30", url=through(pg_url, proxy))
    wait_until(lambda: len(recorded_runs(pg_url)) >= 5, timeout=60, what="runs through the proxy")
    proxy.set(mode)
    wait_until(lambda: noticed in supervisor.log(), timeout=30, what=f"the fault to be noticed ({noticed!r})")
    ride_out(supervisor, seconds)
    proxy.set("forward")
    logged = runs_logged(supervisor)
    wait_until(lambda: len(recorded_runs(pg_url)) >= logged, timeout=60, what="the backlog to be written")
    assert supervisor.stop() == 0
    return supervisor


@pytest.mark.slow
def test_database_unreachable_for_20_seconds(tmp_path: Path, pg_url: str, proxy: TcpProxy, start_supervisor: Any) -> None:
    supervisor = fault_through_proxy(tmp_path, pg_url, proxy, start_supervisor, "cut", 20, "database writes fail")
    assert "database writes succeed again" in supervisor.log()
    assert assert_every_run_once(pg_url, supervisor) < 1.0


@pytest.mark.slow
def test_database_that_accepts_and_never_answers(tmp_path: Path, pg_url: str, proxy: TcpProxy, start_supervisor: Any) -> None:
    # The hung recorder is noticed (write timeout 3 s) and replaced; its successors hang on connect and give up.
    supervisor = fault_through_proxy(tmp_path, pg_url, proxy, start_supervisor, "hang", 10, "replacing it")
    assert assert_every_run_once(pg_url, supervisor) < 1.0


@pytest.mark.slow
def test_sqlite_file_locked_by_another_process_for_10_seconds(tmp_path: Path, db: Path, start_supervisor: Any) -> None:
    url = f"sqlite:///{db}"
    worker_package(tmp_path, ["quick"])
    supervisor = start_supervisor(*FAST_FAILURE, url=url)
    wait_until(lambda: len(recorded_runs(url)) >= 5, timeout=60, what="runs on SQLite")
    locker = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('begin exclusive'); "
         "print('locked', flush=True); sys.stdin.readline(); c.execute('rollback')", str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert locker.stdout is not None and locker.stdin is not None
    assert locker.stdout.readline().strip() == "locked"
    ride_out(supervisor, 10)
    locker.stdin.close()
    locker.wait(10)
    locker.stdout.close()
    assert "database writes fail" in supervisor.log() and "locked" in supervisor.log()
    logged = runs_logged(supervisor)
    wait_until(lambda: len(recorded_runs(url)) >= logged, timeout=60, what="the backlog to be written")
    assert supervisor.stop() == 0
    assert assert_every_run_once(url, supervisor) < 1.0


def journal_runs(path: Path) -> set[str]:
    """Ids of the runs whose end waits in a journal file."""
    return {
        record["run"]
        for line in path.read_text().splitlines() if line.strip()
        for record in [json.loads(line)] if record["type"] == "run_finished"
    }


def test_sigkill_while_records_wait_then_restart(tmp_path: Path, pg_url: str, proxy: TcpProxy, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["quick"])
    url = through(pg_url, proxy)
    supervisor = start_supervisor(*FAST_FAILURE, url=url)
    wait_until(lambda: len(recorded_runs(pg_url)) >= 5, timeout=60, what="runs through the proxy")
    proxy.set("cut")
    journal = tmp_path / "worker-supervisor.pending"
    waiting = wait_until(lambda: len(journal_runs(journal)) >= 20 and journal_runs(journal), timeout=60,
                         what="records waiting in the journal")
    supervisor.signal(signal.SIGKILL)
    supervisor.wait(10)
    waiting = journal_runs(journal)
    assert waiting and not {r["id"] for r in recorded_runs(pg_url)} >= waiting

    proxy.set("forward")
    second = start_supervisor(*FAST_FAILURE, url=url)
    wait_until(lambda: {r["id"] for r in recorded_runs(pg_url)} >= waiting, timeout=60,
               what="the journal's runs in the database")
    wait_until(lambda: "spawner ready" in second.log(), timeout=60, what="the second supervisor to be up")
    assert "wrote" in second.log() and "record(s) an earlier supervisor left" in second.log()
    assert second.stop() == 0
    runs = recorded_runs(pg_url)
    assert len({r["id"] for r in runs}) == len(runs)
    (worker,) = query(pg_url, "select success_count, failure_count from worker where name = ?", "quick")
    finished = [r for r in runs if r["outcome"] is not None]
    assert worker["success_count"] + worker["failure_count"] == len(finished)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_status_reads_while_the_supervisor_writes(backend: str, tmp_path: Path, db: Path, request: pytest.FixtureRequest,
                                                  start_supervisor: Any) -> None:
    url = f"sqlite:///{db}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    worker_package(tmp_path, ["quick", "healthy"])
    supervisor = start_supervisor(url=url)
    wait_until(lambda: runs_logged(supervisor) >= 5, timeout=60, what="runs")
    for _ in range(10):  # ten runs of quick are written while each status reads
        status = subprocess.run([sys.executable, "-m", "supervisor", "status", "--db", url], cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        assert "quick" in status.stdout and "locked" not in status.stdout + status.stderr
    assert supervisor.stop() == 0
    assert "database writes fail" not in supervisor.log()


def test_the_password_is_never_shown(tmp_path: Path, pg_url: str, start_supervisor: Any) -> None:
    secret = "s3cr3t-Pa55"
    url = pg_url.replace("postgres@", f"postgres:{secret}@")  # trust auth accepts (and ignores) it
    worker_package(tmp_path, ["quick", "raises"])
    supervisor = start_supervisor(url=url)
    wait_until(lambda: len(recorded_runs(pg_url)) >= 3 and len(recorded_runs(pg_url, "raises")) >= 1, timeout=60,
               what="runs recorded")
    processes = supervisor.descendants()
    status = subprocess.run([sys.executable, "-m", "supervisor", "status", "--db", url], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    unreachable = subprocess.run([sys.executable, "-m", "supervisor", "status", "--db",
                                  url.replace("127.0.0.1:5432", "127.0.0.1:1")],
                                 cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert supervisor.stop() == 0
    assert status.returncode == 0 and "quick" in status.stdout
    assert unreachable.returncode == 1 and unreachable.stderr.count("\n") == 1
    assert ":***@127.0.0.1:1" in unreachable.stderr
    for text in (supervisor.log(), status.stdout, status.stderr, unreachable.stderr):
        assert secret not in text
    # Not in the recorder's or spawner's command line either (the recorder gets the URL in its environment).
    for process in processes:
        try:
            assert secret not in " ".join(process.cmdline()[1:]).replace(f"--db {url}", "")
        except Exception as exc:  # a run that ended meanwhile
            if "NoSuchProcess" not in type(exc).__name__:
                raise


def test_prune_command_keeps_the_newest_runs(tmp_path: Path, db: Path, start_supervisor: Any) -> None:
    url = f"sqlite:///{db}"
    worker_package(tmp_path, ["quick"])
    supervisor = start_supervisor(url=url)
    wait_until(lambda: len(recorded_runs(url)) >= 12, timeout=60, what="runs")
    assert supervisor.stop() == 0
    before = len(recorded_runs(url))
    pruned = subprocess.run([sys.executable, "-m", "supervisor", "prune", "--db", url, "--keep-runs", "5"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith(f"pruned {before - 5} run(s) and 0 failure(s)")
    kept = recorded_runs(url)
    assert len(kept) == 5
    assert kept == recorded_runs(url)[-5:]
