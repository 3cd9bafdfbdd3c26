"""The workers table: `render(rows, now)` is pure; `LiveDashboard` redraws it from the loop, never from a thread.

A frame is a title, the table (one line per worker, every cell one line), at most one "… and N more workers"
line, and two footer lines: totals, then the database's health. Its width adapts to the console when it is
drawn (the least useful columns are left out first), and its height to `max_rows`, so it fits a small terminal.
"""
from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any, Callable, Iterable, Sequence

from rich.box import Box
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderResult
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .errors import SupervisorError

REFRESH_INTERVAL = 0.25  # 4 Hz: smooth enough for countdowns, cheap enough to ignore
WATCH_INTERVAL = 1.0  # `status --watch` reads the database once a second

STATE_STYLES = {"idle": "green", "running": "bold cyan", "stopping": "bold yellow", "broken": "bold red",
                "paused": "magenta", "quarantined": "bold magenta"}
OUTCOME_STYLES = {"succeeded": "green", "error": "red", "exit": "red", "crash": "bold red", "killed": "bold red",
                  "timeout": "yellow", "limit": "yellow", "lost": "magenta"}
ACTIVE_STATES = ("running", "stopping")
NAME_WIDTH = 32
ERROR_WIDTH = 60
ERROR_MIN_WIDTH = 16  # narrower than this, an error says nothing: columns are left out before it gets there
NEAR_TIMEOUT = 0.8  # a run past this fraction of its timeout is shown in yellow, past all of it in red
FRAME_LINES = 5
"""Lines of a frame that are not worker rows: the title, the header, its rule, and the two footer lines."""

# No vertical lines and no edges: a 2-character gap between columns (one of padding, one of divider) leaves the
# content most of a narrow terminal. The header's rule is broken at each divider, so columns stay distinct.
COMPACT = Box(
    "    \n"
    "    \n"
    " ─  \n"
    "    \n"
    "    \n"
    "    \n"
    "    \n"
    "    \n"
)
GAP = 2


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
    schedule: str | None = None
    """The schedule in a few words: "every 5m", "cron 0 3 * * * (Europe/Berlin)"."""
    running: int = 0
    """Runs in progress (more than one only when its overlap mode allows it)."""
    queued: bool = False
    """A slot came during a run and one run waits for it to end (overlap = queue)."""
    retry_attempt: int | None = None
    """The attempt owed after a failure, due at `next_run_at`; None when no retry is pending."""


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
    if text.isprintable():
        return text  # the common case, checked in C; the loop below costs a Python step per character
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


def uptime(seconds: float) -> str:
    """Format an uptime in its two largest units: `42s`, `12m 5s`, `3h 12m`, `2d 3h`."""
    whole = int(max(0.0, seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def size(octets: int) -> str:
    """Format a number of bytes briefly, in powers of 1024: `512K`, `120M`, `1.5G`."""
    value = float(max(0, octets))
    unit = "B"
    for bigger in ("K", "M", "G"):
        if value < 1024:
            break
        value /= 1024
        unit = bigger
    return f"{value:.1f}{unit}" if value < 10 and unit != "B" else f"{value:.0f}{unit}"


def is_failing(row: WorkerView) -> bool:
    """Tell whether the worker's last run failed."""
    return row.last_outcome is not None and row.last_outcome != "succeeded"


def relevance(row: WorkerView, now: datetime) -> tuple[int, int, float, str]:
    """Sort key putting first what an operator looks for: running, broken, failing (longest streak first), due soonest."""
    if row.state in ACTIVE_STATES:
        return (0, 0, 0.0, row.name)
    if row.state == "broken":
        return (1, 0, 0.0, row.name)
    if is_failing(row):
        return (2, -row.consecutive_failures, 0.0, row.name)
    due = float("inf") if row.next_run_at is None else (row.next_run_at - now).total_seconds()
    return (3, 0, due, row.name)


def rows_for_height(height: int) -> int:
    """How many row lines (the "… and N more" line included) a frame `height` lines tall has room for."""
    return max(1, height - FRAME_LINES)


@dataclass(frozen=True, slots=True)
class _Column:
    """One column's header and cells, made before the console's width is known."""

    header: str
    cells: tuple[Text, ...]
    justify: JustifyMethod = "left"
    drop: int = 0
    """0: always shown; otherwise, on a narrow console, columns are left out highest `drop` first."""
    max_width: int | None = None

    @property
    def width(self) -> int:
        """The width the column would like: its widest cell or header."""
        widest = max((cell.cell_len for cell in self.cells), default=0)
        widest = max(widest, len(self.header))
        return widest if self.max_width is None else min(widest, self.max_width)


class Frame:
    """What `render` returns: a renderable that lays the table out for the console's width when it is drawn."""

    def __init__(self, columns: Sequence[_Column], rows: int, hidden: int, footer: Sequence[Text]) -> None:
        self.columns = list(columns)
        self.rows = rows
        self.hidden = hidden
        self.footer = list(footer)

    def fitting(self, width: int) -> list[_Column]:
        """The columns that fit `width`, leaving the last error at least ERROR_MIN_WIDTH (or what it needs)."""
        columns = list(self.columns)

        def needed(chosen: list[_Column]) -> int:
            fixed = sum(c.width for c in chosen[:-1])  # the last column is the error, which gives way
            return fixed + min(chosen[-1].width, ERROR_MIN_WIDTH) + GAP * (len(chosen) - 1)

        while needed(columns) > width and any(c.drop for c in columns):
            columns.remove(max(columns, key=lambda c: c.drop))
        return columns

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        columns = self.fitting(options.max_width)
        table = Table(
            title="worker-supervisor",
            box=COMPACT,
            show_edge=False,
            padding=(0, 1, 0, 0),
            pad_edge=False,
            expand=False,
        )
        for column in columns[:-1]:
            table.add_column(
                Text(column.header, no_wrap=True, overflow="ellipsis"),
                justify=column.justify,
                no_wrap=True,
                overflow="ellipsis",
                max_width=column.max_width,
            )
        # Wrappable as a column (so rich narrows it before any other), but each cell stays one line, cut with "…".
        error = columns[-1]
        table.add_column(Text(error.header, no_wrap=True, overflow="ellipsis"), max_width=error.max_width)
        for index in range(self.rows):
            table.add_row(*(column.cells[index] for column in columns))
        yield table
        if self.hidden:
            yield Text(f"… and {self.hidden} more worker{'s' if self.hidden != 1 else ''}", style="dim",
                       no_wrap=True, overflow="ellipsis")
        yield from self.footer


def render(rows: Iterable[WorkerView], now: datetime, footer: Footer | None = None, max_rows: int | None = None) -> Frame:
    """Build one frame: the workers table for `now`, then the footer. Pure: no clock, no I/O.

    Without `max_rows` every row is shown, in the order given. With it, and more rows than fit, the most relevant
    rows come first (see `relevance`) and a last line says how many are left out; row lines, that line included,
    stay within `max_rows`.
    """
    every = list(rows)
    shown = every
    if max_rows is not None and len(every) > max_rows:
        shown = sorted(every, key=lambda row: relevance(row, now))[: max(0, max_rows - 1)]
    columns = _columns(shown, now)
    return Frame(columns, len(shown), len(every) - len(shown), _footer(every, now, footer or Footer()))


def _columns(rows: list[WorkerView], now: datetime) -> list[_Column]:
    names = tuple(Text(printable(row.name), no_wrap=True, overflow="ellipsis") for row in rows)
    columns = [
        _Column("worker", names, max_width=NAME_WIDTH),
        _Column("state", tuple(_state(row) for row in rows)),
        _Column("pid", tuple(Text(str(row.pid) if row.pid else "") for row in rows), "right", drop=3),
        _Column("duration", tuple(_duration(row, now) for row in rows), "right", drop=2),
    ]
    # CPU and memory are known only for runs the supervisor watches; read from the database they never are.
    if any(row.cpu_percent is not None for row in rows):
        cpu = tuple(Text("" if row.cpu_percent is None else f"{row.cpu_percent:.0f}%") for row in rows)
        columns.append(_Column("cpu", cpu, "right", drop=5))
    if any(row.rss is not None for row in rows):
        columns.append(_Column("mem", tuple(Text("" if row.rss is None else size(row.rss)) for row in rows), "right", drop=6))
    columns += [
        _Column("outcome", tuple(_outcome(row) for row in rows)),
        _Column("last run", tuple(Text(ago(row.last_run_at, now)) for row in rows), "right", drop=4),
        _Column("next run", tuple(_next_run(row, now) for row in rows), "right", drop=1),
        _Column("ok", tuple(Text(str(row.successes)) for row in rows), "right", drop=7),
        _Column("failed", tuple(_failed(row) for row in rows)),
        _Column("last error", tuple(_error(row) for row in rows), max_width=ERROR_WIDTH),
    ]
    if any(row.schedule for row in rows):  # known when the loop draws the table, or from a recent database
        schedules = tuple(Text(printable(row.schedule or "")) for row in rows)
        columns.insert(-3, _Column("schedule", schedules, drop=8, max_width=36))
    return columns


def _state(row: WorkerView) -> Text:
    text = printable(row.state) + (f" ×{row.running}" if row.running > 1 else "") + (" +1 queued" if row.queued else "")
    return Text(text, style=STATE_STYLES.get(row.state, ""))


def _next_run(row: WorkerView, now: datetime) -> Text:
    if row.retry_attempt is not None:
        return Text(f"retry {row.retry_attempt} {until(row.next_run_at, now)}", style="yellow")
    return Text(until(row.next_run_at, now))


def _duration(row: WorkerView, now: datetime) -> Text:
    """The run in progress against its timeout ("12s/30s", coloured near and over it), else the last run's."""
    if row.state in ACTIVE_STATES and row.running_since is not None:
        elapsed = (now - row.running_since).total_seconds()
        if not row.timeout:
            return Text(span(elapsed), style="cyan")
        share = elapsed / row.timeout
        style = "bold red" if share >= 1 else "yellow" if share >= NEAR_TIMEOUT else "cyan"
        return Text(f"{span(elapsed)}/{span(row.timeout)}", style=style)
    return Text("-" if row.duration is None else span(row.duration))


def _outcome(row: WorkerView) -> Text:
    outcome = row.last_outcome or "-"
    return Text(printable(outcome), style=OUTCOME_STYLES.get(outcome, ""))


def _failed(row: WorkerView) -> Text:
    """The failure count, and the streak when the last runs failed one after another: "12 (3 in a row)"."""
    text = Text(str(row.failures), style="red" if row.consecutive_failures else "")
    if row.consecutive_failures > 1:
        text.append(f" ({row.consecutive_failures} in a row)", style="bold red")
    return text


def _error(row: WorkerView) -> Text:
    # Cut long before the column's width: a 2000-character traceback line is not worth measuring.
    return Text(printable(row.last_error or "")[: ERROR_WIDTH * 2], style="red", no_wrap=True, overflow="ellipsis")


def _footer(rows: list[WorkerView], now: datetime, footer: Footer) -> list[Text]:
    """Two lines: how many workers are in which state (and the uptime), then the database's health."""
    running = sum(row.state in ACTIVE_STATES for row in rows)
    failing = sum(is_failing(row) for row in rows)
    broken = sum(row.state == "broken" for row in rows)
    paused = sum(row.state in ("paused", "quarantined") for row in rows)
    totals = Text(no_wrap=True, overflow="ellipsis")
    totals.append(f"{len(rows)} worker(s)", style="bold")
    totals.append(" · ")
    totals.append(f"{running} running", style="cyan" if running else "dim")
    # Trouble is named only when there is some, so that it stands out when it comes.
    for count, label, style in ((failing, "failing", "red"), (broken, "broken", "bold red"), (paused, "paused", "magenta")):
        if count:
            totals.append(f" · {count} {label}", style=style)
    if footer.started_at is not None:
        totals.append(f" · up {uptime((now - footer.started_at).total_seconds())}")
    health = Text("database: ", no_wrap=True, overflow="ellipsis")
    if footer.pending_records:
        health.append(f"{footer.pending_records} record(s) waiting to be written", style="yellow")
    elif not footer.database_error:
        health.append("ok", style="green")
    if footer.database_error:
        if footer.pending_records:
            health.append(" · ")
        health.append(printable(footer.database_error)[: ERROR_WIDTH * 4], style="bold red")
    return [totals, health]


class LiveDashboard:
    """The live table on a terminal, redrawn only when the loop asks (no refresh thread: see STYLE)."""

    refresh_interval = REFRESH_INTERVAL

    def __init__(self, console: Console, clock: Any) -> None:
        self.console = console
        self.clock = clock
        self.live = Live(
            console=console,
            auto_refresh=False,
            screen=False,
            redirect_stdout=False,
            redirect_stderr=False,
            transient=False,
            # The frame is made to fit (max_rows below); should it not (a resize between two frames), cut it
            # rather than let it scroll, which would leave copies of its top lines on the screen.
            vertical_overflow="crop",
        )
        self.started = False

    def update(self, rows: list[WorkerView], footer: Footer) -> None:
        """Redraw the table with these rows, as many as the terminal's height has room for."""
        if not self.started:
            self.live.start(refresh=False)
            self.started = True
        # Asked every time: the terminal may have been resized since the last frame.
        max_rows = rows_for_height(self.console.size.height)
        self.live.update(render(rows, self.clock(), footer, max_rows), refresh=True)

    def stop(self) -> None:
        """Leave the last table on the screen and give the terminal back."""
        if self.started:
            self.live.stop()
            self.started = False


class _Signals:
    """While watching: SIGINT and SIGTERM ask to stop (a second one interrupts at once); SIGWINCH redraws now.

    Handlers only set a flag; the wakeup pipe ends the wait between frames early, so nothing is cut mid-frame.
    """

    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGWINCH)

    def __init__(self) -> None:
        self.stop_requested = False
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.HANDLED}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGWINCH:
            return  # the wakeup pipe has ended the wait: the next frame is made for the new size
        if self.stop_requested:
            raise KeyboardInterrupt  # the second one: the database may be hanging us, do not wait for it
        self.stop_requested = True

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, less if a signal comes."""
        if seconds > 0 and not self.stop_requested:
            select.select([self._read], [], [], seconds)
        try:
            while os.read(self._read, 512):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Put the previous handlers back and close the pipe."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._read)
        os.close(self._write)


def watch(read: Callable[[], list[WorkerView]], dashboard: LiveDashboard, interval: float = WATCH_INTERVAL) -> None:
    """Redraw the rows `read()` returns every `interval` seconds until SIGINT or SIGTERM.

    A read that raises SupervisorError (the database is unreachable) leaves the last rows shown, with the error
    in the footer, and is tried again at the next frame.
    """
    signals = _Signals()
    try:
        rows: list[WorkerView] = []
        while not signals.stop_requested:
            began = time.monotonic()
            error: str | None = None
            try:
                rows = read()
            except SupervisorError as exc:
                error = str(exc)
            dashboard.update(rows, Footer(database_error=error))
            signals.wait(began + interval - time.monotonic())
    finally:
        try:
            dashboard.stop()
        finally:
            signals.close()
