"""Log output: text lines, or one JSON object per line (`--log-format json`) for log shippers."""
from __future__ import annotations

import io
import json
import re
import logging
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from rich.console import Console
from rich.logging import RichHandler

from helpers import wait_until, worker_package
from supervisor.operate import log


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """The root logger, with its handlers and level put back afterwards (setup() replaces them)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def record(message: str, *args: Any, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("supervisor.test", logging.WARNING, __file__, 1, message, args, exc_info)


def test_json_line_has_utc_time_level_logger_message() -> None:
    line = log.JsonFormatter().format(record("%s: pid %d crashed", "heartbeat", 42))
    assert "\n" not in line
    entry = json.loads(line)
    assert set(entry) == {"ts", "level", "logger", "message"}
    assert entry["level"] == "warning" and entry["logger"] == "supervisor.test"
    assert entry["message"] == "heartbeat: pid 42 crashed"
    ts = datetime.fromisoformat(entry["ts"])
    assert ts.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - ts) < timedelta(minutes=5)


def test_json_line_carries_the_traceback_and_no_control_characters() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError as exc:
        caught = exc
    line = log.JsonFormatter().format(record("worker wrote \x1b[2J\x9b31m and é", exc=caught))
    assert "\n" not in line
    # Every character is printable ASCII: nothing in the line can drive a terminal it is tailed on.
    assert all(32 <= ord(ch) < 127 for ch in line), line
    entry = json.loads(line)
    assert entry["message"] == "worker wrote \x1b[2J\x9b31m and é"
    assert entry["exc_info"].startswith("Traceback (most recent call last):")
    assert entry["exc_info"].endswith("ValueError: boom\nsecond line")


def test_setup_json_writes_plain_lines_to_stderr_even_with_a_console(root_logging: logging.Logger,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    log.setup("debug", Console(file=io.StringIO(), force_terminal=True), "json")
    (handler,) = root_logging.handlers
    assert not isinstance(handler, RichHandler)
    logging.getLogger("supervisor").debug("spawner ready (pid %d)", 7)
    (line,) = stderr.getvalue().splitlines()
    assert json.loads(line)["message"] == "spawner ready (pid 7)"
    assert root_logging.level == logging.DEBUG


def test_setup_text_is_unchanged(root_logging: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    log.setup("info", None, "text")
    logging.getLogger("supervisor").info("hello \x1b[2J")
    (line,) = stderr.getvalue().splitlines()
    assert line.endswith(" INFO    supervisor: hello ·[2J")
    log.setup("info", Console(file=io.StringIO()))
    assert isinstance(root_logging.handlers[0], RichHandler)
    with pytest.raises(ValueError):
        log.setup("info", None, "xml")


def test_run_with_json_logs_writes_only_json_lines(tmp_path: Path, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["healthy"])
    supervisor = start_supervisor("--log-format", "json")

    def finished_runs() -> list[dict[str, Any]]:
        # A line still being written may be cut short; only whole lines are parsed here.
        lines = supervisor.log().splitlines(keepends=True)
        whole = [json.loads(line) for line in lines if line.endswith("\n")]
        return [entry for entry in whole if entry["message"].startswith("healthy: pid") and "succeeded" in entry["message"]]

    wait_until(finished_runs, timeout=60, what="a finished run in the log")
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0
    lines = supervisor.log().splitlines()
    entries = [json.loads(line) for line in lines]  # every line, start-up to shutdown, is one JSON object
    assert entries and all(set(entry) >= {"ts", "level", "logger", "message"} for entry in entries)
    assert any(entry["message"].startswith("SIGTERM: stopping") for entry in entries)
    assert all(datetime.fromisoformat(entry["ts"]).utcoffset() == timedelta(0) for entry in entries)
    # A line about a run carries its fields as keys, not only in the message.
    ended = next(entry for entry in entries if entry.get("outcome") == "succeeded")
    assert ended["worker"] == "healthy" and len(ended["run_id"]) == 32 and ended["pid"] > 0
    assert ended["exit_code"] == 0 and isinstance(ended["duration"], float) and "signal" not in ended
    # The banner first (version, database, config, workers), the final line last.
    assert entries[0]["message"].startswith("worker-supervisor ") and "starting" in entries[0]["message"]
    assert "database sqlite:///" in entries[0]["message"] and "workers from workers" in entries[0]["message"]
    assert entries[-1]["message"].startswith("worker-supervisor stopped") and "exit status 0" in entries[-1]["message"]


def test_each_run_has_a_start_line_debug_for_frequent_workers(tmp_path: Path, start_supervisor: Any) -> None:
    worker_package(tmp_path, ["healthy"], extra={"hourly": HOURLY})
    supervisor = start_supervisor("--log-level", "INFO")
    wait_until(lambda: "hourly: pid" in supervisor.log() and "started (run" in supervisor.log(), timeout=60,
               what="the hourly worker's start line")
    wait_until(lambda: supervisor.log().count("healthy: pid") >= 3, timeout=60, what="healthy runs")
    assert supervisor.stop() == 0
    log = supervisor.log()
    assert re.search(r"INFO +supervisor: hourly: pid \d+ started \(run [0-9a-f]{8}\)", log), log
    assert not re.search(r"healthy: pid \d+ started", log)  # every 0.2 s: its start line is DEBUG
    assert "spawner ready" in log and ": healthy, hourly" in log


HOURLY = '''
from supervisor import worker


@worker(interval=3600)
def hourly(ctx):
    pass
'''


def test_log_format_from_the_environment_and_a_bad_one(tmp_path: Path) -> None:
    env = {**os.environ, "SUPERVISOR_LOG_FORMAT": "xml"}
    result = subprocess.run([sys.executable, "-m", "supervisor", "run", "--db", f"sqlite:///{tmp_path}/x.db"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line == (f"{os.path.basename(sys.executable)} -m supervisor: error: log_format must be one of text, json, got 'xml' "
                    "(environment variable SUPERVISOR_LOG_FORMAT)")
    result = subprocess.run([sys.executable, "-m", "supervisor", "run", "--log-format", "yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "log_format must be one of text, json, got 'yaml' (flag --log-format)" in result.stderr
