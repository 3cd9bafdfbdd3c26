"""A TCP proxy on loopback for database fault tests: forward, cut (refuse and reset), or hang (accept, never answer).

Run as `python tcpproxy.py TARGET_PORT`; it prints `ready PORT` and takes commands on stdin, one per line:
`cut`, `hang`, `forward`; it answers each with `ok MODE`. It stops at EOF on stdin. It only ever listens on and
connects to 127.0.0.1, and it stops by itself when the test that started it goes away.
"""
from __future__ import annotations

import selectors
import socket
import sys

HOST = "127.0.0.1"


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target = (HOST, target_port)
        self.selector = selectors.DefaultSelector()
        self.mode = "forward"
        self.pairs: dict[socket.socket, socket.socket] = {}
        self.listener: socket.socket | None = None
        self.port = 0
        self.listen()
        self.selector.register(sys.stdin, selectors.EVENT_READ, "command")

    def listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port))
        listener.listen(64)
        listener.setblocking(False)  # accept() after a client gave up must not block the proxy
        self.port = listener.getsockname()[1]
        self.listener = listener
        self.selector.register(listener, selectors.EVENT_READ, "accept")

    def serve(self) -> None:
        print(f"ready {self.port}", flush=True)
        while True:
            for key, _ in self.selector.select():
                # One batch of events can hold a command that changes what the others refer to: a `cut` closes
                # the listener and the relayed sockets whose readiness came in the same batch. Those are stale.
                if key.data == "command":
                    line = sys.stdin.readline()
                    if not line:
                        return
                    self.command(line.strip())
                elif key.data == "accept":
                    if key.fileobj is self.listener:
                        self.accept()
                elif key.data == "relay":
                    if key.fileobj in self.pairs:
                        self.relay(key.fileobj)  # type: ignore[arg-type]

    def command(self, mode: str) -> None:
        if mode == "cut":
            # Like a server that went away: every connection reset, new ones refused.
            for sock in list(self.pairs):
                if sock in self.pairs:
                    self.close(sock, reset=True)
            if self.listener is not None:
                self.selector.unregister(self.listener)
                self.listener.close()
                self.listener = None
        elif mode == "hang":
            # Connections stay open, but nothing is read or relayed any more: every peer waits.
            for sock, peer in self.pairs.items():
                if sock is not peer:
                    self._unwatch(sock)
            if self.listener is None:
                self.listen()
        elif mode == "forward" and self.mode == "hang":
            for sock, peer in list(self.pairs.items()):
                if sock is peer:  # accepted while hanging, never connected: let it go
                    self.close(sock)
                elif sock in self.pairs:
                    self.selector.register(sock, selectors.EVENT_READ, "relay")
        if mode in ("hang", "forward") and self.listener is None:
            self.listen()
        self.mode = mode
        print(f"ok {mode}", flush=True)

    def accept(self) -> None:
        assert self.listener is not None
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:  # the client gave up between readiness and accept
            return
        if self.mode == "hang":
            self.pairs[client] = client  # held open, never answered
            return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        for a, b in ((client, server), (server, client)):
            self.pairs[a] = b
            self.selector.register(a, selectors.EVENT_READ, "relay")

    def relay(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        peer = self.pairs.get(sock)
        if not data or peer is None:
            self.close(sock)
            return
        try:
            peer.sendall(data)
        except OSError:
            self.close(sock)

    def _unwatch(self, sock: socket.socket) -> None:
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def close(self, sock: socket.socket, reset: bool = False) -> None:
        peer = self.pairs.pop(sock, None)
        for s in (sock, peer):
            if s is None or s.fileno() == -1:
                continue
            self.pairs.pop(s, None)
            self._unwatch(s)
            if reset:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()


if __name__ == "__main__":
    Proxy(int(sys.argv[1])).serve()
