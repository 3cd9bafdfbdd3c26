"""Which worker needs the loop's attention next, without looking at every worker on every pass.

With a thousand workers, walking all of them twice per pass (what is due? when to wake?) cost milliseconds of
every run's start. The agenda is a heap of (time, worker) with one live entry per worker: setting a worker's
time again leaves its old entry in the heap, and an entry that no longer matches is skipped when it surfaces
(lazy deletion), so every change is O(log n) and a pass touches only the workers that are due.
"""
from __future__ import annotations

import heapq
import itertools


class Agenda:
    """Times at which workers want attention; `due(now)` hands over those whose time has come."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._when: dict[str, float] = {}
        self._order = itertools.count()  # ties keep the order they were set in; names are never compared

    def __len__(self) -> int:
        return len(self._when)

    def set(self, name: str, when: float | None) -> None:
        """Want attention for `name` at `when` (None: no attention until set again)."""
        if when is None:
            self._when.pop(name, None)
            return
        if self._when.get(name) == when:
            return
        self._when[name] = when
        heapq.heappush(self._heap, (when, next(self._order), name))
        if len(self._heap) > 4 * len(self._when) + 64:
            self._compact()

    def next_time(self) -> float | None:
        """The earliest time any worker wants attention, or None."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[str]:
        """Take every worker whose time is `now` or earlier, earliest first; they want nothing until set again."""
        names: list[str] = []
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                return names
            _, _, name = heapq.heappop(self._heap)
            del self._when[name]
            names.append(name)

    def _drop_stale(self) -> None:
        while self._heap and self._when.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)

    def _compact(self) -> None:
        self._heap = [entry for entry in self._heap if self._when.get(entry[2]) == entry[0]]
        heapq.heapify(self._heap)
