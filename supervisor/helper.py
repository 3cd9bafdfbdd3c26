"""A helper process of the supervisor (the spawner, the recorder): start it, talk to it, see it die.

A helper is started with `posix_spawn` as `python -m MODULE` (a fresh interpreter; no fork of the supervisor,
whose descriptors and terminal state must not be copied), in its own process group so that a Ctrl-C in the
terminal reaches only the supervisor, which then stops everything in order. Its end of a message socket is on
fd 3, its stdout and stderr go to a pipe the supervisor reads, and its death is seen through a pidfd, which
select() reports like any other descriptor, so no SIGCHLD handler and no polling are needed.
"""
from __future__ import annotations

import os
import selectors
import signal
import sys
import time
from typing import Any

from .capture import Capture
from .process import decode_status, open_pipe, read_available, set_nonblocking
from .protocol import Message, channel, receive, send

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

    def watch(self, selector: selectors.BaseSelector, owner: str) -> None:
        """Register the channel, the output pipe and the pidfd with `selector`, as (owner, what) events."""
        selector.register(self.control, selectors.EVENT_READ, (owner, "message"))
        selector.register(self.output_fd, selectors.EVENT_READ, (owner, "output"))
        selector.register(self.pidfd, selectors.EVENT_READ, (owner, "exit"))

    def unwatch(self, selector: selectors.BaseSelector, fileobj: Any = None) -> None:
        """Unregister one of our descriptors (all of them by default) from `selector`."""
        for each in (self.control, self.output_fd, self.pidfd) if fileobj is None else (fileobj,):
            try:
                selector.unregister(each)
            except (KeyError, ValueError):
                pass

    def observe(self, message: Message) -> None:
        """Track state a message implies (subclasses); called for each message in order."""

    def send(self, op: str, fds: list[int] | None = None, **fields: Any) -> None:
        """Send one message; raises OSError if the helper is gone."""
        send(self.control, op, fds, **fields)

    def read_output(self) -> tuple[bytes, bool]:
        """Read what the helper (or code it imported) printed; return (data, EOF)."""
        data, eof = read_available(self.output_fd)
        self.output.feed(data)
        return data, eof

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
        for fd in (self.output_fd, self.pidfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.control.close()
