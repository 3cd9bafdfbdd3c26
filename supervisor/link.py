"""The supervisor's end of the spawner: start it, send it requests, read its reports, see it die.

The spawner is started with `posix_spawn` (a fresh interpreter; no fork of the supervisor, whose threads,
database connection and terminal state must not be copied), in its own process group so that a Ctrl-C in the
terminal reaches only the supervisor, which then stops the runs in order. Its death is seen through a pidfd,
which select() reports like any other descriptor, so no SIGCHLD handler and no polling are needed.
"""
from __future__ import annotations

import os
import signal
import sys
import time

from .capture import Capture
from .process import decode_status, open_pipe, read_available, set_nonblocking
from .protocol import Message, channel, receive, send


class SpawnerLink:
    """One spawner process and the channel to it."""

    def __init__(self, sources: list[str], excluded: set[str]) -> None:
        self.sources = sources
        self.excluded = set(excluded)
        self.pid = 0
        self.ready = False
        self.importing: str | None = None
        """The module the spawner said it is importing and has not yet reported on: the culprit if it dies."""
        self.importing_since = 0.0
        self.output = Capture(head=0)
        self.exited = False
        self.channel_closed = False
        self.killed = False
        self.started = 0.0

    def start(self) -> None:
        """Start the spawner process; its reports arrive on `control`."""
        self.control, theirs = channel()
        out_r, out_w = open_pipe()
        argv = [sys.executable, "-m", "supervisor.spawner", "--control-fd", "3", "--supervisor-pid", str(os.getpid())]
        for source in self.sources:
            argv += ["--source", source]
        for module in sorted(self.excluded):
            argv += ["--exclude", module]
        try:
            self.pid = os.posix_spawn(
                sys.executable,
                argv,
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, out_w, 1),
                    (os.POSIX_SPAWN_DUP2, out_w, 2),
                    # dup2 clears close-on-exec on the copy, so only this one end of the channel is inherited.
                    (os.POSIX_SPAWN_DUP2, theirs.fileno(), 3),
                ],
                setpgroup=0,
                setsigdef=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE),
                setsigmask=(),
            )
        finally:
            theirs.close()
            os.close(out_w)
        self.started = time.monotonic()
        self.output_fd = out_r
        set_nonblocking(out_r)
        self.control.setblocking(True)
        self.pidfd = os.pidfd_open(self.pid)

    def messages(self) -> list[Message]:
        """Return every report waiting on the channel; an EOF (the spawner is gone) ends the list."""
        found: list[Message] = []
        while not self.channel_closed:
            try:
                message, fds = receive(self.control, block=False)
            except BlockingIOError:
                break
            except ConnectionResetError:
                message, fds = None, []
            for fd in fds:  # the spawner never sends descriptors; never leak one if it did
                os.close(fd)
            if message is None:
                self.channel_closed = True
                break
            if message["op"] == "importing":
                self.importing = message["module"]
                self.importing_since = time.monotonic()
            elif message["op"] == "broken" and message.get("module") == self.importing:
                self.importing = None
            elif message["op"] == "ready":
                self.ready = True
                self.importing = None
            found.append(message)
        return found

    def import_deadline(self, timeout: float) -> float:
        """When the module being imported (or the start-up, before any module) is taken as hung."""
        return max(self.started, self.importing_since) + timeout

    def read_output(self) -> tuple[bytes, bool]:
        """Read what the spawner (and module code at import) printed; return (data, EOF)."""
        data, eof = read_available(self.output_fd)
        self.output.feed(data)
        return data, eof

    def spawn(self, run_id: str, worker: str, attempt: int, deadline: float | None, fds: list[int]) -> None:
        """Ask for a run; `fds` are the write ends of its result, stdout and stderr pipes."""
        send(self.control, "spawn", fds, run=run_id, worker=worker, attempt=attempt, deadline=deadline)

    def signal_run(self, run_id: str, sig: int) -> None:
        """Ask the spawner to signal a run's process group (it alone knows whether the pid is still the run's)."""
        try:
            send(self.control, "signal", run=run_id, signal=int(sig))
        except OSError:
            pass  # the spawner is gone; its death takes the runs with it and is handled on its pidfd

    def kill(self) -> None:
        """Kill the spawner outright (through its pidfd, so never another process that reused its pid)."""
        self.killed = True
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close_channel(self) -> None:
        """Close our end of the channel: the spawner sees EOF, kills what runs, and exits."""
        self.control.close()

    def reap(self) -> tuple[int | None, int | None]:
        """Collect the exited spawner (its pidfd was readable) and return (exit code, signal)."""
        _pid, status = os.waitpid(self.pid, 0)
        self.exited = True
        return decode_status(status)

    def close(self) -> None:
        """Release every descriptor the link holds."""
        for fd in (self.output_fd, self.pidfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.control.close()
