"""Logging set-up: rich lines above the live table on a terminal, plain lines otherwise."""
from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

from .dashboard import printable

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class PrintableFormatter(logging.Formatter):
    """Format records with control characters replaced, so text a worker wrote cannot drive the terminal."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def setup(level: str = "INFO", console: Console | None = None) -> None:
    """Send log records to the rich console (on a terminal) or to stderr as plain lines."""
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    handler: logging.Handler
    if console is not None:
        handler = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False)
        handler.setFormatter(PrintableFormatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(PrintableFormatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())
