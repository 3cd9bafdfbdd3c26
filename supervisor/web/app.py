"""The web page as a WSGI application: routes, methods, status codes and headers; pages.py writes the HTML.

Read-only: GET and HEAD only, anything else 405 with `Allow`. Every answer carries a strict Content-Security-Policy
(nothing but same-origin styles and one same-origin script: no inline script or style, no frames, no forms), and
no caching of pages (they hold what workers printed). A database that cannot be read is a 503 page saying so in
one line, which reloads itself and recovers as soon as the database answers again (reading.py opens a connection
per request). An unexpected error is logged with its traceback and answered with a 500 page that shows none.

Routes: `/` the workers, `/worker/NAME` a worker's runs, `/failure/ID` a failure in full, `/nodes`, `/health`
(JSON: 200 healthy or degraded, 503 down; see `health_answer`), `/static/app.js`, `/static/style.css`
and `/static/icon.svg`.
"""
from __future__ import annotations

import logging
from http import HTTPStatus
from importlib import resources
from typing import Any, Callable, Iterable

from . import pages
from .markup import Html
from .reading import Reader
from ..errors import StoreUnavailable
from ..operate import as_json, health

log = logging.getLogger(__name__)

CSP = ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)
ALLOWED = ("GET", "HEAD")
HTML = "text/html; charset=utf-8"
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8",
          "icon.svg": "image/svg+xml"}
MAX_DRAINED = 64 * 1024
"""A refused request's body is read (and dropped) up to this size, so that closing the connection does not reset
it before the client has read the 405."""
MAX_ID = 2**31 - 1
HEALTH_STATUS = {health.HEALTHY: HTTPStatus.OK, health.DEGRADED: HTTPStatus.OK, health.DOWN: HTTPStatus.SERVICE_UNAVAILABLE}
"""/health's HTTP status by verdict. Degraded is 200 with "degraded" in the body: the workers have trouble, but
the supervisor runs them and the page answers, and a load balancer or an uptime check that acts on status codes
should not take that for an outage (Spring Boot's actuator maps its states the same way). A check that wants to
hear of degraded reads the JSON's "health", or runs `worker-supervisor health` (exit status 1)."""

StartResponse = Callable[..., Any]


class Answer:
    """One response: status, content type, body, and headers of its own beyond the security ones."""

    def __init__(self, status: HTTPStatus, body: bytes, content_type: str = HTML, cache: str = "no-store",
                 extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.status = status
        self.body = body
        self.headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", cache),
                        *SECURITY_HEADERS, *extra]


def page(html: Html, status: HTTPStatus = HTTPStatus.OK, extra: tuple[tuple[str, str], ...] = ()) -> Answer:
    return Answer(status, html.encode("utf-8"), extra=extra)


def static_files() -> dict[str, bytes]:
    """The files under /static, read once from the package (they ship as package data)."""
    folder = resources.files(__package__ or "supervisor.web").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in STATIC}


class WebApp:
    """The WSGI application; `reader` reads the record for each request."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.static = static_files()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = _path(environ)
        base = "./" if path.count("/") <= 1 else "../" * (path.count("/") - 1)
        if method not in ALLOWED:
            _drain(environ)
            answer = page(pages.message_page("method not allowed", f"{method} is not allowed: this page is "
                                             "read-only (GET and HEAD)", base, "problem"),
                          HTTPStatus.METHOD_NOT_ALLOWED, extra=(("Allow", ", ".join(ALLOWED)),))
        else:
            try:
                answer = self.route(path, base)
            except StoreUnavailable as exc:
                # One line, no trace: what the database said, and where (its URL without the password).
                answer = page(pages.message_page("database unavailable", f"the database cannot be read: {exc}", base,
                                                 "unavailable", refresh=True), HTTPStatus.SERVICE_UNAVAILABLE,
                              extra=(("Retry-After", str(pages.REFRESH)),))
            except Exception:
                log.exception("web: %s %s failed", method, path)
                answer = page(pages.message_page("internal error", "this page failed; the web process's log says why",
                                                 base, "problem"), HTTPStatus.INTERNAL_SERVER_ERROR)
        start_response(f"{answer.status.value} {answer.status.phrase}", answer.headers)
        return [] if method == "HEAD" else [answer.body]

    def route(self, path: str, base: str) -> Answer:
        """The answer to a GET of `path` (HEAD gets the same, without its body)."""
        if path == "/":
            return page(pages.status_page(self.reader.status(), base))
        if path == "/nodes":
            return page(pages.nodes_page(self.reader.nodes(), base))
        if path == "/health":
            return self.health_answer()
        if path.startswith("/worker/") and len(path) > len("/worker/"):
            name = path[len("/worker/"):]
            found = self.reader.worker(name)
            if found is None:
                return self.not_found(base, f"no worker named {name!r} in the database")
            return page(pages.worker_page(found, base))
        if path.startswith("/failure/"):
            number = path[len("/failure/"):]
            row = self.reader.failure(int(number)) if number.isdigit() and 0 < int(number) <= MAX_ID else None
            if row is None:
                return self.not_found(base, f"no failure {number!r} in the database (pruned, or never was)")
            return page(pages.failure_page(row, base))
        if path.startswith("/static/") and path[len("/static/"):] in self.static:
            name = path[len("/static/"):]
            return Answer(HTTPStatus.OK, self.static[name], STATIC[name], cache="max-age=300")
        return self.not_found(base, f"nothing at {path!r}")

    def health_answer(self) -> Answer:
        """`health --json`'s document, with HEALTH_STATUS as the HTTP status."""
        code, problems, snapshot = self.reader.health()
        body = as_json.dumps(health.document(code, problems, snapshot)).encode("utf-8") + b"\n"
        return Answer(HEALTH_STATUS[code], body, "application/json")

    def not_found(self, base: str, line: str) -> Answer:
        return page(pages.message_page("not found", line, base, "problem"), HTTPStatus.NOT_FOUND)


def _path(environ: dict[str, Any]) -> str:
    """The request's path as text: WSGI gives its bytes (percent-decoded) as latin-1; they are UTF-8."""
    raw = environ.get("PATH_INFO") or "/"
    try:
        return str(raw.encode("latin-1").decode("utf-8", "replace"))
    except UnicodeEncodeError:
        return str(raw)


def _drain(environ: dict[str, Any]) -> None:
    """Read a refused request's body (up to MAX_DRAINED), so the 405 reaches a client still sending it."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    if 0 < length <= MAX_DRAINED:
        try:
            environ["wsgi.input"].read(length)
        except OSError:
            pass  # the client went away or was too slow (the request's timeout): nothing to answer anyway
