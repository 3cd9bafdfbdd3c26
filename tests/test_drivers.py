"""The record speaks PostgreSQL through psycopg 3, whatever else the environment holds (issue 11, defect 1).

peewee takes psycopg2 whenever it can import it, and every Django app installs it: the recorder then died at
every start on psycopg 3's notify handlers, and nothing reached the database. psycopg2-binary is a test
dependency, so this file and the whole PostgreSQL half of the suite run with both drivers installed.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg2  # noqa: F401 - installed beside psycopg 3 on purpose (setup.cfg, dev extra)

from supervisor.record.database import connect


def test_issue_11_the_record_connects_with_psycopg_3_when_psycopg2_is_installed_too(pg_url: str) -> None:
    db = connect(pg_url)
    db.connect()
    try:
        connection = db.connection()
        assert type(connection).__module__.split(".")[0] == "psycopg", type(connection)
        assert hasattr(connection, "add_notify_handler")  # what the command watch needs
    finally:
        db.close()


def test_issue_11_a_run_s_own_postgres_database_uses_psycopg_3_too(pg_url: str) -> None:
    from supervisor.spawn.run_database import open_run_database

    db = open_run_database(pg_url, "job")
    try:
        assert type(db.connection()).__module__.split(".")[0] == "psycopg"
    finally:
        db.close()


def test_issue_11_without_psycopg_3_the_error_names_the_postgres_extra(tmp_path: Path) -> None:
    # An environment with psycopg2 and no psycopg 3: the import of psycopg fails there, as it does here once
    # blocked before peewee is imported (peewee reads what is importable when it is first imported).
    program = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from supervisor.operate.cli import main\n"
        "sys.exit(main(['status', '--db', 'postgresql://app:s3cret@127.0.0.1:5432/app']))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    lines = done.stderr.splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1, done.stderr
    assert "pip install 'worker-supervisor[postgres]'" in lines[0]
    assert "psycopg 3" in lines[0]
    assert "s3cret" not in lines[0]
