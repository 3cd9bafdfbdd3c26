"""A frozen copy of the schema at version 1 (supervisor/record/store.py as of commit b794938), for migration tests.

The models are bound to a proxy of their own, so creating a version-1 database never touches the Store's.
Do not change these models: they are what databases written by version 1 hold.
"""
from __future__ import annotations

import peewee

SCHEMA_VERSION = 1

database = peewee.DatabaseProxy()


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class SchemaVersion(BaseModel):
    version = peewee.IntegerField()


class WorkerRow(BaseModel):
    name = peewee.CharField(primary_key=True, max_length=200)
    module = peewee.CharField(default="", max_length=300)
    status = peewee.CharField(default="idle", max_length=20)
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
    updated_at = peewee.DateTimeField()

    class Meta:
        table_name = "worker"


class RunRow(BaseModel):
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


class FailureRow(BaseModel):
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

    class Meta:
        table_name = "failure"


MODELS = [SchemaVersion, WorkerRow, RunRow, FailureRow]


def create(db: peewee.Database) -> None:
    """Create the version-1 schema in `db` as version 1's Store.open() did."""
    database.initialize(db)
    with db.atomic():
        db.create_tables(MODELS, safe=True)
        if not SchemaVersion.select().exists():
            SchemaVersion.create(version=SCHEMA_VERSION)
