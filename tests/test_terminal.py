"""The live table in a real terminal: a worker crashes, the screen shows it, then shows it recover."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from helpers import SupervisorProcess, worker_package
from terminal import Terminal


def row(screen: str, name: str) -> str:
    """The table's line for a worker (the first word of a row is the worker's name)."""
    return next((line for line in screen.splitlines() if line.strip().split(" ", 1)[0].strip("│ ") == name), "")


def test_live_table_shows_a_crash_and_the_recovery(tmp_path: Path, db: Path) -> None:
    worker_package(tmp_path, ["crash_once", "healthy"])
    terminal = Terminal([sys.executable, "-m", "supervisor", "run", "--db", f"sqlite:///{db}"], tmp_path)
    try:
        # The crash shows, and the healthy neighbour goes on beside it. (Both on one screen, waited for together:
        # the crash can come before healthy's first run has ended, and the screen then rightly says "running".)
        terminal.wait_for(lambda s: "crash" in row(s, "crash_once") and "SIGSEGV" in row(s, "crash_once")
                          and "succeeded" in row(s, "healthy"))
        recovered = terminal.wait_for(lambda s: "succeeded" in row(s, "crash_once"))
        line = row(recovered, "crash_once")
        assert " 1 " in line  # one success and one failure counted on the row
        # Recovered: the crash is still shown, as history, with its age (dimmed on the screen).
        assert re.search(r"\(\d+(\.\d)?s ago\) crashed", line), line
        # What the worker printed (a clear-screen and colours) went to its capture, not to our screen.
        assert "rogue escape codes" not in recovered
        assert "worker-supervisor" in recovered  # the table's title is still on the screen
        assert terminal.interrupt() == 0
    finally:
        terminal.close()


SPREAD = """
from supervisor import register, worker

register(*[worker(name=f"w{i}", interval=1)(lambda ctx: None) for i in range(8)])
"""


def test_a_nodes_live_table_names_the_node_of_each_workers_last_run(tmp_path: Path, pg_url: str) -> None:
    # Two supervisors on one PostgreSQL share the workers: each one's table says which node ran each last.
    lease = ["--heartbeat", "0.5", "--lease", "4", "--lease-grace", "1", "--lease-margin", "1"]
    first, second = tmp_path / "t1", tmp_path / "t2"
    for directory in (first, second):
        worker_package(directory, [], extra={"spread": SPREAD})
    other = SupervisorProcess(second, pg_url, ["--node-name", "t2", *lease])
    terminal = Terminal([sys.executable, "-m", "supervisor", "run", "--db", pg_url, "--node-name", "t1", *lease], first)
    try:
        def both(screen: str) -> bool:
            rows = [row(screen, f"w{i}") for i in range(8)]
            ours = [r for r in rows if " t1 " in r]
            theirs = [r for r in rows if " t2 " in r]
            # A node's table counts its own runs: the workers the other node ran show only its name.
            return len(ours) + len(theirs) == 8 and bool(theirs) and bool(ours) and all("succeeded" in r for r in ours)
        screen = terminal.wait_for(both)
        assert "node t1, 2 alive" in screen
        assert terminal.interrupt() == 0
    finally:
        terminal.close()
        other.stop()
