"""The nodes' ledger (record/cluster.py) statement by statement on a real PostgreSQL: the acknowledgements that
decide who may claim while a node joins. Each node is a Store of its own (its own connection), as each
coordinator is; the nodes themselves are not run here (test_nodes.py does that).
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest

from supervisor.record.cluster import ClaimRequest, NodeLedger
from supervisor.record.store import Store

LEASE, MARGIN = 10.0, 1.0


class LedgerNode:
    """A node as its coordinator speaks for it: register, heartbeat (acknowledging what the last one read), claim."""

    def __init__(self, url: str, name: str) -> None:
        self.store = Store(url)
        self.store.open()
        self.ledger = NodeLedger(self.store)
        self.id = uuid.uuid4().hex
        self.name = name
        self.read: list[str] | None = None
        self.ledger.register(self.id, name, LEASE, ["w"], 1)
        self.read = [m.id for m in self.ledger.members()]

    def heartbeat(self) -> None:
        """Renew, acknowledging the live nodes read at the last heartbeat (coordinator.py), and read them anew."""
        assert self.ledger.heartbeat(self.id, LEASE, 0, ["w"], 0.0, [], self.read) is not None
        self.read = [m.id for m in self.ledger.members()]

    def claim(self, slot_at: datetime, overlap: str = "allow") -> str:
        """Claim the worker's slot; with overlap `allow` (the default) only the fencing decides, as the runs
        claimed here never end."""
        request = ClaimRequest("w", slot_at, 1.0, overlap, uuid.uuid4().hex)
        return self.ledger.claim_many(self.id, MARGIN, [request])[0].result

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def nodes(pg_url: str) -> Iterator[list[LedgerNode]]:
    made: list[LedgerNode] = []
    yield made
    for node in made:
        node.close()


def test_a_joining_node_does_not_fence_the_live_ones_and_claims_once_they_have_seen_it(
        pg_url: str, nodes: list[LedgerNode]) -> None:
    slot = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    old = LedgerNode(pg_url, "old")
    nodes.append(old)
    assert old.claim(slot) == "won"  # alone: no peer to be seen by
    new = LedgerNode(pg_url, "new")
    nodes.append(new)
    # The newcomer saw `old` as it registered: `old` claims on while it joins (it was fenced for a heartbeat or two,
    # and its slots ran late or not at all, before registration acknowledged the live nodes).
    assert old.claim(slot + timedelta(seconds=1)) == "won"
    # The newcomer itself claims nothing until `old` has acknowledged it: `old` reads it at one heartbeat ...
    assert new.claim(slot + timedelta(seconds=2)) == "fenced"
    old.heartbeat()
    assert new.claim(slot + timedelta(seconds=2)) == "fenced"
    # ... and acknowledges it at the next, once its supervisor has been told of it.
    old.heartbeat()
    assert new.claim(slot + timedelta(seconds=2)) == "won"
    assert old.claim(slot + timedelta(seconds=3)) == "won"


def test_two_nodes_registering_together_each_wait_for_the_other(pg_url: str, nodes: list[LedgerNode]) -> None:
    slot = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    a = LedgerNode(pg_url, "a")
    nodes.append(a)
    b = LedgerNode(pg_url, "b")
    nodes.append(b)
    # `b` saw `a` as it registered; `a` has not seen `b`: `b` is fenced, `a` is not.
    assert a.claim(slot) == "won"
    assert b.claim(slot + timedelta(seconds=1)) == "fenced"
    a.heartbeat()
    a.heartbeat()
    assert b.claim(slot + timedelta(seconds=1)) == "won"


def joined(url: str, nodes: list[LedgerNode]) -> tuple[LedgerNode, LedgerNode]:
    """`old`, and `new` registered beside it and acknowledged by it (two heartbeats): both may claim."""
    old = LedgerNode(url, "old")
    nodes.append(old)
    new = LedgerNode(url, "new")
    nodes.append(new)
    old.heartbeat()
    old.heartbeat()
    return old, new


def test_a_slot_claimed_just_before_a_clean_stop_does_not_keep_the_worker_busy(
        pg_url: str, nodes: list[LedgerNode]) -> None:
    # Seen in a rolling deploy under load: the old node won a slot, SIGTERM came before it started the run, it
    # stopped cleanly, and its tick stayed `running`: the new node's every claim of the worker was `busy` after.
    slot = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    old, new = joined(pg_url, nodes)
    assert old.claim(slot, overlap="skip") == "won"  # never run: the stop came first
    assert new.claim(slot + timedelta(seconds=1), overlap="skip") == "busy"  # in flight, as far as anyone knows
    old.ledger.stop(old.id)
    assert new.claim(slot + timedelta(seconds=2), overlap="skip") == "won"


def test_a_slot_given_back_by_a_stopping_node_is_claimed_by_a_peer(pg_url: str, nodes: list[LedgerNode]) -> None:
    slot = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    old, new = joined(pg_url, nodes)
    run = uuid.uuid4().hex
    assert old.ledger.claim(old.id, "w", slot, 1.0, "skip", run, MARGIN).result == "won"
    # Its backup, a moment later, finds it taken; once the stopping node gives it back, the same slot is free.
    assert new.claim(slot, overlap="skip") == "taken"
    old.ledger.give_back(old.id, [run])
    assert new.claim(slot, overlap="skip") == "won"
    assert old.claim(slot, overlap="skip") == "taken"
