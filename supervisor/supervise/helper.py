"""A helper process of the supervisor (the spawner, the recorder): start it, talk to it, see it die.

A helper is started with `posix_spawn` as `python -m MODULE` (a fresh interpreter; no fork of the supervisor,
whose descriptors and terminal state must not be copied), in its own process group so that a Ctrl-C in the
terminal reaches only the supervisor, which then stops everything in order. Its end of a message socket is on
fd 3, its stdout and stderr go to a pipe the supervisor reads, and its death is seen through a pidfd, which
select() reports like any other descriptor, so no SIGCHLD handler and no polling are needed.
"""
from __future__ import annotations

import logging
import os
import selectors
import signal
import sys
import time
from collections import deque
from typing import Any

from .capture import Capture
from ..errors import HelperStartError
from ..process import decode_status, open_pipe, read_available, set_nonblocking
from ..protocol import Message, channel, encode, receive, send_now

CONTROL_FD = 3


class HelperProcess:
    """One helper process and the channel to it."""

    module = ""
    """The module run as `python -m`; it takes --control-fd and --supervisor-pid."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.args = args
        self.env = env or {}
        self.pid = 0
        self.exited = False
        self.channel_closed = False
        self.killed = False
        self.started = 0.0
        self.last_heard = 0.0
        self.output = Capture(head=0)
        self.outbox: deque[tuple[bytes, list[int]]] = deque()
        """Messages the channel had no room for yet, in order, with the descriptors that go with them."""
        self._events = 0
        self.channel_broken = False

    def start(self) -> None:
        """Start the process; its messages arrive on `control`."""
        self.control, theirs = channel()
        out_r, out_w = open_pipe()
        argv = [sys.executable, "-m", self.module, "--control-fd", str(CONTROL_FD), "--supervisor-pid", str(os.getpid())]
        try:
            self.pid = os.posix_spawn(
                sys.executable,
                argv + self.args,
                {**os.environ, **self.env},
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, out_w, 1),
                    (os.POSIX_SPAWN_DUP2, out_w, 2),
                    # dup2 clears close-on-exec on the copy, so only this one end of the channel is inherited.
                    (os.POSIX_SPAWN_DUP2, theirs.fileno(), CONTROL_FD),
                ],
                setpgroup=0,
                setsigdef=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE),
                setsigmask=(),
            )
        except OSError as exc:
            # The interpreter cannot be run by this user, or the system is out of processes: say so in one line.
            self.control.close()
            os.close(out_r)
            raise HelperStartError(f"cannot start {self.module}: {exc.strerror or exc}", sys.executable) from exc
        finally:
            theirs.close()
            os.close(out_w)
        self.started = self.last_heard = time.monotonic()
        self.output_fd = out_r
        set_nonblocking(out_r)
        self.control.setblocking(True)
        self.pidfd = os.pidfd_open(self.pid)

    def messages(self) -> list[Message]:
        """Return every message waiting on the channel; an EOF (the helper is gone) ends the list."""
        found: list[Message] = []
        while not self.channel_closed:
            try:
                message, fds = receive(self.control, block=False)
            except BlockingIOError:
                break
            except ConnectionResetError:
                message, fds = None, []
            for fd in fds:  # helpers never send descriptors; never leak one if one did
                os.close(fd)
            if message is None:
                self.channel_closed = True
                break
            self.last_heard = time.monotonic()
            self.observe(message)
            found.append(message)
        return found

    def watch(self, selector: selectors.BaseSelector, owner: object) -> None:
        """Register the channel, the output pipe and the pidfd with `selector`, as (owner, what) events."""
        self._owner = owner
        self._events = selectors.EVENT_READ
        selector.register(self.control, selectors.EVENT_READ, (owner, "message"))
        selector.register(self.output_fd, selectors.EVENT_READ, (owner, "output"))
        selector.register(self.pidfd, selectors.EVENT_READ, (owner, "exit"))

    def unwatch(self, selector: selectors.BaseSelector, fileobj: Any = None) -> None:
        """Unregister one of our descriptors (all of them by default) from `selector`."""
        for each in (self.control, self.output_fd, self.pidfd) if fileobj is None else (fileobj,):
            if each is self.control:
                self._events = 0
            try:
                selector.unregister(each)
            except (KeyError, ValueError):
                pass

    def sync_interest(self, selector: selectors.BaseSelector) -> None:
        """Watch the channel for room to write while the outbox holds messages, and only then."""
        if not self._events:
            return  # the channel is not watched (closed, or never was)
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbox and not self.channel_broken else 0)
        if wanted != self._events:
            selector.modify(self.control, wanted, (self._owner, "message"))
            self._events = wanted

    def observe(self, message: Message) -> None:
        """Track state a message implies (subclasses); called for each message in order."""

    def send(self, op: str, fds: list[int] | None = None, **fields: Any) -> None:
        """Send one message without ever blocking, nor failing: a helper that is gone is noticed on its pidfd.

        What the channel has no room for waits in the outbox, in order, and goes as the loop finds the channel
        writable (flush). Blocking here instead would deadlock: the helper may itself be blocked sending to us,
        as when a few hundred runs are requested at once and their replies fill the other direction. The
        descriptors in `fds` now belong to this handle: they are closed once sent (or when it is closed).
        """
        self.outbox.append((encode(op, **fields), list(fds or [])))
        self.flush()

    def flush(self) -> bool:
        """Send what waits in the outbox, as far as the channel has room; return True when it is empty.

        A channel the helper has closed (it died, or was killed as hung) takes nothing more: the messages stay
        until the handle is closed, and the helper's death, seen on its pidfd, decides what becomes of them.
        """
        while self.outbox and not self.channel_broken:
            data, fds = self.outbox[0]
            try:
                sent = send_now(self.control, data, fds)
            except OSError:
                self.channel_broken = True
                return False
            if not sent:
                return False
            self.outbox.popleft()
            for fd in fds:
                os.close(fd)
        return True

    def read_output(self) -> tuple[bytes, bool]:
        """Read what the helper (or code it imported) printed; return (data, EOF)."""
        data, eof = read_available(self.output_fd)
        self.output.feed(data)
        return data, eof

    def log_output(self, selector: selectors.BaseSelector, logger: logging.Logger, level: int, name: str) -> None:
        """Log what the helper printed, a line at a time as `name: line`; stop watching its output at EOF."""
        data, eof = self.read_output()
        for line in data.decode("utf-8", errors="replace").splitlines():
            if line.strip():
                logger.log(level, "%s: %s", name, line)
        if eof:
            self.unwatch(selector, self.output_fd)

    def kill(self) -> None:
        """Kill the helper outright (through its pidfd, so never another process that reused its pid)."""
        self.killed = True
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close_channel(self) -> None:
        """Close our end of the channel: the helper sees EOF and exits."""
        self.control.close()

    def reap(self) -> tuple[int | None, int | None]:
        """Collect the exited helper (its pidfd was readable) and return (exit code, signal)."""
        _pid, status = os.waitpid(self.pid, 0)
        self.exited = True
        return decode_status(status)

    def close(self) -> None:
        """Release every descriptor this handle holds."""
        for _data, fds in self.outbox:
            for fd in fds:
                os.close(fd)
        self.outbox.clear()
        for fd in (self.output_fd, self.pidfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.control.close()
