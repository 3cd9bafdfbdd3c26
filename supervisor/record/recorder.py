"""The recorder: a helper process that applies the journal's records to the database, and prunes old rows.

It is the only process that writes while the supervisor runs. Keeping the database client out of the
supervisor's process means a database that is slow, locked, restarted or hung (a connection that accepts and
never answers blocks a client with no timeout of its own) can stall only the recorder; the supervisor goes on
starting runs, appending to the journal, and kills and replaces a recorder that has gone silent.

It also looks in the database for operators' commands (trigger, pause, resume) and passes them on, so that the
command line reaches a running supervisor, on this host or another, through the database alone; when to look
is command_watch.py's to say (PostgreSQL notifies; on SQLite, inotify on the database's files).

Protocol (see protocol.py):  supervisor -> recorder: written {end}; rewind {}
                             recorder -> supervisor: applied {end}; failing {error}; healthy {}; pruned {runs, failures};
                                                     command {id, worker, action}
"""
from __future__ import annotations

import math
import os
import select
import socket
import sys
import time
from typing import NoReturn

import peewee

from .command_watch import CommandWatch
from ..errors import StoreUnavailable
from ..helper_main import become_helper, helper_arguments
from .journal import read_records
from .record_files import share_companions
from ..protocol import receive, send
from .store import CONNECT_TIMEOUT, Store

DB_ENV = "SUPERVISOR_RECORDER_DB"  # the URL travels in the environment: argv is visible to every user in ps
BATCH_BYTES = 256 * 1024
COMMAND_POLL = 0.5  # seconds between connection attempts while the database is away
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 5.0
# The supervisor takes a recorder that is silent for its write timeout, with records waiting, as hung. So every
# wait of ours stays well inside it: retries come at least every third of it, connecting gives up within half.


class Recorder:
    """Apply what the journal holds between `offset` and `end`; retry with backoff while the database fails."""

    def __init__(
        self,
        control: socket.socket,
        store: Store,
        journal_path: str,
        offset: int,
        keep_runs: int,
        failure_days: float,
        prune_interval: float,
        write_timeout: float,
    ) -> None:
        self.control = control
        self.backoff_max = min(BACKOFF_MAX, write_timeout / 3)
        self.store = store
        self.journal = os.open(journal_path, os.O_RDONLY | os.O_CLOEXEC)
        self.offset = self.end = offset
        self.keep_runs = keep_runs
        self.failure_days = failure_days
        self.prune_interval = prune_interval
        self.next_prune = time.monotonic() + min(prune_interval, 60.0)
        self.retry_at = 0.0
        self.backoff = min(BACKOFF_FIRST, self.backoff_max)
        self.failing = False
        self.connected = False
        self.next_poll = 0.0
        self.commands_sent: set[int] = set()
        self.watch = CommandWatch(store.db)

    def serve(self) -> None:
        """Work until the supervisor closes the channel."""
        while True:
            now = time.monotonic()
            notifications = self.watch.fileno()
            waiting_on = [self.control.fileno()] if notifications is None else [self.control.fileno(), notifications]
            # A notification the driver read during our own last statement (the look's query, a write) sets `woken`
            # and leaves the socket with nothing to read: waiting on it then would wait for the next command. (While
            # the database fails, looks wait for the retry, as writes do.)
            wait = 0.0 if self.connected and self.watch.woken and not self.failing else self._wait(now)
            readable, _, _ = select.select(waiting_on, [], [], wait)
            if self.control.fileno() in readable and not self.read_messages():
                return
            if notifications is not None and notifications in readable:
                self.watch.readable()
            now = time.monotonic()
            if self.offset < self.end and now >= self.retry_at:
                self.apply_pending()
            elif self.offset >= self.end and self.prune_interval and now >= self.next_prune:
                self.prune()
            if (self.connected and self.watch.woken) or time.monotonic() >= self.next_poll:
                self.poll_commands()

    def _wait(self, now: float) -> float | None:
        wake = None if self.next_poll == math.inf else self.next_poll
        if self.offset < self.end:
            wake = self.retry_at if wake is None else min(wake, self.retry_at)
        elif self.prune_interval:
            wake = self.next_prune if wake is None else min(wake, self.next_prune)
        return None if wake is None else max(0.0, wake - now)

    def connect(self) -> None:
        """Open the connection if it is not open, and watch it for commands."""
        if not self.connected:
            self.store.open()
            # SQLite (re)made its -wal and -shm with our group; monitoring users read them with the record's.
            share_companions(self.store.url)
            self.watch.attach()
            self.connected = True

    def disconnect(self) -> None:
        """Drop the connection after an error; the next use opens a fresh one."""
        self.store.reconnect()
        self.watch.detach()
        self.connected = False
        self.next_poll = min(self.next_poll, time.monotonic() + COMMAND_POLL)

    def poll_commands(self) -> None:
        """Pass on commands no supervisor has taken up yet (each once; the supervisor ignores repeats)."""
        self.next_poll = time.monotonic() + COMMAND_POLL  # until connected, attempts come at this pace
        if self.failing and time.monotonic() < self.retry_at:
            return  # the database is failing; writes retry on their own schedule, and so do we
        try:
            self.connect()
            interval = self.watch.look_every
            self.next_poll = math.inf if interval is None else time.monotonic() + interval
            if not self.watch.should_look():
                return  # nobody else has committed anything since the last look
            pending = self.store.pending_commands()
        except (peewee.PeeweeException, StoreUnavailable):
            self.disconnect()
            return  # a write will report the failure; a missed look is retried in half a second
        for command in pending:
            if command["id"] not in self.commands_sent:
                self.commands_sent.add(command["id"])
                send(self.control, "command", **command)

    def read_messages(self) -> bool:
        """Take every waiting message; return False once the supervisor is gone."""
        while True:
            try:
                message, _fds = receive(self.control, block=False)
            except BlockingIOError:
                return True
            except ConnectionResetError:
                return False
            if message is None:
                return False
            if message["op"] == "written":
                self.end = max(self.end, int(message["end"]))
            elif message["op"] == "rewind":
                # The supervisor emptied the journal after we applied all of it; it starts again at 0.
                self.offset = self.end = 0

    def apply_pending(self) -> None:
        """Apply the journal from `offset` to `end`, one transaction per batch, reporting after each."""
        try:
            self.connect()
            while self.offset < self.end:
                batch, following = read_records(self.journal, self.offset, self.end, BATCH_BYTES)
                if following == self.offset:
                    break  # only a torn line (cannot happen while the supervisor lives): wait for more
                self.store.apply(batch)
                self.offset = following
                send(self.control, "applied", end=self.offset)
                self.read_messages()  # take new ends (and a rewind) as they come
        except (peewee.PeeweeException, StoreUnavailable) as exc:
            self.failing = True
            send(self.control, "failing", error=exc.message if isinstance(exc, StoreUnavailable) else self.store.describe(exc))
            self.disconnect()
            self.retry_at = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, self.backoff_max)
            return
        if self.failing:
            self.failing = False
            send(self.control, "healthy")
        self.backoff = min(BACKOFF_FIRST, self.backoff_max)

    def prune(self) -> None:
        """Delete rows past retention, a small batch at a time, writing new records between batches."""
        runs = failures = 0
        try:
            for table, deleted in self.store.prune_steps(self.keep_runs, self.failure_days):
                if table == "run":
                    runs += deleted
                else:
                    failures += deleted
                self.read_messages()
                if self.offset < self.end:
                    self.apply_pending()
        except peewee.PeeweeException as exc:
            print(f"recorder: prune failed: {self.store.describe(exc)}", file=sys.stderr, flush=True)
            self.disconnect()
        self.next_prune = time.monotonic() + self.prune_interval
        if runs or failures:
            send(self.control, "pruned", runs=runs, failures=failures)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of `python -m supervisor.record.recorder`; only the supervisor starts it."""
    parser = helper_arguments("supervisor.record.recorder")
    parser.add_argument("--journal", required=True)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--keep-runs", type=int, required=True)
    parser.add_argument("--failure-days", type=float, required=True)
    parser.add_argument("--prune-interval", type=float, required=True)
    parser.add_argument("--statement-timeout-ms", type=int, required=True)
    parser.add_argument("--write-timeout", type=float, required=True)
    args = parser.parse_args(argv)
    # Dying with the supervisor leaves nothing to clean up: what is committed stays, the rest is in the journal.
    control = become_helper(args, "recorder")
    url = os.environ.pop(DB_ENV)
    connect_timeout = min(CONNECT_TIMEOUT, max(2, int(args.write_timeout / 2)))
    store = Store(url, connect_timeout=connect_timeout, statement_timeout_ms=args.statement_timeout_ms)
    recorder = Recorder(
        control, store, args.journal, args.offset, args.keep_runs, args.failure_days, args.prune_interval, args.write_timeout
    )
    try:
        recorder.serve()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the supervisor is gone
    store.close()
    os._exit(0)


if __name__ == "__main__":
    main()
