"""Tests of supervisor/worker.py (declaring workers) and supervisor/spawn/discovery.py (finding them in modules)."""
from __future__ import annotations

import importlib
import logging
import sys
import textwrap
import uuid
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator

import pytest

from supervisor import FunctionWorker, RunContext, Worker, WorkerDefinition, WorkerDefinitionError, register, worker
from supervisor.spawn.discovery import submodules, workers_in
from supervisor.worker import DEFAULT_GRACE, registered_in


def _ctx() -> RunContext:
    return RunContext("run-1", "w", 1, None, logging.getLogger("test.worker"))


# -- Worker subclasses ---------------------------------------------------------------------------------------


class Cleanup(Worker):
    interval = 60
    timeout = 30


class Minutely(Worker):
    name = "every-minute"
    interval = timedelta(minutes=1)
    timeout = timedelta(seconds=7.5)
    grace = timedelta(0)


def test_subclass_with_class_attributes() -> None:
    definition = Cleanup().definition()
    assert definition == WorkerDefinition(name="Cleanup", module=__name__, interval=60.0, timeout=30.0, grace=DEFAULT_GRACE)
    assert isinstance(definition.interval, float)


def test_timedelta_attributes_become_seconds() -> None:
    definition = Minutely().definition()
    assert definition.name == "every-minute"
    assert definition.interval == 60.0
    assert definition.timeout == 7.5
    assert definition.grace == 0.0


def test_constructor_arguments_override_class_attributes() -> None:
    definition = Cleanup(name="cleanup-eu", interval=timedelta(minutes=5), timeout=12, grace=1.5).definition()
    assert (definition.name, definition.interval, definition.timeout, definition.grace) == ("cleanup-eu", 300.0, 12.0, 1.5)
    # The class itself is untouched.
    assert Cleanup().definition().name == "Cleanup"
    assert Cleanup.interval == 60


def test_no_timeout_is_none() -> None:
    assert Worker(name="t", interval=1).definition().timeout is None


def test_definition_round_trips_through_a_dict() -> None:
    definition = Cleanup().definition()
    assert WorkerDefinition.from_dict(definition.to_dict()) == definition


def test_base_run_is_not_written() -> None:
    with pytest.raises(NotImplementedError, match="Cleanup"):
        Cleanup().run(_ctx())


# -- definition errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "interval",
    [-1, 0, 0.0, -0.5, float("nan"), float("inf"), "sixty", "5x", "-5m", True, False, timedelta(0), timedelta(seconds=-5), [60]],
)
def test_bad_interval_is_a_definition_error_naming_the_worker(interval: object) -> None:
    w = Worker(name="x")
    w.interval = interval  # type: ignore[assignment]
    with pytest.raises(WorkerDefinitionError) as info:
        w.definition()
    assert "interval" in info.value.message
    assert info.value.where == f"worker 'x' in {Worker.__module__}"
    assert str(info.value).endswith(f"(worker 'x' in {Worker.__module__})")


def test_error_names_the_module_that_defines_the_worker() -> None:
    class Broken(Worker):
        interval = -3

    with pytest.raises(WorkerDefinitionError) as info:
        Broken().definition()
    assert str(info.value) == (
        f"interval must be a positive duration (seconds, a timedelta, or text like '90s', '5m', '1h'), got -3"
        f" (worker 'Broken' in {__name__})"
    )


def test_missing_interval() -> None:
    class NoInterval(Worker):
        pass

    with pytest.raises(WorkerDefinitionError, match="interval or cron is not set") as info:
        NoInterval().definition()
    assert info.value.where == f"worker 'NoInterval' in {__name__}"


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), "thirty", True])
def test_bad_timeout(timeout: object) -> None:
    with pytest.raises(WorkerDefinitionError, match="timeout") as info:
        Worker(name="t", interval=1, timeout=timeout).definition()  # type: ignore[arg-type]
    assert "worker 't'" in str(info.value)


@pytest.mark.parametrize(
    ("given", "seconds"), [("90s", 90.0), ("5m", 300.0), ("1h", 3600.0), ("1h30m", 5400.0), ("250ms", 0.25), ("2d", 172800.0), ("60", 60.0)]
)
def test_intervals_in_human_units(given: str, seconds: float) -> None:
    assert Worker(name="h", interval=given).definition().interval == seconds


def test_zero_grace_is_allowed_but_negative_is_not() -> None:
    assert Worker(name="g", interval=1, grace=0).definition().grace == 0.0
    with pytest.raises(WorkerDefinitionError, match="grace"):
        Worker(name="g", interval=1, grace=-1).definition()


@pytest.mark.parametrize("name", ["", "-starts-with-dash", ".dot", "has space", "slash/name", "tab\tname", "bad\n", "é"])
def test_bad_name(name: str) -> None:
    with pytest.raises(WorkerDefinitionError, match="name must be") as info:
        Worker(name=name, interval=1).definition()
    assert info.value.where == f"worker {name!r} in {Worker.__module__}"


def test_non_string_name() -> None:
    w = Worker(interval=1)
    w.name = 42  # type: ignore[assignment]
    with pytest.raises(WorkerDefinitionError, match="name must be") as info:
        w.definition()
    assert "worker 42" in str(info.value)


@pytest.mark.parametrize("name", ["a", "cleanup-eu", "db.vacuum", "ns:job_1", "_private", "9lives"])
def test_good_names(name: str) -> None:
    assert Worker(name=name, interval=1).definition().name == name


# -- the @worker decorator -------------------------------------------------------------------------------------


@worker(interval=30, timeout=10)
def heartbeat(ctx: RunContext) -> str:
    """Say it is alive."""
    return f"alive {ctx.run_id}"


@worker(name="nightly-report", interval=timedelta(hours=24))
def report(ctx: RunContext) -> int:
    return ctx.attempt


def test_decorated_function_is_a_worker_named_after_the_function() -> None:
    assert isinstance(heartbeat, FunctionWorker)
    assert isinstance(heartbeat, Worker)
    definition = heartbeat.definition()
    assert definition == WorkerDefinition(name="heartbeat", module=__name__, interval=30.0, timeout=10.0, grace=DEFAULT_GRACE)


def test_decorator_with_a_name_and_a_timedelta() -> None:
    definition = report.definition()
    assert definition.name == "nightly-report"
    assert definition.interval == 86400.0
    assert definition.timeout is None


def test_decorated_function_is_still_callable() -> None:
    ctx = _ctx()
    assert heartbeat(ctx) == "alive run-1"
    assert report(ctx) == 1
    assert heartbeat.__doc__ == "Say it is alive."
    assert heartbeat.__wrapped__.__name__ == "heartbeat"


def test_run_calls_the_function() -> None:
    calls: list[str] = []

    @worker(interval=1)
    def job(ctx: RunContext) -> None:
        calls.append(ctx.run_id)

    job.run(_ctx())
    assert calls == ["run-1"]


def test_bare_decorator_without_interval_fails_at_definition() -> None:
    @worker
    def bare(ctx: RunContext) -> None:
        pass

    assert isinstance(bare, FunctionWorker)
    with pytest.raises(WorkerDefinitionError, match="interval or cron is not set") as info:
        bare.definition()
    assert info.value.where == f"worker 'bare' in {__name__}"


def test_decorator_with_bad_interval_names_the_function() -> None:
    @worker(interval=float("nan"))
    def nan_job(ctx: RunContext) -> None:
        pass

    with pytest.raises(WorkerDefinitionError) as info:
        nan_job.definition()
    assert f"worker 'nan_job' in {__name__}" in str(info.value)


# -- register() ------------------------------------------------------------------------------------------------


def test_register_rejects_non_workers() -> None:
    with pytest.raises(WorkerDefinitionError, match="register"):
        register(object())  # type: ignore[arg-type]


def test_register_records_the_calling_module() -> None:
    before = len(registered_in(__name__))
    w = Cleanup(name=f"reg-{uuid.uuid4().hex[:8]}")
    register(w)
    assert registered_in(__name__)[before:] == [w]


# -- discovery over real modules -------------------------------------------------------------------------------


@pytest.fixture
def make_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, str]], ModuleType]]:
    """Write a package with the given modules under tmp_path and import it; forget it afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def make(modules: dict[str, str]) -> ModuleType:
        name = f"wpkg_{uuid.uuid4().hex}"
        names.append(name)
        package = tmp_path / name
        package.mkdir()
        (package / "__init__.py").write_text("")
        for module, source in modules.items():
            (package / f"{module}.py").write_text(textwrap.dedent(source).replace("PKG", name))
        importlib.invalidate_caches()
        return importlib.import_module(name)

    yield make
    for name in names:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


def _module(package: ModuleType, name: str) -> ModuleType:
    return importlib.import_module(f"{package.__name__}.{name}")


def _names(workers: list[Worker]) -> list[str]:
    return sorted(w.definition().name for w in workers)


def test_discovery_finds_decorated_functions_and_concrete_subclasses(make_package: Callable[[dict[str, str]], ModuleType]) -> None:
    package = make_package(
        {
            "jobs": """
                from datetime import timedelta
                from supervisor import Worker, worker

                @worker(interval=5)
                def ping(ctx):
                    pass

                @worker(name="pong-job", interval=timedelta(seconds=9))
                def pong(ctx):
                    pass

                class Sweep(Worker):
                    interval = 60

                alias = ping  # the same worker bound twice is found once

                def helper(ctx):  # a plain function is not a worker
                    pass
            """,
        }
    )
    module = _module(package, "jobs")
    found = workers_in(module)
    assert _names(found) == ["Sweep", "ping", "pong-job"]
    assert all(w.definition().module == module.__name__ for w in found)
    sweep = next(w for w in found if w.definition().name == "Sweep")
    assert type(sweep) is module.Sweep


def test_discovery_skips_imported_workers_and_abstract_bases(make_package: Callable[[dict[str, str]], ModuleType]) -> None:
    package = make_package(
        {
            "base": """
                from supervisor import Worker, worker

                class Shared(Worker):
                    interval = 10

                @worker(interval=3)
                def shared_job(ctx):
                    pass
            """,
            "jobs": """
                from supervisor import Worker, worker
                from PKG.base import Shared, shared_job

                class Base(Worker):
                    abstract = True
                    timeout = 5

                class Concrete(Base):
                    interval = 20

                class Local(Shared):
                    name = "local-shared"
            """,
        }
    )
    jobs = workers_in(_module(package, "jobs"))
    # Shared and shared_job were imported (not defined here); Base sets abstract = True; a subclass of it
    # (or of an imported worker) defined here is concrete again.
    assert _names(jobs) == ["Concrete", "local-shared"]
    concrete = next(w for w in jobs if w.definition().name == "Concrete")
    assert concrete.definition().timeout == 5.0  # inherited from the abstract base
    # The imported ones are found in the module that defines them.
    assert _names(workers_in(_module(package, "base"))) == ["Shared", "shared_job"]


def test_discovery_skips_classes_abstract_to_inspect(make_package: Callable[[dict[str, str]], ModuleType]) -> None:
    package = make_package(
        {
            "jobs": """
                import abc
                from supervisor import Worker

                class Fetcher(Worker, metaclass=abc.ABCMeta):
                    interval = 1

                    @abc.abstractmethod
                    def fetch(self): ...

                class Real(Fetcher):
                    def fetch(self):
                        return 1
            """,
        }
    )
    assert _names(workers_in(_module(package, "jobs"))) == ["Real"]


def test_explicit_registration_takes_precedence(make_package: Callable[[dict[str, str]], ModuleType]) -> None:
    package = make_package(
        {
            "jobs": """
                from datetime import timedelta
                from supervisor import Worker, register, worker

                class Cleanup(Worker):
                    interval = 60

                @worker(interval=5)
                def unregistered(ctx):
                    pass

                register(
                    Cleanup(name="cleanup-eu", interval=timedelta(minutes=5)),
                    Cleanup(name="cleanup-us", interval=timedelta(minutes=7)),
                )
            """,
        }
    )
    module = _module(package, "jobs")
    found = workers_in(module)
    assert [w.definition().name for w in found] == ["cleanup-eu", "cleanup-us"]
    assert [w.definition().interval for w in found] == [300.0, 420.0]
    assert registered_in(module.__name__) == found


def test_registration_in_one_module_does_not_affect_another(make_package: Callable[[dict[str, str]], ModuleType]) -> None:
    package = make_package(
        {
            "a": """
                from supervisor import Worker, register

                class A(Worker):
                    interval = 1

                register(A(name="a-registered"))
            """,
            "b": """
                from supervisor import Worker

                class B(Worker):
                    interval = 2
            """,
        }
    )
    assert _names(workers_in(_module(package, "a"))) == ["a-registered"]
    assert _names(workers_in(_module(package, "b"))) == ["B"]


def test_module_without_workers(make_package: Callable[[dict[str, str]], ModuleType]) -> None:
    package = make_package({"empty": "from supervisor import Worker, worker\nX = 1\n"})
    assert workers_in(_module(package, "empty")) == []


def test_submodules_are_sorted_and_direct(make_package: Callable[[dict[str, str]], ModuleType], tmp_path: Path) -> None:
    package = make_package({"zeta": "", "alpha": "", "mid": ""})
    sub = Path(package.__file__).parent / "inner"
    sub.mkdir()
    (sub / "__init__.py").write_text("")
    (sub / "deep.py").write_text("")
    (Path(package.__file__).parent / "notes.txt").write_text("not a module")
    importlib.invalidate_caches()
    name = package.__name__
    assert submodules(package) == [f"{name}.alpha", f"{name}.inner", f"{name}.mid", f"{name}.zeta"]


def test_submodules_of_a_plain_module_is_empty(make_package: Callable[[dict[str, str]], ModuleType]) -> None:
    package = make_package({"leaf": ""})
    assert submodules(_module(package, "leaf")) == []
