"""Tests of supervisor/operate/dashboard.py: the workers table, its footer, its fitting a small terminal, its formatting."""
from __future__ import annotations

import io
import os
import re
import signal
from datetime import datetime, timedelta
from typing import Any

import pytest
from rich.console import Console

from supervisor.operate.dashboard import ERROR_MIN_WIDTH, ERROR_WIDTH, ago, printable, relevance, render, rows_for_height, size, span, until
from supervisor.operate.dashboard import Footer, LiveDashboard, WorkerView, count, uptime, watch
from supervisor.errors import StoreUnavailable

NOW = datetime(2024, 5, 1, 12, 0, 0)
ALL_COLUMNS = ["worker", "state", "pid", "duration", "cpu", "mem", "outcome", "last run", "next run", "ok", "failed",
               "last error"]


def _view(**changes: Any) -> WorkerView:
    fields: dict[str, Any] = dict(
        name="cleanup",
        state="idle",
        pid=None,
        last_outcome=None,
        last_run_at=None,
        duration=None,
        next_run_at=None,
        successes=0,
        failures=0,
        last_error=None,
    )
    fields.update(changes)
    return WorkerView(**fields)


def _console(width: int = 200, height: int = 100, color_system: Any = None) -> Console:
    return Console(file=io.StringIO(), width=width, height=height, color_system=color_system, force_terminal=True,
                   record=True)


def _draw(rows: list[WorkerView], footer: Footer | None = None, width: int = 200, max_rows: int | None = None,
          height: int = 100) -> str:
    console = _console(width, height)
    console.print(render(rows, NOW, footer, max_rows))
    return console.export_text()


def _columns(output: str) -> tuple[list[tuple[int, int | None]], int]:
    """Where each column is, from the header's rule (a run of dashes per column); and the rule's line number."""
    lines = output.splitlines()
    index = next(i for i, line in enumerate(lines) if "─" in line and set(line.rstrip()) <= {"─", " "})
    spans: list[tuple[int, int | None]] = [(m.start(), m.end()) for m in re.finditer("─+", lines[index])]
    spans[-1] = (spans[-1][0], None)  # the last column: whatever is there, to the end of the line
    return spans, index


def _cells(line: str, spans: list[tuple[int, int | None]]) -> list[str]:
    return [line[start:end].strip() for start, end in spans]


def _header(output: str) -> list[str]:
    spans, index = _columns(output)
    return _cells(output.splitlines()[index - 1], spans)


def _rows(output: str) -> list[list[str]]:
    """The table's rows, in order: the lines between the header's rule and the "… and N more" line or the footer."""
    spans, index = _columns(output)
    rows = []
    for line in output.splitlines()[index + 1:]:
        if line.startswith("… and ") or re.match(r"\d+ worker\(s\) · ", line):
            break
        rows.append(_cells(line, spans))
    return rows


def _line(output: str, name: str) -> dict[str, str]:
    """The cells of the row whose first cell is `name`, by column."""
    header = _header(output)
    for cells in _rows(output):
        if cells[0] == name:
            return dict(zip(header, cells))
    raise AssertionError(f"no row {name!r} in:\n{output}")


def _footer(output: str) -> list[str]:
    lines = [line.rstrip() for line in output.splitlines()]
    start = next(i for i, line in enumerate(lines) if re.match(r"\d+ worker\(s\) · ", line))
    return [line for line in lines[start:] if line]


# -- what each column shows --------------------------------------------------------------------------------------


def test_columns_show_each_field_of_a_running_worker() -> None:
    row = _view(
        name="cleanup",
        state="running",
        pid=4242,
        last_outcome="error",
        last_run_at=NOW - timedelta(seconds=12),
        running_since=NOW - timedelta(seconds=12),
        timeout=30,
        duration=1.25,
        next_run_at=NOW + timedelta(seconds=42),
        successes=17,
        failures=12,
        consecutive_failures=3,
        cpu_percent=85.4,
        rss=120 * 1024 * 1024,
        last_error="ValueError: disk full",
    )
    output = _draw([row])
    assert _header(output) == ALL_COLUMNS
    assert _line(output, "cleanup") == {
        "worker": "cleanup",
        "state": "running",
        "pid": "4242",
        "duration": "12s/30s",
        "cpu": "85%",
        "mem": "120M",
        "outcome": "error",
        "last run": "12s ago",
        "next run": "in 42s",
        "ok": "17",
        "failed": "12 (3 in a row)",
        "last error": "ValueError: disk full",
    }


def test_an_idle_worker_shows_its_last_run_and_no_process() -> None:
    rows = [
        _view(name="idle", last_outcome="succeeded", last_run_at=NOW - timedelta(minutes=3), duration=1.25,
              next_run_at=NOW + timedelta(minutes=10), successes=5, failures=2, timeout=30),
        _view(name="busy", state="running", pid=7, running_since=NOW - timedelta(seconds=3), cpu_percent=12.0),
    ]
    cells = _line(_draw(rows), "idle")
    # The last run's duration, not against the timeout: only a run in progress is.
    assert cells["duration"] == "1.2s"
    assert (cells["pid"], cells["cpu"]) == ("", "")
    assert (cells["last run"], cells["next run"]) == ("3m ago", "in 10m")
    assert (cells["ok"], cells["failed"], cells["last error"]) == ("5", "2", "")
    # Memory unknown for the running child: its cell is empty, the column stays; its duration without a timeout.
    assert _line(_draw(rows), "busy")["mem"] == ""
    assert _line(_draw(rows), "busy")["duration"] == "3.0s"


def test_a_worker_that_never_ran_shows_dashes_and_empty_cpu_and_memory() -> None:
    output = _draw([_view(name="fresh")])
    assert _header(output) == ALL_COLUMNS
    assert list(_line(output, "fresh").values()) == ["fresh", "idle", "", "-", "", "", "-", "-", "-", "0", "0", ""]


def test_a_single_failure_is_not_called_a_streak() -> None:
    output = _draw([_view(name="once", last_outcome="crash", failures=4, consecutive_failures=1),
                    _view(name="twice", last_outcome="timeout", failures=4, consecutive_failures=2)])
    assert _line(output, "once")["failed"] == "4"
    assert _line(output, "twice")["failed"] == "4 (2 in a row)"


def test_states_are_shown_as_given_paused_included() -> None:
    states = ["idle", "running", "stopping", "broken", "paused"]
    output = _draw([_view(name=f"w-{state}", state=state) for state in states])
    assert [_line(output, f"w-{state}")["state"] for state in states] == states


def test_states_outcomes_and_time_against_the_timeout_are_coloured() -> None:
    rows = [
        _view(name="calm", state="running", running_since=NOW - timedelta(seconds=12), timeout=30),
        _view(name="near", state="running", running_since=NOW - timedelta(seconds=25), timeout=30),
        _view(name="over", state="stopping", running_since=NOW - timedelta(seconds=31), timeout=30),
        _view(name="off", state="paused", last_outcome="crash"),
    ]
    console = _console(color_system="standard")
    console.print(render(rows, NOW))
    output = console.file.getvalue()  # type: ignore[attr-defined]

    def styled(sgr: str, text: str) -> bool:
        # A cell's padding to its column's width is inside its style.
        return re.search(re.escape(f"\x1b[{sgr}m") + " *" + re.escape(text) + " *\x1b\\[0m", output) is not None

    assert styled("36", "12s/30s")  # cyan: well within
    assert styled("33", "25s/30s")  # yellow: past 80% of the timeout
    assert styled("1;31", "31s/30s")  # bold red: over it
    assert styled("1;36", "running") and styled("1;33", "stopping") and styled("35", "paused")
    assert styled("1;31", "crash")


def test_several_rows_keep_their_order_without_max_rows() -> None:
    rows = [_view(name="b-worker", successes=1), _view(name="a-worker", state="broken", last_error="ImportError: x"),
            _view(name="c-worker", state="running")]
    output = _draw(rows)
    assert [cells[0] for cells in _rows(output)] == ["b-worker", "a-worker", "c-worker"]
    assert _line(output, "a-worker")["state"] == "broken"
    assert _line(output, "a-worker")["last error"] == "ImportError: x"
    assert "… and" not in output


def test_max_rows_that_fits_every_row_keeps_their_order() -> None:
    rows = [_view(name="b", state="idle"), _view(name="a", state="running")]
    output = _draw(rows, max_rows=2)
    assert [cells[0] for cells in _rows(output)] == ["b", "a"]
    assert "… and" not in output


def test_plain_output_has_no_escape_sequences() -> None:
    output = _draw([_view(state="running", last_outcome="crash", failures=2, last_error="crashed with SIGSEGV")])
    assert "\x1b" not in output


# -- nothing a worker says can drive the terminal ----------------------------------------------------------------


def test_control_characters_in_the_error_cannot_drive_the_terminal() -> None:
    nasty = "ValueError: \x1b[2Jcleared\x1b]0;pwned\x07 \x1b[31mred\x9b1m\rback\x08\x00end\nnext"
    output = _draw([_view(name="evil", failures=1, last_outcome="error", last_error=nasty)])
    assert "\x1b" not in output
    assert "\x9b" not in output  # the 8-bit CSI
    assert "\x07" not in output and "\x00" not in output and "\x08" not in output and "\r" not in output
    error = _line(output, "evil")["last error"]
    assert error.startswith("ValueError: ·[2Jcleared·]0;pwned·")
    assert "red" in error


def test_escape_sequences_in_a_name_and_an_error_reach_neither_a_real_terminal_nor_the_layout() -> None:
    name = "job\x1b[2J\x1b[H\x07\rname"
    error = "boom\x1b[2J\x1b[H\x07\rover"
    rows = [_view(name=name, state="running", last_outcome="error", failures=1, consecutive_failures=1, last_error=error),
            _view(name="plain")]
    footer = Footer(database_error="locked\x1b[2J\x07\r")
    # A console with colour, as on a real terminal: the only escapes are rich's own colour codes.
    console = _console(color_system="standard")
    console.print(render(rows, NOW, footer))
    raw = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x07" not in raw and "\r" not in raw
    assert not re.findall(r"\x1b(?!\[[0-9;]*m)", raw), "an escape other than a colour code reached the terminal"
    assert "\x1b[2J" not in raw and "\x1b[H" not in raw
    text = console.export_text()
    assert "job·[2J·[H··name" in text
    assert "boom·[2J·[H··over" in text
    assert "locked·[2J··" in text
    assert len(_rows(text)) == 2  # one line each: a carriage return broke no row in two


def test_control_characters_in_the_name_are_replaced() -> None:
    output = _draw([_view(name="bad\x1b[2Jname")])
    assert "\x1b" not in output
    assert "bad·[2Jname" in output


def test_long_error_is_cut_to_the_column() -> None:
    error = "RuntimeError: " + "abcdefghij" * 40
    cells = _line(_draw([_view(name="long", last_error=error)]), "long")
    assert cells["last error"].startswith("RuntimeError: abcdefghij")
    assert len(cells["last error"]) <= ERROR_WIDTH
    assert cells["last error"].endswith("…")


def test_error_is_cut_to_a_narrow_terminal_on_one_line() -> None:
    error = "RuntimeError: " + "x" * 300 + "\nsecond line"
    output = _draw([_view(name="long", last_outcome="error", failures=3, consecutive_failures=3, last_error=error)],
                   width=90)
    assert all(len(line) <= 90 for line in output.splitlines())
    cells = _line(output, "long")
    assert cells["last error"].startswith("RuntimeError: xx") and cells["last error"].endswith("…")
    assert "second line" not in output
    assert cells["failed"] == "3 (3 in a row)"


def test_a_narrow_terminal_leaves_out_the_least_useful_columns_first() -> None:
    row = _view(name="sync-rates", state="running", pid=31337, running_since=NOW - timedelta(seconds=3), timeout=30,
                cpu_percent=50.0, rss=1 << 30, last_outcome="timeout", last_run_at=NOW, next_run_at=NOW,
                successes=1000, failures=12, consecutive_failures=3, last_error="timed out after 30s")
    wide = _header(_draw([row], width=200))
    assert wide == ALL_COLUMNS
    narrow_output = _draw([row], width=80)
    narrow = _header(narrow_output)
    assert {"worker", "state", "outcome", "failed", "last error"} <= set(narrow)
    assert not {"ok", "cpu", "mem"} & set(narrow)
    assert all(len(line) <= 80 for line in narrow_output.splitlines())
    assert _line(narrow_output, "sync-rates")["last error"] == "timed out after 30s"


def test_printable() -> None:
    assert printable("plain text") == "plain text"
    assert printable("a\nb\tc") == "a b c"
    assert printable("\x1b[2J") == "·[2J"
    assert printable("ünïcødé ✓") == "ünïcødé ✓"
    assert printable("\u2028\x7f") == "··"


# -- the footer ----------------------------------------------------------------------------------------------------


def test_footer_counts_workers_by_state_and_shows_the_uptime() -> None:
    rows = [
        _view(name="a", state="running"),
        _view(name="b", state="stopping", last_outcome="error"),
        _view(name="c", state="broken", last_outcome="crash"),
        _view(name="d", state="paused"),
        _view(name="e", last_outcome="timeout"),
        _view(name="f", last_outcome="succeeded"),
    ]
    footer = _footer(_draw(rows, Footer(started_at=NOW - timedelta(hours=3, minutes=12, seconds=5))))
    assert footer == [
        "6 worker(s) · 2 running · 3 failing · 1 broken · 1 paused · up 3h 12m",
        "database: ok",
    ]


def test_footer_without_a_start_time_has_no_uptime() -> None:
    assert _footer(_draw([_view()]))[0] == "1 worker(s) · 0 running"  # no trouble: none named


def test_footer_shows_records_waiting_and_the_database_error() -> None:
    assert _footer(_draw([_view()], Footer(pending_records=5)))[1] == "database: 5 record(s) waiting to be written"
    both = Footer(pending_records=12, database_error="no answer from the database for 30s")
    assert _footer(_draw([_view()], both))[1] == (
        "database: 12 record(s) waiting to be written · no answer from the database for 30s"
    )
    only_error = Footer(database_error="cannot read workers: database is locked (sqlite:///x.db)")
    assert _footer(_draw([_view()], only_error))[1] == "database: cannot read workers: database is locked (sqlite:///x.db)"


def test_a_long_database_error_is_cut_to_one_line() -> None:
    footer = Footer(database_error="connection failed: " + "refused " * 40)
    output = _draw([_view()], footer, width=100)
    line = _footer(output)[1]
    assert line.startswith("database: connection failed: refused") and line.endswith("…")
    assert len(line) <= 100
    assert len(_footer(output)) == 2


def test_empty_table() -> None:
    output = _draw([])
    assert "worker-supervisor" in output
    assert _header(output)[0] == "worker"
    assert _rows(output) == []
    assert _footer(output)[0] == "0 worker(s) · 0 running"


# -- 300 workers in a small terminal -------------------------------------------------------------------------------


def _fleet() -> list[WorkerView]:
    """300 workers by name: most idle and due at different times, some running, failing, broken or paused."""
    rows = []
    for i in range(300):
        name = f"worker-{i:03d}"
        if i % 50 == 7:
            rows.append(_view(name=name, state="running", pid=1000 + i, running_since=NOW - timedelta(seconds=5),
                              timeout=30, last_outcome="succeeded"))
        elif i == 123:
            rows.append(_view(name=name, state="stopping", pid=1000 + i, running_since=NOW - timedelta(seconds=40),
                              timeout=30))
        elif i in (42, 250):
            rows.append(_view(name=name, state="broken", last_error="ImportError: no module named 'x'"))
        elif i % 40 == 3:
            streak = i % 7 + 1
            rows.append(_view(name=name, last_outcome="error", failures=streak + 2, consecutive_failures=streak,
                              last_error="ValueError: boom", next_run_at=NOW + timedelta(seconds=i)))
        elif i == 200:
            rows.append(_view(name=name, state="paused", last_outcome="succeeded"))
        else:
            rows.append(_view(name=name, last_outcome="succeeded", successes=10,
                              next_run_at=NOW + timedelta(seconds=(i * 37) % 600)))
    return rows


def test_300_workers_fit_a_40_line_100_column_terminal_most_relevant_first() -> None:
    rows = _fleet()
    footer = Footer(pending_records=3, database_error="database is locked", started_at=NOW - timedelta(days=2))
    output = _draw(rows, footer, width=100, height=40, max_rows=rows_for_height(40))
    lines = output.rstrip("\n").splitlines()
    assert len(lines) <= 40
    assert all(len(line) <= 100 for line in lines)
    shown = _rows(output)
    names = [cells[0] for cells in shown]
    states = [cells[1] for cells in shown]
    by_name = {row.name: row for row in rows}

    # Running and stopping first, then broken, then failing with the longest streak first, then due soonest.
    active = sorted(r.name for r in rows if r.state in ("running", "stopping"))
    broken = sorted(r.name for r in rows if r.state == "broken")
    failing = sorted((r for r in rows if r.state == "idle" and r.last_outcome == "error"),
                     key=lambda r: (-r.consecutive_failures, r.name))
    assert names[: len(active)] == active
    assert names[len(active): len(active) + len(broken)] == broken
    assert names[len(active) + len(broken): len(active) + len(broken) + len(failing)] == [r.name for r in failing]
    rest = names[len(active) + len(broken) + len(failing):]
    assert rest and all(by_name[n].state == "idle" and by_name[n].last_outcome == "succeeded" for n in rest)
    due = [by_name[n].next_run_at for n in rest]
    assert due == sorted(due)  # type: ignore[type-var]
    assert states.index("idle") > max(i for i, s in enumerate(states) if s in ("running", "stopping", "broken"))

    more = [line for line in lines if line.startswith("… and ")]
    assert more == [f"… and {300 - len(shown)} more workers"]
    assert lines.index(more[0]) == len(lines) - 3  # under the rows, over the two footer lines
    failing_count = sum(r.last_outcome not in (None, "succeeded") for r in rows)
    assert (len(active), failing_count, len(broken)) == (7, 7, 2)
    assert lines[-2] == "300 worker(s) · 7 running · 7 failing · 2 broken · 1 paused · up 2d 0h"
    assert lines[-1] == "database: 3 record(s) waiting to be written · database is locked"
    assert len(shown) == rows_for_height(40) - 1
    assert len(lines) == 40  # the whole terminal is used, and nothing past it


def test_relevance_breaks_ties_by_name() -> None:
    rows = [
        _view(name="z-idle", next_run_at=NOW + timedelta(seconds=5)),
        _view(name="a-idle", next_run_at=NOW + timedelta(seconds=5)),
        _view(name="never-due"),
        _view(name="soon", next_run_at=NOW + timedelta(seconds=1)),
        _view(name="y-fail", last_outcome="exit", consecutive_failures=2),
        _view(name="b-fail", last_outcome="lost", consecutive_failures=2),
        _view(name="worst", last_outcome="crash", consecutive_failures=9),
        _view(name="m-broken", state="broken"),
        _view(name="k-stopping", state="stopping"),
        _view(name="c-running", state="running"),
    ]
    ordered = [row.name for row in sorted(rows, key=lambda r: relevance(r, NOW))]
    assert ordered == ["c-running", "k-stopping", "m-broken", "worst", "b-fail", "y-fail", "soon", "a-idle",
                       "z-idle", "never-due"]


def test_max_rows_of_one_shows_only_how_many_are_left_out() -> None:
    output = _draw([_view(name="a"), _view(name="b")], max_rows=1)
    assert _rows(output) == []
    assert "… and 2 more workers" in output


def test_live_dashboard_fits_each_frame_to_the_terminal_height() -> None:
    console = _console(width=100, height=40)
    dashboard = LiveDashboard(console, lambda: NOW)
    try:
        dashboard.update(_fleet(), Footer())
        first = console.file.getvalue()  # type: ignore[attr-defined]
        # Cropped frames would lose the footer first; both footer lines are there, under "… and N more".
        assert f"… and {300 - (40 - 5 - 1)} more workers" in first
        assert "300 worker(s) · " in first and "database: ok" in first
        console.size = (100, 20)  # the terminal shrinks: the next frame is made for it
        dashboard.update(_fleet(), Footer())
        second = console.file.getvalue()[len(first):]  # type: ignore[attr-defined]
        assert f"… and {300 - (20 - 5 - 1)} more workers" in second
        assert "database: ok" in second
    finally:
        dashboard.stop()


# -- status --watch's loop, in this process --------------------------------------------------------------------


def test_watch_shows_a_failing_read_in_the_footer_then_recovers_and_stops_on_sigint() -> None:
    console = _console(width=120, height=30)
    calls: list[int] = []

    def read() -> list[WorkerView]:
        calls.append(1)
        if len(calls) == 1:
            raise StoreUnavailable("cannot open the database: connection refused", "postgresql://db/x")
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the loop ends after this frame, without a traceback
        return [_view(name=f"job-{len(calls)}")]

    previous = signal.getsignal(signal.SIGINT)
    watch(read, LiveDashboard(console, lambda: NOW), interval=0.01)
    assert signal.getsignal(signal.SIGINT) is previous
    assert len(calls) == 3
    frames = console.file.getvalue()  # type: ignore[attr-defined]
    assert "database: cannot open the database: connection refused (postgresql://db/x)" in frames
    assert "job-2" in frames and "job-3" in frames
    last = frames[frames.rindex("job-2"):]
    assert "cannot open the database" not in last  # recovered: the error left the footer


# -- formatting ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0.0s"),
        (0.04, "0.0s"),
        (3.25, "3.2s"),
        (9.94, "9.9s"),
        (10, "10s"),
        (59.4, "59s"),
        (119, "119s"),
        (120, "2m"),
        (150, "2m"),  # 2.5 rounds to even
        (3599, "60m"),
        (7199, "120m"),
        (7200, "2.0h"),
        (35999, "10.0h"),
        (36000, "10h"),
        (86400, "24h"),
        (172799, "48h"),
        (172800, "2.0d"),
        (9.99 * 86400, "10.0d"),
        (300 * 86400, "300d"),
        (-5, "0.0s"),
    ],
)
def test_span(seconds: float, text: str) -> None:
    assert span(seconds) == text


def test_ago() -> None:
    assert ago(None, NOW) == "-"
    assert ago(NOW - timedelta(seconds=4), NOW) == "4.0s ago"
    assert ago(NOW - timedelta(minutes=3), NOW) == "3m ago"
    assert ago(NOW - timedelta(hours=5), NOW) == "5.0h ago"
    assert ago(NOW + timedelta(seconds=3), NOW) == "0.0s ago"  # a clock step back does not say "-3s ago"


def test_until() -> None:
    assert until(None, NOW) == "-"
    assert until(NOW + timedelta(seconds=4), NOW) == "in 4.0s"
    assert until(NOW + timedelta(minutes=10), NOW) == "in 10m"
    assert until(NOW + timedelta(seconds=0.4), NOW) == "now"
    assert until(NOW, NOW) == "now"
    assert until(NOW - timedelta(seconds=30), NOW) == "now"
    assert until(NOW + timedelta(seconds=0.5), NOW) == "in 0.5s"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (42.9, "42s"), (60, "1m 0s"), (725, "12m 5s"), (3600, "1h 0m"), (11520, "3h 12m"),
     (86400 * 2 + 3600 * 3 + 59, "2d 3h"), (-3, "0s")],
)
def test_uptime(seconds: float, text: str) -> None:
    assert uptime(seconds) == text


@pytest.mark.parametrize(
    ("octets", "text"),
    [(0, "0B"), (1023, "1023B"), (1024, "1.0K"), (1536, "1.5K"), (10 * 1024, "10K"), (120 * 1024**2, "120M"),
     (3 * 1024**3 // 2, "1.5G"), (64 * 1024**3, "64G")],
)
def test_size(octets: int, text: str) -> None:
    assert size(octets) == text


@pytest.mark.parametrize(
    ("number", "text"),
    [(0, "0"), (9999, "9999"), (10_000, "10k"), (99_999, "99k"), (999_999, "999k"), (1_000_000, "1.0M"),
     (1_299_999, "1.2M"), (123_456_789, "123M"), (999_999_999, "999M"), (4_500_000_000, "4.5G"),
     (12_000_000_000, "12G")],
)
def test_count_keeps_to_four_characters(number: int, text: str) -> None:
    assert count(number) == text


# -- run policies in the table ------------------------------------------------------------------------------------


def test_schedule_column_appears_when_schedules_are_known_and_retries_show_in_next_run() -> None:
    rows = [
        _view(name="report", schedule="cron 0 3 * * * (Europe/Berlin)", next_run_at=NOW + timedelta(hours=3)),
        _view(name="flaky", schedule="every 5m", retry_attempt=3, next_run_at=NOW + timedelta(seconds=4),
              last_outcome="error", failures=2, consecutive_failures=2, last_error="ConnectionError: refused"),
    ]
    output = _draw(rows)
    header = _header(output)
    assert header.index("schedule") == header.index("next run") + 1
    table = {cells[0]: dict(zip(header, cells)) for cells in _rows(output)}
    assert table["report"]["schedule"] == "cron 0 3 * * * (Europe/Berlin)"
    assert table["report"]["next run"] == "in 3.0h"
    assert table["flaky"]["next run"] == "retry 3 in 4.0s"


def test_quarantined_workers_overlapping_runs_and_a_queued_run_are_visible() -> None:
    rows = [
        _view(name="bad", state="quarantined", last_outcome="crash", failures=5, consecutive_failures=5),
        _view(name="busy", state="running", pid=42, running=3, queued=False, running_since=NOW),
        _view(name="slow", state="running", pid=43, running=1, queued=True, running_since=NOW),
    ]
    output = _draw(rows)
    header = _header(output)
    table = {cells[0]: dict(zip(header, cells)) for cells in _rows(output)}
    assert table["bad"]["state"] == "quarantined"
    assert table["busy"]["state"] == "running ×3"
    # The queued run is the next one (it starts when this one ends), said where the next run is.
    assert (table["slow"]["state"], table["slow"]["next run"]) == ("running", "queued")
    assert "1 paused" in output  # the footer counts a quarantined worker with the paused ones


def test_the_schedule_column_is_the_first_to_go_on_a_narrow_terminal() -> None:
    row = _view(name="report", schedule="every 5m", last_error="x" * 40, last_outcome="error")
    wide_output = _draw([row], width=200)
    wide = _header(wide_output)
    spans, _ = _columns(wide_output)
    # One column short of what every column needs: the last error's start plus its least width.
    narrower = _header(_draw([row], width=spans[-1][0] + ERROR_MIN_WIDTH - 1))
    assert "schedule" in wide and "schedule" not in narrower
    assert [h for h in wide if h != "schedule"] == narrower


# -- the layout stays put while the supervisor runs (issue 11) ------------------------------------------------------


def _frames() -> list[list[WorkerView]]:
    """The same workers, frame after frame, as a running supervisor draws them: idle, then busy with every kind of
    wide value (CPU and memory known for a run, a long error, big counts, a retry, a queue), then idle again."""
    names = ["sync_rates", "import_feed", "rebuild_report", "disk-usage"]
    quiet = [_view(name=name, last_outcome="succeeded", last_run_at=NOW - timedelta(seconds=3), duration=0.5,
                   next_run_at=NOW + timedelta(seconds=2), successes=1) for name in names]
    busy = [
        _view(name="sync_rates", state="running", pid=4194303, running_since=NOW - timedelta(seconds=119),
              timeout=120, cpu_percent=1234.0, rss=1023 * 1024**2, last_outcome="timeout",
              last_run_at=NOW - timedelta(days=300), next_run_at=NOW + timedelta(seconds=4), retry_attempt=12,
              successes=123_456_789, failures=98_765, consecutive_failures=4321,
              last_error="RuntimeError: " + "upstream said no " * 20),
        _view(name="import_feed", state="running", pid=7, running=3, queued=True, running_since=NOW,
              cpu_percent=0.0, rss=512, last_outcome="crash", failures=1, consecutive_failures=1,
              last_error="crashed with SIGSEGV"),
        _view(name="rebuild_report", state="quarantined", last_outcome="limit", successes=99_999, failures=10_000,
              consecutive_failures=10, last_error="over its memory limit of 2G (2.5G seen)"),
        _view(name="disk-usage", state="stopping", pid=31337, running_since=NOW - timedelta(hours=30), timeout=3600,
              last_outcome="succeeded", successes=5, failures=1, last_error="ValueError: once",
              last_failure_at=NOW - timedelta(hours=2)),
    ]
    started = [_view(name=name, state="running", pid=1000 + i, running_since=NOW, cpu_percent=None if i else 50.0)
               for i, name in enumerate(names)]
    return [quiet, busy, started, quiet[:2] + busy[2:]]


def _layout(output: str) -> tuple[str, str, list[tuple[int, int | None]]]:
    """The title line, the header line, and where each column starts and ends (the last one: where it starts)."""
    spans, index = _columns(output)
    lines = output.splitlines()
    return lines[index - 2].rstrip(), lines[index - 1].rstrip(), spans


@pytest.mark.parametrize("width", [72, 80, 100, 120, 140, 200])
def test_columns_and_their_widths_stay_put_from_frame_to_frame(width: int) -> None:
    outputs = [_draw(rows, width=width) for rows in _frames()]
    layouts = [_layout(output) for output in outputs]
    assert all(layout == layouts[0] for layout in layouts), "\n\n".join(outputs)
    for output in outputs:
        assert all(len(line) <= width for line in output.splitlines()), output
        assert {"worker", "state", "outcome", "failed", "last error"} <= set(_header(output))
    if width >= 200:
        assert _header(outputs[0]) == ALL_COLUMNS  # CPU and memory too, though no row of that frame has any


def test_the_layout_stays_put_when_max_rows_shows_a_different_subset_each_frame() -> None:
    fleet = _fleet()
    fleet[3] = _view(name="a-very-long-worker-name-that-is-cut", last_outcome="error", failures=1,
                     consecutive_failures=1, last_error="x")
    first = _draw(fleet, width=120, max_rows=10)
    later = [_view(name=row.name, state="running", pid=999_999, running_since=NOW, cpu_percent=99.0, rss=1 << 30)
             if i % 2 else row for i, row in enumerate(fleet)]
    second = _draw(later, width=120, max_rows=10)
    assert _layout(first) == _layout(second), first + "\n" + second


def test_big_counts_are_shortened_rather_than_widening_their_columns() -> None:
    output = _draw([_view(name="busy", successes=123_456_789, failures=98_765, consecutive_failures=4321,
                          last_outcome="error")])
    cells = _line(output, "busy")
    assert cells["ok"] == "123M"
    assert cells["failed"].startswith("98k (4321 in a")  # a streak that long may lose the end of its words


def test_the_table_read_from_the_database_has_no_cpu_or_memory_columns() -> None:
    console = _console(width=200)
    console.print(render([_view(name="a", last_outcome="succeeded")], NOW, usage=False))
    assert _header(console.export_text()) == [c for c in ALL_COLUMNS if c not in ("cpu", "mem")]


# -- an error the worker has recovered from (issue 11) ------------------------------------------------------------


def test_an_error_the_worker_recovered_from_is_dimmed_with_its_age() -> None:
    rows = [
        _view(name="healed", last_outcome="succeeded", successes=3, failures=2, last_error="ValueError: disk full",
              last_failure_at=NOW - timedelta(hours=2)),
        _view(name="healed-no-age", last_outcome="succeeded", failures=1, last_error="ValueError: gone"),
        _view(name="failing", last_outcome="error", failures=2, consecutive_failures=2, last_error="ValueError: now",
              last_failure_at=NOW - timedelta(seconds=5)),
    ]
    console = _console(color_system="truecolor")
    console.print(render(rows, NOW))
    text = console.export_text()
    raw = console.file.getvalue()  # type: ignore[attr-defined]
    assert _line(text, "healed")["last error"] == "(2.0h ago) ValueError: disk full"
    assert _line(text, "healed-no-age")["last error"] == "ValueError: gone"
    assert _line(text, "failing")["last error"] == "ValueError: now"  # still failing: no age, the error is news
    assert "\x1b[2m(2.0h ago) ValueError: disk full" in raw  # dim
    assert "\x1b[2mValueError: gone" in raw
    assert re.search(r"\x1b\[31mValueError: now", raw)  # red while the worker keeps failing
