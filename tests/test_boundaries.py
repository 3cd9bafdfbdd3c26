"""Which code runs in which process, checked on real processes (issue 12, "Make the boundaries a test").

The design (docs/design.md, "Process model") rests on it: the spawner and the runs' children stay lean and
single-threaded (no rich, no peewee, no database driver), the supervisor never imports worker code, and the
operator's read-only commands load nothing of the spawner's side. A module that imports the wrong thing keeps
working, so nothing else would notice; here every process dumps `sorted(sys.modules)` and the dump is checked.

- A forked run's child is a fork of the spawner (through a standby), so its modules are the spawner's at fork
  time plus what the child imported itself: one dump shows both.
- An exec run is a fresh interpreter (exec_child): its modules are what exec_child and the child code imported,
  plus the worker module's own imports, which are only json, os, sys and `supervisor` (dump_modules.py).
- The supervisor and the read-only commands run through a driver that calls `supervisor.operate.cli.main` and dumps
  its modules once main has returned.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import pytest

from helpers import wait_until, worker_package

# -- The boundaries: the only place that names modules. When modules move (supervisor/spawner/... is planned),
# -- only this section changes.

# Top-level packages that neither the spawner nor any run's child (fork or exec) may import, and why.
LEAN_PROCESS_FORBIDS: dict[str, str] = {
    "rich": "the spawner and the runs stay lean; rich is the dashboard's (its Live starts a refresh thread, and a "
            "fork with a thread alive can deadlock)",
    "peewee": "the spawner and the runs stay lean; only the recorder talks to the database, and no connection may "
              "cross a fork",
    "playhouse": "peewee's extensions (db_url): the recorder's, like peewee",
    "sqlite3": "a database driver: only the recorder and the read-only commands open the record (a worker module "
               "may import it for itself; this fixture's does not)",
    "_sqlite3": "sqlite3's C extension: a database driver",
    "psycopg": "a database driver (psycopg 3): only the recorder opens the record; a run's own database "
               "(ctx.db) is opened on first use, never at import",
    "psycopg_c": "psycopg 3's C implementation: a database driver",
    "psycopg_binary": "psycopg 3's binary wheel: a database driver",
    "psycopg2": "a database driver (psycopg2, which Django applications bring): never ours to load",
}

# The package of worker modules the tests build (helpers.worker_package): the supervisor must never import it.
WORKER_PACKAGE = "workers"
WORKER_CODE_WHY = "the supervisor never imports worker code: a module that segfaults or starts a thread at import " \
                  "must harm only the spawner"

# Modules that only the spawner and the runs' children need: neither the supervisor nor a read-only command may
# import them (they import or run worker code, and carry the fork server's state).
SPAWNER_ONLY: dict[str, str] = {
    "supervisor.spawn.spawner": "the fork server itself (it runs as `python -m`, so in its own process it is __main__)",
    "supervisor.spawn.discovery": "imports the worker modules",
    "supervisor.spawn.standby": "the spawner's children forked ahead of their runs",
    "supervisor.spawn.child": "a run's child: runs the worker",
    "supervisor.spawn.exec_child": "an exec run's fresh interpreter: imports and runs the worker",
}

# How the processes that run as `python -m MODULE` show in their sys.argv[0] (MODULE's path, with or without
# /__main__.py): the dumps check they came from the process they claim to.
SPAWNER_MAIN = "supervisor/spawn/spawner"
EXEC_CHILD_MAIN = "supervisor/spawn/exec_child"

# The operators' commands that only read the record.
READ_ONLY_COMMANDS: dict[str, list[str]] = {
    "status": ["status"],
    "nodes": ["nodes"],
    "history": ["history", "dump_modules"],
    "failures": ["failures"],
}

# -- The processes and their dumps.

# Runs `supervisor.operate.cli.main(argv[2:])` and, once it has returned, dumps this process's modules to argv[1].
DRIVER = """
import json, os, sys
from supervisor.operate import cli
code = cli.main(sys.argv[2:])
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules), "argv": sys.argv}, f)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
"""

EXEC_CONFIG = '[worker.dump_modules]\nisolation = "exec"\n'


@dataclass(frozen=True)
class Dump:
    """What one process had imported: its module names and its argv."""

    modules: frozenset[str]
    argv: list[str]
    code: int | None  # what cli.main returned (the driver's dumps only)


@dataclass(frozen=True)
class Supervised:
    """One real supervisor's life: its own dump, its run's dump, and where its record is."""

    supervisor: Dump
    run: Dump
    cwd: Path
    url: str


def read_dump(path: Path) -> Dump:
    data = json.loads(path.read_text())
    return Dump(frozenset(data["modules"]), list(data["argv"]), data.get("code"))


def drive(cwd: Path, out: Path, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start the driver on `argv` (a command line of the supervisor's CLI), its output in a log beside `out`."""
    with open(out.with_suffix(".log"), "wb") as log:
        return subprocess.Popen([sys.executable, "-c", DRIVER, str(out), *argv], cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen[bytes], out: Path, argv: list[str], timeout: float = 60.0, returns: int = 0) -> Dump:
    """Wait for the driver of `argv` to exit (killing it past `timeout`) and return its dump; cli.main must have
    returned `returns`."""
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    log = out.with_suffix(".log").read_text(errors="replace")
    assert code == 0 and out.exists(), f"the driver of {argv} exited {code}; its output:\n{log}"
    dump = read_dump(out)
    assert dump.code == returns, f"cli.main({argv}) returned {dump.code}; its output:\n{log}"
    return dump


def supervise_one_run(cwd: Path, config: str | None = None) -> Supervised:
    """Run a real supervisor (through the driver) until its first run has dumped its modules; stop it with SIGTERM."""
    worker_package(cwd, ["dump_modules"])
    url = f"sqlite:///{cwd / 'supervisor.db'}"
    argv = ["run", "--db", url]
    if config is not None:
        (cwd / "supervisor.toml").write_text(config)
        argv += ["--config", str(cwd / "supervisor.toml")]
    out = cwd / "supervisor-modules.json"
    process = drive(cwd, out, argv)
    try:
        run_dumps = wait_until(lambda: sorted(cwd.glob("modules-*.json")), timeout=60, what="the run's dump")
        process.send_signal(signal.SIGTERM)
        supervisor = finish(process, out, argv)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return Supervised(supervisor, read_dump(run_dumps[0]), cwd, url)


@pytest.fixture(scope="module")
def forked(tmp_path_factory: pytest.TempPathFactory) -> Supervised:
    """A supervisor that ran dump_modules once in a fork of its spawner (the default isolation)."""
    return supervise_one_run(tmp_path_factory.mktemp("forked"))


@pytest.fixture(scope="module")
def execed(tmp_path_factory: pytest.TempPathFactory) -> Supervised:
    """A supervisor that ran dump_modules once in a fresh interpreter (`isolation = "exec"`)."""
    return supervise_one_run(tmp_path_factory.mktemp("execed"), config=EXEC_CONFIG)


# -- The checks.


def crossings(process: str, modules: Iterable[str], forbidden: Mapping[str, str]) -> list[str]:
    """Name each forbidden import of `process` (a forbidden name, or a module inside it), with why it is forbidden."""
    found: dict[str, list[str]] = {}
    for module in sorted(modules):
        key = next((name for name in forbidden if module == name or module.startswith(name + ".")), None)
        if key is not None:
            found.setdefault(key, []).append(module)
    return [f"{process} imported {key}{shown(names, key)} (forbidden: {forbidden[key]}; see docs/design.md)"
            for key, names in found.items()]


def shown(names: list[str], key: str) -> str:
    """The modules found under a forbidden name, when they are more than the name itself."""
    if names == [key]:
        return ""
    return f" [{', '.join(names[:4])}{', ...' if len(names) > 4 else ''}: {len(names)} modules]"


def assert_no_crossings(found: list[str]) -> None:
    assert not found, "boundary crossed:\n" + "\n".join(found)


def test_a_forked_run_and_its_spawner_import_no_dashboard_orm_or_driver(forked: Supervised) -> None:
    # The dump's sys.argv is the spawner's: the run's child is a fork of it (through a standby).
    assert SPAWNER_MAIN in forked.run.argv[0], f"the run's dump did not come from a fork of the spawner: {forked.run.argv}"
    # discovery imported the worker module in the spawner, before the fork: the dump holds what the spawner held.
    assert f"{WORKER_PACKAGE}.dump_modules" in forked.run.modules
    assert_no_crossings(crossings("the spawner or a forked run's child", forked.run.modules, LEAN_PROCESS_FORBIDS))


def test_an_exec_run_imports_no_dashboard_orm_or_driver(execed: Supervised) -> None:
    assert EXEC_CHILD_MAIN in execed.run.argv[0], f"the run's dump did not come from exec_child: {execed.run.argv}"
    # The worker module imports only json, os, sys and supervisor: anything forbidden came from our own code.
    assert_no_crossings(crossings("an exec run's fresh interpreter", execed.run.modules, LEAN_PROCESS_FORBIDS))


@pytest.mark.parametrize("isolation", ["fork", "exec"])
def test_the_supervisor_never_imports_worker_code(isolation: str, request: pytest.FixtureRequest) -> None:
    supervised: Supervised = request.getfixturevalue("forked" if isolation == "fork" else "execed")
    assert supervised.run.modules, "the run never dumped its modules"  # a worker was there to be imported
    assert_no_crossings(crossings("the supervisor", supervised.supervisor.modules, {WORKER_PACKAGE: WORKER_CODE_WHY}))


def test_the_supervisor_imports_nothing_only_the_spawner_needs(forked: Supervised) -> None:
    assert_no_crossings(crossings("the supervisor", forked.supervisor.modules, SPAWNER_ONLY))


@pytest.mark.parametrize("command", sorted(READ_ONLY_COMMANDS))
def test_read_only_commands_import_nothing_of_the_spawner_side(command: str, forked: Supervised) -> None:
    out = forked.cwd / f"{command}-modules.json"
    argv = [*READ_ONLY_COMMANDS[command], "--db", forked.url]
    # The supervisor has stopped: status exits 2, saying no supervisor is running (issue 13).
    dump = finish(drive(forked.cwd, out, argv), out, argv, returns=2 if command == "status" else 0)
    forbidden = {**SPAWNER_ONLY, WORKER_PACKAGE: "a read-only command reads the record, never the workers' code"}
    assert_no_crossings(crossings(f"`{command}`", dump.modules, forbidden))
