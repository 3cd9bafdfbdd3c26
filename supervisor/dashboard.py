"""The workers table: `render(rows, now)` is pure; `LiveDashboard` redraws it from the loop, never from a thread."""
from __future__ import annotations

from datetime import datetime
from dataclasses import dataclass
from typing import Any, Iterable

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

REFRESH_INTERVAL = 0.25  # 4 Hz: smooth enough for countdowns, cheap enough to ignore

STATE_STYLES = {"idle": "green", "running": "bold cyan", "stopping": "bold yellow", "broken": "bold red"}
OUTCOME_STYLES = {"succeeded": "green", "error": "red", "exit": "red", "crash": "bold red", "killed": "bold red",
                  "timeout": "yellow", "limit": "yellow", "lost": "magenta"}
ERROR_WIDTH = 60


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One row of the table: a worker as it stands at one moment (from the loop, or from the database)."""

    name: str
    state: str
    pid: int | None
    last_outcome: str | None
    last_run_at: datetime | None
    duration: float | None
    next_run_at: datetime | None
    successes: int
    failures: int
    last_error: str | None
    running_since: datetime | None = None
    """When the run in progress started (None when idle)."""
    timeout: float | None = None
    consecutive_failures: int = 0
    cpu_percent: float | None = None
    """CPU of the run in progress and its descendants (None when unknown, e.g. read from the database)."""
    rss: int | None = None
    """Memory (resident bytes) of the run in progress and its descendants, when known."""


@dataclass(frozen=True, slots=True)
class Footer:
    """The line under the table: the whole supervisor at a glance."""

    pending_records: int = 0
    """Records waiting in the journal for the database."""
    database_error: str | None = None
    """The error the database last gave, while it keeps failing."""
    started_at: datetime | None = None
    """When the supervisor started (for its uptime); None when unknown."""


def printable(text: str) -> str:
    """Replace control characters (escape sequences included) so text from a worker cannot drive the terminal."""
    return "".join(ch if ch.isprintable() else ("·" if ch not in "\n\t" else " ") for ch in text)


def ago(moment: datetime | None, now: datetime) -> str:
    """Say how long ago `moment` was, briefly: `4s ago`, `3m ago`."""
    if moment is None:
        return "-"
    return span((now - moment).total_seconds()) + " ago"


def until(moment: datetime | None, now: datetime) -> str:
    """Say how long until `moment`: `in 4s`, `now`."""
    if moment is None:
        return "-"
    seconds = (moment - now).total_seconds()
    return "now" if seconds < 0.5 else "in " + span(seconds)


def span(seconds: float) -> str:
    """Format a duration in its largest sensible unit."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def render(rows: Iterable[WorkerView], now: datetime, footer: Footer | None = None) -> Table:
    """Build the workers table for one moment."""
    rows = list(rows)
    table = Table(title="worker-supervisor", expand=False, show_lines=False)
    # The columns that identify a row keep their width on a narrow terminal; the last error gives way first.
    name_width = min(32, max((len(row.name) for row in rows), default=6))
    table.add_column("worker", no_wrap=True, min_width=name_width)
    table.add_column("state", no_wrap=True, min_width=8)
    table.add_column("pid", justify="right", no_wrap=True)
    table.add_column("outcome", no_wrap=True, min_width=9)
    table.add_column("last run", justify="right", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("next run", justify="right", no_wrap=True)
    table.add_column("ok", justify="right", no_wrap=True)
    table.add_column("failed", justify="right", no_wrap=True)
    # Wrappable as a column (so rich narrows it before any other), but each cell stays one line, cut with "…".
    table.add_column("last error", max_width=ERROR_WIDTH)
    count = 0
    for row in rows:
        count += 1
        table.add_row(
            Text(printable(row.name)),
            Text(row.state, style=STATE_STYLES.get(row.state, "")),
            str(row.pid) if row.pid else "",
            Text(row.last_outcome or "-", style=OUTCOME_STYLES.get(row.last_outcome or "", "")),
            ago(row.last_run_at, now),
            "-" if row.duration is None else span(row.duration),
            until(row.next_run_at, now),
            str(row.successes),
            Text(str(row.failures), style="red" if row.failures else ""),
            Text(printable(row.last_error or "")[: ERROR_WIDTH * 2], style="red", no_wrap=True, overflow="ellipsis"),
        )
    caption = f"{count} worker(s)"
    footer = footer or Footer()
    if footer.pending_records:
        caption += f" · {footer.pending_records} record(s) waiting for the database"
    if footer.database_error:
        caption += f" · database: {printable(footer.database_error)[:ERROR_WIDTH]}"
    table.caption = caption
    return table


class LiveDashboard:
    """The live table on a terminal, redrawn only when the loop asks (no refresh thread: see STYLE)."""

    refresh_interval = REFRESH_INTERVAL

    def __init__(self, console: Console, clock: Any) -> None:
        self.console = console
        self.clock = clock
        self.live = Live(
            console=console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
            transient=False,
            vertical_overflow="ellipsis",
        )
        self.started = False

    def update(self, rows: list[WorkerView], footer: Footer) -> None:
        """Redraw the table with these rows."""
        if not self.started:
            self.live.start(refresh=False)
            self.started = True
        self.live.update(render(rows, self.clock(), footer), refresh=True)

    def stop(self) -> None:
        """Leave the last table on the screen and give the terminal back."""
        if self.started:
            self.live.stop()
            self.started = False
