"""When the recorder should look for operators' commands (trigger, pause, resume), as cheaply as the database allows.

The command line reaches a running supervisor through the database alone: it inserts a `command` row, and the
recorder passes it on. Looking for rows with a query twice a second cost the recorder about 0.6 ms a look: a
supervisor whose workers were not due used 0.13 % of a core for nothing. So the recorder asks the database
whether anything may have changed before it queries:

- PostgreSQL: the command line NOTIFYs in the transaction that adds the command (delivered when it commits),
  and the recorder LISTENs. Its connection's socket becomes readable when a notification comes, so the recorder
  sleeps in `select` until then: no wakeup at all while nothing happens.
- SQLite has no notifications between processes. `PRAGMA data_version` changes when another connection has
  committed since the last look, for the price of a pragma instead of a query; the recorder still wakes twice
  a second to ask.

After every (re)connection the recorder looks once unasked: a command sent while it was disconnected, or between
its connecting and its LISTEN, was announced to nobody.
"""
from __future__ import annotations

from typing import Any

import peewee

CHANNEL = "supervisor_command"


def announce(db: peewee.Database) -> None:
    """Tell a listening recorder that a command was added (call inside the transaction that adds it)."""
    if isinstance(db, peewee.PostgresqlDatabase):
        db.execute_sql(f"NOTIFY {CHANNEL}")


class CommandWatch:
    """The recorder's side: `attach` after connecting, then `should_look` before each look."""

    def __init__(self, db: peewee.Database) -> None:
        self.db = db
        self.notified = isinstance(db, peewee.PostgresqlDatabase)
        """Whether the database tells us of new commands (so no timed look is needed)."""
        self._told = True
        self._version: Any = None
        self._connection: Any = None

    def attach(self) -> None:
        """Start watching on the connection just opened; the first `should_look` after it says yes."""
        self._told = True
        self._version = None
        if self.notified:
            connection = self.db.connection()
            if connection is not self._connection:
                # The handler runs when psycopg reads a notification, also while one of our writes waits for
                # its result; a notification that comes between two statements makes the socket readable.
                connection.add_notify_handler(self._on_notify)
                self.db.execute_sql(f"LISTEN {CHANNEL}")
                self._connection = connection

    def detach(self) -> None:
        """The connection is gone; the next `attach` listens on the new one."""
        self._connection = None
        self._told = True

    def fileno(self) -> int | None:
        """The socket to wait on for notifications (None: nothing to wait on; look on a timer)."""
        if self._connection is None or self._connection.closed:
            return None
        return int(self._connection.fileno())

    def readable(self) -> None:
        """The socket has something: a notification, most likely (the look's query reads it off the socket)."""
        self._told = True

    def should_look(self) -> bool:
        """Whether a command may have been added since the last look; True when unsure."""
        if self.notified:
            told, self._told = self._told, False
            return told
        version = self.db.connection().execute("PRAGMA data_version").fetchone()[0]
        changed = self._told or version != self._version
        self._told, self._version = False, version
        return changed

    def _on_notify(self, notification: Any) -> None:
        self._told = True
