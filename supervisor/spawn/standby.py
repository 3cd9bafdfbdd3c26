"""A standby child: the next run's child, forked before the run is due and waiting for its request.

Forking is the largest part of starting a run, and it grows with the spawner's size: ~1 ms for a lean spawner,
~6 ms for one that holds a 200 MB worker module. The spawner therefore forks each run's child ahead of time
and lets it do everything that does not depend on the run (child.Prepared), then hands it the request and the
run's pipes over a socket of their own when the run is due. Starting a run then costs one message. Each child
still serves exactly one run and exits, as rq's work horse does; unlike gunicorn's preforked workers, none is
ever reused, so nothing one run does can leak into the next.

A standby is a copy of the spawner taken while it waits; the spawner runs no worker code after its imports,
so the copy is as fresh as one taken at the run's due time. If it dies before it is used (the OOM killer, an
operator), the spawner forks the run's child directly, as it would without one.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from typing import Callable, NoReturn

from .child import Prepared, Streams, become_run
from ..outcome import EXIT_BOOT_FAILED
from ..protocol import channel, encode, receive, send_now
from ..worker import Worker
from ..process_title import set_title


def fork_with_sigterm_blocked(child: Callable[[set[int]], NoReturn]) -> int:
    """Fork; the child calls `child(mask to restore)` with SIGTERM blocked, the parent gets the pid.

    SIGTERM stays blocked across the fork until the child has its own handler: a stop request that comes while
    the child is still starting then sets ctx.cancelled instead of being lost or killing it.
    """
    # Buffered output would otherwise be written twice: once by us, once by the child.
    sys.stdout.flush()
    sys.stderr.flush()
    mask = set(signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}))
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    if pid == 0:
        try:
            child(mask)
        finally:
            os._exit(70)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    try:
        os.setpgid(pid, pid)
    except (PermissionError, ProcessLookupError):
        pass  # the child got there first, or is already gone; either way its group is set or moot
    return pid


class Standby:
    """The spawner's side of one standby child.

    A `fresh` one is for runs in a fresh interpreter (`isolation = "exec"`): it execs at once and waits as a new
    interpreter (exec_child.py), so that such a run pays for its module's import but not for the interpreter's
    start, as a process pool that starts its next process ahead of time does.
    """

    def __init__(self, workers: dict[str, Worker], streams: Streams, fresh: bool = False) -> None:
        ours, theirs = channel()
        spawner_pid = os.getpid()

        def wait_for_run(mask: set[int]) -> NoReturn:
            ours.close()
            if fresh:
                _wait_in_fresh_interpreter(theirs, spawner_pid, mask)
            _serve_one_run(workers, streams, theirs, spawner_pid, mask)

        try:
            self.pid = fork_with_sigterm_blocked(wait_for_run)
        finally:
            theirs.close()
        self.channel: socket.socket | None = ours

    def hand_over(self, request: dict[str, object], fds: list[int]) -> bool:
        """Give the child its run; False if it cannot take it (it died, or its socket is full: never expected)."""
        assert self.channel is not None
        try:
            sent = send_now(self.channel, encode("run", **{k: v for k, v in request.items() if k != "op"}), fds)
        except OSError:
            sent = False
        self.close()
        return sent

    def close(self) -> None:
        """Let go of the child: once it has its run, or to let an unused one end (it reads EOF and exits)."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None


class StandbySlot:
    """Where the spawner keeps its standby of one kind (forked, or a fresh interpreter), and whether it wants one."""

    def __init__(self, fresh: bool, wanted: bool) -> None:
        self.fresh = fresh
        self.wanted = wanted
        """False after a standby died unused, until the next run of its kind: never a loop of children that fail."""
        self.child: Standby | None = None
        self.name = "fresh standby" if fresh else "standby child"

    def keep(self, workers: dict[str, Worker], streams: Streams, after: float) -> float | None:
        """Start the standby if one is wanted and none waits, not before `after` (monotonic); return how long the
        spawner's loop may wait before it is time to (None: no need to wake for it)."""
        if self.child is not None or not self.wanted:
            return None
        wait = after - time.monotonic()
        if wait > 0:
            return wait
        try:
            self.child = Standby(workers, streams, fresh=self.fresh)
        except OSError as exc:
            self.wanted = False  # the next request forks its child directly, and says why if it fails
            print(f"spawner: could not fork a {self.name}: {exc}", file=sys.stderr)
        return None

    def take(self) -> Standby | None:
        """Take the waiting standby, if any, for a run."""
        child, self.child = self.child, None
        return child

    def ended(self, pid: int, how: str) -> bool:
        """Tell whether `pid` (reaped) was this slot's standby, which then died unused: let it go, want no other."""
        if self.child is None or pid != self.child.pid:
            return False
        print(f"spawner: {self.name} {pid} ended unused ({how})", file=sys.stderr)
        self.child.close()
        self.child, self.wanted = None, False
        return True

    def close(self) -> None:
        """Let the waiting standby go (it reads EOF and exits)."""
        if self.child is not None:
            self.child.close()


def _serve_one_run(
    workers: dict[str, Worker], streams: Streams, link: socket.socket, spawner_pid: int, mask: set[int]
) -> NoReturn:
    """In the standby child: prepare, wait for the request, become the run."""
    try:
        set_title("standby", "ws-standby")
        prepared = Prepared(spawner_pid, streams)
        request, fds = receive(link)
    except BaseException:  # noqa: B036 - before any run is ours there is nobody to tell; the spawner sees us die
        os._exit(EXIT_BOOT_FAILED)
    if request is None or len(fds) != 3:
        os._exit(0)  # let go unused (the spawner stops, or drops us)
    become_run(prepared, workers.get(str(request["worker"])), request, fds, mask)


def _wait_in_fresh_interpreter(link: socket.socket, spawner_pid: int, mask: set[int]) -> NoReturn:
    """In a fresh standby child: become a new interpreter that waits on `link` for its run (exec_child.py)."""
    try:
        from .exec_child import become_fresh_standby

        become_fresh_standby(link.fileno(), spawner_pid, mask)
    except BaseException:  # noqa: B036 - before any run is ours there is nobody to tell; the spawner sees us die
        os._exit(EXIT_BOOT_FAILED)
