"""The worker API: what a module in `workers/` declares, and the context a run receives.

A worker is a name, an interval, an optional timeout and `run(ctx)`, as in the Go pattern this grew from
(`Worker{Name, Interval, Run(ctx)}`). Declare one by subclassing `Worker`, by decorating a function with
`@worker(...)`, or by calling `register(SomeWorker(config))` for instances that need arguments. This module is
imported by the spawner and by worker code, never for its side effects by the supervisor, so it stays small
and imports nothing heavy.
"""
from __future__ import annotations

import difflib
import logging
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from typing import Any, Callable, ClassVar

from .errors import WorkerDefinitionError
from . import schedule
from .units import parse_duration, parse_size

DEFAULT_GRACE = 5.0
DEFAULT_OOM_SCORE_ADJ = 200
DEFAULT_KEEP_OUTPUT = 4096
DEFAULT_MAX_RUNNING_WHEN_ALLOWED = 2
OVERLAP_MODES = ("skip", "queue", "allow")
ISOLATION_MODES = ("fork", "exec")
"""How a run's child gets the worker's code: a fork of the spawner, which imported it once (a run starts in
about 2 ms), or a fresh interpreter that imports it for this run alone (tens of milliseconds more), for modules
that start threads at import or use libraries that are unsafe after a fork (CUDA, gRPC)."""
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")

Duration = float | int | timedelta | str


def _duration(value: object, *, zero: bool = False) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        raise ValueError(
            f"must be a {'non-negative' if zero else 'positive'} duration (seconds, a timedelta, or text like "
            f"'90s', '5m', '1h'), got {value!r}"
        )
    return seconds


def _whole(value: object, *, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"must be a whole number of at least {least}, got {value!r}")
    return value


def _oom_score(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -1000 <= value <= 1000:
        raise ValueError(f"must be a whole number from -1000 to 1000 (the kernel's oom_score_adj), got {value!r}")
    return value


def _choice(value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
    return value.lower()


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _size(value: object) -> int:
    try:
        size = parse_size(value)
    except ValueError:
        size = 0
    if size <= 0:
        raise ValueError(f"must be a positive size (bytes, or text like '512MB'), got {value!r}")
    return size


def _zone_name(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a time zone name such as 'Europe/Berlin', got {value!r}")
    schedule.zone(value)
    return value


def _node_list(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"must be a list of node names or 'tag:NAME', got {value!r}")
    return tuple(v.strip() for v in value)


def _url(value: object) -> str:
    if not isinstance(value, str) or "://" not in value:
        raise ValueError(f"must be a database URL (sqlite:///path or postgresql://...), got {value!r}")
    return value


# Every setting a worker has besides its name, how to read it, and its default. The same rules read a Worker's
# attributes in the spawner and a config's [worker.NAME] table in the supervisor, so both say the same thing.
POLICY: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "interval": (_duration, None),
    "cron": (schedule.check_cron, None),
    "timezone": (_zone_name, None),
    "jitter": (lambda v: _duration(v, zero=True), 0.0),
    "run_at_start": (_flag, None),
    "misfire_grace": (lambda v: _duration(v, zero=True), None),
    "timeout": (_duration, None),
    "grace": (lambda v: _duration(v, zero=True), DEFAULT_GRACE),
    "overlap": (lambda v: _choice(v, OVERLAP_MODES), "skip"),
    "max_running": (lambda v: _whole(v, least=1), None),
    "retries": (lambda v: _whole(v, least=0), 0),
    "retry_delay": (_duration, 1.0),
    "retry_delay_max": (_duration, 300.0),
    "quarantine_after": (lambda v: _whole(v, least=1), None),
    "memory_limit": (_size, None),
    "cpu_limit": (_duration, None),
    "open_files": (lambda v: _whole(v, least=1), None),
    "oom_score_adj": (_oom_score, DEFAULT_OOM_SCORE_ADJ),
    "keep_output": (lambda v: 0 if v == 0 else _size(v), DEFAULT_KEEP_OUTPUT),
    "database": (_url, None),
    "isolation": (lambda v: _choice(v, ISOLATION_MODES), "fork"),
    "nodes": (_node_list, None),
}
OVERRIDABLE = tuple(POLICY)  # what a config's [worker.NAME] table may change
SCHEDULE_KEYS = ("interval", "cron")


def read_setting(key: str, value: object) -> Any:
    """Read one worker setting (None keeps the default); raise ValueError saying what is wrong with it."""
    parse, default = POLICY[key]
    if value is None:
        return default
    return parse(value)


@dataclass(frozen=True, slots=True)
class WorkerDefinition:
    """What the supervisor knows of a worker: everything it needs to schedule it, none of its code."""

    name: str
    module: str
    interval: float | None = None
    """Seconds between runs; or None when `cron` says when to run."""
    timeout: float | None = None
    grace: float = DEFAULT_GRACE
    cron: str | None = None
    """A cron expression (five fields or a macro such as @daily) evaluated in `timezone`."""
    timezone: str | None = None
    """IANA zone of the cron expression; None is the server's own zone."""
    jitter: float = 0.0
    """Each run starts up to this many seconds after its slot, at random, so a fleet does not start as one."""
    run_at_start: bool | None = None
    """Run as soon as the worker is first scheduled; None means yes for an interval, no for cron."""
    misfire_grace: float | None = None
    """After an outage, a missed slot this recent is made up by one run; None means one period."""
    overlap: str = "skip"
    """When a slot comes while a run is in progress: skip it, queue one run, or allow up to `max_running`."""
    max_running: int | None = None
    retries: int = 0
    """Failed runs are tried again this many times, after `retry_delay` doubling up to `retry_delay_max`."""
    retry_delay: float = 1.0
    retry_delay_max: float = 300.0
    quarantine_after: int | None = None
    """Pause the worker (until resumed) after this many failures in a row; None never does."""
    memory_limit: int | None = None
    """Bytes of memory of its own the run (with its descendants) may hold before it is stopped."""
    cpu_limit: float | None = None
    """CPU seconds each process of the run may use (RLIMIT_CPU)."""
    open_files: int | None = None
    """Descriptors each process of the run may hold open (RLIMIT_NOFILE)."""
    oom_score_adj: int = DEFAULT_OOM_SCORE_ADJ
    keep_output: int = DEFAULT_KEEP_OUTPUT
    """Bytes of the end of each of stdout and stderr kept for a run that did not fail (`history --run`); 0 keeps
    none. A failed run keeps up to 64 KiB of each in its failure, whatever this says."""
    """The run's OOM score adjustment: above the supervisor's (0, or the unit's -500), so that when memory runs out
    the kernel kills a run, which is recorded, rather than the supervisor. A run cannot go below what it inherited
    without privilege; it then keeps that."""
    database: str | None = None
    """URL of the worker's own database, opened by `ctx.db` / `ctx.transaction()` in the run."""
    isolation: str = "fork"
    """`fork`: the run's child is a fork of the spawner; `exec`: a fresh interpreter that imports the module."""
    command: tuple[str, ...] | None = None
    """The argv of an external command worker; None for a Python worker."""
    nodes: tuple[str, ...] | None = None
    """On a shared PostgreSQL, the nodes that may run it: names, or `tag:NAME` for the nodes with that tag in their
    `node_tags`; None: any node that has it."""

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """Say what is wrong with the settings taken together, or None."""
        if self.interval is None and self.cron is None:
            return "interval or cron is not set; give seconds, text like '5m', or a cron expression"
        if self.interval is not None and self.cron is not None:
            return "set interval or cron, not both"
        if self.timezone is not None and self.cron is None:
            return "timezone applies only to a cron schedule"
        if self.max_running is not None and self.max_running > 1 and self.overlap != "allow":
            return f"max_running {self.max_running} needs overlap = 'allow' (overlap is {self.overlap!r})"
        if self.retry_delay_max < self.retry_delay:
            return f"retry_delay_max ({self.retry_delay_max:g}s) is shorter than retry_delay ({self.retry_delay:g}s)"
        return None

    @property
    def concurrency(self) -> int:
        """How many runs of this worker may be in progress at once."""
        if self.overlap != "allow":
            return 1
        return self.max_running or DEFAULT_MAX_RUNNING_WHEN_ALLOWED

    @property
    def starts_at_once(self) -> bool:
        """Whether a worker with no schedule on record runs at once (an interval's default) or waits a period."""
        return self.run_at_start if self.run_at_start is not None else self.cron is None

    def to_dict(self) -> dict[str, Any]:
        """Return the definition as plain data for the spawner's report."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerDefinition:
        """Rebuild a definition from the spawner's report."""
        values = {field: data[field] for field in cls.__dataclass_fields__ if field in data}
        for listed in ("command", "nodes"):
            if values.get(listed) is not None:
                values[listed] = tuple(values[listed])
        return cls(**values)

    def overridden(self, override: dict[str, Any] | None) -> WorkerDefinition:
        """Return this definition with a config's [worker.NAME] values applied (already read by read_setting).

        Giving one kind of schedule replaces the other: a config's `cron` takes the place of the code's interval.
        Raise ValueError if the result does not hold together.
        """
        if not override:
            return self
        changes: dict[str, Any] = {k: v for k, v in override.items() if k in POLICY}
        if "cron" in changes and "interval" not in changes:
            changes["interval"] = None
        if "interval" in changes and "cron" not in changes:
            changes["cron"] = None
            changes.setdefault("timezone", None)
        return replace(self, **changes)


class RunContext:
    """What `run(ctx)` receives: who this run is, its deadline, and whether it has been asked to stop."""

    def __init__(
        self,
        run_id: str,
        worker: str,
        attempt: int,
        deadline: float | None,
        log: logging.Logger,
        is_cancelled: Callable[[], bool] = lambda: False,
        wait_cancelled: Callable[[float], bool] | None = None,
        database: str | None = None,
        due_at: float | None = None,
    ) -> None:
        self.run_id = run_id
        self.worker = worker
        self.attempt = attempt
        self.deadline = deadline
        """`time.monotonic()` value by which the run must end, or None when it has no timeout."""
        self.log = log
        """A logger whose lines land in the run's captured stderr."""
        self._is_cancelled = is_cancelled
        self._wait_cancelled = wait_cancelled
        self.due_at = due_at
        """Unix time the run was due: its slot plus its jitter (a retry or a trigger: when it was asked for)."""
        self.database_url = database
        """URL of the worker's own database (its `database` setting), or None."""
        self._database: Any = None

    @property
    def cancelled(self) -> bool:
        """True once the supervisor has asked this run to stop (its deadline passed, or a shutdown)."""
        return self._is_cancelled()

    def remaining(self) -> float | None:
        """Return the seconds left before the deadline (never negative), or None with no timeout."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    @property
    def db(self) -> Any:
        """The worker's own database (a connected peewee Database), opened on first use in this run.

        Its connection belongs to this run's process alone: it is opened after the fork, never shared with the
        spawner or a sibling run, and goes away with the run.
        """
        if self._database is None:
            from .spawn.run_database import open_run_database  # imported on first use: most runs never need peewee

            self._database = open_run_database(self.database_url, self.worker)
        return self._database

    def transaction(self) -> Any:
        """`with ctx.transaction() as db:` work that commits as a whole when the block ends, or not at all.

        An exception inside the block rolls it back; a crash (a segfault, a SIGKILL) ends the process with the
        transaction open, and the database discards it.
        """
        from .spawn.run_database import transaction

        return transaction(self.db)

    def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking early if the run is cancelled; return False if it was."""
        if self._wait_cancelled is None:
            time.sleep(seconds)
            return not self.cancelled
        return not self._wait_cancelled(seconds)


class Worker:
    """Base class of a periodic worker: set `interval` or `cron` (and any other setting in POLICY), write `run`.

    Settings may be class attributes or constructor arguments, so both `class Cleanup(Worker): interval = 60`
    and `register(Cleanup(name="cleanup-eu", interval=timedelta(minutes=5)))` work. A subclass meant only as a
    base for others sets `abstract = True` so discovery passes it by.
    """

    name: str | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    grace: Duration | None = None
    cron: str | None = None
    timezone: str | None = None
    jitter: Duration | None = None
    run_at_start: bool | None = None
    misfire_grace: Duration | None = None
    overlap: str | None = None
    max_running: int | None = None
    retries: int | None = None
    retry_delay: Duration | None = None
    retry_delay_max: Duration | None = None
    quarantine_after: int | None = None
    memory_limit: int | str | None = None
    cpu_limit: Duration | None = None
    open_files: int | None = None
    oom_score_adj: int | None = None
    keep_output: int | str | None = None
    database: str | None = None
    isolation: str | None = None
    abstract: ClassVar[bool] = False

    def __init__(self, *, name: str | None = None, **settings: Any) -> None:
        if name is not None:
            self.name = name
        for key, value in settings.items():
            if key not in POLICY:
                raise WorkerDefinitionError(
                    f"unknown setting {key!r}{_did_you_mean(key, POLICY)}", f"{type(self).__name__} in {self.module}"
                )
            if value is not None:
                setattr(self, key, value)

    def run(self, ctx: RunContext) -> None:
        """Do one run of the work. Raise to fail it; check `ctx.cancelled` in long loops."""
        raise NotImplementedError(f"{type(self).__name__}.run() is not written")

    @property
    def module(self) -> str:
        """The module that defines this worker (where its code lives)."""
        return type(self).__module__

    def default_name(self) -> str:
        """The name used when none is set: the class name."""
        return type(self).__name__

    def command_argv(self) -> tuple[str, ...] | None:
        """The argv of an external command worker (see command.py); None for Python code."""
        return None

    def definition(self) -> WorkerDefinition:
        """Check the declared settings and return them as a definition; raise WorkerDefinitionError if bad."""
        name = self.name if self.name is not None else self.default_name()
        where = f"worker {name!r} in {self.module}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise WorkerDefinitionError(
                f"name must be letters, digits and _ . : - (not starting with punctuation), got {name!r}", where
            )
        values: dict[str, Any] = {}
        for key in POLICY:
            try:
                values[key] = read_setting(key, getattr(self, key, None))
            except ValueError as exc:
                raise WorkerDefinitionError(f"{key} {exc}", where) from None
        try:
            return WorkerDefinition(name=name, module=self.module, command=self.command_argv(), **values)
        except ValueError as exc:
            raise WorkerDefinitionError(str(exc), where) from None


class FunctionWorker(Worker):
    """A worker made from a plain function by `@worker(...)`; the function takes `ctx`."""

    def __init__(self, func: Callable[[RunContext], object], **attributes: Any) -> None:
        super().__init__(**attributes)
        self.func = func
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    @property
    def module(self) -> str:
        return self.func.__module__

    def default_name(self) -> str:
        return self.func.__name__

    def run(self, ctx: RunContext) -> None:
        self.func(ctx)

    def __call__(self, ctx: RunContext) -> object:
        return self.func(ctx)


def worker(func: Callable[[RunContext], object] | None = None, *, name: str | None = None, **settings: Any) -> Any:
    """Turn a function `f(ctx)` into a worker: `@worker(interval=60, timeout=30)`, `@worker(cron="0 3 * * *")`."""

    def wrap(f: Callable[[RunContext], object]) -> FunctionWorker:
        return FunctionWorker(f, name=name, **settings)

    return wrap(func) if func is not None else wrap


# Workers registered explicitly, with the module that registered them. A module that registers anything is
# taken at its word: discovery then uses only its registrations, not every Worker it happens to define.
_registered: list[tuple[str, Worker]] = []


def register(*workers: Worker) -> None:
    """Register worker instances explicitly (for workers that need constructor arguments)."""
    caller = sys._getframe(1).f_globals.get("__name__", "__main__")
    for w in workers:
        if not isinstance(w, Worker):
            raise WorkerDefinitionError(f"register() takes Worker instances, got {w!r}", caller)
        _registered.append((caller, w))


def registered_in(module: str) -> list[Worker]:
    """Return the workers that `module` registered explicitly, in order."""
    return [w for owner, w in _registered if owner == module]


def _did_you_mean(key: str, choices: Any) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
