"""The command line: `python -m supervisor` and `worker-supervisor`. Turns SupervisorError into one line."""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from typing import Any, Callable, NoReturn

from . import installation

# Before anything else of ours is imported: supervisord's package of the same name may have replaced our files,
# and that is one line saying so, not an ImportError traceback from the imports below.
installation.check(installation.program(sys.argv[0]))

from .. import __version__  # noqa: E402
from ..config import SETTINGS, Config, add_arguments, journal_path, load
from ..errors import ConfigError, StoreUnavailable, SupervisorError
from .service_unit import render_unit

INSTALLED_NAME = "worker-supervisor"
PROG = INSTALLED_NAME
"""The name this process was run by (see `program_name`), for usage lines, errors and hints; set by `main`."""
CONTROL_ACTIONS = {
    "trigger": "run a worker now, once (through the database: works for a supervisor on another host)",
    "pause": "stop scheduling a worker until it is resumed (a run in progress finishes)",
    "resume": "schedule a paused worker again",
}


# The settings each command uses (run: every one). A command's --help lists only its own, and a flag another
# command takes is an error rather than silently ignored. --config is every command's.
DATABASE_SETTINGS = ("database", "statement_timeout")
COMMAND_SETTINGS: dict[str, tuple[str, ...]] = {
    "run": tuple(s.name for s in SETTINGS),
    "status": DATABASE_SETTINGS,
    "health": DATABASE_SETTINGS,
    "reload": DATABASE_SETTINGS,
    "notify": (),  # only the config file's [notify] tables
    "nodes": DATABASE_SETTINGS,
    "web": DATABASE_SETTINGS,
    **{action: DATABASE_SETTINGS for action in CONTROL_ACTIONS},
    "prune": (*DATABASE_SETTINGS, "keep_runs", "failure_days"),
    "history": DATABASE_SETTINGS,
    "failures": DATABASE_SETTINGS,
    "check": ("workers", "import_timeout"),  # it never opens the database
    "systemd-unit": (),  # only the config file, for the unit's ExecStart
}
BEFORE = "before_command_"
"""Prefix of where a setting given before the command is parsed to, until `main` hands it to the command."""
SHOWN_BEFORE = ("config", "database")
"""The options the top-level --help lists (the common case, `--db URL status`); the others work there too."""


def program_name(argv0: str) -> str:
    """The name the user ran us by: the console script's (or a link's to it), else `python -m supervisor`.

    Usage lines and errors then show a command the user can type: `supervisor` alone is not on the PATH.
    """
    name = os.path.basename(argv0)
    if name == "__main__.py":  # python -m supervisor: as Python 3.14's argparse says it
        return f"{os.path.basename(sys.executable) or 'python'} -m supervisor"
    return name or INSTALLED_NAME


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line, like every other error here."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see --help)")


def build_parser(prog: str = INSTALLED_NAME) -> argparse.ArgumentParser:
    """Return the parser for every command."""
    parser = _Parser(prog=prog, description="Run periodic workers, each run in its own forked child. A command's "
                     f"options may also come before it ({prog} --db URL status); `{prog} COMMAND --help` lists them.")
    parser.add_argument("--version", action="version", version=f"worker-supervisor {__version__}")
    add_arguments(parser, default=argparse.SUPPRESS, prefix=BEFORE, shown=SHOWN_BEFORE)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = commands.add_parser("run", help="supervise the workers (live table on a terminal, log lines otherwise)")
    _add_settings(run)
    status = commands.add_parser("status", help="print the workers table from the database: once, or every second "
                                 "with --watch", description="Print which supervisor is alive, then the workers "
                                 "table. Exit status: 0, or 2 when no supervisor is alive (1 on an error).")
    _add_settings(status)
    status.add_argument("--watch", action="store_true",
                        help="redraw the table every second, from the database, until Ctrl-C")
    status.add_argument("--json", action="store_true", help="print JSON instead of the table")
    health = commands.add_parser("health", help="exit 0 healthy, 1 degraded (a worker broken, quarantined, failing or "
                                 "overdue), 2 down (no supervisor alive, or the database unreadable)",
                                 description="Judge the workers and their supervisors from the database: works "
                                 "from any host that reaches it. One line, then one per problem.")
    health.add_argument("--json", action="store_true", help="print JSON: the verdict, the problems, every worker")
    _add_settings(health)
    nodes = commands.add_parser("nodes", help="the supervisors (nodes) on the database: alive, stopped or dead; on "
                                "SQLite whether its one supervisor runs")
    nodes.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_settings(nodes)
    web = commands.add_parser("web", help="serve the workers, their runs and failures, the nodes and the health as "
                              "read-only web pages (from the database, as status reads it)",
                              description="Serve read-only pages of the record: / (the workers), /worker/NAME, "
                              "/failure/ID, /nodes, /health (JSON: 200 healthy or degraded, 503 down). Loopback by "
                              "default: put a reverse proxy with authentication in front to show it to a team.")
    web.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                     help="where to listen (default 127.0.0.1:8080; port 0 takes a free one)")
    _add_settings(web)
    for action, text in CONTROL_ACTIONS.items():
        control = commands.add_parser(action, help=text)
        control.add_argument("worker", metavar="WORKER")
        control.add_argument("--wait", type=float, default=5.0, metavar="SECONDS",
                             help="how long to wait for a running supervisor to take it up (default 5)")
        _add_settings(control)
    reload = commands.add_parser("reload", help="make every running supervisor read its config and workers again "
                                 "(as SIGHUP does; through the database); exit 1 if the config does not load")
    reload.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                        help="how long to wait for the new workers to be imported (default 30)")
    _add_settings(reload)
    notify = commands.add_parser("notify", help="notify test [WORKER]: send a test event through every sink the "
                                 "config gives (the worker's own, if named) and say how each went")
    notify.add_argument("action", choices=["test"], metavar="test")
    notify.add_argument("worker", metavar="WORKER", nargs="?", help="use this worker's [worker.NAME.notify] sinks")
    _add_settings(notify)
    prune = commands.add_parser("prune", help="delete runs and failures past retention now (keep-runs, failure-days)")
    _add_settings(prune)
    unit = commands.add_parser("systemd-unit", help="print a systemd unit that runs this installation with the config "
                               "file (install it as /etc/systemd/system/worker-supervisor.service)")
    unit.add_argument("--user", metavar="NAME", help="the user (and group) to run as (default worker-supervisor)")
    _add_settings(unit)
    _add_reading_commands(commands)
    return parser


def _add_settings(parser: argparse.ArgumentParser) -> None:
    """Add --config and the flags of the settings the command (the parser's last word) uses."""
    # Left out of the namespace when not given (SUPPRESS), so they do not overwrite the same flags given before the
    # command; load() takes a missing flag as not given.
    add_arguments(parser, COMMAND_SETTINGS[parser.prog.rsplit(" ", 1)[-1]], default=argparse.SUPPRESS)


def _settings_before_command(args: argparse.Namespace, prog: str) -> None:
    """Hand the settings given before the command to it; those given after it win. Raise ConfigError for one
    the command does not take."""
    given = {name[len(BEFORE):]: value for name, value in vars(args).items() if name.startswith(BEFORE)}
    for name, value in given.items():
        delattr(args, BEFORE + name)
        if name != "config" and name not in COMMAND_SETTINGS[args.command]:
            flag = next(s.flag for s in SETTINGS if s.name == name)
            raise ConfigError(f"{args.command} takes no {flag} (see {prog} {args.command} --help)")
        if not hasattr(args, name):
            setattr(args, name, value)


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (2 for bad usage or config, 1 for failures at run time).

    From the command line (no `argv`), usage lines and errors name the program as it was typed; called with
    `argv`, sys.argv[0] is some other program's, and the installed name is used.
    """
    global PROG
    PROG = program_name(sys.argv[0]) if argv is None else INSTALLED_NAME
    try:
        args = build_parser(PROG).parse_args(argv)
        if args.command is None:
            raise ConfigError("a command is required: run, status, health, nodes, history, failures, trigger, pause, "
                              "resume, reload, notify, check, prune, systemd-unit or web (see --help)")
        _settings_before_command(args, PROG)
        config = load(vars(args), os.environ, COMMAND_SETTINGS[args.command])
        if args.command in CONTROL_ACTIONS:
            return cmd_control(config, args.command, args.worker, args.wait)
        if args.command in READING_COMMANDS:
            return READING_COMMANDS[args.command](config, args)
        if args.command == "status":
            if args.watch and args.json:
                raise ConfigError("give --watch or --json, not both (see --help)")
            return cmd_status(config, watch=args.watch, json_output=args.json)
        if args.command == "notify":
            return cmd_notify_test(config, args.worker)
        if args.command == "reload":
            return cmd_reload(config, args.wait)
        if args.command == "health":
            from .health import cmd_health

            return cmd_health(config.database, int(config.statement_timeout * 1000), args.json)
        if args.command == "nodes":
            return cmd_nodes(config, json_output=args.json)
        if args.command == "web":
            from ..web.command import cmd_web

            return cmd_web(config, args.listen)
        if args.command == "systemd-unit":
            print(render_unit(config.config_file, args.user), end="")
            return 0
        if args.command == "run":
            flags = vars(args)
            # A reload reads the config again as this start did: the same flags, the environment, the file.
            return cmd_run(config, lambda: load(flags, os.environ, COMMAND_SETTINGS["run"]))
        return cmd_prune(config)
    except SupervisorError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def cmd_run(config: Config, reread: Callable[[], Config] | None = None) -> int:
    """Supervise until SIGTERM or SIGINT; SIGHUP reloads the config (`reread`) and the workers."""
    from rich.console import Console

    from . import log
    from .dashboard import LiveDashboard
    from ..supervise.loop import Supervisor
    from ..process import ensure_standard_fds
    from ..record import ownership, record_files
    from ..record.recording import RecordingSettings, prepare
    from .sources import missing_source
    from ..record.store import utcnow
    from .dashboard import uptime
    from ..process_title import set_title
    from ..record.database import redact

    logger = logging.getLogger("supervisor")

    ensure_standard_fds()
    # Before the database and the journal are created: a run that cannot start must leave no files behind.
    missing = missing_source(config.workers)
    if missing is not None:
        raise ConfigError(f"cannot import worker package {missing!r} from {os.getcwd()}", "--workers / workers setting")
    interactive = sys.stdout.isatty()
    console = Console() if interactive else None
    log.setup(config.log_level, console, config.log_format)
    settings = RecordingSettings(
        url=config.database,
        journal=journal_path(config),
        write_timeout=config.write_timeout,
        statement_timeout=config.statement_timeout,
        keep_runs=config.keep_runs,
        failure_days=config.failure_days,
        prune_interval=config.prune_interval,
        database_group=config.database_group,
    )
    display = LiveDashboard(console, utcnow) if console is not None else None
    cluster = _cluster_settings(config)
    # ps shows this, not the command line (which may hold the database's password).
    set_title(f"supervisor {redact(config.database)}" + (f" node {cluster.node_name}" if cluster else ""),
              "ws-supervisor")
    supervisor = Supervisor(
        settings,
        config.workers,
        config.overrides,
        display,
        import_timeout=config.import_timeout,
        max_children=config.max_children,
        commands=config.commands,
        config_file=config.config_file,
        cluster=cluster,
        reread=reread,
        config=config,
        metrics=(config.metrics, config.metrics_textfile),
        notify=config.notify,
    )
    supervisor.catch_signals()  # a stop during the start-up below is then a clean stop, acted on once the loop runs
    # Said in one line before the lock file's own error: a directory that cannot be used is named (record_files).
    record_files.check_writable(settings.url)
    # Before the journal is replayed: the journal (and a SQLite database) is this supervisor's alone (ownership.py).
    owned = ownership.take(settings.url, settings.journal)
    try:
        supervisor.stored = prepare(settings, on_lost=supervisor.alerts.lost)
        # The banner and the final line frame everything this supervisor logged (a crash ends without the last).
        logger.info("worker-supervisor %s starting (pid %d): database %s, config %s, workers from %s%s", __version__,
                    os.getpid(), redact(settings.url), config.config_file or "none", ", ".join(config.workers),
                    f", node {cluster.node_name}" if cluster else "")
        started = time.monotonic()
        exit_code = supervisor.run()
        logger.info("worker-supervisor stopped (pid %d) after %s; exit status %d", os.getpid(),
                    uptime(time.monotonic() - started), exit_code)
        return exit_code
    finally:
        owned.release()


def _cluster_settings(config: Config) -> Any:
    """On PostgreSQL this supervisor is a node of a cluster (of one, until another starts); SQLite has no nodes."""
    from ..config import CLUSTER_SETTINGS
    from ..supervise.cluster import ClusterSettings

    if not config.database.startswith(("postgres://", "postgresql://")):
        given = [name for name in CLUSTER_SETTINGS if getattr(config, name) != getattr(Config(), name)]
        if given:
            raise ConfigError(f"{given[0]} is for several supervisors on one PostgreSQL database; SQLite serves "
                              "one supervisor", "settings")
        return None
    return ClusterSettings(
        node_name=config.node_name or socket.gethostname(),
        node_tags=tuple(config.node_tags or ()),
        heartbeat=config.heartbeat,
        lease=config.lease,
        grace=config.lease_grace,
        margin=config.lease_margin,
        backup_delay=config.backup_delay,
        statement_timeout=min(config.statement_timeout, max(1.0, config.heartbeat)),
    )


def cmd_status(config: Config, watch: bool = False, json_output: bool = False) -> int:
    """Print which supervisor is alive and the workers table from the database: once (exit status 2 when no
    supervisor is alive; as JSON with `json_output`), or with `watch` every second until Ctrl-C."""
    from rich.console import Console

    from . import as_json
    from .dashboard import LiveDashboard, render
    from .dashboard import watch as watch_table
    from .liveness import NO_SUPERVISOR
    from .report import console, open_store, read_only
    from .worker_views import read_status
    from ..record.store import Store, utcnow

    if watch:
        # libpq's shortest connect timeout: a watched database that vanishes holds a frame 2 seconds, not 5.
        store = Store(config.database, connect_timeout=2, statement_timeout_ms=int(config.statement_timeout * 1000))

        def read() -> list[Any]:
            try:
                snapshot = False
                if store.db.is_closed():
                    snapshot = bool(read_only(store))
                    store.open()
                rows = read_status(store, with_liveness=False).rows
                if snapshot:
                    store.close()  # a snapshot never changes: the next frame opens afresh, and sees a new supervisor
                return rows
            except StoreUnavailable:
                store.reconnect()  # the next frame tries a fresh connection
                raise

        try:
            # The database keeps no CPU or memory of a run: no columns for them (the loop's own table has them).
            watch_table(read, LiveDashboard(Console(), utcnow, usage=False))
        finally:
            store.close()
        return 0
    store = open_store(config.database, int(config.statement_timeout * 1000), write=False)
    try:
        status = read_status(store)
    finally:
        store.close()
    alive = status.alive
    if json_output:
        print(as_json.dumps(as_json.status(status)))
    else:
        out = console()
        out.print(alive.line, style="bold red" if alive.alive is False else "", highlight=False, markup=False)
        out.print(render(status.rows, status.now, usage=False))  # ages against the database's clock, as overdue
    return NO_SUPERVISOR if alive.alive is False else 0


def cmd_nodes(config: Config, json_output: bool = False) -> int:
    """List the nodes (PostgreSQL), or say whether SQLite's one supervisor runs."""
    from . import nodes
    from .report import console, open_store
    from ..record.ownership import Holder

    store = open_store(config.database, int(config.statement_timeout * 1000), write=False)
    try:
        found = nodes.read(store)
    finally:
        store.close()
    if isinstance(found, Holder):
        print(nodes.sqlite_json(found) if json_output else nodes.sqlite_line(found))
    elif json_output:
        print(nodes.as_json(found))
    else:
        console().print(nodes.table(found))
    return 0


def cmd_control(config: Config, action: str, worker: str, wait: float) -> int:
    """Trigger, pause or resume a worker through the database, and say what the supervisor did."""
    from .report import open_store, require_worker

    store = open_store(config.database, int(config.statement_timeout * 1000))
    try:
        row = require_worker(store, worker)
        settled = _already_settled(action, row)
        if settled is not None:
            print(f"{action} {worker}: {settled}")
            return 0
        result = _send_and_wait(store, worker, action, wait)
    finally:
        store.close()
    if result is not None:
        print(f"{action} {worker}: {result}")
        return 0
    if action == "trigger":
        raise SupervisorError(f"no running supervisor took up the trigger of {worker!r} within {wait:g}s; withdrawn")
    state = "paused" if action == "pause" else "not paused"
    print(f"{action} {worker}: recorded; no running supervisor took it up within {wait:g}s, one that starts will find "
          f"it {state}")
    return 0


def _send_and_wait(store: Any, worker: str, action: str, wait: float) -> str | None:
    """Send a command and wait up to `wait` seconds for a supervisor's answer (None: none came). One nobody took
    up is withdrawn, so that no supervisor acts on it later: a trigger that fires hours after it was asked for, at
    the next start, is a surprise, not a service (one may have answered meanwhile: that answer is returned)."""
    command = store.send_command(worker, action)
    # Polling is the point here: the answer comes through the database, from wherever the supervisor runs.
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        result = store.command_result(command)
        if result is not None:
            return str(result)
        time.sleep(0.05)
    withdrawn: str | None = store.withdraw_command(command, f"no running supervisor took it up within {wait:g}s")
    return withdrawn


def cmd_notify_test(config: Config, worker: str | None) -> int:
    """Send a test event through each configured sink, one line per sink; exit 1 unless every one delivered."""
    from ..notify.events import test_event
    from ..notify.sinks import deliver

    settings = config.notify.for_worker(worker) if worker else config.notify
    if not settings.sinks:
        where = f"[worker.{worker}.notify] or [notify]" if worker else "[notify]"
        raise ConfigError(f"no sink to test: give a webhook or a command in {where}", config.config_file or "config")
    event = test_event(worker, socket.gethostname())
    failed = 0
    for sink, target in settings.sinks.items():
        result = deliver(sink, target, event, settings.timeout)
        failed += result != "delivered"
        print(f"{sink}: {result}")
    return 1 if failed else 0


def cmd_reload(config: Config, wait: float) -> int:
    """Ask every running supervisor to reload, and say what the first that answered changed."""
    from .report import open_store

    store = open_store(config.database, int(config.statement_timeout * 1000))
    try:
        result = _send_and_wait(store, "*", "reload", wait)
    finally:
        store.close()
    if result is None:
        raise SupervisorError(f"no running supervisor took up the reload within {wait:g}s; withdrawn", store.where)
    if result.startswith("not reloaded"):
        print(f"{PROG}: error: reload: {result}", file=sys.stderr)
        return 1
    print(f"reload: {result}")
    return 0


def _already_settled(action: str, row: Any) -> str | None:
    """What to answer at once, without bothering a supervisor: a broken worker cannot be triggered (raises), a
    paused one is not paused again, a running one not resumed; None when the command should go."""
    if action == "trigger" and row.status == "broken":
        raise SupervisorError(f"{row.name!r} is broken and cannot run: {row.last_error}; `check` shows why in full")
    if action == "pause" and row.paused:
        return f"already paused (quarantined: {row.pause_reason})" if row.pause_reason else "already paused"
    if action == "resume" and not row.paused:
        return "not paused"
    return None


def cmd_prune(config: Config) -> int:
    """Delete runs and failures past retention, in small batches, and say how many."""
    from .report import open_store

    store = open_store(config.database, int(config.statement_timeout * 1000))
    try:
        with store.unavailable_as("prune failed"):
            runs, failures = store.prune(config.keep_runs, config.failure_days)
    finally:
        store.close()
    print(f"pruned {runs} run(s) and {failures} failure(s) (keeping {config.keep_runs} runs per worker, "
          f"failures for {config.failure_days:g} days)")
    return 0


# -- reading and checking: history, failures, check ---------------------------------------------------------------

LIMIT_DEFAULT = 20
MAX_ID = 2**31 - 1  # PostgreSQL's integer: a larger --id is a usage error, not a database error


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}") from None
    if not 1 <= number <= MAX_ID:
        raise argparse.ArgumentTypeError(f"must be a positive whole number up to {MAX_ID}, got {text!r}")
    return number


def _add_reading_commands(commands: Any) -> None:
    """Add history, failures and check: they read the record or the workers and change nothing."""
    history = commands.add_parser("history", help="recent runs of one worker, newest first, from the database")
    history.add_argument("worker", metavar="WORKER")
    history.add_argument("--limit", type=_positive, default=LIMIT_DEFAULT, metavar="N",
                         help=f"how many runs (default {LIMIT_DEFAULT})")
    history.add_argument("--run", metavar="ID", help="show this run in full (an id, or its first characters as the "
                         "table shows them): what it printed, kept as long as its worker's keep_output")
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_settings(history)
    failures = commands.add_parser("failures", help="recent failures (of one worker), or one in full with --id")
    failures.add_argument("worker", metavar="WORKER", nargs="?", help="only this worker's failures")
    failures.add_argument("--limit", type=_positive, default=LIMIT_DEFAULT, metavar="N",
                          help=f"how many failures (default {LIMIT_DEFAULT})")
    failures.add_argument("--id", dest="failure_id", type=_positive, metavar="N",
                          help="show this failure in full: traceback, stderr and stdout tails")
    failures.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_settings(failures)
    check = commands.add_parser("check", help="validate the config and import the workers (in a spawner), "
                                "without running anything")
    _add_settings(check)


def cmd_history(config: Config, args: argparse.Namespace) -> int:
    """Print a worker's recent runs, newest first."""
    from . import report

    store = report.open_store(config.database, int(config.statement_timeout * 1000), write=False)
    try:
        worker = report.require_worker(store, args.worker)
        if args.run is not None:
            return _show_run(store, args.worker, args.run, args.json)
        runs = store.recent_runs(args.worker, args.limit)
    finally:
        store.close()
    if args.json:
        from . import as_json

        print(as_json.dumps({**as_json.runs(args.worker, runs), "status": worker.status}))
        return 0
    report.console().print(report.history(args.worker, runs, worker.status))
    return 0


def _show_run(store: Any, worker: str, run_id: str, json_output: bool) -> int:
    """`history WORKER --run ID`: one run in full, with what it printed."""
    from . import as_json, report

    found = store.runs_named(worker, run_id) if run_id else []
    if len(found) != 1:
        which = "no run" if not found else "more than one run"
        raise SupervisorError(f"{which} of {worker} has an id starting {run_id!r}; `{PROG} history {worker}` lists "
                              "them", store.where)
    run = found[0]
    output, failure = store.output_of(run.id), store.failure_of(run.id)
    if json_output:
        print(as_json.dumps(as_json.run_in_full(run, output, failure)))
    else:
        report.console().print(report.run_in_full(run, output, failure))
    return 0


def cmd_failures(config: Config, args: argparse.Namespace) -> int:
    """Print the recent failures (of one worker), or one failure in full."""
    from . import as_json, report

    if args.failure_id is not None and args.worker is not None:
        raise ConfigError("give a WORKER or --id N, not both (see --help)")
    store = report.open_store(config.database, int(config.statement_timeout * 1000), write=False)
    try:
        if args.failure_id is not None:
            row = store.failure(args.failure_id)
            if row is None:
                raise SupervisorError(
                    f"no failure with id {args.failure_id} in the database (pruned, or never was); "
                    f"`{PROG} failures` lists them", store.where,
                )
            document = as_json.failure(row)
            view = report.failure(row)
        else:
            if args.worker is not None:
                report.require_worker(store, args.worker)
            rows = store.recent_failures(args.worker, args.limit)
            document = as_json.failures(rows)
            view = report.failures(rows, args.worker)
    finally:
        store.close()
    if args.json:
        print(as_json.dumps(document))
        return 0
    report.console().print(view)
    return 0


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    """Validate the config and the workers it names, importing them only in a spawner; never the database."""
    from .check import check, describe
    from ..process import ensure_standard_fds

    ensure_standard_fds()
    findings = check(config.workers, config.import_timeout, config.overrides, config.config_file, config.commands)
    lines = [describe(d, d.name in findings.overridden) for d in findings.workers]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))] if lines else []
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    for note in findings.notes:
        print(f"{PROG}: warning: {note}", file=sys.stderr)
    for problem in findings.problems:
        print(f"{PROG}: error: {problem.text}", file=sys.stderr)
    print(f"{len(findings.workers)} valid worker(s) in {', '.join(config.workers)}; {len(findings.problems)} problem(s)")
    return findings.exit_code


READING_COMMANDS = {"history": cmd_history, "failures": cmd_failures, "check": cmd_check}
