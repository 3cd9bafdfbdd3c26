"""Where the supervisor's files go (issue 11): nothing is created by a `run` that cannot start, relative paths in a
config file mean the file's own directory, and a default config file (SUPERVISOR_CONFIG, else ./supervisor.toml)
lets `status` and `trigger` find the database `run` uses without repeating --config.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from supervisor.config import load
from supervisor.record.store import Store

NO_FLAGS = {"config": None, "database": None, "journal": None}


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m supervisor ARGS` in `cwd`, with no SUPERVISOR_* variables but those in `env`."""
    environ = {name: value for name, value in os.environ.items() if not name.startswith("SUPERVISOR_")}
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args], cwd=cwd, env={**environ, "COLUMNS": "200", **(env or {})},
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    (line,) = result.stderr.splitlines()
    # The program's name is as it was called (`python -m supervisor`, `worker-supervisor`).
    assert re.match(r"^\S+( -m supervisor)?: error: ", line) and "Traceback" not in result.stdout, result.stderr
    return line


# -- item 6: a run that cannot start creates nothing --------------------------------------------------------------


def test_issue_11_run_with_a_missing_workers_package_creates_no_files(tmp_path: Path) -> None:
    result = cli("run", "--db", f"sqlite:///{tmp_path}/supervisor.db", "--workers", "no_such_package", cwd=tmp_path)
    line = one_error_line(result, 2)
    assert ": error: cannot import worker package 'no_such_package'" in line, line
    assert sorted(os.listdir(tmp_path)) == []  # no database, no -wal/-shm, no journal


def test_issue_11_a_dotted_source_under_a_missing_package_is_the_same_one_line(tmp_path: Path) -> None:
    # The spawner took `no_such_package.jobs` for a broken module (the name missing is its parent's) and ran on.
    result = cli("run", "--db", f"sqlite:///{tmp_path}/supervisor.db", "--workers", "no_such_package.jobs",
                 cwd=tmp_path)
    line = one_error_line(result, 2)
    assert "cannot import worker package 'no_such_package.jobs'" in line, line
    assert sorted(os.listdir(tmp_path)) == []


def test_a_workers_package_the_spawner_would_find_is_not_refused(tmp_path: Path) -> None:
    # The spawner's import looks in its working directory, then on this interpreter's path (PYTHONPATH, site
    # packages, an editable install's finder): the check must find what it would, importing nothing.
    (tmp_path / "lib" / "pathjobs").mkdir(parents=True)
    (tmp_path / "lib" / "pathjobs" / "__init__.py").write_text("raise SystemExit('imported!')")
    (tmp_path / "cwdjobs.py").write_text("raise SystemExit('imported!')")
    (tmp_path / "nsjobs").mkdir()  # a namespace package: a directory with no __init__.py
    script = (
        "import sys\n"
        "from supervisor.operate.sources import missing_source\n"
        "names = ['pathjobs.sub', 'cwdjobs', 'nsjobs', 'json', 'os.path', 'rich']\n"
        "print(missing_source(names), missing_source(['no_such_package_at_all']))\n"
        "print(sorted(set(sys.modules) & {'pathjobs', 'cwdjobs', 'nsjobs', 'rich'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "lib")},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["None no_such_package_at_all", "[]"]


# -- item 6: relative paths in a config file ----------------------------------------------------------------------


def test_issue_11_relative_paths_in_a_config_file_resolve_against_its_directory(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "supervisor.toml"
    config.write_text(
        'database = "sqlite:///state/supervisor.db"\n'
        'journal = "state/records.pending"\n'
        "[worker.backup]\n"
        'command = ["true"]\n'
        'interval = "1h"\n'
        'cwd = "backups"\n'
        "[worker.stamp]\n"
        'command = ["true"]\n'
        'interval = "1h"\n'
        'cwd = "/srv"\n'
    )
    loaded = load({**NO_FLAGS, "config": str(config)}, {})
    assert loaded.database == f"sqlite:///{etc}/state/supervisor.db"
    assert loaded.journal == f"{etc}/state/records.pending"
    assert {c["name"]: c["cwd"] for c in loaded.commands} == {"backup": f"{etc}/backups", "stamp": "/srv"}


def test_absolute_and_in_memory_databases_in_a_config_file_stay_as_given(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.toml"
    for url in (f"sqlite:///{tmp_path}/abs.db", "sqlite:///:memory:", "postgresql://u@127.0.0.1/x"):
        config.write_text(f'database = "{url}"\n')
        assert load({**NO_FLAGS, "config": str(config)}, {}).database == url


def test_flags_and_environment_keep_resolving_against_the_working_directory(tmp_path: Path) -> None:
    config = tmp_path / "etc.toml"
    config.write_text('database = "sqlite:///from-file.db"\n')
    flags = {**NO_FLAGS, "config": str(config), "database": "sqlite:///flag.db", "journal": "flag.pending"}
    loaded = load(flags, {})
    assert (loaded.database, loaded.journal) == ("sqlite:///flag.db", "flag.pending")
    loaded = load({**NO_FLAGS, "config": str(config)}, {"SUPERVISOR_DB": "sqlite:///env.db"})
    assert loaded.database == "sqlite:///env.db"


def test_issue_11_run_from_another_directory_writes_beside_its_config_file(tmp_path: Path) -> None:
    # A config file given under systemd (working directory /) puts its relative database beside itself.
    etc, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    etc.mkdir()
    elsewhere.mkdir()
    (etc / "supervisor.toml").write_text('database = "sqlite:///records.db"\nworkers = ["no_such_package"]\n')
    result = cli("status", "--config", str(etc / "supervisor.toml"), cwd=elsewhere)
    line = one_error_line(result, 1)
    assert f"sqlite:///{etc}/records.db" in line, line


# -- a default config file -----------------------------------------------------------------------------------------


def _record(path: Path, worker: str) -> None:
    from datetime import datetime

    from supervisor.record import records
    from supervisor.worker import WorkerDefinition

    store = Store(f"sqlite:///{path}")
    store.open()
    try:
        definition = WorkerDefinition(name=worker, module="workers.x", interval=60.0, timeout=None)
        store.apply([records.workers_synced([definition], [], datetime(2024, 1, 1))])
    finally:
        store.close()


def test_issue_11_status_reads_the_database_named_in_dot_supervisor_toml(tmp_path: Path) -> None:
    _record(tmp_path / "state.db", "from_default_file")
    (tmp_path / "supervisor.toml").write_text('database = "sqlite:///state.db"\n')
    result = cli("status", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr == "", result.stderr  # 2: no supervisor runs (issue 13)
    assert "from_default_file" in result.stdout


def test_issue_11_supervisor_config_names_the_config_file_and_wins_over_dot_supervisor_toml(tmp_path: Path) -> None:
    _record(tmp_path / "env.db", "from_env_file")
    (tmp_path / "supervisor.toml").write_text('database = "sqlite:///nowhere.db"\n')
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "env.toml").write_text(f'database = "sqlite:///{tmp_path}/env.db"\n')
    result = cli("status", cwd=tmp_path, env={"SUPERVISOR_CONFIG": "conf/env.toml"})
    assert result.returncode == 2 and result.stderr == "", result.stderr  # 2: no supervisor runs (issue 13)
    assert "from_env_file" in result.stdout
    # --config wins over both; a named file that is missing is an error, never a silent fallback.
    line = one_error_line(cli("status", "--config", "gone.toml", cwd=tmp_path, env={"SUPERVISOR_CONFIG": "x"}), 2)
    assert "cannot read the config file" in line and "gone.toml" in line, line
    line = one_error_line(cli("status", cwd=tmp_path, env={"SUPERVISOR_CONFIG": "conf/missing.toml"}), 2)
    assert "cannot read the config file" in line and "conf/missing.toml" in line, line
