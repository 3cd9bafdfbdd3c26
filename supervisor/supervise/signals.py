"""Signals for a select loop: handlers that only note the signal, and a wakeup pipe that makes select return.

A handler that did the work (reap, log, write rows) would run at any point of the loop, in the middle of its
own waitpid or write, as circus's and old gunicorn's did. So a handler here only appends the signal's number;
`signal.set_wakeup_fd` writes a byte to a pipe the loop's selector watches, so a signal that comes while the
loop waits in select ends the wait at once, and the loop takes the noted signals (`take`) when it gets to them.
"""
from __future__ import annotations

import os
import selectors
import signal

from ..process import read_available


class SignalInbox:
    """The signals noted since the loop last took them, and the pipe that wakes the loop when one comes."""

    def __init__(self, signals: tuple[int, ...]) -> None:
        self.signals = signals
        self.pending: list[int] = []
        self._wake: tuple[int, int] | None = None

    @property
    def catching(self) -> bool:
        """Whether the handlers are in place."""
        return self._wake is not None

    def catch(self, selector: selectors.BaseSelector, data: object) -> None:
        """Note each of `signals` from now on, and have `selector` report `data` when one comes."""
        if self._wake is not None:
            return
        self._wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake[1], warn_on_full_buffer=False)
        for sig in self.signals:
            signal.signal(sig, self._note)
        selector.register(self._wake[0], selectors.EVENT_READ, data)

    def _note(self, signum: int, frame: object) -> None:
        # Only note: the loop acts on it in its own time (see the module's docstring).
        self.pending.append(signum)

    def woken(self) -> None:
        """Empty the wakeup pipe (the selector reported it readable)."""
        if self._wake is not None:
            read_available(self._wake[0])

    def take(self) -> list[int]:
        """The signals noted since the last call, in order."""
        pending, self.pending = self.pending, []
        return pending

    def release(self, selector: selectors.BaseSelector) -> None:
        """Put the default actions back and close the pipe."""
        if self._wake is None:
            return
        signal.set_wakeup_fd(-1)
        for sig in self.signals:
            signal.signal(sig, signal.SIG_DFL)
        selector.unregister(self._wake[0])
        for fd in self._wake:
            os.close(fd)
        self._wake = None
