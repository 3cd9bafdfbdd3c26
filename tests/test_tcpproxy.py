"""The fault proxy the database tests lean on must itself survive every order of events."""
from __future__ import annotations

import os
import signal
import socket

from helpers import TcpProxy, wait_until


def test_a_cut_in_the_same_wakeup_as_a_new_connection_leaves_the_proxy_serving() -> None:
    # The failure seen under CI: a `cut` command and a pending connection became ready together; the cut closed
    # the listener and the proxy then tried to accept on it and died, taking every later test step with it.
    target = socket.create_server(("127.0.0.1", 0))
    proxy = TcpProxy(target.getsockname()[1])
    try:
        os.kill(proxy.process.pid, signal.SIGSTOP)
        try:
            assert proxy.process.stdin is not None
            proxy.process.stdin.write("cut\n")  # ready first ...
            proxy.process.stdin.flush()
            client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)  # ... then the listener
        finally:
            os.kill(proxy.process.pid, signal.SIGCONT)
        assert proxy.process.stdout is not None
        assert proxy.process.stdout.readline().strip() == "ok cut"
        client.close()
        proxy.set("forward")
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as again:
            accepted, _ = target.accept()
            with accepted:
                again.sendall(b"ping")
                accepted.settimeout(5)
                assert wait_until(lambda: accepted.recv(4), timeout=5, what="the relayed bytes") == b"ping"
        assert proxy.process.poll() is None
    finally:
        proxy.close()
        target.close()
