"""The supervisor's side of recording: append each record to the journal, and keep a recorder applying them.

Appending is all the supervisor's loop ever does for a record, so no database, however slow or broken, can
delay a run. The recorder reports how far it has applied the journal; when it has applied all of it, the
journal is emptied. A recorder that dies is restarted (with backoff), and one that stays silent with records
waiting for longer than `write_timeout` is taken as hung (a connection that accepts and never answers) and
killed and replaced; its successor starts where the last acknowledgement left off, and records are idempotent.
"""
from __future__ import annotations

import enum
import logging
import math
import os
import selectors
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable


from . import record_files
from ..errors import HelperStartError
from ..supervise.helper import HelperProcess
from .journal import Journal, replay
from ..outcome import signal_name
from ..protocol import Message
from .records import Record
from .recorder import DB_ENV
from .store import Store

log = logging.getLogger("supervisor.record.recording")

RESTART_BACKOFF_FIRST = 0.5
RESTART_BACKOFF_MAX = 10.0


class Urgency(enum.Enum):
    """How soon the recorder is told of a record (and so how soon the database has it).

    Telling costs the recorder a transaction. Told together, a run's start, pid and end go to the database as one
    row, and many runs in one transaction; a commit per record would also compete for the CPU with the very child
    whose start it records. So each record is told as late as its readers can bear, and takes everything appended
    before it along.
    """

    NOW = "now"
    """A failure, an answer an operator waits for: at the end of the loop's pass."""
    SOON = "soon"
    """A run that ended well: at once if no other run ended in the QUIET before it, else within DEFER_LIMIT of the
    last telling. A supervisor that is not busy has each success on record within milliseconds; a busy one tells
    the recorder about every DEFER_LIMIT, each time with every run that ended meanwhile."""
    LATER = "later"
    """A run's start, its pid: within DEFER_LIMIT (its end, if it comes first, takes it along in one row)."""


DEFER_LIMIT = 0.1
QUIET = 0.02


class Telling:
    """When to tell the recorder of the records appended since it was last told, by their Urgency.

    Times are the monotonic clock's, given by the caller, so the rule is tested on invented clocks.
    """

    def __init__(self) -> None:
        self.due_at: float | None = None
        """When to tell the recorder (None: nothing untold)."""
        self.told_at = -math.inf
        """When the recorder was last told of new records."""
        self.last_soon = -math.inf
        """When the last record of Urgency.SOON came: one that follows another within QUIET waits for a batch."""

    def appended(self, urgency: Urgency, now: float) -> None:
        """A record of this urgency was appended at `now`: bring the telling forward if it must come sooner."""
        if urgency is Urgency.NOW:
            due = now
        elif urgency is Urgency.SOON:
            quiet = now - self.last_soon >= QUIET
            self.last_soon = now
            due = now if quiet else self.told_at + DEFER_LIMIT
        else:
            due = now + DEFER_LIMIT
        self.due_at = due if self.due_at is None else min(self.due_at, due)

    def is_due(self, now: float) -> bool:
        return self.due_at is not None and now >= self.due_at

    def told(self, now: float | None) -> None:
        """The recorder was told of everything appended (at `now`), or will be by a message already waiting (None)."""
        self.due_at = None
        if now is not None:
            self.told_at = now


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    """How records reach the database and how long they are kept there."""

    url: str
    journal: str
    write_timeout: float = 30.0
    statement_timeout: float = 10.0
    keep_runs: int = 1000
    failure_days: float = 30.0
    prune_interval: float = 600.0
    database_group: str | None = None
    """Group whose members may read a SQLite record (0640); None keeps it to its owner (0600)."""


def prepare(settings: RecordingSettings,
            on_lost: Callable[[list[dict[str, Any]]], None] | None = None) -> dict[str, Any]:
    """Before supervising: write what an earlier supervisor left in the journal, mark its unfinished runs lost,
    and read the worker rows (so counters carry on). Raise StoreUnavailable if the database cannot be used:
    starting blind would only pile up records; the journal stays as it is for the next try."""
    # Said in one line before SQLite's "unable to open database file"; and the record is made private (or
    # readable by the database group) before SQLite creates it with the umask's permissions.
    record_files.check_writable(settings.url)
    record_files.make_private(settings.url, settings.database_group)
    if settings.database_group:
        shut = record_files.closed_to_group(settings.url, settings.database_group)
        if shut:
            log.warning("%s", shut)
    store = Store(settings.url, statement_timeout_ms=int(settings.statement_timeout * 1000))
    store.open()
    try:
        record_files.share_companions(settings.url)
        replayed = 0
        with store.unavailable_as(f"cannot write the records left in {settings.journal}"):
            for batch, _end in replay(settings.journal):
                store.apply(batch)
                replayed += len(batch)
        if replayed:
            log.warning("wrote %d record(s) an earlier supervisor left in %s", replayed, settings.journal)
        # Empty only once all is in: a crash before this line replays the same records, which changes nothing.
        if os.path.exists(settings.journal):
            os.truncate(settings.journal, 0)
        lost = store.recover_lost()
        if lost:
            log.warning("marked %d run(s) of an earlier supervisor as lost", len(lost))
            if on_lost is not None:
                on_lost(lost)
        return {row.name: row for row in store.workers()}
    finally:
        store.close()


class RecorderProcess(HelperProcess):
    """The recorder process, as the supervisor sees it."""

    module = "supervisor.record.recorder"

    def __init__(self, settings: RecordingSettings, offset: int) -> None:
        super().__init__(
            [
                "--journal", settings.journal,
                "--offset", str(offset),
                "--keep-runs", str(settings.keep_runs),
                "--failure-days", str(settings.failure_days),
                "--prune-interval", str(settings.prune_interval),
                "--statement-timeout-ms", str(int(settings.statement_timeout * 1000)),
                "--write-timeout", str(settings.write_timeout),
            ],
            env={DB_ENV: settings.url},
        )


class Recording:
    """The journal, and the recorder process that empties it into the database."""

    def __init__(self, settings: RecordingSettings, selector: selectors.BaseSelector) -> None:
        self.settings = settings
        self.selector = selector
        self._journal: Journal | None = None  # opened by start(), after start-up has replayed what was left
        self.applied = 0
        self.ends: deque[int] = deque()  # where each record not yet applied ends in the journal
        self.recorder: RecorderProcess | None = None
        self.restart_at: float | None = None
        self.restart_delay = RESTART_BACKOFF_FIRST
        self.failing: str | None = None
        """The database error the recorder last reported, until it reports success again."""
        self._notify_later = False
        self.telling = Telling()
        self.commands: list[Message] = []
        """Operators' commands passed on by the recorder, for the loop to take (see take_commands)."""

    # -- what the loop calls ----------------------------------------------------------------------------------

    @property
    def journal(self) -> Journal:
        """The journal file, open for appending (once start() has run)."""
        assert self._journal is not None, "Recording.start() opens the journal"
        return self._journal

    def start(self) -> None:
        """Start a recorder that applies the journal from the last acknowledged offset."""
        if self._journal is None:
            self._journal = Journal(self.settings.journal)
        self.restart_at = None
        recorder = RecorderProcess(self.settings, self.applied)
        recorder.start()
        self.recorder = recorder
        recorder.watch(self.selector, "recorder")
        if self.journal.size > self.applied:
            self._notify()

    def record(self, record: Record, urgency: Urgency = Urgency.NOW) -> None:
        """Append a record to the journal; the recorder is told of it as `urgency` says (see Urgency)."""
        self.ends.append(self.journal.append(record))
        now = time.monotonic()
        if len(self.ends) == 1 and self.recorder is not None:
            self.recorder.last_heard = now  # the silence that counts starts now
        self.telling.appended(urgency, now)

    @property
    def pending(self) -> int:
        """How many records wait to be applied."""
        return len(self.ends)

    def handle(self, kind: str) -> None:
        """React to the recorder's fd `kind` being readable: a message, output, or its exit."""
        if self.recorder is None:
            return
        if kind == "message":
            for message in self.recorder.messages():
                self._handle_message(message)
            if self.recorder.channel_closed:
                self.recorder.unwatch(self.selector, self.recorder.control)
        elif kind == "output":
            self._log_output()
        else:
            self._handle_exit()

    def check(self, now: float) -> None:
        """Tell the recorder of new records; restart a recorder that is due, and kill one that has been silent too
        long with records waiting."""
        if self.telling.is_due(time.monotonic()):
            self._notify()
        if self.recorder is None:
            if self.restart_at is not None and now >= self.restart_at:
                try:
                    self.start()
                except HelperStartError as exc:  # out of processes: the journal keeps the records meanwhile
                    log.error("%s; trying again in %.1fs", exc, self.restart_delay)
                    self.restart_at = now + self.restart_delay
                    self.restart_delay = min(self.restart_delay * 2, RESTART_BACKOFF_MAX)
            return
        if self.ends and not self.recorder.killed and now - self.recorder.last_heard > self.settings.write_timeout:
            log.error(
                "recorder (pid %d) silent for %.0fs with %d record(s) waiting; the database may hang; replacing it",
                self.recorder.pid, now - self.recorder.last_heard, len(self.ends),
            )
            self.failing = f"no answer from the database for {self.settings.write_timeout:g}s"
            self.recorder.kill()

    def next_deadline(self) -> float | None:
        """When `check` has something to do next (None: nothing)."""
        times = [] if self.telling.due_at is None else [self.telling.due_at]
        if self.recorder is None:
            if self.restart_at is not None:
                times.append(self.restart_at)
        elif self.ends and not self.recorder.killed:
            times.append(self.recorder.last_heard + self.settings.write_timeout)
        return min(times) if times else None

    def take_commands(self) -> list[Message]:
        """Return the operators' commands received since the last call."""
        commands, self.commands = self.commands, []
        return commands

    def flushed(self) -> bool:
        """Tell whether every record is in the database."""
        return not self.ends

    def close(self, timeout: float) -> None:
        """Give the recorder up to `timeout` seconds to apply what waits, then stop it and close the journal."""
        deadline = time.monotonic() + timeout
        self._notify()
        while self.ends and self.recorder is not None and time.monotonic() < deadline:
            self.flush()
            self.recorder.sync_interest(self.selector)
            for key, events in self.selector.select(max(0.0, deadline - time.monotonic())):
                owner, what = key.data
                if owner != "recorder":
                    continue
                if what == "message" and events & selectors.EVENT_WRITE:
                    self.flush()
                if what != "message" or events & selectors.EVENT_READ:
                    self.handle(what)
            self.check(time.monotonic())
        if self.ends:
            log.warning("%d record(s) wait in the journal %s; the next start writes them", len(self.ends), self.journal.path)
        recorder = self.recorder
        if recorder is not None:
            recorder.unwatch(self.selector, recorder.control)
            recorder.close_channel()
            ready = selectors.DefaultSelector()
            ready.register(recorder.pidfd, selectors.EVENT_READ)
            if not ready.select(2.0):
                recorder.kill()
            ready.close()
            recorder.reap()
            self._drop()
        if self._journal is not None:
            self._journal.close()

    # -- inside ---------------------------------------------------------------------------------------------

    def flush(self) -> None:
        """The channel to the recorder has room again: send what waits, then the newest journal end."""
        if self.recorder is not None and self.recorder.flush() and self._notify_later:
            self._notify()

    def _notify(self) -> None:
        self.telling.told(None)
        if self.recorder is None or self.recorder.channel_closed:
            return
        # Only the newest end matters: while older messages wait for room, one "written" at the end will do.
        self._notify_later = bool(self.recorder.outbox)
        if self._notify_later:
            return
        self.recorder.send("written", end=self.journal.size)
        self.telling.told(time.monotonic())

    def _handle_message(self, message: Message) -> None:
        op = message["op"]
        if op == "applied":
            self.applied = int(message["end"])
            self.restart_delay = RESTART_BACKOFF_FIRST
            if self.failing is not None:  # a fresh recorder succeeds without having failed itself
                log.warning("database writes succeed again")
                self.failing = None
            while self.ends and self.ends[0] <= self.applied:
                self.ends.popleft()
            if self.applied == self.journal.size:
                self.journal.truncate()
                self.applied = 0
                assert self.recorder is not None
                self.recorder.send("rewind")
        elif op == "failing":
            if self.failing is None:
                log.error("database writes fail, records wait in the journal: %s", message["error"])
            self.failing = str(message["error"])
        elif op == "healthy" and self.failing is not None:
            log.warning("database writes succeed again")
            self.failing = None
        elif op == "command":
            self.commands.append(message)
        elif op == "pruned":
            log.info("pruned %d run(s) and %d failure(s) past retention", message["runs"], message["failures"])

    def _log_output(self) -> None:
        assert self.recorder is not None
        self.recorder.log_output(self.selector, log, logging.WARNING, "recorder")

    def _handle_exit(self) -> None:
        recorder = self.recorder
        assert recorder is not None
        for message in recorder.messages():  # what it said before dying counts
            self._handle_message(message)
        self._log_output()
        exit_code, signum = recorder.reap()
        how = f"killed by {signal_name(signum)}" if signum is not None else f"exited with status {exit_code}"
        log.error("recorder (pid %d) %s; starting another in %.1fs", recorder.pid, how, self.restart_delay)
        self._drop()
        self.restart_at = time.monotonic() + self.restart_delay
        self.restart_delay = min(self.restart_delay * 2, RESTART_BACKOFF_MAX)

    def _drop(self) -> None:
        assert self.recorder is not None
        self.recorder.unwatch(self.selector)
        self.recorder.close()
        self.recorder = None
