"""The worker API: what a module in `workers/` declares, and the context a run receives.

A worker is a name, an interval, an optional timeout and `run(ctx)`, as in the Go pattern this grew from
(`Worker{Name, Interval, Run(ctx)}`). Declare one by subclassing `Worker`, by decorating a function with
`@worker(...)`, or by calling `register(SomeWorker(config))` for instances that need arguments. This module is
imported by the spawner and by worker code, never for its side effects by the supervisor, so it stays small
and imports nothing heavy.
"""
from __future__ import annotations

import logging
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from typing import Any, Callable, ClassVar

from .errors import WorkerDefinitionError
from .schedule import parse_duration

DEFAULT_GRACE = 5.0
OVERRIDABLE = ("interval", "timeout", "grace")  # what a config's [worker.NAME] table may change
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")

Duration = float | int | timedelta | str


@dataclass(frozen=True, slots=True)
class WorkerDefinition:
    """What the supervisor knows of a worker: everything it needs to schedule it, none of its code."""

    name: str
    module: str
    interval: float
    timeout: float | None
    grace: float

    def to_dict(self) -> dict[str, Any]:
        """Return the definition as plain data for the spawner's report."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerDefinition:
        """Rebuild a definition from the spawner's report."""
        return cls(**{field: data[field] for field in cls.__dataclass_fields__})

    def overridden(self, override: dict[str, float | None] | None) -> WorkerDefinition:
        """Return this definition with a config's [worker.NAME] values (interval, timeout, grace) applied."""
        if not override:
            return self
        changes: dict[str, Any] = {k: v for k, v in override.items() if k in OVERRIDABLE}
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

    @property
    def cancelled(self) -> bool:
        """True once the supervisor has asked this run to stop (its deadline passed, or a shutdown)."""
        return self._is_cancelled()

    def remaining(self) -> float | None:
        """Return the seconds left before the deadline (never negative), or None with no timeout."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking early if the run is cancelled; return False if it was."""
        if self._wait_cancelled is None:
            time.sleep(seconds)
            return not self.cancelled
        return not self._wait_cancelled(seconds)


class Worker:
    """Base class of a periodic worker: set `interval` (and optionally `name`, `timeout`, `grace`), write `run`.

    Attributes may be class attributes or constructor arguments, so both `class Cleanup(Worker): interval = 60`
    and `register(Cleanup(name="cleanup-eu", interval=timedelta(minutes=5)))` work. A subclass meant only as a
    base for others sets `abstract = True` so discovery passes it by.
    """

    name: str | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    grace: Duration = DEFAULT_GRACE
    abstract: ClassVar[bool] = False

    def __init__(
        self,
        *,
        name: str | None = None,
        interval: Duration | None = None,
        timeout: Duration | None = None,
        grace: Duration | None = None,
    ) -> None:
        if name is not None:
            self.name = name
        if interval is not None:
            self.interval = interval
        if timeout is not None:
            self.timeout = timeout
        if grace is not None:
            self.grace = grace

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

    def definition(self) -> WorkerDefinition:
        """Check the declared attributes and return them as a definition; raise WorkerDefinitionError if bad."""
        name = self.name if self.name is not None else self.default_name()
        where = f"worker {name!r} in {self.module}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise WorkerDefinitionError(
                f"name must be letters, digits and _ . : - (not starting with punctuation), got {name!r}", where
            )
        interval = _seconds(self.interval, "interval", where, required=True)
        assert interval is not None
        timeout = _seconds(self.timeout, "timeout", where, required=False)
        grace = _seconds(self.grace, "grace", where, required=True, allow_zero=True)
        assert grace is not None
        return WorkerDefinition(name=name, module=self.module, interval=interval, timeout=timeout, grace=grace)


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


def worker(
    func: Callable[[RunContext], object] | None = None,
    *,
    name: str | None = None,
    interval: Duration | None = None,
    timeout: Duration | None = None,
    grace: Duration | None = None,
) -> Any:
    """Turn a function `f(ctx)` into a worker: `@worker(interval=60, timeout=30)`."""

    def wrap(f: Callable[[RunContext], object]) -> FunctionWorker:
        return FunctionWorker(f, name=name, interval=interval, timeout=timeout, grace=grace)

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


def _seconds(value: object, field: str, where: str, *, required: bool, allow_zero: bool = False) -> float | None:
    """Turn a duration (seconds, a timedelta, or "90s"/"5m"/"1h") into seconds, or explain what is wrong with it."""
    if value is None:
        if required:
            raise WorkerDefinitionError(f"{field} is not set; give seconds, a timedelta, or text like '5m'", where)
        return None
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise WorkerDefinitionError(
            f"{field} must be seconds (a number), a timedelta, or text like '90s', '5m', '1h', got {value!r}", where
        ) from None
    if seconds != seconds or seconds in (float("inf"), float("-inf")) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise WorkerDefinitionError(f"{field} must be a positive duration, got {value!r}", where)
    return seconds
