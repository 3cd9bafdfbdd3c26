"""`/metrics` served by the supervisor's own loop: a listening socket and its connections in the loop's selector.

No thread and no server library: the loop is single-threaded by design (STYLE), and a scrape must read the
loop's state at one moment without a lock. Every socket is non-blocking; a request is read up to its blank line
(at most 8 KiB), answered from the collector there and then, and written as the client takes it. A client that
sends nothing, or takes nothing, for 10 seconds is dropped, so a stuck scraper holds no descriptor for long and
never the loop. GET and HEAD of /metrics only: anything else is 404 or 405.
"""
from __future__ import annotations

import logging
import selectors
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ConfigError

log = logging.getLogger("supervisor")

MAX_REQUEST = 8192
IDLE_TIMEOUT = 10.0
MAX_CONNECTIONS = 16
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(eq=False)
class Connection:
    sock: socket.socket
    deadline: float
    received: bytearray = field(default_factory=bytearray)
    outgoing: bytes = b""
    sent: int = 0


class MetricsServer:
    """Listens on HOST:PORT; `exposition()` gives the body of each answer."""

    def __init__(self, listen: str, selector: selectors.BaseSelector, exposition: Callable[[], bytes],
                 clock: Callable[[], float]) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.listener = socket.socket(family, socket.SOCK_STREAM)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((host, int(port)))
            self.listener.listen(MAX_CONNECTIONS)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {listen}: {exc.strerror or exc}", "--metrics") from None
        self.listener.setblocking(False)
        self.address = self.listener.getsockname()
        self.selector = selector
        self.exposition = exposition
        self.clock = clock
        self.connections: dict[int, Connection] = {}
        selector.register(self.listener, selectors.EVENT_READ, ("metrics", None))

    @property
    def port(self) -> int:
        return int(self.address[1])

    def handle(self, target: Any, events: int) -> None:
        """An event of ours: a connection to accept, a request to read, or room to write an answer."""
        if target is None:
            self._accept()
            return
        connection: Connection = target
        if events & selectors.EVENT_READ and not connection.outgoing:
            self._read(connection)
        elif events & selectors.EVENT_WRITE:
            self._write(connection)

    def _accept(self) -> None:
        while len(self.connections) < MAX_CONNECTIONS:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: the next event tries again
                log.warning("metrics: cannot accept a connection: %s", exc.strerror or exc)
                return
            sock.setblocking(False)
            connection = Connection(sock, self.clock() + IDLE_TIMEOUT)
            self.connections[sock.fileno()] = connection
            self.selector.register(sock, selectors.EVENT_READ, ("metrics", connection))

    def _read(self, connection: Connection) -> None:
        try:
            data = connection.sock.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(connection)
            return
        connection.received += data
        head, separator, _ = bytes(connection.received).partition(b"\r\n\r\n")
        if not separator:
            if len(connection.received) > MAX_REQUEST:
                self._answer(connection, 431, "Request Header Fields Too Large", b"request too large\n", True)
            return
        self._respond(connection, head.split(b"\r\n", 1)[0].decode("latin-1"))

    def _respond(self, connection: Connection, request_line: str) -> None:
        parts = request_line.split()
        method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
        if path.split("?", 1)[0] not in ("/metrics", "/"):
            self._answer(connection, 404, "Not Found", b"not found: the metrics are at /metrics\n", method != "HEAD")
        elif method not in ("GET", "HEAD"):
            self._answer(connection, 405, "Method Not Allowed", b"only GET and HEAD\n", True, allow=True)
        else:
            self._answer(connection, 200, "OK", self.exposition(), method == "GET")

    def _answer(self, connection: Connection, code: int, reason: str, body: bytes, with_body: bool,
                allow: bool = False) -> None:
        headers = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {len(body)}\r\n"
                   + ("Allow: GET, HEAD\r\n" if allow else "") + "Connection: close\r\n\r\n")
        connection.outgoing = headers.encode() + (body if with_body else b"")
        connection.deadline = self.clock() + IDLE_TIMEOUT
        self.selector.modify(connection.sock, selectors.EVENT_WRITE, ("metrics", connection))
        self._write(connection)

    def _write(self, connection: Connection) -> None:
        try:
            connection.sent += connection.sock.send(connection.outgoing[connection.sent:])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(connection)
            return
        if connection.sent >= len(connection.outgoing):
            self._close(connection)

    def expire(self, now: float) -> None:
        """Drop the connections that have sent or taken nothing for too long."""
        for connection in [c for c in self.connections.values() if now >= c.deadline]:
            self._close(connection)

    def next_time(self) -> float | None:
        return min((c.deadline for c in self.connections.values()), default=None)

    def _close(self, connection: Connection) -> None:
        self.connections.pop(connection.sock.fileno(), None)
        try:
            self.selector.unregister(connection.sock)
        except (KeyError, ValueError):
            pass
        connection.sock.close()

    def close(self) -> None:
        for connection in list(self.connections.values()):
            self._close(connection)
        try:
            self.selector.unregister(self.listener)
        except (KeyError, ValueError):
            pass
        self.listener.close()
