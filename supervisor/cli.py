"""The command line: `python -m supervisor` and `worker-supervisor`. Turns SupervisorError into one line."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

from . import __version__
from .config import Config, add_arguments, journal_path, load
from .errors import ConfigError, StoreUnavailable, SupervisorError

PROG = "supervisor"
PIPED_WIDTH = 160
CONTROL_ACTIONS = {
    "trigger": "run a worker now, once (through the database: works for a supervisor on another host)",
    "pause": "stop scheduling a worker until it is resumed (a run in progress finishes)",
    "resume": "schedule a paused worker again",
}


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line, like every other error here."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for every command."""
    parser = _Parser(prog=PROG, description="Run periodic workers, each run in its own forked child.")
    parser.add_argument("--version", action="version", version=f"worker-supervisor {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = commands.add_parser("run", help="supervise the workers (live table on a terminal, log lines otherwise)")
    add_arguments(run)
    status = commands.add_parser("status", help="print the workers table once, from the database")
    add_arguments(status)
    for action, text in CONTROL_ACTIONS.items():
        control = commands.add_parser(action, help=text)
        control.add_argument("worker", metavar="WORKER")
        control.add_argument("--wait", type=float, default=5.0, metavar="SECONDS",
                             help="how long to wait for a running supervisor to take it up (default 5)")
        add_arguments(control)
    prune = commands.add_parser("prune", help="delete runs and failures past retention now (keep-runs, failure-days)")
    add_arguments(prune)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (2 for bad usage or config, 1 for failures at run time)."""
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise ConfigError("a command is required: run, status or prune (see --help)")
        config = load(vars(args), os.environ)
        if args.command in CONTROL_ACTIONS:
            return cmd_control(config, args.command, args.worker, args.wait)
        command = {"run": cmd_run, "status": cmd_status, "prune": cmd_prune}[args.command]
        return command(config)
    except SupervisorError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def cmd_run(config: Config) -> int:
    """Supervise until SIGTERM or SIGINT."""
    from rich.console import Console

    from . import log
    from .dashboard import LiveDashboard
    from .loop import Supervisor
    from .process import ensure_standard_fds
    from .recording import RecordingSettings, prepare
    from .store import utcnow

    ensure_standard_fds()
    interactive = sys.stdout.isatty()
    console = Console() if interactive else None
    log.setup(config.log_level, console)
    settings = RecordingSettings(
        url=config.database,
        journal=journal_path(config),
        write_timeout=config.write_timeout,
        statement_timeout=config.statement_timeout,
        keep_runs=config.keep_runs,
        failure_days=config.failure_days,
        prune_interval=config.prune_interval,
    )
    stored = prepare(settings)
    display = LiveDashboard(console, utcnow) if console is not None else None
    supervisor = Supervisor(
        settings, config.workers, config.overrides, display, import_timeout=config.import_timeout, stored=stored
    )
    return supervisor.run()


def cmd_status(config: Config) -> int:
    """Print the workers table once, from the database."""
    from rich.console import Console

    from .dashboard import render
    from .store import Store, utcnow

    store = Store(config.database)
    store.open()
    try:
        rows: list[Any] = [_row_view(row) for row in store.workers()]
    finally:
        store.close()
    # Piped into a file or another program there is no terminal width to respect: do not squeeze the table.
    Console(width=None if sys.stdout.isatty() else PIPED_WIDTH).print(render(rows, utcnow()))
    return 0


def cmd_control(config: Config, action: str, worker: str, wait: float) -> int:
    """Trigger, pause or resume a worker through the database, and say what the supervisor did."""
    import time

    from .store import Store

    store = Store(config.database, statement_timeout_ms=int(config.statement_timeout * 1000))
    store.open()
    try:
        store.require_worker(worker)
        command = store.send_command(worker, action)
        # Polling is the point here: the answer comes through the database, from wherever the supervisor runs.
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            result = store.command_result(command)
            if result is not None:
                print(f"{action} {worker}: {result}")
                return 0
            time.sleep(0.05)
    finally:
        store.close()
    if action == "trigger":
        raise SupervisorError(f"no running supervisor took up the trigger of {worker!r} within {wait:g}s; it stays queued")
    print(f"{action} {worker}: recorded; no running supervisor took it up within {wait:g}s, one that starts will")
    return 0


def cmd_prune(config: Config) -> int:
    """Delete runs and failures past retention, in small batches, and say how many."""
    from .store import Store

    store = Store(config.database, statement_timeout_ms=int(config.statement_timeout * 1000))
    store.open()
    try:
        runs, failures = store.prune(config.keep_runs, config.failure_days)
    except Exception as exc:
        import peewee

        if isinstance(exc, peewee.PeeweeException):
            raise StoreUnavailable(f"prune failed: {store.describe(exc)}", store.where) from exc
        raise
    finally:
        store.close()
    print(f"pruned {runs} run(s) and {failures} failure(s) (keeping {config.keep_runs} runs per worker, "
          f"failures for {config.failure_days:g} days)")
    return 0


def _row_view(row: Any) -> Any:
    from .dashboard import WorkerView

    return WorkerView(
        name=row.name,
        state=row.status,
        pid=row.pid,
        last_outcome=row.last_outcome,
        last_run_at=row.last_run_at,
        duration=row.last_duration,
        next_run_at=row.next_run_at,
        successes=row.success_count,
        failures=row.failure_count,
        last_error=row.last_error,
    )
