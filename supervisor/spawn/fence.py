"""Fencing: the spawner kills this node's runs before its lease can run out, whatever the supervisor is doing.

On a shared PostgreSQL a node may run a worker's slot only while it holds its lease; once the lease has run out
for `grace` more, a peer declares the node dead and takes its workers. So the runs must end before that, even when
the supervisor is frozen (SIGSTOP, a stuck loop) or cut off from the database. The supervisor forwards each
renewal the coordinator made as a deadline on CLOCK_BOOTTIME (a renewal sent at t0 holds the lease until at least
t0 + lease, on the database's clock: the deadline is t0 + lease - margin). The spawner is a process of its own
with nothing else to wait on, so it is the one that keeps the deadline: when it passes with runs in flight and no
newer renewal has come, it kills them all.
"""
from __future__ import annotations

from ..process import boottime



class Fence:
    """The deadline by which this node's runs must have ended, unless the lease is renewed first."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        """None: no lease to keep (SQLite, or not yet renewed): runs are never fenced."""

    def renew(self, deadline: float) -> None:
        """The lease was renewed: the runs may go on until `deadline` (boottime); an older renewal changes nothing."""
        if self.deadline is None or deadline > self.deadline:
            self.deadline = deadline

    def wait(self, running: bool) -> float | None:
        """Seconds until the deadline while runs are in flight (None: nothing to keep)."""
        if self.deadline is None or not running:
            return None
        return max(0.0, self.deadline - boottime())

    def passed(self, running: bool) -> bool:
        """Whether the runs in flight must be killed now."""
        return running and self.deadline is not None and boottime() >= self.deadline
