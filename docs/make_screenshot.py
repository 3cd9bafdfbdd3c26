"""Run the example workers for real and save the live table as docs/live-table.svg (rich's own SVG export).

    .venv/bin/python docs/make_screenshot.py

It supervises the modules in workers/ on a scratch SQLite file until the table shows a crash, an error and a
timeout (at most two minutes), then draws the table as the live view draws it, into the SVG the README shows.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supervisor.operate.dashboard import render  # noqa: E402
from supervisor.supervise.loop import Supervisor  # noqa: E402
from supervisor.record.recording import RecordingSettings, prepare  # noqa: E402
from supervisor.record.store import utcnow  # noqa: E402


def main() -> None:
    os.chdir(ROOT)  # the spawner imports `workers` from the current directory
    with tempfile.TemporaryDirectory() as scratch:
        settings = RecordingSettings(url=f"sqlite:///{scratch}/demo.db", journal=f"{scratch}/demo.pending")
        supervisor = Supervisor(settings, ["workers"], stored=prepare(settings))
        supervisor.start()
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                supervisor.run_once(timeout=0.25)
                outcomes = {s.last_outcome for s in supervisor.workers.values()}
                errors = " ".join(s.last_error or "" for s in supervisor.workers.values())
                if {"error", "timeout"} <= {o for o in outcomes if o} and "SIGSEGV" in errors and supervisor.runs:
                    break
            console = Console(record=True, width=132, force_terminal=True, color_system="truecolor", file=open(os.devnull, "w"))
            console.print(render(supervisor.views(), utcnow(), supervisor.footer()))
            console.save_svg(str(ROOT / "docs" / "live-table.svg"), title="python -m supervisor run")
            console.file.close()
        finally:
            supervisor.begin_shutdown(time.monotonic())
            while not supervisor.finished:
                supervisor.run_once(timeout=1.0)
            supervisor.close()
    print("wrote docs/live-table.svg")


if __name__ == "__main__":
    main()
