"""The statements the recorder runs for every run, as SQL built once per shape instead of once per run.

Peewee builds a statement's SQL anew from its expression tree each time it runs. For the statements every run
takes (its row, its pid, its worker's row, and a failure's row) that was most of the recorder's time: a crash's
transaction took 0.65 ms, 0.09 ms of it in SQLite. The statements here are plain INSERTs and UPDATEs whose SQL is
kept per shape (table, columns, what each column gets); tables and columns are named by the peewee models, values
are converted by the fields' own `db_value`, as peewee would, and the placeholder is the database's own. Every
other statement goes through peewee as usual.
"""
from __future__ import annotations

from typing import Any

import peewee

_sql: dict[tuple[Any, ...], str] = {}


class Add:
    """An UPDATE value: the column plus `amount`."""

    __slots__ = ("amount",)

    def __init__(self, amount: int) -> None:
        self.amount = amount


class UnlessIn:
    """An UPDATE value: `value`, unless the column holds one of `kept` (then it stays as it is)."""

    __slots__ = ("kept", "value")

    def __init__(self, kept: tuple[Any, ...], value: Any) -> None:
        self.kept = kept
        self.value = value


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# peewee is typed only in part: its Database and Field methods are untyped calls to mypy, so they go through Any.
def _execute(db: Any, sql: str, params: list[Any]) -> int:
    return int(db.execute_sql(sql, params).rowcount)


def _value(field: Any, value: Any) -> Any:
    return field.db_value(value)


def _primary_key(model: type[peewee.Model]) -> Any:
    return model._meta.primary_key


def insert(db: peewee.Database, model: type[peewee.Model], values: dict[peewee.Field, Any], ignore_conflict: bool = False) -> int:
    """INSERT one row; with `ignore_conflict`, a row whose primary key exists is left alone. Return rows inserted."""
    fields = tuple(values)
    key = ("insert", model, fields, ignore_conflict, db.param)
    sql = _sql.get(key)
    if sql is None:
        columns = ", ".join(_quote(f.column_name) for f in fields)
        marks = ", ".join(db.param for _ in fields)
        sql = f"INSERT INTO {_quote(model._meta.table_name)} ({columns}) VALUES ({marks})"
        if ignore_conflict:
            sql += f" ON CONFLICT ({_quote(_primary_key(model).column_name)}) DO NOTHING"
        _sql[key] = sql
    return _execute(db, sql, [_value(field, value) for field, value in values.items()])


def update(
    db: peewee.Database,
    model: type[peewee.Model],
    values: dict[peewee.Field, Any],
    key_value: Any,
    only_if: dict[peewee.Field, Any] | None = None,
) -> int:
    """UPDATE the row whose primary key is `key_value` (and whose `only_if` fields hold those values; None: NULL);
    a value may be Add or UnlessIn. Return rows changed."""
    shape = tuple((field, type(value), len(value.kept) if isinstance(value, UnlessIn) else 0) for field, value in values.items())
    conditions = tuple((field, value is None) for field, value in (only_if or {}).items())
    key = ("update", model, shape, conditions, db.param)
    sql = _sql.get(key)
    if sql is None:
        assignments = []
        for field, kind, kept in shape:
            column = _quote(field.column_name)
            if kind is Add:
                assignments.append(f"{column} = {column} + {db.param}")
            elif kind is UnlessIn:
                marks = ", ".join(db.param for _ in range(kept))
                assignments.append(f"{column} = CASE WHEN {column} IN ({marks}) THEN {column} ELSE {db.param} END")
            else:
                assignments.append(f"{column} = {db.param}")
        where = [f"{_quote(_primary_key(model).column_name)} = {db.param}"]
        for field, is_null in conditions:
            where.append(f"{_quote(field.column_name)} IS NULL" if is_null else f"{_quote(field.column_name)} = {db.param}")
        sql = f"UPDATE {_quote(model._meta.table_name)} SET {', '.join(assignments)} WHERE {' AND '.join(where)}"
        _sql[key] = sql
    params: list[Any] = []
    for field, value in values.items():
        if isinstance(value, Add):
            params.append(value.amount)
        elif isinstance(value, UnlessIn):
            params += [_value(field, kept) for kept in value.kept]
            params.append(_value(field, value.value))
        else:
            params.append(_value(field, value))
    params.append(_value(_primary_key(model), key_value))
    params += [_value(field, value) for field, value in (only_if or {}).items() if value is not None]
    return _execute(db, sql, params)
