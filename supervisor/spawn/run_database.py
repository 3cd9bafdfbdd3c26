"""A run's own database: the connection `ctx.db` opens and the transaction `ctx.transaction()` wraps.

It is opened in the run's child, after the fork, and belongs to that process alone, so whatever ends the run
ends the connection with it: a crash or a SIGKILL closes the socket and the PostgreSQL server rolls back the
transaction that was open, or, for SQLite, the kernel drops the file locks and no reader ever counts a write
that was not committed. That is what makes `with ctx.transaction()` all or nothing even against a segfault. The URL is read by the same code as the supervisor's own record (database.py), with
one difference: a run's statements get no time limit of ours, because the run's `timeout` already bounds them.
Only the child imports this module (worker.py does so on first use), so runs that never touch a database never
load peewee or a driver.
"""
from __future__ import annotations

import json
import re
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import unquote, urlsplit

import peewee

from ..record.database import APPLICATION_NAME, connect, redact
from ..errors import StoreUnavailable, WorkerDefinitionError

_BARE_TOML_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def open_run_database(url: str | None, worker: str) -> peewee.Database:
    """Open `worker`'s own database (its `database` setting) for this run; raise one clear error if we cannot.

    A worker with no `database` setting gets WorkerDefinitionError saying how to give it one; a URL that cannot
    be used or reached gets StoreUnavailable naming the URL without its password.
    """
    if url is None:
        key = worker if _BARE_TOML_KEY.match(worker) else json.dumps(worker)  # `a.b` would be a nested table
        raise WorkerDefinitionError(
            "no `database` setting, and ctx.db / ctx.transaction() need one: give it in the worker's code "
            '(`@worker(..., database="sqlite:////path/to/file.db")`, or `database = "postgresql://user@host/db"` in '
            f'its Worker class) or in the config file (`[worker.{key}]` with `database = "..."`)',
            worker,
        )
    where = redact(url)
    try:
        db = connect(url, statement_timeout_ms=None, application_name=f"{APPLICATION_NAME} run {worker}")
    except StoreUnavailable as exc:
        raise StoreUnavailable(f"cannot open the database of worker {worker!r}: {exc.message}", where) from exc
    try:
        db.connect()
    except peewee.PeeweeException as exc:
        db.close()
        raise StoreUnavailable(f"cannot open the database of worker {worker!r}: {_describe(exc, url)}", where) from exc
    return db


@contextmanager
def transaction(db: peewee.Database) -> Iterator[peewee.Database]:
    """Yield `db` inside one transaction: it commits when the block ends and rolls back if the block raises.

    The exception goes on (the run fails with it). Used again inside the block, it makes a savepoint, so an
    inner block that raises undoes only its own work if the outer block catches the exception.
    """
    with db.atomic():
        yield db


def _describe(exc: BaseException, url: str) -> str:
    """The first line of a driver's error, with the URL's password taken out (a driver may quote it)."""
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    secret = urlsplit(url).password
    if secret:
        text = text.replace(secret, "***").replace(unquote(secret), "***")
    return text
