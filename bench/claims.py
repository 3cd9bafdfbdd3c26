"""What claiming a slot costs on PostgreSQL (issue 13), part of `make bench`.

Every supervisor on PostgreSQL is a node, and every slot it runs is claimed first (record/cluster.py). This
measures the claim itself, straight on the server on loopback, the way the coordinator makes it:
- one claim in one statement (the function in record/claim_sql.py), the claim a node makes at a slot;
- ten claims in one statement (ten workers due at once);
- a backup's claim of a slot already taken (the usual outcome for ranks 1 and 2).
(The same claim made statement by statement, before the function, measured 2.32 ms at p50: docs/benchmarks.md.)
The start latency on PostgreSQL in `bench/run.py` includes the claim end to end (supervisor -> coordinator ->
database -> supervisor); compare it with SQLite's, which claims nothing.

    bench/.venv/bin/python bench/claims.py [--claims N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run import postgres_database, postgres_reachable  # noqa: E402

from supervisor.record.cluster import ClaimRequest, NodeLedger  # noqa: E402
from supervisor.record.store import Store  # noqa: E402


def timed(samples: list[float], work) -> None:  # type: ignore[no-untyped-def]
    began = time.perf_counter()
    work()
    samples.append((time.perf_counter() - began) * 1000)


def line(what: str, samples: list[float], per: int = 1) -> str:
    samples = sorted(s / per for s in samples)
    return (f"| {what} | {statistics.median(samples):.3f} | {samples[int(len(samples) * 0.99)]:.3f} |")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--claims", type=int, default=2000)
    args = parser.parse_args()
    if not postgres_reachable():
        print("claims: skipped: no PostgreSQL answers on 127.0.0.1:5432")
        return 0
    with postgres_database(f"bench_claims_{uuid.uuid4().hex[:8]}") as url:
        store = Store(url)
        store.open()
        ledger = NodeLedger(store)
        me = uuid.uuid4().hex
        ledger.register(me, "bench", 3600.0, [], 1)
        ledger.heartbeat(me, 3600.0, 0, [], None, None, [])
        start = datetime(2026, 1, 1)
        single, batch, taken = [], [], []
        for i in range(args.claims):
            slot = start + timedelta(seconds=i)
            run = uuid.uuid4().hex
            timed(single, lambda: ledger.claim(me, "one", slot, 1.0, "skip", run, 1.0))
            timed(taken, lambda: ledger.claim(me, "one", slot, 1.0, "skip", run, 1.0))
            ledger.ticks_done([])
        for i in range(args.claims // 10):
            slot = start + timedelta(seconds=i)
            requests = [ClaimRequest(f"w{j}", slot, 1.0, "allow", uuid.uuid4().hex) for j in range(10)]
            timed(batch, lambda: ledger.claim_many(me, 1.0, requests))
        store.close()
    print(f"\nClaim cost on PostgreSQL (loopback, {args.claims} claims each; ms per claim)\n")
    print("| claim | p50 | p99 |\n|---|---|---|")
    print(line("one slot, one statement (the function)", single))
    print(line("ten slots in one statement, per slot", batch, per=10))
    print(line("a slot already taken (a backup's claim)", taken))
    return 0


if __name__ == "__main__":
    sys.exit(main())
