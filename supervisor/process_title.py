"""What `ps` and `top` show for each of our processes: `worker-supervisor: run sync_rates 3fb2b8ac`.

Every process of a supervisor is a Python interpreter, and without a title each shows as
`python -m supervisor.spawn.spawner ...`, and a run as a copy of its spawner's command line: nobody can tell in
`top` which worker eats the CPU. setproctitle rewrites the process's argv area (what `ps` and
/proc/PID/cmdline show) and its name (/proc/PID/comm, what `top` shows by default, 15 characters).

A title also hides what the command line held: `run --db postgresql://user:password@...` shows as the title.
"""
from __future__ import annotations

PREFIX = "worker-supervisor: "

try:
    import setproctitle
except ImportError:  # pragma: no cover - a platform without the extension: the titles are a convenience
    setproctitle = None  # type: ignore[assignment]


def set_title(role: str, name: str) -> None:
    """Show this process as `worker-supervisor: ROLE` in `ps`, and as `name` (its first 15 characters, the
    kernel's limit) where only the process name is shown (`top`, `pgrep`): there the prefix would fill it all."""
    if setproctitle is not None:
        setproctitle.setproctitle(PREFIX + role)
        setproctitle.setthreadtitle(name)


def title_run(worker: str, run_id: str, how: str = "") -> None:
    """A run's child: the worker's name is what `top` shows."""
    set_title(f"run {worker} {run_id[:8]}{how}", worker)
