"""Tests of supervisor/supervise/agenda.py: one live time per worker, handed over in order, stale entries never surfacing."""
from __future__ import annotations

import random

from supervisor.supervise.agenda import Agenda


def test_due_hands_over_in_time_order_and_only_what_is_due() -> None:
    agenda = Agenda()
    agenda.set("b", 20.0)
    agenda.set("a", 10.0)
    agenda.set("c", 30.0)
    assert agenda.next_time() == 10.0
    assert agenda.due(25.0) == ["a", "b"]
    assert agenda.due(25.0) == []  # handed over once: nothing until set again
    assert agenda.next_time() == 30.0 and len(agenda) == 1


def test_setting_again_replaces_the_time_and_none_removes_it() -> None:
    agenda = Agenda()
    agenda.set("a", 10.0)
    agenda.set("a", 50.0)
    agenda.set("b", 20.0)
    agenda.set("b", None)
    assert agenda.next_time() == 50.0
    assert agenda.due(40.0) == []
    assert agenda.due(50.0) == ["a"]


def test_back_to_an_earlier_time_is_handed_over_once() -> None:
    agenda = Agenda()
    agenda.set("a", 10.0)
    agenda.set("a", 20.0)
    agenda.set("a", 10.0)
    assert agenda.due(100.0) == ["a"]


def test_many_changes_keep_the_heap_small_and_the_answers_right() -> None:
    rng = random.Random(7)
    agenda = Agenda()
    expected: dict[str, float] = {}
    for _ in range(50_000):
        name = f"w{rng.randrange(100)}"
        when = rng.choice([None, rng.uniform(0, 1000)])
        agenda.set(name, when)
        if when is None:
            expected.pop(name, None)
        else:
            expected[name] = when
    assert len(agenda._heap) <= 4 * len(expected) + 65  # stale entries are compacted away
    assert agenda.next_time() == min(expected.values())
    assert agenda.due(500.0) == sorted((n for n, t in expected.items() if t <= 500.0), key=lambda n: expected[n])
