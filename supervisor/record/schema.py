"""The record's schema: the peewee models of workers, runs, failures and operators' commands, its version, and the
migrations that bring an older database forward.

The models are bound to one proxy (`database`) that a Store initialises with its connection; a release that
changes the schema adds a migration here and raises SCHEMA_VERSION.
"""
from __future__ import annotations

from datetime import datetime, timezone

import peewee
from playhouse.migrate import SchemaMigrator, migrate

from ..outcome import WorkerState

SCHEMA_VERSION = 4

database = peewee.DatabaseProxy()


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class SchemaVersion(BaseModel):
    """The schema version this database was last migrated to."""

    version = peewee.IntegerField()


class WorkerRow(BaseModel):
    """One row per worker (or per broken module), as in the Go pattern's worker status table."""

    name = peewee.CharField(primary_key=True, max_length=200)
    module = peewee.CharField(default="", max_length=300)
    status = peewee.CharField(default=WorkerState.IDLE.value, max_length=20)
    interval = peewee.FloatField(null=True)
    timeout = peewee.FloatField(null=True)
    pid = peewee.IntegerField(null=True)
    last_run_at = peewee.DateTimeField(null=True)
    next_run_at = peewee.DateTimeField(null=True)
    last_success_at = peewee.DateTimeField(null=True)
    last_outcome = peewee.CharField(null=True, max_length=20)
    last_duration = peewee.FloatField(null=True)
    success_count = peewee.IntegerField(default=0)
    failure_count = peewee.IntegerField(default=0)
    consecutive_failures = peewee.IntegerField(default=0)
    skipped_count = peewee.IntegerField(default=0)
    last_error = peewee.TextField(null=True)
    paused = peewee.BooleanField(default=False)
    pause_reason = peewee.TextField(null=True)
    """Why the supervisor paused it (quarantine); None when an operator did, or when not paused."""
    schedule = peewee.CharField(null=True, max_length=300)
    """The schedule in a few words ("every 5m", "cron 0 3 * * * (Europe/Berlin)"), for `status`."""
    updated_at = peewee.DateTimeField()

    class Meta:
        table_name = "worker"


class RunRow(BaseModel):
    """One row per run, written when it starts and completed when it ends."""

    id = peewee.CharField(primary_key=True, max_length=32)
    worker = peewee.ForeignKeyField(WorkerRow, column_name="worker", field="name", backref="runs", on_delete="CASCADE")
    attempt = peewee.IntegerField(default=1)
    started_at = peewee.DateTimeField(index=True)
    finished_at = peewee.DateTimeField(null=True)
    duration = peewee.FloatField(null=True)
    outcome = peewee.CharField(null=True, max_length=20, index=True)
    exit_code = peewee.IntegerField(null=True)
    signal = peewee.IntegerField(null=True)
    pid = peewee.IntegerField(null=True)
    node = peewee.CharField(max_length=255)
    supervisor_pid = peewee.IntegerField()
    peak_rss = peewee.BigIntegerField(null=True)
    cpu_time = peewee.FloatField(null=True)

    class Meta:
        table_name = "run"
        indexes = ((("worker", "started_at"), False),)


class FailureRow(BaseModel):
    """One row per failed run (and per module that failed to import), with what it left behind."""

    id = peewee.AutoField()
    run = peewee.ForeignKeyField(RunRow, null=True, backref="failures", on_delete="CASCADE", unique=True)
    worker = peewee.ForeignKeyField(WorkerRow, column_name="worker", field="name", on_delete="CASCADE")
    created_at = peewee.DateTimeField(index=True)
    kind = peewee.CharField(max_length=20)
    message = peewee.TextField()
    traceback = peewee.TextField(default="")
    stderr_tail = peewee.TextField(default="")
    stdout_tail = peewee.TextField(default="")
    exit_code = peewee.IntegerField(null=True)
    signal = peewee.IntegerField(null=True)
    event = peewee.CharField(null=True, unique=True, max_length=32)
    """Idempotency key of a failure that belongs to no run (a module that broke), so a replay adds no copy."""

    class Meta:
        table_name = "failure"


class CommandRow(BaseModel):
    """An operator's request to a running supervisor (trigger, pause, resume), taken up by whichever
    supervisor runs the worker. Going through the database lets it reach a supervisor on another host."""

    id = peewee.AutoField()
    worker = peewee.CharField(max_length=200)
    action = peewee.CharField(max_length=20)
    created_at = peewee.DateTimeField()
    done_at = peewee.DateTimeField(null=True, index=True)
    result = peewee.TextField(null=True)

    class Meta:
        table_name = "command"


MODELS = [SchemaVersion, WorkerRow, RunRow, FailureRow, CommandRow]


def utcnow() -> datetime:
    """Return the current UTC time as a naive datetime, the form every timestamp column holds."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _migrate_1_to_2(db: peewee.Database) -> None:
    """Version 2: failures that belong to no run get an idempotency key; runs are indexed by worker and time."""
    migrator = SchemaMigrator.from_database(db)
    migrate(
        migrator.add_column("failure", "event", peewee.CharField(null=True, max_length=32)),
        migrator.add_index("failure", ("event",), True),
        migrator.add_index("run", ("worker", "started_at"), False),
    )


def _migrate_2_to_3(db: peewee.Database) -> None:
    """Version 3: operators' commands (trigger, pause, resume) travel through a table."""
    db.create_tables([CommandRow], safe=True)


def _migrate_3_to_4(db: peewee.Database) -> None:
    """Version 4: why a worker is paused (quarantine), and its schedule in words (cron as well as intervals)."""
    migrator = SchemaMigrator.from_database(db)
    migrate(
        migrator.add_column("worker", "pause_reason", peewee.TextField(null=True)),
        migrator.add_column("worker", "schedule", peewee.CharField(null=True, max_length=300)),
    )


MIGRATIONS = {2: _migrate_1_to_2, 3: _migrate_2_to_3, 4: _migrate_3_to_4}
