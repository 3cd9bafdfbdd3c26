"""Tests of supervisor/config.py (`load`: defaults < file < environment < flags) and supervisor/operate/cli.py (`main`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from supervisor.operate.cli import main
from supervisor.config import Config, load
from supervisor.errors import ConfigError
from supervisor.record.store import Store

NO_FLAGS: dict[str, Any] = {"config": None, "database": None, "workers": None, "log_level": None, "import_timeout": None}


def _flags(**given: Any) -> dict[str, Any]:
    return {**NO_FLAGS, **given}


def _write(tmp_path: Path, text: str, name: str = "supervisor.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's SUPERVISOR_* variables out of the cli tests (load() itself takes `environ`)."""
    for name in ("SUPERVISOR_DB", "SUPERVISOR_WORKERS", "SUPERVISOR_LOG_LEVEL", "SUPERVISOR_IMPORT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


# -- defaults and precedence ----------------------------------------------------------------------------------


def test_defaults() -> None:
    config = load(NO_FLAGS, {})
    assert config == Config(database="sqlite:///supervisor.db", workers=["workers"], log_level="info", import_timeout=60.0, overrides={})


def test_empty_flags_mapping_gives_defaults() -> None:
    assert load({}, {}) == load(NO_FLAGS, {})


def test_file_overrides_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path, 'database = "sqlite:///file.db"\nworkers = ["a", "b"]\nlog_level = "WARNING"\n')
    config = load(_flags(config=str(path)), {})
    assert config.database == f"sqlite:///{tmp_path}/file.db"  # a relative path in the file means its directory
    assert config.workers == ["a", "b"]
    assert config.log_level == "warning"


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = _write(tmp_path, 'database = "sqlite:///file.db"\nlog_level = "error"\n')
    environ = {"SUPERVISOR_DB": "sqlite:///env.db", "SUPERVISOR_WORKERS": "jobs, more_jobs ,"}
    config = load(_flags(config=str(path)), environ)
    assert config.database == "sqlite:///env.db"
    assert config.workers == ["jobs", "more_jobs"]
    assert config.log_level == "error"  # not in the environment: the file's value stays


def test_flags_override_environment_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path, 'database = "sqlite:///file.db"\nlog_level = "error"\nworkers = ["f"]\n')
    environ = {"SUPERVISOR_DB": "sqlite:///env.db", "SUPERVISOR_LOG_LEVEL": "warning", "SUPERVISOR_WORKERS": "e"}
    config = load(_flags(config=str(path), database="sqlite:///flag.db", workers=["x", "y"]), environ)
    assert config.database == "sqlite:///flag.db"
    assert config.workers == ["x", "y"]
    assert config.log_level == "warning"  # no flag: the environment wins over the file


def test_empty_environment_variable_is_ignored(tmp_path: Path) -> None:
    path = _write(tmp_path, 'database = "sqlite:///file.db"\n')
    assert load(_flags(config=str(path)), {"SUPERVISOR_DB": ""}).database == f"sqlite:///{tmp_path}/file.db"


def test_import_timeout_from_file_environment_and_flag(tmp_path: Path) -> None:
    path = _write(tmp_path, "import_timeout = 90\n")
    assert load(_flags(config=str(path)), {}).import_timeout == 90.0
    assert load(_flags(config=str(path)), {"SUPERVISOR_IMPORT_TIMEOUT": "2.5"}).import_timeout == 2.5
    assert load(_flags(config=str(path), import_timeout="7"), {"SUPERVISOR_IMPORT_TIMEOUT": "2.5"}).import_timeout == 7.0


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", "soon", ""])
def test_bad_import_timeout_flag(value: str) -> None:
    with pytest.raises(ConfigError, match="import_timeout must be a positive number of seconds") as info:
        load(_flags(import_timeout=value), {})
    assert info.value.where == "flag --import-timeout"


def test_bad_import_timeout_in_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "import_timeout = true\n")
    with pytest.raises(ConfigError, match="import_timeout must be a positive number of seconds") as info:
        load(_flags(config=str(path)), {})
    assert info.value.where == f"{path}:1"


def test_file_with_worker_tables(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        'workers = ["jobs"]\n\n[worker.cleanup]\ninterval = 30\ntimeout = 12.5\n\n[worker."report.daily"]\ngrace = 0\n',
    )
    config = load(_flags(config=str(path)), {})
    assert config.overrides == {"cleanup": {"interval": 30.0, "timeout": 12.5}, "report.daily": {"grace": 0.0}}
    assert isinstance(config.overrides["cleanup"]["interval"], float)


# -- errors -------------------------------------------------------------------------------------------------


def test_unknown_key_suggests_the_close_one_and_gives_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, 'database = "sqlite:///x.db"\nlog_levl = "debug"\n')
    with pytest.raises(ConfigError) as info:
        load(_flags(config=str(path)), {})
    assert "unknown setting 'log_levl'" in info.value.message
    assert "did you mean 'log_level'?" in info.value.message
    assert info.value.where == f"{path}:2"
    assert str(info.value).endswith(f"({path}:2)")


def test_unknown_key_line_counts_blank_lines_and_comments(tmp_path: Path) -> None:
    path = _write(tmp_path, '# settings\ndatabase = "sqlite:///x.db"\n\n\ndatabse_url = "oops"\n')
    with pytest.raises(ConfigError) as info:
        load(_flags(config=str(path)), {})
    assert "did you mean 'database'?" in info.value.message
    assert info.value.where == f"{path}:5"


def test_unknown_key_with_nothing_close_has_no_suggestion(tmp_path: Path) -> None:
    path = _write(tmp_path, 'zzz = 1\n')
    with pytest.raises(ConfigError) as info:
        load(_flags(config=str(path)), {})
    assert info.value.message == "unknown setting 'zzz'"
    assert info.value.where == f"{path}:1"


def test_unknown_worker_key(tmp_path: Path) -> None:
    path = _write(tmp_path, 'workers = ["jobs"]\n[worker.cleanup]\ninterval = 5\ntimout = 3\n')
    with pytest.raises(ConfigError) as info:
        load(_flags(config=str(path)), {})
    assert info.value.message == "worker 'cleanup': unknown key 'timout'; did you mean 'timeout'?"
    assert info.value.where == f"{path}:2 [worker.cleanup]"


@pytest.mark.parametrize(
    ("source", "where"),
    [
        ('log_level = "loud"\n', "{path}:1"),
        ('log_level = 3\n', "{path}:1"),
    ],
)
def test_bad_log_level_in_the_file(tmp_path: Path, source: str, where: str) -> None:
    path = _write(tmp_path, source)
    with pytest.raises(ConfigError, match="log_level must be one of debug, info, warning, error") as info:
        load(_flags(config=str(path)), {})
    assert info.value.where == where.format(path=path)


def test_bad_log_level_in_the_environment_and_flags() -> None:
    with pytest.raises(ConfigError) as info:
        load(NO_FLAGS, {"SUPERVISOR_LOG_LEVEL": "verbose"})
    assert info.value.where == "environment variable SUPERVISOR_LOG_LEVEL"
    assert "'verbose'" in info.value.message
    with pytest.raises(ConfigError) as info:
        load(_flags(log_level="trace"), {})
    assert info.value.where == "flag --log-level"


def test_log_level_is_case_insensitive() -> None:
    assert load(_flags(log_level="DEBUG"), {}).log_level == "debug"


@pytest.mark.parametrize(
    "table",
    [
        "interval = -5",
        "interval = 0",
        'interval = "sixty"',
        'interval = "5 minutes"',
        "timeout = -1",
        "timeout = true",
        "grace = -0.5",
        'grace = "soon"',
        "interval = [60]",
    ],
)
def test_bad_worker_override_value(tmp_path: Path, table: str) -> None:
    path = _write(tmp_path, f"[worker.cleanup]\n{table}\n")
    with pytest.raises(ConfigError, match=r"^worker 'cleanup': (interval|timeout|grace) must be a (positive|non-negative) duration") as info:
        load(_flags(config=str(path)), {})
    assert info.value.where == f"{path}:1 [worker.cleanup] {table.split()[0]}"


def test_worker_override_in_human_units(tmp_path: Path) -> None:
    path = _write(tmp_path, '[worker.cleanup]\ninterval = "5m"\ntimeout = "1h30m"\ngrace = "250ms"\n')
    assert load(_flags(config=str(path)), {}).overrides == {"cleanup": {"interval": 300.0, "timeout": 5400.0, "grace": 0.25}}


@pytest.mark.parametrize("table", ["interval = nan", "interval = inf", "timeout = nan", "grace = false"])
def test_non_finite_or_boolean_worker_override_is_rejected(tmp_path: Path, table: str) -> None:
    # Worker definitions reject NaN, infinity and booleans; the config file's overrides must too.
    path = _write(tmp_path, f"[worker.cleanup]\n{table}\n")
    with pytest.raises(ConfigError, match="worker 'cleanup'"):
        load(_flags(config=str(path)), {})


def test_worker_section_that_is_not_tables(tmp_path: Path) -> None:
    path = _write(tmp_path, 'database = "sqlite:///x.db"\n[worker]\ninterval = 5\n')
    with pytest.raises(ConfigError, match=r"\[worker\] must hold one table per worker") as info:
        load(_flags(config=str(path)), {})
    assert info.value.where == f"{path}:2"


def test_bad_setting_value_in_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, 'database = ""\n')
    with pytest.raises(ConfigError, match="database must be a non-empty string") as info:
        load(_flags(config=str(path)), {})
    assert info.value.where == f"{path}:1"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(_flags(config=str(path)), {})
    assert info.value.message == "cannot read the config file: No such file or directory"
    assert info.value.where == str(path)
    assert info.value.exit_code == 2


def test_unreadable_file(tmp_path: Path) -> None:
    # A directory cannot be read as a file, even by root (who can read any regular file).
    with pytest.raises(ConfigError) as info:
        load(_flags(config=str(tmp_path)), {})
    assert info.value.message == "cannot read the config file: Is a directory"
    assert info.value.where == str(tmp_path)


def test_invalid_toml(tmp_path: Path) -> None:
    path = _write(tmp_path, 'database = "sqlite:///x.db"\nworkers = [unquoted]\n')
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load(_flags(config=str(path)), {})
    assert "line 2" in info.value.message
    assert info.value.where == str(path)


def test_invalid_utf8_is_reported_as_invalid_toml_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b'database = "sqlite:///\xff.db"\n')
    # The bytes are decoded with replacement; the value is then a valid (odd) string.
    assert load(_flags(config=str(path)), {}).database == f"sqlite:///{tmp_path}/\ufffd.db"


# -- the command line ----------------------------------------------------------------------------------------


def test_unknown_flag_is_one_error_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--bogus"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("worker-supervisor: error:")
    assert "--bogus" in lines[0]
    assert captured.out == ""


def test_no_command_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("worker-supervisor: error: a command is required")


def test_unknown_command_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("worker-supervisor: error:")


def test_config_error_from_the_cli_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "databse = 1\n")
    assert main(["status", "--config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"worker-supervisor: error: unknown setting 'databse'; did you mean 'database'? ({path}:1)"]


def test_status_on_a_fresh_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "x.db"
    store = Store(f"sqlite:///{db}")
    store.open()  # what `run` does first: the tables, no workers yet
    store.close()
    assert main(["status", "--db", f"sqlite:///{db}"]) == 2  # no supervisor runs on it (issue 13)
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.startswith("no supervisor is running\n")
    assert "0 worker(s)" in captured.out


def test_status_does_not_create_a_database_where_there_is_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "typo.db"
    assert main(["status", "--db", f"sqlite:///{db}"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("worker-supervisor: error: no database file there")
    assert not db.exists()


def test_status_on_an_unusable_database_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/missing-dir/x.db"
    assert main(["status", "--db", url]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("worker-supervisor: error: no database file there")
    assert url in lines[0]


# -- schedules, run policies and command workers in [worker.NAME] -------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('interval = "5m"\nretires = 3', "worker 'backup': unknown key 'retires'; did you mean 'retries'?"),
        ('interval = "five minutes"', "worker 'backup': interval must be a positive duration (seconds, a timedelta, "
                                      "or text like '90s', '5m', '1h'), got 'five minutes'"),
        ('cron = "0 25 * * *"', "worker 'backup': cron is not a valid cron expression (Bad hour): '0 25 * * *'"),
        ('cron = "0 3 * * *"\ntimezone = "Europe/Atlantis"', "worker 'backup': timezone is not a known time zone "
                                                              "(an IANA name such as 'Europe/Berlin' or 'UTC'): "
                                                              "'Europe/Atlantis'"),
        ('interval = 60\nmemory_limit = "-5MB"', "worker 'backup': memory_limit must be a positive size (bytes, or "
                                                 "text like '512MB'), got '-5MB'"),
        ('interval = 60\ncpu_limit = -1', "worker 'backup': cpu_limit must be a positive duration (seconds, a "
                                          "timedelta, or text like '90s', '5m', '1h'), got -1"),
        ('interval = 60\nopen_files = 0', "worker 'backup': open_files must be a whole number of at least 1, got 0"),
        ('interval = 60\nretries = -2', "worker 'backup': retries must be a whole number of at least 0, got -2"),
        ('interval = 60\noverlap = "sometimes"', "worker 'backup': overlap must be one of skip, queue, allow, got "
                                                 "'sometimes'"),
        ('interval = 60\ncron = "@daily"', "worker 'backup': set interval or cron, not both"),
        ('command = ["pg_dump"]\ninterval = 60\nuser = "no-such-user-here"', "worker 'backup': user 'no-such-user-here' "
                                                                              "does not exist"),
        ('command = ["pg_dump"]\ninterval = 60\ngroup = "no-such-group"', "worker 'backup': group 'no-such-group' "
                                                                          "does not exist"),
        ('command = ["pg_dump"]', "worker 'backup': interval or cron is not set; give seconds, text like '5m', or a "
                                  "cron expression"),
        ('command = []\ninterval = 60', "worker 'backup': command must be a non-empty list of "
                                        "strings, got []"),
        ('command = ["a", "b"]\nshell = true\ninterval = 60', "worker 'backup': command must be a non-empty string "
                                                              "when shell is true (run as /bin/sh -c COMMAND), got a list"),
        ('interval = 60\nuser = "root"', "worker 'backup': unknown key 'user' (only a command worker, one with "
                                         "`command`, has it)"),
    ],
)
def test_each_kind_of_worker_mistake_is_one_line_naming_the_worker_and_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, message: str
) -> None:
    path = _write(tmp_path, f'workers = ["jobs"]\n\n[worker.backup]\n{table}\n')
    with pytest.raises(ConfigError) as info:
        load(_flags(config=str(path)), {})
    assert info.value.message == message
    assert info.value.where.startswith(f"{path}:3 [worker.backup]")
    # From the command line: that one line, and a non-zero exit.
    assert main(["check", "--config", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"worker-supervisor: error: {message} ({info.value.where})"


def test_policy_settings_are_read_in_human_units(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[worker.report]\ncron = "0 3 * * 1-5"\ntimezone = "Europe/Berlin"\njitter = "30s"\nmisfire_grace = "1h"\n'
        'overlap = "allow"\nmax_running = 3\nretries = 2\nretry_delay = "10s"\nretry_delay_max = "5m"\n'
        'quarantine_after = 5\nmemory_limit = "512MB"\ncpu_limit = "2m"\nopen_files = 256\n',
    )
    (report,) = load(_flags(config=str(path)), {}).overrides.values()
    assert report == {
        "cron": "0 3 * * 1-5", "timezone": "Europe/Berlin", "jitter": 30.0, "misfire_grace": 3600.0,
        "overlap": "allow", "max_running": 3, "retries": 2, "retry_delay": 10.0, "retry_delay_max": 300.0,
        "quarantine_after": 5, "memory_limit": 512_000_000, "cpu_limit": 120.0, "open_files": 256,
    }


def test_a_command_worker_table_is_kept_as_given(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[worker.backup]\ncommand = ["pg_dump", "-f", "/tmp/x.sql"]\ncron = "@daily"\nenv = { PGUSER = "app" }\n'
        'cwd = "/tmp"\ntimeout = "1h"\n',
    )
    config = load(_flags(config=str(path)), {})
    assert config.overrides == {}
    assert config.commands == [
        {"name": "backup", "command": ["pg_dump", "-f", "/tmp/x.sql"], "cron": "@daily", "env": {"PGUSER": "app"},
         "cwd": "/tmp", "timeout": "1h"}
    ]


def test_a_global_cap_on_children(tmp_path: Path) -> None:
    assert load(_flags(max_children="4"), {}).max_children == 4
    assert load(_flags(), {"SUPERVISOR_MAX_CHILDREN": "2"}).max_children == 2
    with pytest.raises(ConfigError, match="max_children must be a positive whole number"):
        load(_flags(max_children="0"), {})
