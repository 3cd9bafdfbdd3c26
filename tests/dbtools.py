"""Database tools for tests: make and drop PostgreSQL databases, and read either backend as another process would.

Every read goes through a fresh connection of its own (sqlite3 or psycopg), never through the Store under
test, so a test sees what is committed and nothing else. SQL is written with `?` placeholders (SQLite's) and
translated for PostgreSQL.
"""
from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
PG_ADMIN_DATABASE = "test"
PG_CONNECT_TIMEOUT = 3


def admin_url() -> str:
    """The URL of the database we connect to in order to create and drop others."""
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{PG_ADMIN_DATABASE}"


def postgres_problem() -> str | None:
    """Return why PostgreSQL cannot be used (one line), or None when it can."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - the dev environment installs it
        return f"psycopg is not installed: {exc}"
    try:
        with psycopg.connect(admin_url(), autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT) as connection:
            connection.execute("select 1")
    except psycopg.Error as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return None


def create_database(prefix: str = "ws_test") -> str:
    """Create a fresh, empty PostgreSQL database; return its URL."""
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url(), autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def drop_database(url: str) -> None:
    """Drop a database `create_database` made, ending any session still connected to it."""
    import psycopg
    from psycopg import sql

    name = database_name(url)
    with psycopg.connect(admin_url(), autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def database_name(url: str) -> str:
    """The database a postgresql:// URL names."""
    return unquote(urlsplit(url).path.lstrip("/"))


def is_postgres(url: str) -> bool:
    """Tell whether a URL names a PostgreSQL database."""
    return urlsplit(url).scheme in ("postgres", "postgresql")


def sqlite_path(url: str) -> str:
    """The file a sqlite:/// URL names."""
    assert urlsplit(url).scheme == "sqlite", url
    return url[len("sqlite:///"):]


def query(url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    """Run one statement through a connection of our own, commit, and return its rows as dicts.

    Write SQL with `?` placeholders; for PostgreSQL they become `%s` (and a literal `%` is escaped).
    """
    if is_postgres(url):
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(url, connect_timeout=PG_CONNECT_TIMEOUT, row_factory=dict_row) as pg:
            found = pg.execute(sql.replace("%", "%%").replace("?", "%s"), params)
            return [dict(row) for row in found.fetchall()] if found.description is not None else []
    lite = sqlite3.connect(sqlite_path(url), timeout=10)
    lite.row_factory = sqlite3.Row
    try:
        with lite:
            rows = lite.execute(sql, params).fetchall()
        return [dict(row) for row in rows]
    finally:
        lite.close()


def scalar(url: str, sql: str, *params: Any) -> Any:
    """The one value a query returns."""
    rows = query(url, sql, *params)
    assert len(rows) == 1 and len(rows[0]) == 1, rows
    return next(iter(rows[0].values()))


def when(value: Any) -> datetime | None:
    """A timestamp column's value as a naive datetime (SQLite returns text, PostgreSQL a datetime)."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def table_names(url: str) -> set[str]:
    """The tables in the database."""
    if is_postgres(url):
        rows = query(url, "select table_name as name from information_schema.tables where table_schema = 'public'")
    else:
        rows = query(url, "select name from sqlite_master where type = 'table'")
    return {row["name"] for row in rows}


def column_names(url: str, table: str) -> set[str]:
    """The columns of a table."""
    if is_postgres(url):
        rows = query(
            url,
            "select column_name as name from information_schema.columns where table_schema = 'public' and table_name = ?",
            table,
        )
    else:
        rows = query(url, f"select name from pragma_table_info('{table}')")
    return {row["name"] for row in rows}


def indexes(url: str, table: str) -> set[tuple[tuple[str, ...], bool]]:
    """The indexes of a table, each as (its columns in order, whether it is unique)."""
    if is_postgres(url):
        rows = query(
            url,
            """
            select i.relname as name, ix.indisunique as is_unique, a.attname as column_name, k.n as position
            from pg_class t
            join pg_index ix on ix.indrelid = t.oid
            join pg_class i on i.oid = ix.indexrelid
            cross join lateral unnest(ix.indkey) with ordinality as k(attnum, n)
            join pg_attribute a on a.attrelid = t.oid and a.attnum = k.attnum
            where t.relname = ? and t.relnamespace = 'public'::regnamespace and not ix.indisprimary
            """,
            table,
        )
    else:
        rows = query(
            url,
            f"""
            select l.name as name, l."unique" as is_unique, c.name as column_name, c.seqno as position
            from pragma_index_list('{table}') as l, pragma_index_info(l.name) as c
            where l.origin != 'pk'
            """,
        )
    found: dict[str, tuple[bool, list[tuple[int, str]]]] = {}
    for row in rows:
        unique, columns = found.setdefault(row["name"], (bool(row["is_unique"]), []))
        columns.append((row["position"], row["column_name"]))
    return {(tuple(name for _, name in sorted(columns)), unique) for unique, columns in found.values()}


def query_or_empty(url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    """`query`, reading no rows before the supervisor under test has made its tables."""
    try:
        return query(url, sql, *params)
    except Exception as exc:
        if "does not exist" in str(exc) or "no such table" in str(exc):
            return []
        raise
