"""Turn a database URL into a peewee Database: one piece of code for the supervisor's record and a run's own database.

Both speak to SQLite or PostgreSQL, and both want the same guards: a bounded wait for a lock, statements and
abandoned transactions that end on the server's side, a dead network noticed within seconds, and no password in
any message. Keeping them in one place means a fix to one is a fix to both.
"""
from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

import peewee
from playhouse import db_url

from ..errors import StoreUnavailable

SQLITE_BUSY_TIMEOUT_MS = 5000
CONNECT_TIMEOUT = 5  # seconds; libpq counts whole seconds, at least 2
STATEMENT_TIMEOUT_MS = 10_000
APPLICATION_NAME = "worker-supervisor"
"""What the supervisor's own connections say in `pg_stat_activity`, so an operator can tell them apart."""


def redact(url: str) -> str:
    """Return the URL with its password replaced, for logs, errors and the table."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def connect(
    url: str,
    connect_timeout: int = CONNECT_TIMEOUT,
    statement_timeout_ms: int | None = STATEMENT_TIMEOUT_MS,
    application_name: str = APPLICATION_NAME,
) -> peewee.Database:
    """Make (not yet open) the peewee database a URL names: `sqlite:///path` or `postgresql://...`.

    `statement_timeout_ms` bounds one statement (and, six times over, a transaction left idle) on a PostgreSQL
    server, and a wait for a SQLite lock. None leaves statements to the server's own settings: a run's own work
    may rightly take minutes, and the run's `timeout` bounds it instead. `application_name` is what a PostgreSQL
    session shows in `pg_stat_activity`, so an operator can tell whose connection it is.
    """
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = db_url.parse(url)["database"] or ":memory:"
        busy_timeout_ms = SQLITE_BUSY_TIMEOUT_MS
        if statement_timeout_ms is not None:
            busy_timeout_ms = min(busy_timeout_ms, statement_timeout_ms)
        return peewee.SqliteDatabase(
            path,
            timeout=busy_timeout_ms / 1000,
            pragmas={
                # WAL lets another process (`status`, a reader of a run's data) read while we write; NORMAL is
                # durable across a process crash (only an OS crash can lose the last commits).
                "journal_mode": "wal",
                "synchronous": "normal",
                "busy_timeout": busy_timeout_ms,
                "foreign_keys": 1,
            },
        )
    if scheme in ("postgres", "postgresql"):
        parts = urlsplit(url)
        if not parts.path.strip("/"):
            raise StoreUnavailable("the PostgreSQL URL names no database", redact(url))
        # Bounded on the server's side too: a statement stuck behind a lock, or a transaction whose client
        # vanished, ends instead of holding the worker rows. (None is left out of the connection string.)
        bounds = None
        if statement_timeout_ms is not None:
            bounds = (
                f"-c statement_timeout={statement_timeout_ms} "
                f"-c idle_in_transaction_session_timeout={statement_timeout_ms * 6}"
            )
        if peewee.psycopg is None:  # type: ignore[attr-defined]  # peewee's module-level driver import
            # Named here, not by peewee at the first connection: peewee would name psycopg2, which is not ours.
            raise StoreUnavailable(
                "PostgreSQL needs the psycopg 3 driver, which is not installed: "
                "pip install 'worker-supervisor[postgres]' (psycopg2 is not enough)",
                redact(url),
            )
        try:
            return peewee.PostgresqlDatabase(
                unquote(parts.path.lstrip("/")),
                # peewee takes psycopg2 whenever it is importable (every Django app has it), and the record needs
                # psycopg 3: LISTEN/NOTIFY through its notify handlers. Chosen, not left to what is installed.
                prefer_psycopg3=True,
                user=unquote(parts.username) if parts.username else None,
                password=unquote(parts.password) if parts.password else None,
                host=parts.hostname or None,
                port=parts.port,
                connect_timeout=max(2, connect_timeout),
                options=bounds,
                # A server that vanishes without a word (network cut) is noticed within seconds.
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                tcp_user_timeout=STATEMENT_TIMEOUT_MS if statement_timeout_ms is None else statement_timeout_ms,
                application_name=application_name,
            )
        except peewee.ImproperlyConfigured as exc:
            raise StoreUnavailable(
                f"cannot use PostgreSQL: {exc} (pip install 'worker-supervisor[postgres]')", redact(url)
            ) from exc
    raise StoreUnavailable(f"unsupported database URL scheme {scheme!r}; use sqlite:/// or postgresql://", redact(url))
