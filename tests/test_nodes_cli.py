"""What users see of the supervisors on a database (issue 13): `nodes`, the line `status` starts with and its exit
status 2 when no supervisor is alive, overdue workers, and the node of each run (`status`, `history`).

Real commands (`python -m supervisor ...`) against real databases; where a supervisor is involved, a real one.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from dbtools import query, query_or_empty, scalar
from helpers import wait_until, worker_package
from recordtools import apply_records
from supervisor.outcome import Outcome, Verdict
from supervisor.record import records
from supervisor.record.records import Record
from supervisor.record.store import utcnow
from supervisor.worker import WorkerDefinition

HOST = socket.gethostname()
NODE_ARGS = ("--node-name", "n1", "--heartbeat", "0.5", "--lease", "4")
DB_NOW = "(clock_timestamp() AT TIME ZONE 'UTC')"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m supervisor ARGS` as a user would; COLUMNS keeps rich from cutting the tables."""
    env = {**os.environ, "COLUMNS": "200"}
    for name in [n for n in env if n.startswith("SUPERVISOR_")]:
        del env[name]
    return subprocess.run([sys.executable, "-m", "supervisor", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def line_of(text: str, start: str) -> str:
    """The one line of `text` that starts with `start`."""
    (found,) = [line for line in text.splitlines() if line.startswith(start)]
    return found




def definition(name: str, interval: float = 60.0) -> WorkerDefinition:
    return WorkerDefinition(name=name, module=f"workers.{name}", interval=interval, timeout=30.0, grace=5.0)


def one_run(run: str, worker: str, node: str, minutes_ago: float) -> list[Record]:
    at = utcnow() - timedelta(minutes=minutes_ago)
    return [
        records.run_started(run, worker, 1, at, None, node, 4000),
        records.run_finished(run, worker, 1, at, at + timedelta(seconds=1), 1.0, Verdict(Outcome.SUCCEEDED, ""), node,
                             4000, pid=77, exit_code=0),
    ]


# -- PostgreSQL: nodes ------------------------------------------------------------------------------------------


def test_a_supervisor_on_postgres_is_a_node_alive_then_stopped(tmp_path: Path, pg_url: str, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["healthy"])
    supervisor = start_supervisor(*NODE_ARGS, url=pg_url)
    wait_until(lambda: query_or_empty(pg_url, "select 1 from node where name = 'n1' and state = 'alive'"),
               timeout=60, what="node n1 registered")
    wait_until(lambda: query_or_empty(pg_url, "select 1 from run where worker = 'healthy' and finished_at is not null"),
               timeout=60, what="a run of healthy")

    listed = cli("nodes", "--db", pg_url)
    assert listed.returncode == 0, listed.stderr
    n1 = line_of(listed.stdout, "n1 ")
    node_id = scalar(pg_url, "select id from node where name = 'n1'")
    assert node_id[:8] in n1 and node_id not in n1 and f"{HOST}:" in n1 and " alive " in n1, listed.stdout
    assert "s ago" in n1 and "ms" in n1, n1  # the heartbeat's age, the clock's offset
    assert "1 alive" in listed.stdout
    data = json.loads(cli("nodes", "--json", "--db", pg_url).stdout)
    assert data["database"] == "postgresql"
    (node,) = data["nodes"]
    assert (node["name"], node["id"], node["state"], node["workers"]) == ("n1", node_id, "alive", ["healthy"])
    # Renewed every 0.5 s for 4 s: measured against the database's clock, the lease is fresh and runs on.
    assert 0 <= node["heartbeat_age_s"] < 4 and 0 < node["lease_left_s"] <= 4, node

    status = cli("status", "--db", pg_url)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.splitlines()[0] == "nodes: 1 alive (n1)", status.stdout
    healthy = line_of(status.stdout, "healthy ")
    assert " n1 " in healthy and "overdue" not in healthy, status.stdout  # the node column: n1 ran it
    assert " n1 " in line_of(cli("history", "healthy", "--limit", "1", "--db", pg_url).stdout, "│ ")

    assert supervisor.stop() == 0, supervisor.log()
    listed = cli("nodes", "--db", pg_url)
    assert listed.returncode == 0, listed.stderr
    n1 = line_of(listed.stdout, "n1 ")
    assert " stopped " in n1 and "0 alive" in listed.stdout, listed.stdout
    assert json.loads(cli("nodes", "--json", "--db", pg_url).stdout)["nodes"][0]["state"] == "stopped"
    status = cli("status", "--db", pg_url)
    assert status.returncode == 2, status.stdout + status.stderr
    assert status.stdout.splitlines()[0].startswith("no supervisor is alive (last: node n1, stopped "), status.stdout
    assert status.stderr == ""
    assert "healthy " in status.stdout  # the table is still there


def insert_node(url: str, name: str, state: str, lease_until: str, heartbeat: str = "0 seconds",
                ended: str | None = None, ended_by: str | None = None) -> str:
    """A node row, its times relative to the database's clock ("-5 seconds" is 5 s before its now)."""
    node = uuid.uuid4().hex
    query(
        url,
        f"insert into node (id, name, host, pid, version, state, started_at, heartbeat_at, lease_seconds, lease_until,"
        f" lease_since, clock_offset, running, workers, ended_at, ended_by, end_reason) values (?, ?, ?, 4242,"
        f" '0.1.0', ?, {DB_NOW} - interval '3 days', {DB_NOW} + cast(? as interval), 4, {DB_NOW} + cast(? as interval),"
        f" {DB_NOW} - interval '1 hour', -0.25, 2, '[\"a\", \"b\", \"c\"]',"
        f" {DB_NOW} + cast(? as interval), ?, ?)",
        node, name, f"h-{name}", state, heartbeat, lease_until, ended, ended_by,  # ended None: NULL
        None if ended is None else ("lease expired" if state == "dead" else "stopped"),
    )
    return node


def test_nodes_judges_leases_by_the_database_and_names_who_declared_a_node_dead(pg_url: str) -> None:
    apply_records(pg_url, [records.workers_synced([definition("job")], [], utcnow())])
    judge = insert_node(pg_url, "judge", "alive", "10 seconds")
    insert_node(pg_url, "frozen", "alive", "-9 minutes", heartbeat="-10 minutes")  # its lease lapsed: not alive
    insert_node(pg_url, "victim", "dead", "-60 seconds", heartbeat="-64 seconds", ended="-57 seconds", ended_by=judge)
    insert_node(pg_url, "ancient", "stopped", "-2 days", heartbeat="-2 days", ended="-2 days")

    listed = cli("nodes", "--db", pg_url)
    assert listed.returncode == 0, listed.stderr
    out = listed.stdout
    assert " alive " in line_of(out, "judge ") and "-250ms" in line_of(out, "judge ") and " 2 " in line_of(out, "judge ")
    frozen = line_of(out, "frozen ")
    assert " expired " in frozen and "lease lapsed" in frozen, out
    victim = line_of(out, "victim ")
    assert " dead " in victim and re.search(r" 5\ds ago by judge", victim) and "h-victim:4242" in victim, out
    assert "ancient" not in out and "1 older node(s) not shown" in out, out  # stopped two days ago
    data = {node["name"]: node for node in json.loads(cli("nodes", "--json", "--db", pg_url).stdout)["nodes"]}
    assert set(data) == {"judge", "frozen", "victim"}
    assert (data["victim"]["ended_by"], data["victim"]["ended_by_name"]) == (judge, "judge")
    assert data["frozen"]["state"] == "expired" and data["frozen"]["lease_left_s"] is None
    assert data["judge"]["clock_offset_ms"] == -250.0 and data["judge"]["workers"] == ["a", "b", "c"]

    status = cli("status", "--db", pg_url)
    assert status.returncode == 0 and status.stdout.splitlines()[0] == "nodes: 1 alive (judge)", status.stdout
    # The last one alive stops: nobody is, and the table says who was last.
    # (Alive last: the victim died before it was declared dead, at its last heartbeat, before judge stopped.)
    query(pg_url, f"update node set state = 'stopped', ended_at = {DB_NOW} - interval '30 seconds' where id = ?", judge)
    status = cli("status", "--db", pg_url)
    assert status.returncode == 2, status.stdout + status.stderr
    first = status.stdout.splitlines()[0]
    assert re.fullmatch(r"no supervisor is alive \(last: node judge, stopped 3\ds ago\)", first), status.stdout


def test_status_on_a_postgres_database_no_node_ever_ran_on(pg_url: str) -> None:
    apply_records(pg_url, [records.workers_synced([definition("job")], [], utcnow())])
    status = cli("status", "--db", pg_url)
    assert status.returncode == 2, status.stdout + status.stderr
    assert status.stdout.splitlines()[0] == "no supervisor is alive (none has run on this database yet)"
    listed = cli("nodes", "--db", pg_url)
    assert listed.returncode == 0 and listed.stdout.startswith("no nodes in the last 24 h"), listed.stdout


# -- SQLite: one supervisor, told by its lock ---------------------------------------------------------------------


def test_status_and_nodes_on_sqlite_follow_the_one_supervisor(tmp_path: Path, db: Path, start_supervisor: Any) -> None:
    url = f"sqlite:///{db}"
    lock = Path(f"{db}.lock")
    worker_package(tmp_path, ["healthy"])
    supervisor = start_supervisor()
    wait_until(lambda: query_or_empty(url, "select 1 from run where finished_at is not null"), timeout=60,
               what="a run of healthy")

    status = cli("status", "--db", url)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.splitlines()[0] == f"supervisor: running (pid {supervisor.pid} on {HOST})", status.stdout
    header = next(line for line in status.stdout.splitlines() if line.startswith("worker "))
    assert " node " not in header, status.stdout  # one host ran every run: no node column
    listed = cli("nodes", "--db", url)
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    assert line.startswith(f"SQLite runs one supervisor (nodes need PostgreSQL): running, pid {supervisor.pid} on "
                           f"{HOST}, since "), line
    data = json.loads(cli("nodes", "--json", "--db", url).stdout)
    assert data["database"] == "sqlite" and data["supervisor"]["running"] is True
    assert (data["supervisor"]["pid"], data["supervisor"]["host"]) == (supervisor.pid, HOST)
    assert f" {HOST} " in line_of(cli("history", "healthy", "--limit", "1", "--db", url).stdout, "│ ")

    assert supervisor.stop() == 0, supervisor.log()
    assert not lock.exists()
    status = cli("status", "--db", url)
    assert status.returncode == 2, status.stdout + status.stderr
    assert status.stdout.splitlines()[0] == "no supervisor is running" and status.stderr == ""
    assert "healthy " in status.stdout
    assert cli("nodes", "--db", url).stdout == "SQLite runs one supervisor (nodes need PostgreSQL): none is running\n"
    assert json.loads(cli("nodes", "--json", "--db", url).stdout)["supervisor"]["running"] is False
    assert not lock.exists(), "a reader created the lock file"


def test_a_lock_file_nobody_holds_is_no_supervisor_and_one_held_is(tmp_path: Path, db: Path) -> None:
    url = f"sqlite:///{db}"
    apply_records(url, [records.workers_synced([definition("job")], [], utcnow())])
    lock = Path(f"{db}.lock")
    # What a supervisor killed outright leaves: the file, with who held it, and no lock on it.
    lock.write_text(json.dumps({"host": "gone-host", "pid": 99999, "since": 0}))
    status = cli("status", "--db", url)
    assert status.returncode == 2 and status.stdout.splitlines()[0] == "no supervisor is running", status.stdout
    # Held (as `run` holds it), it is a supervisor running, whoever that is.
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, json.dumps({"host": "other-host", "pid": 4321, "since": 0}).encode().ljust(80), 0)
        status = cli("status", "--db", url)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.splitlines()[0] == "supervisor: running (pid 4321 on other-host)", status.stdout
        assert "running, pid 4321 on other-host" in cli("nodes", "--db", url).stdout
    finally:
        os.close(fd)


# -- overdue workers, and the node of each run ---------------------------------------------------------------------


def test_a_worker_whose_next_run_is_long_past_is_overdue(store_url: str) -> None:
    now = utcnow()
    apply_records(store_url, [records.workers_synced(
        [definition("late"), definition("nearly"), definition("early"), definition("resting")], [], now,
        # 1 hour late; 3 s late with a 60 s period (within its tenth: not overdue); due in an hour; paused.
        next_runs={"late": now - timedelta(hours=1), "nearly": now - timedelta(seconds=3),
                   "early": now + timedelta(hours=1), "resting": now - timedelta(hours=1)},
    ), records.worker_paused("resting", True, now)])
    status = cli("status", "--db", store_url)
    assert status.returncode == 2, status.stdout + status.stderr  # no supervisor either
    assert "overdue 60m" in line_of(status.stdout, "late "), status.stdout
    for calm in ("nearly ", "early ", "resting "):
        assert "overdue" not in line_of(status.stdout, calm), status.stdout
    assert "in 60m" in line_of(status.stdout, "early ")


def test_the_node_column_names_who_ran_each_worker_last(store_url: str) -> None:
    apply_records(store_url, [records.workers_synced([definition("a"), definition("b")], [], utcnow()),
                      *one_run("a1", "a", "alpha", 5), *one_run("a2", "a", "beta", 2), *one_run("b1", "b", "alpha", 1)])
    status = cli("status", "--db", store_url)
    header = next(line for line in status.stdout.splitlines() if line.startswith("worker "))
    assert " node " in header, status.stdout
    assert " beta " in line_of(status.stdout, "a ") and " alpha " in line_of(status.stdout, "b "), status.stdout
    history = cli("history", "a", "--db", store_url)
    assert history.returncode == 0, history.stderr
    assert [(" beta " in line, " alpha " in line) for line in history.stdout.splitlines() if "a2" in line or "a1" in line] \
        == [(True, False), (False, True)], history.stdout
