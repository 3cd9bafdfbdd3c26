"""Read-only views of the record for the command line: a worker's recent runs, the failures, one failure in full.

Everything a worker wrote (messages, tracebacks, captured output) passes through `printable` before it reaches
the terminal, so an escape sequence a worker printed is shown, defused, instead of acted on.
"""
from __future__ import annotations

import difflib
import os
import sys
from datetime import datetime, timezone
from typing import Any, Iterable
from urllib.parse import urlsplit

from playhouse import db_url
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from .dashboard import OUTCOME_STYLES, printable, span
from ..record import record_files
from ..errors import StoreUnavailable, UnknownWorkerError
from ..outcome import signal_name
from ..record.store import CONNECT_TIMEOUT, Store, redact

PIPED_WIDTH = 160
MESSAGE_WIDTH = 100
KIND_STYLES = {**OUTCOME_STYLES, "import": "bold red", "definition": "red"}


def console() -> Console:
    """A console for stdout: the terminal's width, or COLUMNS, or a wide fixed width when piped (no squeezing)."""
    wide = sys.stdout.isatty() or bool(os.environ.get("COLUMNS"))
    return Console(width=None if wide else PIPED_WIDTH)


def open_store(url: str, statement_timeout_ms: int, write: bool = True, connect_timeout: int = CONNECT_TIMEOUT) -> Store:
    """Open the record (only to read it unless `write`); raise StoreUnavailable (one line saying what to do) if it
    cannot be read. `connect_timeout` (seconds, PostgreSQL) bounds the wait for a server that does not answer."""
    if urlsplit(url).scheme == "sqlite":
        path = db_url.parse(url)["database"]  # as store.connect() reads it
        problem = record_files.reading_problem(url)
        if problem is not None:
            raise StoreUnavailable(f"cannot read the database: {problem}", redact(url))
        # Opening would create an empty database: for a read-only command a missing file is a mistaken --db.
        if path and path != ":memory:" and not os.path.exists(path):
            raise StoreUnavailable("no database file there; give the one `run` writes with --db or SUPERVISOR_DB",
                                   redact(url))
        if write and not record_files.may_write(url):
            # A monitoring user (database_group) may read the record, not send commands through it.
            raise StoreUnavailable("this command writes to the database, and this user may only read it (status, "
                                   "history and failures only read); run it as the supervisor's user", redact(url))
    store = Store(url, connect_timeout=connect_timeout, statement_timeout_ms=statement_timeout_ms)
    reading_only = not write and read_only(store) is not None
    try:
        store.open()
    except StoreUnavailable as exc:
        if not exc.message.startswith("cannot open"):
            raise  # it says what to do already (an unsupported URL, a schema newer than this release)
        if reading_only and "readonly" in exc.message:
            # The schema is missing or older than this release's: making or migrating it is a write.
            raise StoreUnavailable("the database's schema must be created or migrated first, which needs write "
                                   "access: start `run` once (or run this as the supervisor's user)", exc.where) from exc
        raise StoreUnavailable(f"{exc.message}; check --db or SUPERVISOR_DB, and that the database is up", exc.where) from exc
    return store


def read_only(store: Store) -> bool | None:
    """Make a SQLite store that this process may not write open without writing or creating anything (a
    monitoring user's `status`); return True if it then reads a snapshot of the file (no supervisor has it open),
    which a reader that keeps watching must reopen to see anything new, False if it reads through the -wal, and
    None if it is left as it is (PostgreSQL, or a record this process may write)."""
    path = record_files.sqlite_file(store.url)
    if path is None or record_files.may_write(store.url):
        return None
    uri = record_files.reading_uri(path)
    store.db.database = uri
    store.db.connect_params["uri"] = True
    return "immutable=1" in uri


def require_worker(store: Store, name: str) -> Any:
    """Return the worker row named `name` (a broken module's too); raise UnknownWorkerError, with a did-you-mean."""
    row = store.find_worker(name)
    if row is not None:
        return row
    names = store.worker_names()
    close = difflib.get_close_matches(name, names, n=1)
    from .cli import PROG  # the name this process was run by

    hint = f"; did you mean {close[0]!r}?" if close else f"; `{PROG} status` lists the workers"
    raise UnknownWorkerError(f"no worker named {printable(name)!r} in the database{hint}", store.where)


def last_failures(store: Store, rows: Iterable[Any]) -> dict[str, datetime]:
    """When each worker of `rows` that has recovered from its last error last failed (from the failure table).

    Asked only for those workers (often none): the table dims their error with its age. The worker row keeps no
    time of its last failure, and the newest failure of one worker is cheap to find on created_at's index.
    """
    from ..record.store import FailureRow

    recovered = [row.name for row in rows
                 if row.last_error and row.last_outcome == "succeeded" and not row.consecutive_failures]
    found: dict[str, datetime] = {}
    with store.unavailable_as("cannot read failures"):
        for name in recovered:
            newest = (FailureRow.select(FailureRow.created_at).where(FailureRow.worker == name)
                      .order_by(FailureRow.created_at.desc()).first())
            if newest is not None:
                found[name] = newest.created_at
    return found


def local_time(moment: datetime | None) -> str:
    """Show a naive-UTC timestamp from the record in the local time zone."""
    if moment is None:
        return "-"
    return moment.replace(tzinfo=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def ended_by(exit_code: int | None, signum: int | None) -> str:
    """Say how a process ended: `exit 3`, `SIGSEGV`, or `-` when unknown."""
    if signum is not None:
        return signal_name(signum)
    if exit_code is not None:
        return f"exit {exit_code}"
    return "-"


def one_line(text: str, width: int = MESSAGE_WIDTH) -> str:
    """The first line of a text, defused and cut to `width` characters (with … when cut)."""
    lines = text.strip().splitlines()
    first = printable(lines[0]) if lines else ""
    if len(first) > width or len(lines) > 1:
        first = first[: width - 1].rstrip() + "…"
    return first


def printable_lines(text: str) -> str:
    """Defuse control characters line by line, keeping the line breaks (printable() alone turns them to spaces)."""
    return "\n".join(printable(line) for line in text.splitlines())


def history(worker: str, runs: Iterable[Any], status: str | None = None) -> RenderableType:
    """A worker's runs, newest first: when, outcome, duration, how it ended, the node that ran it, pid, attempt."""
    runs = list(runs)
    if not runs:
        return Text(f"no runs of {printable(worker)} recorded")
    title = printable(worker) + (f" ({status})" if status else "")
    table = Table(title=title, caption=f"{len(runs)} most recent run(s), newest first; `history {printable(worker)} "
                  "--run ID` shows one with what it printed", expand=False)
    table.add_column("started (local)", no_wrap=True)
    table.add_column("outcome", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("exit", no_wrap=True)
    table.add_column("node", no_wrap=True, overflow="ellipsis", max_width=32)
    table.add_column("pid", justify="right", no_wrap=True)
    table.add_column("attempt", justify="right", no_wrap=True)
    table.add_column("run", no_wrap=True)
    for run in runs:
        outcome = run.outcome or ("running" if run.finished_at is None else "-")
        table.add_row(
            local_time(run.started_at),
            Text(outcome, style=OUTCOME_STYLES.get(outcome, "cyan" if outcome == "running" else "")),
            "-" if run.duration is None else span(run.duration),
            ended_by(run.exit_code, run.signal),
            printable(run.node or "-"),
            str(run.pid) if run.pid else "-",
            str(run.attempt),
            run.id,
        )
    return table


def failures(rows: Iterable[Any], worker: str | None = None) -> RenderableType:
    """The failures (of one worker), newest first: id, when, worker, kind, and the message cut to one line."""
    rows = list(rows)
    if not rows:
        return Text(f"no failures of {printable(worker)} recorded" if worker else "no failures recorded")
    table = Table(title="failures", caption=f"{len(rows)} most recent, newest first; `failures --id N` shows one in full")
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("when (local)", no_wrap=True)
    table.add_column("worker", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("message", no_wrap=True, overflow="ellipsis", max_width=MESSAGE_WIDTH)
    for row in rows:
        table.add_row(
            str(row.id),
            local_time(row.created_at),
            printable(_worker_of(row)),
            Text(row.kind, style=KIND_STYLES.get(row.kind, "")),
            one_line(row.message),
        )
    return table


def failure(row: Any) -> RenderableType:
    """One failure in full: who, when, how it ended, the message, the traceback, and the captured output."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    facts.add_row("failure", str(row.id))
    facts.add_row("worker", printable(_worker_of(row)))
    run = row.run_id  # the run's id, read without fetching the run row
    facts.add_row("run", run if run is not None else "- (no run: the module or definition is broken)")
    facts.add_row("when", f"{local_time(row.created_at)} (local)")
    facts.add_row("kind", Text(row.kind, style=KIND_STYLES.get(row.kind, "")))
    facts.add_row("ended by", ended_by(row.exit_code, row.signal))
    facts.add_row("message", Text(printable_lines(row.message) or "-"))
    parts: list[RenderableType] = [facts]
    if row.traceback.strip():
        # background_color="default": no painted block behind the text, whatever the terminal's colours.
        code = Syntax(printable_lines(row.traceback), "pytb", word_wrap=True, background_color="default")
        parts.append(Panel(code, title="traceback", title_align="left"))
    for title, text in (("stderr (tail)", row.stderr_tail), ("stdout (tail)", row.stdout_tail)):
        body = Text(printable_lines(text)) if text.strip() else Text("(nothing captured)", style="dim")
        parts.append(Panel(body, title=title, title_align="left"))
    return Group(*parts)


def run_in_full(run: Any, output: Any, failure: Any) -> RenderableType:
    """One run: when, how it ended, where, and what it printed (a failure's tails, or the output kept)."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    outcome = run.outcome or ("running" if run.finished_at is None else "-")
    facts.add_row("run", run.id)
    facts.add_row("worker", printable(str(run.worker_id)))
    facts.add_row("started", f"{local_time(run.started_at)} (local)")
    facts.add_row("outcome", Text(outcome, style=OUTCOME_STYLES.get(outcome, "")))
    facts.add_row("duration", "-" if run.duration is None else span(run.duration))
    facts.add_row("ended by", ended_by(run.exit_code, run.signal))
    facts.add_row("node", printable(f"{run.node} (pid {run.pid})" if run.pid else run.node))
    if failure is not None:
        facts.add_row("failure", f"{failure.id} (`failures --id {failure.id}`: traceback and all)")
        facts.add_row("message", Text(printable_lines(failure.message) or "-"))
    parts: list[RenderableType] = [facts]
    source = failure if failure is not None else output
    for title, text in (("stdout (tail)", getattr(source, "stdout_tail", "")), ("stderr (tail)", getattr(source, "stderr_tail", ""))):
        body = Text(printable_lines(text)) if text.strip() else Text("(nothing kept)", style="dim")
        parts.append(Panel(body, title=title, title_align="left"))
    return Group(*parts)


def _worker_of(row: Any) -> str:
    # The foreign key's value, so listing failures costs no query per row for its worker.
    return str(row.worker_id)
