"""Several supervisors on one PostgreSQL (issue 13): each slot runs once, a dead node's runs are `lost` and its
workers go on elsewhere, a frozen or cut-off node stops its own runs before anyone may take its work.

Every node is a real supervisor process, each reaching PostgreSQL through a proxy of its own (tests/tcpproxy.py),
in a directory of its own. The checker trusts a witness more than our own rows: each run appends a line to its
node's witness file when it starts and when it ends (worker, slot, node, pid, time), with O_APPEND, before and
after the worker's body. Short leases (heartbeat 0.5 s, lease 4 s, grace 1 s, margin 1 s, backup delay 0.2 s).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from dbtools import query, query_or_empty, when
from helpers import SupervisorProcess, TcpProxy, wait_until, worker_package

LEASE = ("--heartbeat", "0.5", "--lease", "4", "--lease-grace", "1", "--lease-margin", "1", "--backup-delay", "0.2")
HEARTBEAT, LEASE_S, GRACE, MARGIN = 0.5, 4.0, 1.0, 1.0

WITNESS = '''
import os, time
from supervisor import register, worker

NODE = os.path.basename(os.getcwd())
PATH = os.path.join(os.getcwd(), "witness.log")


def note(kind, ctx):
    line = f"{kind} {ctx.worker} {ctx.due_at:.6f} {NODE} {os.getpid()} {time.time():.6f}\\n"
    fd = os.open(PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line.encode())
    os.close(fd)


def body(seconds):
    def run(ctx):
        note("start", ctx)
        if ctx.sleep(seconds):  # False: asked to stop (a node's shutdown)
            note("end", ctx)
    return run


register(
    *[worker(name=f"fast{i}", interval=1)(body(0.05)) for i in range({fast})],
    *[worker(name=f"slow{i}", interval=3)(body(0.05)) for i in range({slow})],
    *[worker(name=f"long{i}", interval=1, timeout=120)(body(60)) for i in range({long})],
    *[worker(name=f"late{i}", interval=6, misfire_grace=60)(body(0.05)) for i in range({late})],
    worker(name="minute", cron="* * * * *")(body(0.05)),
    worker(name="manual", interval=3600, run_at_start=False, overlap="allow", max_running=100)(body(0.2)),
    worker(name="pinned", interval=1, nodes=["tag:gpu"])(body(0.05)),
)
'''
PERIODS = {"fast": 1.0, "slow": 3.0, "long": 1.0, "late": 6.0, "manual": 3600.0, "pinned": 1.0}


@dataclass(frozen=True)
class Sighting:
    kind: str
    worker: str
    due: float
    node: str
    pid: int
    at: float

    @property
    def period(self) -> float:
        return 60.0 if self.worker == "minute" else PERIODS[self.worker.rstrip("0123456789")]


class Node:
    """One supervisor, its own directory and its own proxy to PostgreSQL."""

    def __init__(self, root: Path, name: str, database: str, modules: dict[str, str], args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir()
        worker_package(self.dir, [], extra=modules)
        self.proxy = TcpProxy(5432)
        self.url = f"postgresql://postgres@127.0.0.1:{self.proxy.port}/{database}"
        self.supervisor = SupervisorProcess(self.dir, self.url, ["--node-name", name, *LEASE, *args])

    def sightings(self) -> list[Sighting]:
        path = self.dir / "witness.log"
        if not path.exists():
            return []
        found = []
        for line in path.read_text().splitlines():
            kind, worker, due, node, pid, at = line.split()
            found.append(Sighting(kind, worker, float(due), node, int(pid), float(at)))
        return found

    def close(self) -> None:
        if self.supervisor.alive():
            self.supervisor.signal(signal.SIGCONT)
        self.supervisor.stop()
        self.proxy.close()


def all_sightings(nodes: list[Node]) -> list[Sighting]:
    return sorted((s for node in nodes for s in node.sightings()), key=lambda s: s.at)


def duplicates(sightings: list[Sighting]) -> list[tuple[Sighting, Sighting]]:
    """Pairs of starts of one worker for one slot: due less than half a period apart (the nodes name a slot by
    the same time, to within a few milliseconds)."""
    found = []
    for worker in {s.worker for s in sightings}:
        starts = sorted((s for s in sightings if s.kind == "start" and s.worker == worker), key=lambda s: s.due)
        found += [(a, b) for a, b in zip(starts, starts[1:]) if b.due - a.due < a.period / 2]
    return found


def gaps(sightings: list[Sighting], worker: str, begin: float, end: float) -> list[float]:
    """The slots of `worker` due in [begin, end] that no node started: gaps of more than 1.5 periods, and a
    first start more than a period after `begin` or a last one more than a period before `end`."""
    dues = sorted(s.due for s in sightings if s.kind == "start" and s.worker == worker and begin <= s.due <= end)
    period = 60.0 if worker == "minute" else PERIODS[worker.rstrip("0123456789")]
    if not dues:
        return [begin]
    edges = [d for d in (dues[0] - begin, end - dues[-1]) if d > period * 1.05]
    return edges + [b - a for a, b in zip(dues, dues[1:]) if b - a > period * 1.5]


def witness_module(fast: int = 0, slow: int = 0, long: int = 0, late: int = 0) -> str:
    counts = {"{fast}": fast, "{slow}": slow, "{long}": long, "{late}": late}
    source = WITNESS
    for field, count in counts.items():
        source = source.replace(field, str(count))
    return source


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[callable]:  # type: ignore[valid-type]
    database = pg_url.rsplit("/", 1)[1]
    nodes: list[Node] = []

    def start(names: list[str], fast: int = 0, slow: int = 0, long: int = 0, late: int = 0,
              args: dict[str, tuple[str, ...]] | None = None) -> list[Node]:
        source = witness_module(fast, slow, long, late)
        modules = {"witness": source}
        started = [Node(tmp_path, name, database, modules, (args or {}).get(name, ())) for name in names]
        nodes.extend(started)
        wait_until(lambda: formed(pg_url, len(nodes)), timeout=60, what="every node alive and seen by the others")
        for node in started:
            wait_until(lambda: "spawner ready" in node.supervisor.log(), timeout=60, what=f"{node.name} ready")
        return started

    yield start
    for node in nodes:  # all at once: each waits for its runs to stop
        if node.supervisor.alive():
            node.supervisor.signal(signal.SIGCONT)
            node.supervisor.signal(signal.SIGTERM)
    for node in nodes:
        node.close()


def alive_nodes(url: str) -> list[dict]:  # type: ignore[type-arg]
    return query_or_empty(url, "select * from node where state = 'alive' and lease_until > (clock_timestamp() at time zone 'UTC')")


def formed(url: str, count: int) -> bool:
    """Whether `count` nodes are alive and each has seen every other (only then may a newcomer claim)."""
    alive = alive_nodes(url)
    ids = {row["id"] for row in alive}
    return len(alive) == count and all(ids <= set(json.loads(row["seen"])) for row in alive)


def test_three_nodes_run_each_slot_once_spread_over_all_of_them(cluster, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    nodes = cluster(["n1", "n2", "n3"], fast=10, slow=10)
    begin = time.time() + 1.0
    wait_until(lambda: time.time() > begin + 12, timeout=40, step=0.2, what="12 s of work")
    end = time.time() - 3.0
    seen = [s for s in all_sightings(nodes) if s.kind == "start"]
    assert not duplicates(seen), duplicates(seen)
    # No slot missing: each worker's slots in the window follow one another one period apart.
    window = [s for s in seen if begin <= s.due <= end]
    for name in [f"fast{i}" for i in range(10)] + [f"slow{i}" for i in range(10)]:
        assert not gaps(seen, name, begin, end), (name, gaps(seen, name, begin, end))
    # Started on time, whichever node ran it: a backup's claim comes a backup delay (0.2 s) after the slot.
    lags = sorted(s.at - s.due for s in window)
    p50, p99 = lags[len(lags) // 2], lags[int(len(lags) * 0.99)]
    print(f"\nstart lag over {len(lags)} runs: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    assert min(lags) > -0.005, "a run started before its slot"
    # The figure (issue 13: p99 under 200 ms) is measured by `make soak` and bench; here only what would be a bug:
    # a slot that waited for a heartbeat, or for more than the backups' delays.
    assert p99 < 1.0, lags
    # The work is spread: each node is the first choice for some workers and ran them.
    by_node = {node.name: {s.worker for s in window if s.node == node.name} for node in nodes}
    assert all(len(workers) >= 3 for workers in by_node.values()), by_node
    # What the ledger and the runs say agrees with the witness.
    # (Within the window: before the cluster formed, the first node may have run slots alone, without a claim.)
    utc = [datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None) for t in (begin, end)]
    ticks = query(pg_url, "select count(*) as n from tick where state in ('running', 'done') and kind = 'scheduled' "
                  "and slot_at between ? and ?", *utc)
    assert ticks[0]["n"] == len(window)
    named = query(pg_url, "select count(*) as n from run where node_id is null or node not in ('n1', 'n2', 'n3')")
    assert named[0]["n"] == 0


def test_a_node_killed_outright_has_its_runs_lost_and_its_workers_run_elsewhere(cluster, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    nodes = cluster(["n1", "n2", "n3"], fast=6, long=1)
    first = wait_until(lambda: [s for s in all_sightings(nodes) if s.worker == "long0"], timeout=30, what="long0")[0]
    victim = next(node for node in nodes if node.name == first.node)
    others = [node for node in nodes if node is not victim]
    processes = victim.supervisor.descendants()
    assert any(p.pid == first.pid for p in processes)
    run = wait_until(lambda: query(pg_url, "select * from run where pid = ? and worker = 'long0'", first.pid),
                     timeout=10, what="the long run's row")[0]
    killed_at = time.time()
    victim.supervisor.signal(signal.SIGKILL)
    victim.supervisor.wait(10)
    # Nothing of it survives: its spawner and runs die with it.
    gone = psutil.wait_procs(processes, timeout=5)[1]
    assert not gone, gone
    # A peer declares it dead once its lease has run out, and records its run lost, naming it.
    lost = wait_until(lambda: query(pg_url, "select * from run where id = ? and outcome = 'lost'", run["id"]),
                      timeout=LEASE_S + GRACE + HEARTBEAT + 10, what="the run recorded lost")[0]
    declared = query(pg_url, "select * from node where name = ? and state = 'dead'", victim.name)
    assert len(declared) == 1 and declared[0]["end_reason"] == "lease expired"
    assert f"node {victim.name}" in lost_message(pg_url, run["id"]) and "declared dead by n" in lost_message(pg_url, run["id"])
    declared_after = when(declared[0]["ended_at"]).timestamp() - killed_at  # same host: one clock
    print(f"\ndeclared dead {declared_after:.2f} s after the SIGKILL")
    assert declared_after <= LEASE_S + GRACE + 2 * HEARTBEAT + 1.0
    assert lost["node_id"] == declared[0]["id"]
    # Its workers go on elsewhere: long0 again (after the declaration: it was still in flight until then).
    again = wait_until(lambda: [s for s in all_sightings(others) if s.worker == "long0"], timeout=15,
                       what="long0 elsewhere")[0]
    assert again.at >= when(declared[0]["ended_at"]).timestamp() - 0.05
    # And the fast workers' slots were run by someone throughout, each once.
    settle = time.time() + 2
    wait_until(lambda: time.time() > settle, timeout=5, step=0.1)
    seen = [s for s in all_sightings(nodes) if s.kind == "start"]
    assert not duplicates(seen), duplicates(seen)
    # A worker that was in flight on it skips its slots until then (skip overlap: it might still have been running).
    in_flight = {row["worker"] for row in query(pg_url, "select worker from run where outcome = 'lost'")}
    declared_at = when(declared[0]["ended_at"]).timestamp()
    for name in [f"fast{i}" for i in range(6)]:
        begin = declared_at if name in in_flight else killed_at - 1
        assert not gaps(seen, name, begin, time.time() - 1.5), (name, gaps(seen, name, begin, time.time() - 1.5))


def lost_message(url: str, run: str) -> str:
    rows = query(url, "select message from failure where run_id = ?", run)
    return rows[0]["message"] if rows else ""


@pytest.mark.parametrize("fault", ["sigstop", "hang", "cut"])
def test_a_frozen_or_cut_off_node_stops_its_runs_before_its_work_is_taken(cluster, pg_url: str, fault: str) -> None:  # type: ignore[no-untyped-def]
    nodes = cluster(["n1", "n2"], fast=2, long=1)
    first = wait_until(lambda: [s for s in all_sightings(nodes) if s.worker == "long0"], timeout=30, what="long0")[0]
    victim = next(node for node in nodes if node.name == first.node)
    other = next(node for node in nodes if node is not victim)
    incarnation = query(pg_url, "select id from node where name = ? and state = 'alive'", victim.name)[0]["id"]
    run_process = psutil.Process(first.pid)
    if fault == "sigstop":
        victim.supervisor.signal(signal.SIGSTOP)
    else:  # a partition that drops every packet, or one that resets every connection
        victim.proxy.set(fault)
    # Its spawner kills the run on its own, before the lease runs out: poll for the death (seen late, if at all).
    run_process.wait(LEASE_S + 5)
    died_at = time.time()
    declared = wait_until(lambda: query(pg_url, "select * from node where id = ? and state = 'dead'", incarnation),
                          timeout=LEASE_S + GRACE + 10, what="the node declared dead")[0]
    declared_at = when(declared["ended_at"]).timestamp()
    print(f"\nrun killed {declared_at - died_at:.2f} s before its node was declared dead")
    assert died_at < declared_at
    # Its run is `lost`; the other node runs long0 only after the run on the frozen node was dead (no overlap).
    again = wait_until(lambda: [s for s in other.sightings() if s.worker == "long0"], timeout=15, what="long0 on the other")[0]
    assert again.at > died_at - 0.05
    lease_until = when(declared["lease_until"])
    late_claims = query(pg_url, "select count(*) as n from tick where node = ? and claimed_at > ?", incarnation, lease_until)
    assert late_claims[0]["n"] == 0
    # Back again: it learns it was declared dead and rejoins as a new node.
    if fault == "sigstop":
        victim.supervisor.signal(signal.SIGCONT)
    else:
        victim.proxy.set("forward")
    wait_until(lambda: "was declared dead by" in victim.supervisor.log(), timeout=LEASE_S + 10, what="the log line")
    rejoined = wait_until(lambda: query(pg_url, "select * from node where name = ? and state = 'alive' and id <> ?",
                                        victim.name, incarnation), timeout=LEASE_S + 10, what="a new incarnation")
    assert len(rejoined) == 1
    # Its run's row: the peer wrote it `lost` without a pid when the cut came before the node's own records of it
    # reached the database; those, applied once the node is back, give it the pid (and never the outcome).
    run = wait_until(lambda: query(pg_url, "select * from run where worker = 'long0' and pid = ?", first.pid),
                     timeout=LEASE_S + 10, what="the long run's row with its pid")[0]
    assert run["outcome"] == "lost" and run["node_id"] == incarnation
    assert "declared dead by" in lost_message(pg_url, run["id"])  # the late result did not overwrite it
    seen = [s for s in all_sightings(nodes) if s.kind == "start"]
    assert not duplicates(seen), duplicates(seen)


def cli(node: Node, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "supervisor", *args, "--db", node.url], cwd=node.dir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_rolling_deploy_runs_every_slot_once(cluster, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    # The old release runs alone; the new one starts beside it; the old one is stopped (SIGTERM, as systemd does).
    (old,) = cluster(["old"], fast=4, slow=3)
    wait_until(lambda: len(old.sightings()) >= 8, timeout=30, what="the old release at work")
    begin = time.time()
    (new,) = cluster(["new"], fast=4, slow=3)
    wait_until(lambda: new.sightings(), timeout=30, what="the new release taking its share")
    stop_at = time.time()
    old.supervisor.signal(signal.SIGTERM)
    assert old.supervisor.wait(30) == 0
    assert query(pg_url, "select state from node where name = 'old'")[0]["state"] == "stopped"
    later = time.time() + 4
    wait_until(lambda: time.time() > later, timeout=20, step=0.2, what="a few slots after the stop")
    end = time.time() - 1.0
    seen = [s for s in all_sightings([old, new]) if s.kind == "start"]
    assert not duplicates(seen), duplicates(seen)
    for name in [f"fast{i}" for i in range(4)] + [f"slow{i}" for i in range(3)]:
        assert not gaps(seen, name, begin, end), (name, gaps(seen, name, begin, end))
    # After the stop, the new release runs everything, on time: no waiting for the old one's lease.
    after = [s for s in seen if s.due > stop_at + 0.5]
    assert after and {s.node for s in after} == {"new"}
    assert max(s.at - s.due for s in after) < 1.0


def test_each_trigger_runs_once_and_a_pause_holds_on_a_node_that_was_frozen(cluster, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    nodes = cluster(["n1", "n2", "n3"], fast=3)
    # 50 triggers at once: 10 from the command line (each says which node ran it) and 40 sent by 4 threads of this
    # process, as the command line sends them (a row, then NOTIFY). Every node sees every command; each runs once.
    triggers = [cli(nodes[i % 3], "trigger", "manual", "--wait", "30") for i in range(10)]
    def send(count: int) -> None:
        for _ in range(count):
            query(pg_url, "insert into command (worker, action, created_at) values ('manual', 'trigger', "
                  "(now() at time zone 'UTC'))")
            query(pg_url, "notify supervisor_command")
    senders = [threading.Thread(target=send, args=(10,)) for _ in range(4)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(60)
    answers = [t.communicate(timeout=90) for t in triggers]
    assert all(t.returncode == 0 for t in triggers), answers
    assert all("started on node n" in out for out, _ in answers), answers
    results = wait_until(lambda: [row["result"] for row in query(pg_url, "select result from command where done_at "
                                  "is not null and worker = 'manual'")] if len(query(pg_url, "select id from command "
                                  "where done_at is null")) == 0 else [], timeout=30, what="every trigger answered")
    assert len(results) == 50 and all("started on node n" in result for result in results), results
    wait_until(lambda: len([s for s in all_sightings(nodes) if s.worker == "manual" and s.kind == "end"]) >= 50,
               timeout=30, what="50 manual runs")
    manual = [s for s in all_sightings(nodes) if s.worker == "manual" and s.kind == "start"]
    assert len(manual) == 50
    said = sorted(result.split("started on node ")[1].split()[0] for result in results)
    assert said == sorted(s.node for s in manual)  # each answer names the node that ran it
    assert len(query(pg_url, "select id from run where worker = 'manual'")) == 50
    # A pause sent while the node that runs fast0 is frozen holds when it thaws, whatever its view says.
    first = wait_until(lambda: [s for s in all_sightings(nodes) if s.worker == "fast0"], timeout=10, what="fast0")[-1]
    owner = next(node for node in nodes if node.name == first.node)
    owner.supervisor.signal(signal.SIGSTOP)
    try:
        pause = cli(nodes[(nodes.index(owner) + 1) % 3], "pause", "fast0", "--wait", "1")
        wait_until(lambda: query(pg_url, "select paused from worker where name = 'fast0'")[0]["paused"], timeout=10,
                   what="the pause on record")
        paused_at = time.time()
        settle = time.time() + 1.5
        wait_until(lambda: time.time() > settle, timeout=5, step=0.1)  # frozen for less than a lease
    finally:
        owner.supervisor.signal(signal.SIGCONT)
    pause.communicate(timeout=30)
    later = time.time() + 3
    wait_until(lambda: time.time() > later, timeout=10, step=0.1, what="three slots")
    after = [s for s in all_sightings(nodes) if s.worker == "fast0" and s.kind == "start" and s.at > paused_at]
    assert not after, after
    assert query(pg_url, "select count(*) as n from node where state = 'dead'")[0]["n"] == 0
    resumed = cli(nodes[0], "resume", "fast0", "--wait", "10")
    resumed.communicate(timeout=30)
    wait_until(lambda: [s for s in all_sightings(nodes) if s.worker == "fast0" and s.at > later], timeout=10,
               what="fast0 after the resume")


def test_a_database_restart_kills_nothing_and_declares_nobody_dead(cluster, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    nodes = cluster(["n1", "n2"], fast=4, long=1)
    first = wait_until(lambda: [s for s in all_sightings(nodes) if s.worker == "long0"], timeout=30, what="long0")[0]
    database = pg_url.rsplit("/", 1)[1]
    for _ in range(3):  # every session of ours ended, three times, as a restart of the server would
        ended = query(pg_url, "select pg_terminate_backend(pid) as done from pg_stat_activity "
                      "where datname = ? and pid <> pg_backend_pid() and application_name = 'worker-supervisor'", database)
        assert ended
        settle = time.time() + 1
        wait_until(lambda: time.time() > settle, timeout=5, step=0.1)
    later = time.time() + LEASE_S + GRACE + HEARTBEAT  # long enough for a peer to have declared one dead
    wait_until(lambda: time.time() > later, timeout=3 * LEASE_S, step=0.2, what="a lease and its grace")
    assert query(pg_url, "select count(*) as n from node where state = 'dead'")[0]["n"] == 0
    assert psutil.pid_exists(first.pid) and psutil.Process(first.pid).status() != psutil.STATUS_ZOMBIE
    seen = [s for s in all_sightings(nodes) if s.kind == "start"]
    assert not duplicates(seen), duplicates(seen)


def test_slots_an_outage_of_every_node_cost_are_made_up_once_and_counted(cluster, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    nodes = cluster(["n1", "n2"], fast=2, late=4)
    # The `late` workers (every 6 s, misfire grace 60 s, started together) have a slot at `due`: neither node
    # reaches the database from 1 s before it to 1.2 s after (2.2 s: less than a lease less its margin and a
    # heartbeat, so nothing is fenced). The slot is missed; once the database is back, one run makes up for it,
    # with almost 5 s to spare before the next slot would take its place.
    first = wait_until(lambda: [s for s in all_sightings(nodes) if s.worker == "late0"], timeout=30, what="late0")[0]
    due = first.due + 6.0
    while due - time.time() < 1.5:
        due += 6.0
    cut_from = due - 1.0
    wait_until(lambda: time.time() >= cut_from, timeout=15, step=0.01, what="just before the slot")
    for node in nodes:
        node.proxy.set("cut")
    cut_at = time.time()
    back = due + 1.2
    wait_until(lambda: time.time() >= back, timeout=10, step=0.01)
    for node in nodes:
        node.proxy.set("forward")
    back_at = time.time()
    later = back_at + 8
    wait_until(lambda: time.time() > later, timeout=20, step=0.2, what="the slot after the outage")
    seen = [s for s in all_sightings(nodes) if s.kind == "start"]
    assert not duplicates(seen), duplicates(seen)
    assert query(pg_url, "select count(*) as n from node where state = 'dead'")[0]["n"] == 0
    for name in [f"late{i}" for i in range(4)]:
        starts = sorted((s for s in seen if s.worker == name), key=lambda s: s.due)
        # The slot due while cut off ran once, late, once the database was back (nothing could claim it before).
        missed = [s for s in starts if cut_at < s.due < back_at]
        assert len(missed) == 1 and missed[0].at >= back_at and abs(missed[0].due - due) < 0.5, (name, starts)
        # After it, the worker keeps its slots: the next one on time.
        assert [s for s in starts if abs(s.due - (due + 6.0)) < 0.5], (name, starts)
        # The ledger accounts for every slot: the numbered ticks and the slots they say were skipped leave no hole.
        ticks = query(pg_url, "select slot_no, slot_at, skipped, state from tick where worker = ? and slot_no is "
                      "not null order by slot_no", name)
        numbers = [row["slot_no"] for row in ticks]
        assert sum(row["skipped"] for row in ticks[1:]) == numbers[-1] - numbers[0] + 1 - len(numbers), ticks
        late_tick = [row for row in ticks if abs(when(row["slot_at"]).timestamp() - missed[0].due) < 0.01]
        assert late_tick and late_tick[0]["state"] in ("running", "done"), (ticks, missed[0])
    log = "".join(node.supervisor.log() for node in nodes)
    assert "one run now makes up for it" in log


def test_node_settings_are_refused_on_sqlite_in_one_line(tmp_path: Path) -> None:
    # SQLite serves one supervisor (a second is refused: test_ownership.py); a node's settings there are a mistake.
    worker_package(tmp_path, [], extra={"witness": witness_module(fast=1)})
    done = subprocess.run([sys.executable, "-m", "supervisor", "run", "--db", f"sqlite:///{tmp_path / 'x.db'}",
                           "--node-name", "n1"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "node_name" in lines[0] and "PostgreSQL" in lines[0], done.stderr
    assert not (tmp_path / "x.db").exists()


def test_a_node_alone_rides_out_a_short_outage_and_stops_within_its_lease_in_a_long_one(cluster, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    (node,) = cluster(["n1"], fast=2, long=1)
    first = wait_until(lambda: [s for s in node.sightings() if s.worker == "long0"], timeout=30, what="long0")[0]
    node.proxy.set("cut")
    cut_at = time.time()
    # Alone, it goes on without claims while its lease holds (4 s, less the 1 s margin, from its last renewal)...
    wait_until(lambda: [s for s in node.sightings() if s.worker == "fast0" and s.at > cut_at + 1.5], timeout=10,
               what="runs during the outage")
    # ...then its spawner ends the long run, and it starts nothing more until the database is back.
    psutil.Process(first.pid).wait(LEASE_S + 5)
    stopped_at = time.time()
    assert stopped_at - cut_at <= LEASE_S
    settle = time.time() + 2
    wait_until(lambda: time.time() > settle, timeout=5, step=0.1)
    assert not [s for s in node.sightings() if s.kind == "start" and s.at > stopped_at + 0.5]
    node.proxy.set("forward")
    back = time.time()
    wait_until(lambda: [s for s in node.sightings() if s.worker == "fast0" and s.at > back], timeout=LEASE_S + 10,
               what="runs again once the database is back")
    seen = [s for s in node.sightings() if s.kind == "start"]
    assert not duplicates(seen), duplicates(seen)


def test_a_worker_pinned_to_a_tag_runs_only_on_the_nodes_with_it(cluster, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    nodes = cluster(["n1", "n2", "n3"], fast=3, args={"n3": ("--node-tag", "gpu")})
    wait_until(lambda: len([s for s in all_sightings(nodes) if s.worker == "pinned" and s.kind == "end"]) >= 4,
               timeout=30, what="runs of the pinned worker")
    assert {s.node for s in all_sightings(nodes) if s.worker == "pinned"} == {"n3"}
    # Only n3 says it can run it: the others do not rank for it, so none of them claims it when n3 is gone.
    assert [json.loads(row["workers"]).count("pinned") for row in query(pg_url, "select workers from node "
            "where state = 'alive' order by name")] == [0, 0, 1]
    gpu = next(node for node in nodes if node.name == "n3")
    gpu.supervisor.signal(signal.SIGKILL)
    gpu.supervisor.wait(10)
    killed_at = time.time()
    later = killed_at + LEASE_S + GRACE + 2  # past the declaration: a take-over would have happened by then
    wait_until(lambda: time.time() > later, timeout=LEASE_S * 4, step=0.2, what="a lease and more")
    assert not [s for s in all_sightings(nodes) if s.worker == "pinned" and s.at > killed_at]
    assert [s for s in all_sightings(nodes) if s.worker == "fast0" and s.at > later - 1]  # the rest goes on
