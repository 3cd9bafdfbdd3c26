"""Find the workers a package's modules declare. Runs in the spawner, which is the only process that imports them."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

from ..worker import Worker, registered_in


def submodules(package: ModuleType) -> list[str]:
    """Return the names of a package's direct submodules, sorted, so imports happen in a stable order."""
    path = getattr(package, "__path__", None)
    if path is None:
        return []
    return sorted(info.name for info in pkgutil.iter_modules(path, package.__name__ + "."))


def import_module(name: str) -> ModuleType:
    """Import one module by its dotted name."""
    return importlib.import_module(name)


def workers_in(module: ModuleType) -> list[Worker]:
    """Return the workers a module declares: its explicit registrations if any, else what it defines.

    Defined means: `Worker` instances bound at module level (decorated functions included), and concrete
    `Worker` subclasses whose class statement is in this module (not imported into it), instantiated without
    arguments. A subclass sets `abstract = True` to be left alone.
    """
    explicit = registered_in(module.__name__)
    if explicit:
        return explicit
    found: list[Worker] = []
    seen: set[int] = set()
    for value in vars(module).values():
        if id(value) in seen:
            continue
        if isinstance(value, Worker) and value.module == module.__name__:
            seen.add(id(value))
            found.append(value)
        elif (
            inspect.isclass(value)
            and issubclass(value, Worker)
            and value.__module__ == module.__name__
            and not value.__dict__.get("abstract", False)
            and not inspect.isabstract(value)
        ):
            seen.add(id(value))
            found.append(value())
    return found
