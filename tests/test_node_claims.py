"""A node's rules for its claims (supervise/cluster.py), on an invented monotonic clock, with the coordinator's
answers handed in as messages: what it claims late once its lease is renewed after a refused claim ("owed"), what
it leaves to the next slot, and what it gives back when it stops.

The cluster tests (test_nodes.py) show these rules at work between real nodes; here each one is pinned down on
its own, because the moments that matter (a renewal that lands just after the worker's next slot came due, a
SIGTERM between a won claim and the run's start) cannot be arranged between real processes.
"""
from __future__ import annotations

import selectors
import time
from typing import Any

import pytest

from supervisor.process import boottime
from supervisor.supervise.cluster import Cluster, ClusterSettings
from supervisor.supervise.scheduling import DueRun
from supervisor.supervise.timetable import Timetable
from supervisor.supervise.worker_status import WorkerStatus
from supervisor.worker import WorkerDefinition

PERIOD = 1.0
START = 1_000.0
"""The monotonic time of the worker's first slot."""


class Node:
    """One Cluster as the loop drives it, with the coordinator's answers handed in as messages."""

    def __init__(self) -> None:
        self.now = START
        self.selector = selectors.DefaultSelector()
        self.cluster = Cluster(ClusterSettings("n1", lease=4.0, margin=1.0), "postgresql://unused", self.selector,
                               lambda: self.now, lambda deadline: None, lambda: None)
        definition = WorkerDefinition(name="w", module="m", interval=PERIOD)
        self.status = WorkerStatus(definition, Timetable(definition))
        self.wall_at_start = time.time()
        self.status.timetable.begin(START, self.wall_at_start, None)

    def offer_due_slot(self) -> str:
        """The loop takes the worker's due slot and offers it: return the run id its claim names."""
        due = self.status.timetable.due
        slot_wall = self.wall_at_start + (due - START)
        self.status.take_start(self.now, self.wall_at_start + (self.now - START))
        self.cluster.offer(DueRun(self.status, 1, due, slot_wall), self.now)
        (run_id,) = [run for run, claim in self.cluster.pending.items() if claim.due.slot == due]
        return run_id

    def offer_trigger(self, command: int) -> str:
        """An operator's trigger (command `command`) is offered: return the run id its claim names."""
        self.cluster.offer(DueRun(self.status, 1, self.now, time.time(), scheduled=False, command=command), self.now)
        (run_id,) = [run for run, claim in self.cluster.pending.items() if claim.due.command == command]
        return run_id

    def answer(self, run_id: str, result: str) -> None:
        tick = 7 if result == "won" else None
        self.cluster._handle_message({"op": "claim", "run": run_id, "result": result, "tick": tick, "skipped": 0,
                                      "taken_at": None, "last_at": None})

    def renewed(self) -> None:
        """The coordinator renewed our lease; we are one of two live nodes (so never alone)."""
        self.cluster._handle_message({"op": "renewed", "node": self.cluster.node_id, "since": boottime(),
                                      "members": [[self.cluster.node_id, "n1", ["w"]], ["other", "n2", ["w"]]],
                                      "offset": 0.0, "slots": {}, "paused": {}, "ticks": {}})

    def close(self) -> None:
        self.selector.close()


@pytest.fixture
def node() -> Any:
    made = Node()
    yield made
    made.close()


@pytest.mark.parametrize("result", ["fenced", "unavailable"])
def test_a_refused_slot_is_claimed_late_once_the_lease_is_renewed(node: Node, result: str) -> None:
    run_id = node.offer_due_slot()
    node.cluster.pending[run_id].sent = True
    node.answer(run_id, result)
    if result == "unavailable":  # asked again up to CLAIM_TRIES times first
        while run_id in node.cluster.pending:
            node.cluster.pending[run_id].sent = True
            node.answer(run_id, result)
    assert "w" in node.cluster.owed and not node.cluster.pending
    node.now = START + PERIOD / 2  # renewed well before the next slot
    node.renewed()
    late = [claim for claim in node.cluster.pending.values() if claim.late]
    assert len(late) == 1 and late[0].due.slot == START and late[0].run_id == run_id


def test_a_refused_slot_is_left_to_the_next_one_when_that_is_due_at_the_renewal(node: Node) -> None:
    # Seen in the cluster tests under load: a node claimed its refused slot late just as the next slot came due;
    # the late run was in flight when the next slot's claim came (from another node, which ranked first), and that
    # slot was skipped as busy. A worker then missed a slot although every node was up.
    run_id = node.offer_due_slot()
    node.cluster.pending[run_id].sent = True
    node.answer(run_id, "fenced")
    node.now = START + PERIOD + 0.005  # the renewal lands just after the next slot, before the loop offers it
    node.renewed()
    assert not node.cluster.pending and not node.cluster.owed
    next_run = node.offer_due_slot()  # the next slot is claimed as usual, and stands for the one refused
    assert node.cluster.pending[next_run].due.slot == START + PERIOD and not node.cluster.pending[next_run].late


def test_a_stopping_node_gives_back_what_it_won_and_did_not_start(node: Node) -> None:
    # Seen in a rolling deploy under load: the old node won a slot, SIGTERM came before its loop started the run,
    # and the slot was lost: the tick said it was the old node's, and the new node's backup claim came back `taken`.
    won = node.offer_due_slot()
    node.cluster.pending[won].sent = True
    node.answer(won, "won")
    out = node.offer_trigger(41)  # a trigger whose claim is out when the stop begins
    node.cluster.pending[out].sent = True
    node.now = START + PERIOD
    unsent = node.offer_due_slot()  # not sent yet (it would be at this pass's tend)
    assert [run for _, run, _, _ in node.cluster.won] == [won]
    node.cluster.give_back_unstarted()
    # Nothing is left to start or to send; the won slot goes back to the ledger; the unsent claim never goes out.
    assert not node.cluster.won and unsent not in node.cluster.pending and node.cluster.given_back == [won]
    # The claim that was out is won after all: given back too, and its trigger answered as not run.
    node.answer(out, "won")
    assert node.cluster.given_back == [won, out] and not node.cluster.won
    assert node.cluster.answers == [(41, "w", "not run: node n1 was stopping")]


def test_a_stopping_node_leaves_refused_and_lost_claims_alone(node: Node) -> None:
    taken = node.offer_due_slot()
    node.cluster.pending[taken].sent = True
    node.cluster.give_back_unstarted()
    node.answer(taken, "taken")  # another node has it: nothing of ours to give back
    assert not node.cluster.given_back and not node.cluster.won and not node.cluster.answers
