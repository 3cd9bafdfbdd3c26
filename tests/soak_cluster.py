"""A compressed soak of several nodes on one PostgreSQL (issue 13): `make soak`, about five minutes, not in `make test`.

Four real supervisors, each through its own proxy, run fast, slow, long and cron workers while, every 10 to 20 s,
one of them (never more than one at a time) is killed outright and started again, frozen with SIGSTOP past its
lease, cut off by its proxy (hang, or reset), or every session of the database is terminated. Afterwards:
- no slot ran twice (the witness, trusted more than our rows);
- every slot is accounted for in the ledger: the numbered ticks and the slots they say were skipped cover each
  worker's slots without a hole;
- every run that started has exactly one row with one outcome;
- no node claimed after its lease ran out;
and the figures: start lag, failover time (a SIGKILL to the next run elsewhere of a worker the dead node ran).
"""
from __future__ import annotations

import os
import random
import signal
import statistics
import time
from pathlib import Path

from dbtools import query
from helpers import SupervisorProcess, TcpProxy, wait_until
from test_nodes import LEASE, LEASE_S, Node, all_sightings, duplicates, formed, witness_module

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "240"))
NAMES = ["n1", "n2", "n3", "n4"]
FAULTS = ("kill", "sigstop", "hang", "cut", "database")


def pause(seconds: float) -> None:
    """Let the cluster run for `seconds` (the soak's pace, not a wait for an event)."""
    until = time.monotonic() + seconds
    wait_until(lambda: time.monotonic() >= until, timeout=seconds + 5, step=0.1)


def test_soak_nodes_under_faults(tmp_path: Path, pg_url: str) -> None:
    database = pg_url.rsplit("/", 1)[1]
    modules = {"witness": witness_module(fast=8, slow=8, long=2)}
    nodes = {name: Node(tmp_path, name, database, modules) for name in NAMES}
    retired: list[Node] = []
    """Nodes killed (and started again): some of their runs' rows cannot name a pid."""
    rng = random.Random(int(os.environ.get("SOAK_SEED", "13")))
    failovers: list[float] = []
    faults: list[str] = []
    try:
        wait_until(lambda: formed(pg_url, len(NAMES)), timeout=90, what="the cluster formed")
        began = time.time()
        while time.time() - began < SOAK_SECONDS:
            pause(rng.uniform(10, 20))
            name, fault = rng.choice(NAMES), rng.choice(FAULTS)
            node = nodes[name]
            faults.append(f"{fault} {name}")
            if fault == "kill":
                workers = {s.worker for s in node.sightings() if s.kind == "start" and s.worker.startswith("fast")
                           and s.at > time.time() - 2}
                killed_at = time.time()
                node.supervisor.signal(signal.SIGKILL)
                node.supervisor.wait(10)
                # Its workers' next runs elsewhere: the failover time.
                others = [n for n in nodes.values() if n is not node]
                def resumed() -> list[float]:
                    return [s.at for n in others for s in n.sightings()
                            if s.kind == "start" and s.worker in workers and s.at > killed_at]
                if workers:
                    failovers.append(min(wait_until(resumed, timeout=LEASE_S * 3, what="a failover")) - killed_at)
                restart(node, database)
                retired.append(node)
            elif fault == "sigstop":
                node.supervisor.signal(signal.SIGSTOP)
                pause(LEASE_S + 2)
                node.supervisor.signal(signal.SIGCONT)
            elif fault in ("hang", "cut"):
                node.proxy.set(fault)
                pause(LEASE_S + 2)
                node.proxy.set("forward")
            else:
                query(pg_url, "select pg_terminate_backend(pid) from pg_stat_activity where datname = ? "
                      "and pid <> pg_backend_pid() and application_name = 'worker-supervisor'", database)
            wait_until(lambda: formed(pg_url, len(NAMES)), timeout=60, what="the cluster formed again")
        pause(3)
    finally:
        for node in nodes.values():
            node.close()
    sightings = all_sightings([*nodes.values()])
    starts = [s for s in sightings if s.kind == "start"]
    twice = duplicates(starts)
    print(f"\nfaults: {', '.join(faults)}")
    print(f"runs: {len(starts)}; duplicates: {len(twice)}")
    assert not twice, twice[:5]
    # The work went on through the faults: the 8 fast workers (every second) ran most of their slots.
    assert len([s for s in starts if s.worker.startswith("fast")]) >= 8 * SOAK_SECONDS * 0.7, len(starts)
    # Every slot accounted for: numbered ticks plus the slots each says were skipped leave no hole.
    for row in query(pg_url, "select worker, min(slot_no) as first, max(slot_no) as last, count(*) as ticks, "
                     "sum(skipped) as skipped from tick where slot_no is not null and worker not like 'minute' "
                     "group by worker"):
        assert row["last"] - row["first"] + 1 == row["ticks"] + row["skipped"] - first_skipped(pg_url, row), row
    # One outcome per run, and every run the witness saw has its row.
    unfinished = query(pg_url, "select id, worker, node from run where outcome is null")
    assert not unfinished, unfinished
    recorded = {row["pid"] for row in query(pg_url, "select pid from run where pid is not null")}
    unrecorded = [s for s in starts if s.pid not in recorded]
    assert len(unrecorded) <= len(retired) * 20, unrecorded[:5]  # killed nodes' last starts may miss their pid
    late = query(pg_url, "select count(*) as n from tick join node on node.id = tick.node "
                 "where tick.claimed_at > node.lease_until")
    assert late[0]["n"] == 0
    lags = sorted(s.at - s.due for s in starts if s.worker.startswith(("fast", "slow")))
    print(f"start lag: p50 {statistics.median(lags) * 1000:.1f} ms, p99 {lags[int(len(lags) * 0.99)] * 1000:.1f} ms")
    if failovers:
        print(f"failover after SIGKILL (to the next run elsewhere): {', '.join(f'{f:.2f} s' for f in failovers)}")
    lost = query(pg_url, "select count(*) as n from run where outcome = 'lost'")[0]["n"]
    print(f"runs lost: {lost}; nodes declared dead: "
          f"{query(pg_url, 'select count(*) as n from node where state = ?', 'dead')[0]['n']}")


def first_skipped(url: str, row: dict) -> int:  # type: ignore[type-arg]
    """The slots the first tick of a worker says were skipped lie before the first numbered slot."""
    first = query(url, "select skipped from tick where worker = ? and slot_no = ?", row["worker"], row["first"])
    return int(first[0]["skipped"])


def restart(node: Node, database: str) -> None:
    """Start the node again under its name, in its directory, through a new proxy (its journal is replayed)."""
    node.proxy.close()
    node.proxy = TcpProxy(5432)
    node.url = f"postgresql://postgres@127.0.0.1:{node.proxy.port}/{database}"
    node.supervisor = SupervisorProcess(node.dir, node.url, ["--node-name", node.name, *LEASE])
