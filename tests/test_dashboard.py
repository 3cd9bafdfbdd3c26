"""Tests of supervisor/dashboard.py: the workers table and its time formatting."""
from __future__ import annotations

import io
from datetime import datetime, timedelta
from typing import Any

import pytest
from rich.console import Console

from supervisor.dashboard import ERROR_WIDTH, ago, printable, render, span, until
from supervisor.dashboard import Footer, WorkerView

NOW = datetime(2024, 5, 1, 12, 0, 0)


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


def _draw(rows: list[WorkerView], pending_records: int = 0) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None, force_terminal=True)
    console.print(render(rows, NOW, Footer(pending_records=pending_records)))
    return buffer.getvalue()


def _line(output: str, name: str) -> list[str]:
    """Return the cells of the table line whose first cell is `name`."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no row {name!r} in:\n{output}")


def test_columns_show_each_field() -> None:
    row = _view(
        name="cleanup",
        state="running",
        pid=4242,
        last_outcome="error",
        last_run_at=NOW - timedelta(minutes=3),
        duration=1.25,
        next_run_at=NOW + timedelta(seconds=42),
        successes=17,
        failures=3,
        last_error="ValueError: disk full",
    )
    output = _draw([row])
    header = [cell.strip() for cell in next(line for line in output.splitlines() if "worker" in line and "state" in line).split("┃")[1:-1]]
    assert header == ["worker", "state", "pid", "outcome", "last run", "duration", "next run", "ok", "failed", "last error"]
    assert _line(output, "cleanup") == ["cleanup", "running", "4242", "error", "3m ago", "1.2s", "in 42s", "17", "3", "ValueError: disk full"]
    assert "1 worker(s)" in output


def test_a_worker_that_never_ran_shows_dashes() -> None:
    cells = _line(_draw([_view(name="fresh")]), "fresh")
    assert cells == ["fresh", "idle", "", "-", "-", "-", "-", "0", "0", ""]


def test_several_rows_keep_their_order_and_the_caption_counts_them() -> None:
    rows = [_view(name="b-worker", successes=1), _view(name="a-worker", state="broken", last_error="ImportError: x")]
    output = _draw(rows)
    assert output.index("b-worker") < output.index("a-worker")
    assert _line(output, "a-worker")[1] == "broken"
    assert _line(output, "a-worker")[-1] == "ImportError: x"
    assert "2 worker(s)" in output


def test_pending_records_are_in_the_caption() -> None:
    assert "5 record(s) waiting for the database" in _draw([_view()], pending_records=5)
    assert "waiting for the database" not in _draw([_view()], pending_records=0)


def test_empty_table() -> None:
    output = _draw([])
    assert "0 worker(s)" in output
    assert "worker-supervisor" in output


def test_plain_output_has_no_escape_sequences() -> None:
    output = _draw([_view(state="running", last_outcome="crash", failures=2, last_error="crashed with SIGSEGV")])
    assert "\x1b" not in output


def test_control_characters_in_the_error_cannot_drive_the_terminal() -> None:
    nasty = "ValueError: \x1b[2Jcleared\x1b]0;pwned\x07 \x1b[31mred\x9b1m\rback\x08\x00end\nnext"
    output = _draw([_view(name="evil", failures=1, last_outcome="error", last_error=nasty)])
    assert "\x1b" not in output
    assert "\x9b" not in output  # the 8-bit CSI
    assert "\x07" not in output and "\x00" not in output and "\x08" not in output and "\r" not in output
    error = _line(output, "evil")[-1]
    assert error.startswith("ValueError: ·[2Jcleared·]0;pwned·")
    assert "red" in error


def test_control_characters_in_the_name_are_replaced() -> None:
    output = _draw([_view(name="bad\x1b[2Jname")])
    assert "\x1b" not in output
    assert "bad·[2Jname" in output


def test_long_error_is_cut_to_the_column() -> None:
    error = "RuntimeError: " + "abcdefghij" * 40
    cells = _line(_draw([_view(name="long", last_error=error)]), "long")
    assert cells[-1].startswith("RuntimeError: abcdefghij")
    assert len(cells[-1]) <= ERROR_WIDTH
    assert cells[-1].endswith("…")


def test_printable() -> None:
    assert printable("plain text") == "plain text"
    assert printable("a\nb\tc") == "a b c"
    assert printable("\x1b[2J") == "·[2J"
    assert printable("ünïcødé ✓") == "ünïcødé ✓"
    assert printable("\u2028\x7f") == "··"


# -- time formatting -------------------------------------------------------------------------------------------


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
        (86400, "24.0h"),
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
