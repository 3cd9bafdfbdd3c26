"""Settings: each declared once, read from defaults < config file < environment < command-line flags."""
from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from urllib.parse import urlsplit
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Collection, Mapping

from .errors import ConfigError, WorkerDefinitionError
from .notify.settings import NotifySettings, read_notify
from .worker import OVERRIDABLE, read_setting

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
WORKER_KEYS = OVERRIDABLE
COMMAND_KEYS = ("command", "shell", "env", "cwd", "user", "group")
CONFIG_ENV = "SUPERVISOR_CONFIG"
DEFAULT_CONFIG = "supervisor.toml"
"""Read from the working directory when present and no other file is named, so that `status` and `trigger`
find the database `run` uses without repeating --config."""


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"must be a list of module or package names, got {value!r}")
    return list(value)


def _tags(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"must be a list of tags, got {value!r}")
    tags = [tag.strip() for part in value for tag in part.split(",") if tag.strip()]  # "a,b" and repeated flags
    if not tags:
        raise ValueError(f"must be a list of tags, got {value!r}")
    return tags


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"must be a positive number of seconds, got {value!r}")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"must be a positive number of seconds, got {value!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"must be a positive number of seconds, got {value!r}")
    return seconds


def _count(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"must be a positive whole number, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a positive whole number, got {value!r}") from None
    if number < 1 or (isinstance(value, float) and value != number):
        raise ValueError(f"must be a positive whole number, got {value!r}")
    return number


def _path(value: Any) -> str:
    return _text(value)


def _listen(value: Any) -> str:
    """HOST:PORT to listen on (PORT 0: any free port); the host is required, so that nothing listens on every
    address by accident."""
    text = _text(value)
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"must be HOST:PORT, such as 127.0.0.1:9464 (port 0 takes a free one), got {value!r}")
    return text


def _level(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value.lower()


def _log_format(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_FORMATS:
        raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}, got {value!r}")
    return value.lower()


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its name in the file, its flag, its environment variable, how to parse it, its help."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    flag: str
    env: str
    metavar: str
    repeat: bool = False


SETTINGS = (
    Setting("database", _text, "sqlite:///supervisor.db", "database URL (sqlite:///path or postgresql://...)",
            "--db", "SUPERVISOR_DB", "URL"),
    Setting("workers", _names, ["workers"], "package or module to load workers from (repeat for several)",
            "--workers", "SUPERVISOR_WORKERS", "PACKAGE", repeat=True),
    Setting("log_level", _level, "info", f"log level: {', '.join(LOG_LEVELS)}", "--log-level",
            "SUPERVISOR_LOG_LEVEL", "LEVEL"),
    Setting("log_format", _log_format, "text", "log lines as text, or json (one object per line, for log shippers)",
            "--log-format", "SUPERVISOR_LOG_FORMAT", "FORMAT"),
    Setting("import_timeout", _seconds, 60.0, "seconds a worker module may take to import before it is left out",
            "--import-timeout", "SUPERVISOR_IMPORT_TIMEOUT", "SECONDS"),
    Setting("database_group", _text, None, "group whose members may read a SQLite record (its files become 0640 "
            "with this group; default: 0600, its owner only)", "--database-group", "SUPERVISOR_DATABASE_GROUP", "GROUP"),
    Setting("journal", _path, None, "file where records wait for the database (default: next to a SQLite "
            "database, else ./worker-supervisor.pending)", "--journal", "SUPERVISOR_JOURNAL", "PATH"),
    Setting("write_timeout", _seconds, 30.0, "seconds the recorder may stay silent with records waiting before "
            "it is taken as hung and replaced", "--write-timeout", "SUPERVISOR_WRITE_TIMEOUT", "SECONDS"),
    Setting("statement_timeout", _seconds, 10.0, "seconds one database statement may take",
            "--statement-timeout", "SUPERVISOR_STATEMENT_TIMEOUT", "SECONDS"),
    Setting("keep_runs", _count, 1000, "runs kept per worker (older ones are pruned)", "--keep-runs",
            "SUPERVISOR_KEEP_RUNS", "N"),
    Setting("failure_days", _seconds, 30.0, "days failures are kept", "--failure-days", "SUPERVISOR_FAILURE_DAYS",
            "DAYS"),
    Setting("max_children", _count, None, "most runs (of all workers) in progress at once; runs owed beyond it "
            "wait their turn, oldest first (default: no cap)", "--max-children", "SUPERVISOR_MAX_CHILDREN", "N"),
    Setting("prune_interval", _seconds, 600.0, "seconds between prunes of old rows", "--prune-interval",
            "SUPERVISOR_PRUNE_INTERVAL", "SECONDS"),
    # Several supervisors on one PostgreSQL (supervise/cluster.py, docs/design.md "Several nodes").
    Setting("node_name", _text, None, "this supervisor's name among the nodes on a shared PostgreSQL: its share of "
            "the workers follows the name (default: the host name)", "--node-name", "SUPERVISOR_NODE_NAME", "NAME"),
    Setting("node_tags", _tags, None, "this node's tags (repeat, or a comma-separated list): a worker with "
            "nodes = ['tag:NAME'] runs only on nodes with that tag", "--node-tag", "SUPERVISOR_NODE_TAGS", "TAG",
            repeat=True),
    Setting("heartbeat", _seconds, 2.0, "seconds between renewals of this node's lease (PostgreSQL)",
            "--heartbeat", "SUPERVISOR_HEARTBEAT", "SECONDS"),
    Setting("lease", _seconds, 15.0, "seconds a renewal holds this node's lease; raise it above the longest "
            "failover of your database (PostgreSQL)", "--lease", "SUPERVISOR_LEASE", "SECONDS"),
    Setting("lease_grace", _seconds, 3.0, "seconds after a node's lease ran out before a peer declares it dead",
            "--lease-grace", "SUPERVISOR_LEASE_GRACE", "SECONDS"),
    Setting("lease_margin", _seconds, 2.0, "seconds before its lease runs out that a node's runs are killed "
            "(fencing), and its claims stop", "--lease-margin", "SUPERVISOR_LEASE_MARGIN", "SECONDS"),
    Setting("backup_delay", _seconds, 0.5, "seconds a node ranked after a worker's first choice waits before it "
            "claims a slot itself (at most a quarter of the worker's period)", "--backup-delay",
            "SUPERVISOR_BACKUP_DELAY", "SECONDS"),
    Setting("metrics", _listen, None, "serve Prometheus metrics on HOST:PORT (loopback unless you say otherwise; "
            "needs the metrics extra: prometheus-client)", "--metrics", "SUPERVISOR_METRICS", "HOST:PORT"),
    Setting("metrics_textfile", _path, None, "write Prometheus metrics to this file every 15 s, for node_exporter's "
            "textfile collector (same extra)", "--metrics-textfile", "SUPERVISOR_METRICS_TEXTFILE", "PATH"),
)
CLUSTER_SETTINGS = ("node_name", "node_tags", "heartbeat", "lease", "lease_grace", "lease_margin", "backup_delay")
_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True, slots=True)
class Config:
    """The supervisor's settings, validated."""

    database: str = "sqlite:///supervisor.db"
    workers: list[str] = field(default_factory=lambda: ["workers"])
    log_level: str = "info"
    log_format: str = "text"
    import_timeout: float = 60.0
    database_group: str | None = None
    journal: str | None = None
    write_timeout: float = 30.0
    statement_timeout: float = 10.0
    keep_runs: int = 1000
    failure_days: float = 30.0
    prune_interval: float = 600.0
    max_children: int | None = None
    node_name: str | None = None
    node_tags: list[str] | None = None
    heartbeat: float = 2.0
    lease: float = 15.0
    lease_grace: float = 3.0
    lease_margin: float = 2.0
    backup_delay: float = 0.5
    metrics: str | None = None
    metrics_textfile: str | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-worker settings from the file's `[worker.NAME]` tables, read (durations in seconds, sizes in bytes)."""
    notify: NotifySettings = field(default_factory=NotifySettings)
    """The `[notify]` table, with each worker's own `[worker.NAME.notify]` over it (notify/settings.py)."""
    commands: list[dict[str, Any]] = field(default_factory=list)
    """Command workers the file declares (`[worker.NAME]` tables with a `command`), as given (paths resolved)."""
    config_file: str | None = None
    """The config file read (--config, SUPERVISOR_CONFIG, or ./supervisor.toml when present), or None."""


def journal_path(config: Config) -> str:
    """Where records wait for the database: the setting, else beside the SQLite file, else in the cwd."""
    if config.journal:
        return config.journal
    parts = urlsplit(config.database)
    if parts.scheme == "sqlite":
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if path and path != ":memory:":
            return path + ".pending"
    # On PostgreSQL each node keeps its own journal (two supervisors never share one: record/ownership.py).
    return f"worker-supervisor.{config.node_name}.pending" if config.node_name else "worker-supervisor.pending"


def add_arguments(parser: argparse.ArgumentParser, names: Collection[str] | None = None, default: Any = None,
                  prefix: str = "", shown: Collection[str] | None = None) -> None:
    """Add --config and a flag for each setting in `names` (every setting when None).

    Each flag defaults to `default` and stores under its setting's name after `prefix`; with `shown`, only the
    settings (and "config") it names are listed by --help, the others still work.
    """
    def help_of(name: str, text: str) -> str:
        return text if shown is None or name in shown else argparse.SUPPRESS

    parser.add_argument("--config", dest=prefix + "config", metavar="FILE", default=default,
                        help=help_of("config", f"TOML config file (settings and [worker.NAME] tables); relative "
                                     f"paths in it mean its own directory (env {CONFIG_ENV}; default "
                                     f"./{DEFAULT_CONFIG} when present)"))
    for s in SETTINGS:
        if names is not None and s.name not in names:
            continue
        parser.add_argument(
            s.flag,
            dest=prefix + s.name,
            metavar=s.metavar,
            action="append" if s.repeat else "store",
            default=default,
            help=help_of(s.name, f"{s.help} (env {s.env}; default {s.default!r})"),
        )


def load(flags: Mapping[str, Any], environ: Mapping[str, str], uses: Collection[str] | None = None) -> Config:
    """Build the Config: defaults, then the file, then the environment, then flags; raise ConfigError if bad.

    `uses` names the settings the command uses (all when None): a rule between settings is checked only when the
    command uses all of them, since the user could not change the one it does not take.
    """
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    overrides: dict[str, dict[str, Any]] = {}
    commands: list[dict[str, Any]] = []
    notify = NotifySettings()
    path = flags.get("config") or environ.get(CONFIG_ENV) or (DEFAULT_CONFIG if os.path.isfile(DEFAULT_CONFIG) else None)
    if path:
        from_file, overrides, commands, notify = _read_file(str(path))
        values.update(from_file)
    for s in SETTINGS:
        if s.env in environ and environ[s.env] != "":
            values[s.name] = _parse(s, environ[s.env], f"environment variable {s.env}")
        if flags.get(s.name) is not None:
            values[s.name] = _parse(s, flags[s.name], f"flag {s.flag}")
    both = uses is None or {"statement_timeout", "write_timeout"} <= set(uses)
    if both and values["statement_timeout"] >= values["write_timeout"]:
        raise ConfigError(
            f"statement_timeout ({values['statement_timeout']:g}s) must be shorter than write_timeout "
            f"({values['write_timeout']:g}s), or every slow statement would count as a hung database",
            "settings",
        )
    if uses is None or set(CLUSTER_SETTINGS) <= set(uses):
        _check_lease(values)
    return Config(overrides=overrides, commands=commands, notify=notify, config_file=str(path) if path else None,
                  **values)


def _check_lease(values: dict[str, Any]) -> None:
    """The lease must outlast a missed heartbeat, and the runs must be killed before the lease runs out."""
    if values["heartbeat"] * 2 > values["lease"]:
        raise ConfigError(f"lease ({values['lease']:g}s) must be at least twice the heartbeat "
                          f"({values['heartbeat']:g}s), or one late heartbeat loses it", "settings")
    if values["lease_margin"] + values["heartbeat"] >= values["lease"]:
        raise ConfigError(f"lease_margin ({values['lease_margin']:g}s) plus heartbeat must be shorter than the "
                          f"lease ({values['lease']:g}s), or the runs are killed between two renewals", "settings")


def _parse(setting: Setting, value: Any, where: str) -> Any:
    try:
        return setting.parse(value)
    except ValueError as exc:
        raise ConfigError(f"{setting.name} {exc}", where) from None


def _read_file(path: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[dict[str, Any]], NotifySettings]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc.strerror}", path) from None
    text = raw.decode("utf-8", errors="replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path) from None
    values: dict[str, Any] = {}
    overrides: dict[str, dict[str, Any]] = {}
    commands: list[dict[str, Any]] = []
    notify = NotifySettings()
    worker_notify: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}:{_line_of(text, key)}"
        if key == "worker":
            worker_notify = {name: table.pop("notify") for name, table in value.items()
                             if isinstance(table, dict) and "notify" in table}
            overrides, commands = _worker_tables(value, path, text, os.path.dirname(os.path.abspath(path)))
            continue
        if key == "notify":
            try:
                notify = read_notify(value, where)
            except ValueError as exc:
                raise ConfigError(f"[notify] {exc}", where) from None
            continue
        setting = _BY_NAME.get(key)
        if setting is None:
            raise ConfigError(f"unknown setting {key!r}{_did_you_mean(key, [*_BY_NAME, 'worker', 'notify'])}", where)
        values[key] = _parse(setting, value, where)
    # A relative path in the file means the file's directory: under systemd the working directory is `/`, and the
    # same file must name the same database for `run` and for a `status` typed in any directory.
    base = os.path.dirname(os.path.abspath(path))
    if "database" in values:
        values["database"] = _sqlite_beside(base, values["database"])
    for key in ("journal", "metrics_textfile"):
        if values.get(key):
            values[key] = os.path.join(base, values[key])
    workers = {}
    for name, table in worker_notify.items():
        try:
            workers[name] = read_notify(table, name, base=notify)
        except ValueError as exc:
            raise ConfigError(f"[worker.{name}.notify] {exc}", f"{path}:{_line_of(text, 'worker', name)}") from None
    return values, overrides, commands, replace(notify, workers=workers)


def _sqlite_beside(base: str, url: str) -> str:
    """Make a relative SQLite path in a URL read from a config file relative to `base` (other URLs as given)."""
    parts = urlsplit(url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if parts.scheme != "sqlite" or parts.netloc or not path or path == ":memory:" or os.path.isabs(path):
        return url
    return f"sqlite:///{os.path.join(base, path)}" + (f"?{parts.query}" if parts.query else "")


def _worker_tables(
    value: Any, path: str, text: str, base: str
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Read the [worker.NAME] tables: settings for workers defined in code, and command workers (with `command`).

    Relative paths in them (a `cwd`, a SQLite `database`) are made relative to `base`, the file's directory."""
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ConfigError("[worker] must hold one table per worker, as [worker.NAME]", f"{path}:{_line_of(text, 'worker')}")
    overrides: dict[str, dict[str, Any]] = {}
    commands: list[dict[str, Any]] = []
    for name, table in value.items():
        where = f"{path}:{_line_of(text, 'worker', name)} [worker.{name}]"
        is_command = "command" in table
        known = (*WORKER_KEYS, *COMMAND_KEYS) if is_command else WORKER_KEYS
        settings: dict[str, Any] = {}
        for key, given in table.items():
            if key not in known:
                hint = "" if is_command or key not in COMMAND_KEYS else " (only a command worker, one with `command`, has it)"
                raise ConfigError(f"worker {name!r}: unknown key {key!r}{_did_you_mean(key, known)}{hint}", where)
            if key in COMMAND_KEYS:
                continue  # checked with the whole command worker below
            try:
                settings[key] = read_setting(key, given)
            except ValueError as exc:
                raise ConfigError(f"worker {name!r}: {key} {exc}", f"{path}:{_line_of(text, 'worker', name)}"
                                  f" [worker.{name}] {key}") from None
        if isinstance(table.get("database"), str):
            table = {**table, "database": _sqlite_beside(base, table["database"])}
            if "database" in settings:
                settings["database"] = table["database"]
        if is_command and isinstance(table.get("cwd"), str) and table["cwd"]:
            table = {**table, "cwd": os.path.join(base, table["cwd"])}
        if is_command:
            _check_command_worker(name, table, where)
            commands.append({"name": name, **table})
        else:
            if "interval" in settings and "cron" in settings:
                raise ConfigError(f"worker {name!r}: set interval or cron, not both", where)
            overrides[name] = settings
    return overrides, commands


def _check_command_worker(name: str, table: dict[str, Any], where: str) -> None:
    """Check a command worker as the spawner will build it (command, env, user and group, schedule together)."""
    from .spawn.command import CONFIG_ORIGIN, CommandWorker  # our own code, not a worker's: safe in the supervisor

    try:
        CommandWorker(name=name, origin=CONFIG_ORIGIN, **table).definition()
    except WorkerDefinitionError as exc:
        raise ConfigError(f"worker {name!r}: {exc.message}", where) from None


def _line_of(text: str, *path: str) -> int:
    """Find the line of a key (`path` of one part) or table header (`[a.b]`, parts quoted or not).

    tomllib gives no positions, so this searches the text; it is only used to point at the mistake.
    """
    parts = [rf"(?:{re.escape(p)}|\"{re.escape(p)}\")" for p in path]
    table = r"[ \t]*\.[ \t]*".join(parts)
    pattern = re.compile(rf"^[ \t]*(\[[ \t]*{table}[ \t]*\]|{parts[-1]}[ \t]*=)", re.M)
    match = pattern.search(text)
    return text.count("\n", 0, match.start()) + 1 if match else 1


def _did_you_mean(key: str, choices: Any) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_worker_table(name: str, known: list[str], config_file: str | None, broken_modules: list[str]) -> str:
    """Say that the config's `[worker.NAME]` table names no worker among `known` (for `check` and `run` alike).

    With modules that did not import, the worker may be theirs: then it is said so, and it is not certain.
    """
    where = f" in {config_file}" if config_file else ""
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    if broken_modules:
        return (f"[worker.{name}]{where} names no worker the modules that imported define{hint} "
                f"(unless broken module {', '.join(broken_modules)} defines it)")
    return f"[worker.{name}]{where} names no worker{hint}"
