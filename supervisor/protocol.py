"""Messages between the supervisor and the spawner: one JSON object per datagram, pipe ends passed alongside.

The channel is an AF_UNIX SOCK_SEQPACKET socketpair: it keeps message boundaries (no framing code), carries
file descriptors (SCM_RIGHTS) with the message they belong to, and reads as EOF on either side when the other
process dies, which is how the spawner learns that the supervisor is gone.

Supervisor -> spawner:  spawn {run, worker, attempt, deadline} + [result_w, stdout_w, stderr_w]
                        signal {run, signal}; dump_stack {run}; fence {until}
Spawner -> supervisor:  importing {module}; broken {module, worker?, error, traceback};
                        worker {definition, module (where it was found)}; threaded {module, threads};
                        ready {pid}; spawned {run, pid}; spawn_failed {run, error};
                        exited {run, pid, status, cpu, maxrss}
"""
from __future__ import annotations

import array
import json
import signal
import socket
from typing import Any

# The few numbers and names both sides must agree on live here, so that neither side imports the other's code
# for them (the supervisor must not load the spawner's modules: tests/test_boundaries.py).
EXIT_RESTART = 75
"""The spawner exits with this after reporting a module it must not keep (one that started a thread at import):
the supervisor starts a fresh spawner without it."""
COMMANDS_ENV = "SUPERVISOR_SPAWNER_COMMANDS"
"""The config's command workers travel to the spawner in the environment, not on its command line: their `env`
may hold secrets, and argv is visible to every user in ps. The spawner takes the variable out before any worker
code runs."""
COORDINATOR_DB_ENV = "SUPERVISOR_COORDINATOR_DB"
"""The database URL reaches the coordinator (record/coordinator.py) in its environment: argv is visible in ps."""
RESULT_FD = 3
STACK_SIGNAL = signal.SIGUSR2
"""At a run's timeout, before it is asked to stop, this signal makes its Python write its stack (faulthandler) to
its stderr, so the failure says where it hung. Sent to a Python run's own process only (an external command's
default action for it would be to die)."""
"""Where a run's child finds its result pipe (stdout and stderr are on 1 and 2)."""

# Large enough for any message we send (tracebacks are capped well below); SEQPACKET truncates, never splits.
MAX_MESSAGE = 256 * 1024
MAX_TEXT = 64 * 1024
MAX_FDS = 4

Message = dict[str, Any]


def channel() -> tuple[socket.socket, socket.socket]:
    """Return a connected pair of message sockets (both close-on-exec)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def encode(op: str, **fields: Any) -> bytes:
    """Encode one message."""
    return json.dumps({"op": op, **fields}, separators=(",", ":")).encode()


def send(sock: socket.socket, op: str, fds: list[int] | None = None, **fields: Any) -> None:
    """Send one message, with `fds` attached if given, waiting for room if the socket is full."""
    data = encode(op, **fields)
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def send_now(sock: socket.socket, data: bytes, fds: list[int]) -> bool:
    """Send one encoded message if the socket has room now; return False (nothing sent) if it has not."""
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    try:
        sock.sendmsg([data], ancillary, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    return True


def receive(sock: socket.socket, *, block: bool = True) -> tuple[Message | None, list[int]]:
    """Receive one message and its fds; (None, []) means the peer is gone (EOF).

    With block=False, raise BlockingIOError when nothing is waiting. (Not socket.recv_fds: before Python 3.12
    it drops its `flags` argument, so MSG_DONTWAIT would silently block.)
    """
    flags = socket.MSG_CMSG_CLOEXEC | (0 if block else socket.MSG_DONTWAIT)
    fds = array.array("i")
    data, ancillary, _flags, _addr = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * fds.itemsize), flags)
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        return None, list(fds)
    return json.loads(data), list(fds)


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """Cut text to its last `limit` characters (the end of a traceback is what matters)."""
    return text if len(text) <= limit else "[...]\n" + text[-limit:]
