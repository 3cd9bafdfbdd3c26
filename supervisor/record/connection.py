"""A Store's connection: open it (and bring the schema forward), close it, open it afresh, and say what went wrong
in one line with no password in it.

The base of the Store (store.py): what its record-applying, command, retention and reading parts all use.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit

import peewee

from ..errors import StoreUnavailable
from .database import CONNECT_TIMEOUT, SQLITE_BUSY_TIMEOUT_MS, STATEMENT_TIMEOUT_MS, connect, redact
from .claim_sql import ensure_claim_function
from .schema import MIGRATIONS, MODELS, SCHEMA_VERSION, SchemaVersion, database

log = logging.getLogger(__name__)

SCHEMA_RETRY = 0.02  # seconds between two attempts to open a SQLite file another process is bringing up to date


class StoreConnection:
    """The connection a Store works through, and its schema brought up to date."""

    def __init__(self, url: str, connect_timeout: int = CONNECT_TIMEOUT, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> None:
        self.url = url
        self.where = redact(url)
        self._secret = urlsplit(url).password
        self.db = connect(url, connect_timeout, statement_timeout_ms)
        self._known_workers: set[str] = set()
        """Worker rows this connection has seen exist (workers are retired, never deleted, while we run)."""
        self.node = socket.gethostname()
        self.pid = os.getpid()

    def scrub(self, text: str) -> str:
        """Remove the database password from a message (a driver may quote the connection string)."""
        if self._secret:
            text = text.replace(self._secret, "***").replace(unquote(self._secret), "***")
        return text

    def describe(self, exc: BaseException) -> str:
        """One line saying what went wrong, with no password in it."""
        text = str(exc).strip() or type(exc).__name__
        return self.scrub(text.splitlines()[0])

    @contextmanager
    def unavailable_as(self, doing: str) -> Iterator[None]:
        """Turn a database error inside the block into StoreUnavailable: `<doing>: <what went wrong>` (no password)."""
        try:
            yield
        except peewee.PeeweeException as exc:
            raise StoreUnavailable(f"{doing}: {self.describe(exc)}", self.where) from exc

    # -- opening ----------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Connect and bring the schema up to date; raise StoreUnavailable with one clear line if we cannot.

        On SQLite, two processes opening a new file at once (`run` and `web` started together) can each read the
        schema and then both want to write it: SQLite refuses one at once ("database is locked") rather than make
        it wait for a lock it could deadlock on. That one tries again, within the busy timeout.
        """
        database.initialize(self.db)
        give_up = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self.db.connect(reuse_if_open=True)
                self._migrate()
                return
            except peewee.PeeweeException as exc:
                self.close()
                locked = isinstance(self.db, peewee.SqliteDatabase) and "locked" in str(exc)
                if not locked or time.monotonic() > give_up:
                    raise StoreUnavailable(f"cannot open the database: {self.describe(exc)}", self.where) from exc
                time.sleep(SCHEMA_RETRY)  # the other process's schema transaction is milliseconds long
            except StoreUnavailable:
                self.close()
                raise

    def _migrate(self) -> None:
        with self.db.atomic():
            self._migrate_tables()
            if isinstance(self.db, peewee.PostgresqlDatabase):
                ensure_claim_function(self.db)

    def _migrate_tables(self) -> None:
        """Create the tables, or bring them forward; one supervisor at a time on PostgreSQL."""
        if isinstance(self.db, peewee.PostgresqlDatabase):
            # Several supervisors starting at once on a fresh database: one creates or migrates the schema,
            # the others wait here and then find it done (CREATE TABLE IF NOT EXISTS races in the catalogue).
            lock = "SELECT pg_advisory_xact_lock(hashtextextended('worker-supervisor:schema', 0))"
            self.db.execute_sql(lock)  # type: ignore[no-untyped-call]
        tables = set(self.db.get_tables())
        if "worker" not in tables:
            self.db.create_tables(MODELS, safe=True)
            SchemaVersion.insert(id=1, version=SCHEMA_VERSION).on_conflict_ignore().execute()
            return
        self.db.create_tables([SchemaVersion], safe=True)
        version = SchemaVersion.select(peewee.fn.MAX(SchemaVersion.version)).scalar() or 1
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"the database's schema is version {version}, newer than this release's {SCHEMA_VERSION}; "
                "upgrade worker-supervisor",
                self.where,
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            log.warning("store: migrating the schema from version %d to %d", target - 1, target)
            MIGRATIONS[target](self.db)
            SchemaVersion.delete().execute()
            SchemaVersion.insert(id=1, version=target).execute()

    def close(self) -> None:
        """Close the connection."""
        if not self.db.is_closed():
            try:
                self.db.close()
            except peewee.PeeweeException:
                pass

    def reconnect(self) -> None:
        """Drop the connection (after an error) so the next use opens a fresh one."""
        self._known_workers.clear()
        try:
            self.db.close()
        except peewee.PeeweeException:
            pass

    def write_transaction(self) -> Any:
        """A transaction that will write: on SQLite it takes the write lock at BEGIN (IMMEDIATE), so a second
        writer waits out the busy timeout instead of failing at once on a read lock it cannot upgrade."""
        return self.db.atomic("IMMEDIATE") if isinstance(self.db, peewee.SqliteDatabase) else self.db.atomic()
