"""Logging set-up: rich lines above the live table on a terminal, plain lines otherwise, or JSON lines for shippers."""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from rich.console import Console
from rich.logging import RichHandler

from .dashboard import printable

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
RUN_FIELDS = ("worker", "run_id", "attempt", "pid", "outcome", "duration", "exit_code", "signal", "node")
"""Fields a line about a run carries (logging's `extra`), which JSON lines give as keys of their own, so that a log
shipper can filter on `worker` or `outcome` without parsing the message."""


class PrintableFormatter(logging.Formatter):
    """Format records with control characters replaced, so text a worker wrote cannot drive the terminal."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


class JsonFormatter(logging.Formatter):
    """Format each record as one JSON object on one line: ts (ISO 8601, UTC), level, logger, message, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in RUN_FIELDS:
            value = record.__dict__.get(field)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        # ASCII only: JSON escapes C0 controls itself, and ensure_ascii escapes C1 ones (a lone CSI, U+009B) and
        # every other non-ASCII character too, so no line a worker influenced can drive a terminal it is tailed on.
        return json.dumps(entry, ensure_ascii=True, default=str)


def setup(level: str = "INFO", console: Console | None = None, fmt: str = "text") -> None:
    """Send log records to the rich console (on a terminal) or to stderr as plain lines; `json` always to stderr."""
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}")
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    handler: logging.Handler
    if fmt == "json":
        # Never through rich, even with the live table: a shipper reading the stream wants whole, bare lines.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif console is not None:
        handler = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False)
        handler.setFormatter(PrintableFormatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(PrintableFormatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())
