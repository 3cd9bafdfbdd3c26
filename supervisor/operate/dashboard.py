"""The workers table: `render(rows, now)` is pure; `LiveDashboard` redraws it from the loop, never from a thread.

A frame is a title, the table (one line per worker, every cell one line), at most one "… and N more workers"
line, and two footer lines: totals, then the database's health. Its width adapts to the console when it is
drawn (the least useful columns are left out first), and its height to `max_rows`, so it fits a small terminal.

Which columns are shown, and how wide each is, depends on the console's width and on the set of workers only,
never on the values of one frame: a table redrawn 4 times a second whose columns come and go or shift sideways
as a run starts or a count gains a digit cannot be read. Every column has a fixed width (values that could be
wider are shortened: `123M` runs, or cut with "…"); only the last error, the last column, varies.
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

from ..errors import SupervisorError
from ..process import drain

REFRESH_INTERVAL = 0.25  # 4 Hz: smooth enough for countdowns, cheap enough to ignore
WATCH_INTERVAL = 1.0  # `status --watch` reads the database once a second

STATE_STYLES = {"idle": "green", "running": "bold cyan", "stopping": "bold yellow", "broken": "bold red",
                "paused": "magenta", "quarantined": "bold magenta"}
OUTCOME_STYLES = {"succeeded": "green", "error": "red", "exit": "red", "crash": "bold red", "killed": "bold red",
                  "timeout": "yellow", "limit": "yellow", "lost": "magenta", "interrupted": "dim yellow"}
ACTIVE_STATES = ("running", "stopping")
NAME_WIDTH = 32
NODE_WIDTH = 16
SCHEDULE_WIDTH = 36
ERROR_WIDTH = 60
ERROR_MIN_WIDTH = 16  # narrower than this, an error says nothing: columns are left out before it gets there
# Fixed widths, each the widest value the column usually has (a rarer, longer one is cut with "…"), chosen so
# that every column fits 140 characters with a 14-character name. The state: "quarantined", "running ×12"; a pid
# up to Linux's pid_max (4194304); a duration "119s/120s"; CPU "800%"; memory "1023M"; "succeeded"; "9.9h ago";
# "retry 3 in 4.0s"; a count shortened to "9999" or "123M"; "12 (3 in a row)".
STATE_WIDTH = 11
PID_WIDTH = 7
DURATION_WIDTH = 9
CPU_WIDTH = 4
MEM_WIDTH = 5
OUTCOME_WIDTH = 9
LAST_RUN_WIDTH = 8
NEXT_RUN_WIDTH = 15
COUNT_WIDTH = 4
FAILED_WIDTH = 15
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
    last_failure_at: datetime | None = None
    """When the worker last failed (the age of `last_error` once it has recovered); None when unknown."""
    overdue: bool = False
    """Its next run is late (`status`, judged by operate/liveness.py): nothing ran it when it was due."""
    node: str | None = None
    """The node that ran its latest run, when `status` shows a node column (several supervisors)."""


@dataclass(frozen=True, slots=True)
class Footer:
    """The line under the table: the whole supervisor at a glance."""

    pending_records: int = 0
    """Records waiting in the journal for the database."""
    database_error: str | None = None
    """The error the database last gave, while it keeps failing."""
    started_at: datetime | None = None
    """When the supervisor started (for its uptime); None when unknown."""
    node: str | None = None
    """This supervisor's node name, when it is one of several on a shared PostgreSQL."""
    nodes_alive: int = 0
    """How many nodes (this one included) the database last showed alive."""


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
    if seconds < 36000:
        return f"{seconds / 3600:.1f}h"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    # Days past two of them: a weekly job's last run reads "6.5d ago", not "156.0h ago" (and keeps to its column).
    days = seconds / 86400
    return f"{days:.1f}d" if days < 10 else f"{days:.0f}d"


def count(number: int) -> str:
    """Format a count in at most 4 characters: `9999`, `12k`, `1.2M`, `123M`, `4.5G` (never rounded up a unit)."""
    if number < 10_000:
        return str(number)
    for unit, scale in (("k", 1_000), ("M", 1_000_000), ("G", 1_000_000_000)):
        if number < scale * 1000 or unit == "G":
            value = number / scale
            # Truncated, not rounded: 99,999 is "99k", never "100k" (which would not fit, and overstates it).
            return f"{int(value * 10) / 10:.1f}{unit}" if value < 10 else f"{int(value)}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover


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
    return row.last_outcome not in (None, "succeeded", "interrupted")


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
    width: int
    """Its width, whatever the cells of this frame hold (the last column, the error's, is the exception)."""
    justify: JustifyMethod = "left"
    drop: int = 0
    """0: always shown; otherwise, on a narrow console, columns are left out highest `drop` first."""


class Frame:
    """What `render` returns: a renderable that lays the table out for the console's width when it is drawn."""

    def __init__(self, columns: Sequence[_Column], rows: int, hidden: int, footer: Sequence[Text]) -> None:
        self.columns = list(columns)
        self.rows = rows
        self.hidden = hidden
        self.footer = list(footer)

    def fitting(self, width: int) -> list[_Column]:
        """The columns that fit `width`, leaving the last error at least ERROR_MIN_WIDTH.

        Decided by the widths alone, not by what the errors of this frame need: a frame with no error must not
        keep a column that the next one, with an error, would drop.
        """
        columns = list(self.columns)

        def needed(chosen: list[_Column]) -> int:
            fixed = sum(c.width for c in chosen[:-1])  # the last column is the error, which gives way
            return fixed + ERROR_MIN_WIDTH + GAP * (len(chosen) - 1)

        while needed(columns) > width and any(c.drop for c in columns):
            columns.remove(max(columns, key=lambda c: c.drop))
        return columns

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        columns = self.fitting(options.max_width)
        table = Table(
            title="worker-supervisor",
            title_justify="left",  # centred, it would move with the width of the last error's column
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
                width=column.width,
            )
        # Wrappable as a column (so rich narrows it before any other), but each cell stays one line, cut with "…".
        error = columns[-1]
        table.add_column(Text(error.header, no_wrap=True, overflow="ellipsis"), max_width=error.width)
        for index in range(self.rows):
            table.add_row(*(column.cells[index] for column in columns))
        yield table
        if self.hidden:
            yield Text(f"… and {self.hidden} more worker{'s' if self.hidden != 1 else ''}", style="dim",
                       no_wrap=True, overflow="ellipsis")
        yield from self.footer


def render(rows: Iterable[WorkerView], now: datetime, footer: Footer | None = None, max_rows: int | None = None,
           usage: bool = True) -> Frame:
    """Build one frame: the workers table for `now`, then the footer. Pure: no clock, no I/O.

    Without `max_rows` every row is shown, in the order given. With it, and more rows than fit, the most relevant
    rows come first (see `relevance`) and a last line says how many are left out; row lines, that line included,
    stay within `max_rows`. `usage` says whether the rows can carry CPU and memory (they can when the supervisor
    draws its own table; read from the database they never do): it, not this frame's values, decides their columns.
    """
    every = list(rows)
    shown = every
    if max_rows is not None and len(every) > max_rows:
        shown = sorted(every, key=lambda row: relevance(row, now))[: max(0, max_rows - 1)]
    columns = _columns(shown, every, now, usage)
    return Frame(columns, len(shown), len(every) - len(shown), _footer(every, now, footer or Footer()))


def _columns(rows: list[WorkerView], every: list[WorkerView], now: datetime, usage: bool) -> list[_Column]:
    """The columns of the rows shown; widths come from `every` row (the set of workers, not this frame's values)."""
    names = tuple(Text(printable(row.name), no_wrap=True, overflow="ellipsis") for row in rows)
    name_width = min(NAME_WIDTH, max([len("worker"), *(len(printable(row.name)) for row in every)]))
    columns = [
        _Column("worker", names, name_width),
        _Column("state", tuple(_state(row) for row in rows), STATE_WIDTH),
        _Column("pid", tuple(Text(str(row.pid) if row.pid else "") for row in rows), PID_WIDTH, "right", drop=3),
        _Column("duration", tuple(_duration(row, now) for row in rows), DURATION_WIDTH, "right", drop=2),
    ]
    if usage:
        cpu = tuple(Text("" if row.cpu_percent is None else f"{row.cpu_percent:.0f}%") for row in rows)
        columns.append(_Column("cpu", cpu, CPU_WIDTH, "right", drop=5))
        mem = tuple(Text("" if row.rss is None else size(row.rss)) for row in rows)
        columns.append(_Column("mem", mem, MEM_WIDTH, "right", drop=6))
    columns += [
        _Column("outcome", tuple(_outcome(row) for row in rows), OUTCOME_WIDTH),
        _Column("last run", tuple(Text(ago(row.last_run_at, now)) for row in rows), LAST_RUN_WIDTH, "right", drop=4),
        _Column("next run", tuple(_next_run(row, now) for row in rows), NEXT_RUN_WIDTH, "right", drop=1),
        _Column("ok", tuple(Text(count(row.successes)) for row in rows), COUNT_WIDTH, "right", drop=7),
        _Column("failed", tuple(_failed(row) for row in rows), FAILED_WIDTH),
        _Column("last error", tuple(_error(row, now) for row in rows), ERROR_WIDTH),
    ]
    # Schedules are known when the loop draws the table, or from a recent database; a property of the workers,
    # so the column does not come and go between frames.
    schedule_width = max((len(printable(row.schedule)) for row in every if row.schedule), default=0)
    if schedule_width:
        schedules = tuple(Text(printable(row.schedule or "")) for row in rows)
        width = min(SCHEDULE_WIDTH, max(len("schedule"), schedule_width))
        columns.insert(-3, _Column("schedule", schedules, width, drop=8))
    # The node that ran each worker last, when several supervisors share the record (`status`, and a node's table).
    node_width = max((len(printable(row.node)) for row in every if row.node), default=0)
    if node_width:
        nodes = tuple(Text(printable(row.node or ""), no_wrap=True, overflow="ellipsis") for row in rows)
        columns.insert(2, _Column("node", nodes, min(NODE_WIDTH, max(len("node"), node_width)), drop=5))
    return columns


def _state(row: WorkerView) -> Text:
    text = printable(row.state) + (f" ×{row.running}" if row.running > 1 else "")
    return Text(text, style=STATE_STYLES.get(row.state, ""))


def _next_run(row: WorkerView, now: datetime) -> Text:
    if row.retry_attempt is not None:
        return Text(f"retry {row.retry_attempt} {until(row.next_run_at, now)}", style="yellow")
    if row.queued:
        # A slot came during the run and one run waits for it: that is the next run, whatever the schedule says.
        return Text("queued", style="yellow")
    if row.overdue and row.next_run_at is not None:
        return Text(f"overdue {span((now - row.next_run_at).total_seconds())}", style="bold red")
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
    text = Text(count(row.failures), style="red" if row.consecutive_failures else "", no_wrap=True, overflow="ellipsis")
    if row.consecutive_failures > 1:
        text.append(f" ({count(row.consecutive_failures)} in a row)", style="bold red")
    return text


def _error(row: WorkerView, now: datetime) -> Text:
    """The last error: red while the worker fails; dimmed, with its age when known, once it succeeds again."""
    # Cut long before the column's width: a 2000-character traceback line is not worth measuring.
    message = printable(row.last_error or "")[: ERROR_WIDTH * 2]
    recovered = row.last_outcome == "succeeded" and row.consecutive_failures == 0 and row.state != "broken"
    if not message or not recovered:
        return Text(message, style="red", no_wrap=True, overflow="ellipsis")
    # History, not news: an operator looking for trouble skips it, and the age says how old the news is.
    prefix = f"({ago(row.last_failure_at, now)}) " if row.last_failure_at is not None else ""
    return Text(prefix + message, style="dim", no_wrap=True, overflow="ellipsis")


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
    if footer.node is not None:
        totals.append(f" · node {printable(footer.node)}, {footer.nodes_alive or '?'} alive")
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

    def __init__(self, console: Console, clock: Any, usage: bool = True) -> None:
        self.console = console
        self.clock = clock
        self.usage = usage
        """Whether the rows can carry CPU and memory (see `render`)."""
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
        self.live.update(render(rows, self.clock(), footer, max_rows, self.usage), refresh=True)

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
        drain(self._read)

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
