"""The HTTP server: the standard library's WSGI server with a thread per request (as prometheus-client serves every
Python exporter), with bounds of its own.

- Each request's socket has a timeout (REQUEST_TIMEOUT): a client that sends or takes nothing for that long is
  dropped, and its thread with it.
- The request line is at most MAX_REQUEST_LINE bytes (414 beyond it); headers as http.server bounds them (100
  lines, 64 KiB each).
- At most MAX_CONCURRENT requests are served at once; one more is answered 503 at once, without a thread.
- HTTP/1.0: one request per connection, closed after the answer.
- No access log (a page reloads every few seconds): a reverse proxy in front keeps one, if wanted.
"""
from __future__ import annotations

import logging
import socket
import socketserver
import sys
import threading
from http import HTTPStatus
from typing import Any
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from .app import SECURITY_HEADERS
from ..errors import ConfigError

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0
MAX_REQUEST_LINE = 8192
MAX_CONCURRENT = 16
BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"X-Content-Type-Options: nosniff\r\nRetry-After: 1\r\nContent-Length: 38\r\nConnection: close\r\n\r\n"
        b"too many requests at once; try again\r\n")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (`[::1]:8080` for IPv6; port 0 takes a free one) as (host, port); raise ConfigError if it is not."""
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--listen must be HOST:PORT, such as 127.0.0.1:8080 (port 0 takes a free one), "
                          f"got {text!r}")
    return host, int(port)


class Handler(ServerHandler):
    """wsgiref's handler of one request, naming no Python version in its Server header."""

    server_software = "worker-supervisor"

    def log_exception(self, exc_info: Any) -> None:
        # Only sending can fail here (the app answers its own errors): a client that stopped reading past the
        # timeout. One line, not a traceback.
        environ: dict[str, Any] = getattr(self, "environ", None) or {}
        log.warning("web: answering %s failed: %s", environ.get("PATH_INFO", "a request"), exc_info[1])


class RequestHandler(WSGIRequestHandler):
    """wsgiref's handler with a socket timeout, a shorter request line, no access log and no version banner."""

    timeout = REQUEST_TIMEOUT  # socketserver.StreamRequestHandler sets it on the connection
    server_version = "worker-supervisor"
    sys_version = ""

    def handle(self) -> None:
        """wsgiref's `handle`, with MAX_REQUEST_LINE for its 64 KiB and a thread's environ (multithread)."""
        try:
            self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
        except OSError:  # the client went silent past the timeout, or reset the connection
            return
        if len(self.raw_requestline) > MAX_REQUEST_LINE:
            self.requestline = ""
            self.request_version = ""
            self.command = ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        if not self.parse_request():  # parse_request has answered (400, 431, ...)
            return
        wfile: Any = self.wfile  # typeshed says BufferedIOBase here and IO[bytes] there: the same socket file
        handler = Handler(self.rfile, wfile, self.get_stderr(), self.get_environ(), multithread=True)
        handler.request_handler = self  # type: ignore[attr-defined]  # wsgiref's own back-pointer, for its log
        handler.run(self.server.get_app())  # type: ignore[attr-defined]  # our server is a WSGIServer

    def end_headers(self) -> None:
        # Only http.server's own error answers (400, 414, 431) come through here; the app's carry these already.
        for name, value in SECURITY_HEADERS:
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # http.server's signature
        log.debug("web: %s " + format, self.client_address[0], *args)


class WebServer(socketserver.ThreadingMixIn, WSGIServer):
    """A WSGI server with a thread per request, at most MAX_CONCURRENT at once."""

    daemon_threads = True  # a request in progress does not hold up the process's exit
    request_queue_size = 64

    def __init__(self, host: str, port: int, app: Any) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        super().__init__((host, port), RequestHandler)
        self.set_app(app)

    def server_bind(self) -> None:
        """Bind without http.server's reverse DNS look-up of the host (`getfqdn`), which can hang on a closed
        network; the environ's SERVER_NAME is the host as given."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request that failed outside the app (its connection, mostly): one line, not socketserver's traceback."""
        log.warning("web: a request from %s failed: %s", client_address[0], sys.exc_info()[1])

    def _refuse(self, request: socket.socket) -> None:
        """Answer 503 from the accepting thread: a few bytes that fit any socket's buffer, so it never waits."""
        try:
            request.settimeout(1.0)
            request.sendall(BUSY)
        except OSError:
            pass
        self.shutdown_request(request)

    @property
    def url(self) -> str:
        """Where it serves: `http://HOST:PORT` (the port it was given, once port 0 took one)."""
        host, port = self.server_address[:2]
        text = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://[{text}]:{port}" if ":" in text else f"http://{text}:{port}"


def listen(text: str, app: Any) -> WebServer:
    """Start listening on HOST:PORT; raise ConfigError (one line) for a bad address or one that is taken."""
    host, port = parse_listen(text)
    try:
        return WebServer(host, port, app)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {text}: {exc.strerror or exc}", "--listen") from None


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")
