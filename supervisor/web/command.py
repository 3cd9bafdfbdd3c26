"""`worker-supervisor web`: serve the pages until SIGTERM or SIGINT.

The process reads the database as `status` does (reading.py) and writes nothing. It starts whether or not the
database answers (its pages say so, and recover when it does); it does not start, with one line, when it cannot
listen where it is told. Signal handlers only note the signal; the wakeup pipe ends the wait for a connection.
"""
from __future__ import annotations

import logging
import os
import selectors
import signal
from types import FrameType

from .app import WebApp
from .reading import Reader
from .server import WebServer, is_loopback, listen, parse_listen
from ..config import Config
from ..operate import log as logs
from ..process import drain
from ..record.database import redact

log = logging.getLogger("supervisor.web")


def cmd_web(config: Config, listen_at: str) -> int:
    """Serve the pages on `listen_at` (HOST:PORT) until SIGTERM or SIGINT; return the exit status."""
    logs.setup("INFO")
    server = listen(listen_at, WebApp(Reader(config.database, config.statement_timeout)))
    try:
        host = parse_listen(listen_at)[0]
        if is_loopback(host):
            log.info("serving on %s (read-only; database %s)", server.url, redact(config.database))
        else:
            log.warning("serving on %s (read-only; database %s): beyond loopback, anyone who reaches it reads the "
                        "record; put a reverse proxy with authentication in front", server.url, redact(config.database))
        serve(server)
    finally:
        server.server_close()
    return 0


def serve(server: WebServer) -> None:
    """Accept connections (each served in a thread of its own) until SIGTERM or SIGINT."""
    stop: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)  # only noted: the loop below sees it once the wakeup pipe ends its wait

    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous_fd = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGTERM, signal.SIGINT)}
    server.timeout = 0  # handle_request() below only ever runs when a connection waits
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(server.fileno(), selectors.EVENT_READ, "accept")
            selector.register(wake_read, selectors.EVENT_READ, "wake")
            while not stop:
                for key, _ in selector.select():
                    if key.data == "accept":
                        server.handle_request()
                    else:
                        drain(wake_read)
        log.info("stopped (%s)", signal.Signals(stop[0]).name)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(wake_read)
        os.close(wake_write)
