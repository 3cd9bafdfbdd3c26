"""When the recorder should look for operators' commands (trigger, pause, resume), as cheaply as the database allows.

The command line reaches a running supervisor through the database alone: it inserts a `command` row, and the
recorder passes it on. Looking for rows with a query twice a second cost the recorder about 0.6 ms a look: a
supervisor whose workers were not due used 0.13 % of a core for nothing. So the recorder sleeps until the
database says something may have changed, and asks before it queries:

- PostgreSQL: the command line NOTIFYs in the transaction that adds the command (delivered when it commits),
  and the recorder LISTENs. Its connection's socket becomes readable when a notification comes.
- SQLite has no notifications between processes, but a commit writes the database's -wal file (or the file
  itself, outside WAL mode): the recorder watches the database's directory with inotify for writes to either,
  and `PRAGMA data_version` then tells, for the price of a pragma instead of a query, whether another
  connection committed (our own commits wake us too, and change nothing). A look every few seconds stays as a
  safety net, for a file system that does not report changes (another host's write over NFS); without
  inotify, a look twice a second.

  Two wakeups were once missed that way (issue 11), each leaving a command to the safety look 5 s later: a
  commit writes its frames to the -wal *before* it publishes them in the shared-memory index, and writes to
  that mmap-ed -shm file raise no inotify event; a recorder woken by the frames could ask `data_version`
  before the commit was visible, and nothing woke it again. So the command line, once its transaction has
  committed, touches the -wal (`announce_committed`): an event that comes after the commit is visible. And the
  directory, not the files, is watched, so a -wal created after the watch began (the last connection to close
  deletes it) is seen from its creation on.

After every (re)connection the recorder looks once unasked: a command sent while it was disconnected, or between
its connecting and its LISTEN, was announced to nobody.
"""
from __future__ import annotations

import ctypes
import os
import struct
from typing import Any

import peewee

CHANNEL = "supervisor_command"
SAFETY_LOOK = 5.0  # seconds between looks on SQLite when inotify watches the files
POLL_LOOK = 0.5  # seconds between looks on SQLite without inotify: "within a second" with room to spare
_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE, _IN_MOVED_TO, _IN_CREATE = 0x2, 0x4, 0x8, 0x80, 0x100
_WRITTEN = _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then `len` bytes of name


def announce(db: peewee.Database) -> None:
    """Tell a listening recorder that a command was added (call inside the transaction that adds it)."""
    if isinstance(db, peewee.PostgresqlDatabase):
        database: Any = db  # peewee's methods are untyped calls to mypy
        database.execute_sql(f"NOTIFY {CHANNEL}")


def announce_committed(db: peewee.Database) -> None:
    """Wake a recorder watching a SQLite database's files, now that the command's transaction has committed.

    The commit's own writes to the -wal come before the commit is visible (see the module's docstring); this
    touch comes after it. If it fails (a read-only -wal), the recorder's safety look still finds the command.
    """
    if not isinstance(db, peewee.SqliteDatabase) or db.database in ("", ":memory:"):
        return
    for path in (f"{db.database}-wal", str(db.database)):
        try:
            os.utime(path)
            return
        except OSError:
            continue  # no -wal (not in WAL mode): the database file itself is what the recorder watches then


class CommandWatch:
    """The recorder's side: `attach` after connecting; wait on `fileno()` and for `look_every`; then `should_look`."""

    def __init__(self, db: peewee.Database) -> None:
        self.db: Any = db  # peewee's methods are untyped calls to mypy
        self.notified = isinstance(db, peewee.PostgresqlDatabase)
        self.woken = True
        """Something may have changed since the last look (a notification, a file written, a new connection)."""
        self._version: int | None = None
        self._connection: Any = None
        self._files: _FileWatch | None = None
        if isinstance(db, peewee.SqliteDatabase) and db.database not in ("", ":memory:"):
            try:
                self._files = _FileWatch(str(db.database))
            except (OSError, AttributeError):
                self._files = None  # no inotify here: look on a timer

    @property
    def look_every(self) -> float | None:
        """Seconds between looks nobody asked for (None: only when told)."""
        if self.notified:
            return None
        return SAFETY_LOOK if self._files is not None else POLL_LOOK

    def attach(self) -> None:
        """Start watching on the connection just opened; the first `should_look` after it says yes."""
        self.woken = True
        self._version = None
        if self._files is not None:
            self._files.watch()
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
        self.woken = True

    def fileno(self) -> int | None:
        """The descriptor to wait on for news (None: nothing to wait on)."""
        if self._files is not None:
            return self._files.fd
        if self._connection is None or self._connection.closed:
            return None
        return int(self._connection.fileno())

    def readable(self) -> None:
        """The descriptor has something: a notification (the look's query reads it off the socket), or files
        written."""
        if self._files is None or self._files.written():
            self.woken = True

    def should_look(self) -> bool:
        """Whether a command may have been added since the last look; True when unsure."""
        woken: bool = self.woken
        self.woken = False
        if self.notified:
            return woken
        if self._files is not None and self._files.missing:
            self._files.watch()
        version = int(self.db.connection().execute("PRAGMA data_version").fetchone()[0])
        changed = version != self._version
        self._version = version
        return changed

    def _on_notify(self, notification: Any) -> None:
        self.woken = True


class _FileWatch:
    """inotify on the directory of a SQLite database, for writes to the database file and its -wal file (Linux;
    through ctypes, which the stdlib lacks).

    The directory, not the files: a file's watch is lost when the file goes (SQLite deletes the -wal when its
    last connection closes) and cannot be set before it exists, and a write between the two went unseen.
    """

    def __init__(self, path: str) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.fd: int = fd
        directory, name = os.path.split(os.path.abspath(path))
        self.directory = os.fsencode(directory)
        self.names = {os.fsencode(name), os.fsencode(name + "-wal")}
        self.missing = True
        """The directory could not be watched (not there yet): try again at the next look."""

    def watch(self) -> None:
        """Watch the directory (again, if an earlier attempt failed; adding a watch twice keeps one)."""
        self.missing = self._libc.inotify_add_watch(self.fd, self.directory, _WRITTEN) < 0

    def written(self) -> bool:
        """Take the events waiting; tell whether any says the database or its -wal was written (or touched)."""
        written = False
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return written
            offset = 0
            while offset + _EVENT.size <= len(data):
                _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                start = offset + _EVENT.size
                name = data[start : start + length].rstrip(b"\0")
                # Other files share the directory (the supervisor's journal is written on every record).
                written = written or bool(mask & _WRITTEN and name in self.names)
                offset = start + length
