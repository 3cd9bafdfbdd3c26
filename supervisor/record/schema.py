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

SCHEMA_VERSION = 7

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
    alert_signature = peewee.CharField(null=True, max_length=200)
    """The kind of failure last alerted (notify/policy.py); None: no alert outstanding (none, or recovered)."""
    alert_sent_at = peewee.DateTimeField(null=True)
    """When that alert (or its last reminder) was sent."""
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
    """The name of the node that ran it (its host name unless `node_name` says otherwise)."""
    node_id = peewee.CharField(null=True, max_length=32)
    """The incarnation of that node (cluster.py on PostgreSQL); None on SQLite, which has one supervisor."""
    supervisor_pid = peewee.IntegerField()
    peak_rss = peewee.BigIntegerField(null=True)
    cpu_time = peewee.FloatField(null=True)

    class Meta:
        table_name = "run"
        indexes = ((("worker", "started_at"), False),)


class OutputRow(BaseModel):
    """What a run that did not fail printed: the tails of its stdout and stderr, as long as its worker's
    `keep_output` (a failed run's are in its failure row). Deleted with its run."""

    run = peewee.ForeignKeyField(RunRow, primary_key=True, backref="output", on_delete="CASCADE")
    stdout_tail = peewee.TextField(default="")
    stderr_tail = peewee.TextField(default="")

    class Meta:
        table_name = "output"


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


class NodeRow(BaseModel):
    """One row per supervisor incarnation on a shared PostgreSQL database: who it is, and its lease.

    Keyed by a random id made at each start, never by the host name: two supervisors on one host (a rolling
    deploy) are two nodes, and a node declared dead that comes back is a new one. Every lease time is the
    database's own clock (cluster.py), so the nodes' clocks need not agree.
    """

    id = peewee.CharField(primary_key=True, max_length=32)
    name = peewee.CharField(max_length=255)
    host = peewee.CharField(max_length=255)
    pid = peewee.IntegerField()
    version = peewee.CharField(max_length=50)
    state = peewee.CharField(max_length=20, index=True)
    """alive, stopped (a clean stop) or dead (its lease ran out, declared by a peer): dead is for good."""
    started_at = peewee.DateTimeField()
    heartbeat_at = peewee.DateTimeField()
    lease_seconds = peewee.FloatField()
    lease_until = peewee.DateTimeField()
    lease_since = peewee.DateTimeField()
    """Since when its lease has been held without a gap: only a node that held its own through a whole lease
    may declare another dead, so a database outage that every node saw ends with nobody declared dead."""
    clock_offset = peewee.FloatField(null=True)
    """Seconds its clock is ahead of the database's (negative: behind), measured at its last heartbeat."""
    running = peewee.IntegerField(default=0)
    workers = peewee.TextField(default="[]")
    """The workers it can run (a JSON list): who is eligible for a worker's slots."""
    seen = peewee.TextField(default="[]", constraints=[peewee.SQL("DEFAULT '[]'")])
    """The live nodes it knew of at its heartbeat before the last (a JSON list of ids): a node claims nothing
    until every live peer has seen it, so that none of them can believe itself alone (record/cluster.py)."""
    ended_at = peewee.DateTimeField(null=True)
    ended_by = peewee.CharField(null=True, max_length=32)
    end_reason = peewee.TextField(null=True)

    class Meta:
        table_name = "node"


class TickRow(BaseModel):
    """The ledger that makes each slot run once across nodes: one row per (worker, slot) claimed.

    `slot_no` numbers a worker's slots; the unique index on (worker, slot_no) is what refuses a second claim,
    whatever the nodes' clocks and views say. Runs that are not a slot of the schedule (an operator's trigger, a
    retry, a queued run) get a row too (slot_no None), so that other nodes see them in flight.
    """

    id = peewee.BigAutoField()
    worker = peewee.CharField(max_length=200)
    slot_no = peewee.BigIntegerField(null=True)
    slot_at = peewee.DateTimeField()
    kind = peewee.CharField(max_length=20)
    """scheduled, or extra (a trigger, retry or queued run)."""
    node = peewee.CharField(max_length=32, index=True)
    claimed_at = peewee.DateTimeField()
    state = peewee.CharField(max_length=20)
    """running, then done; lost if its node was declared dead first; skipped when a slot found the worker busy."""
    skipped = peewee.IntegerField(default=0)
    """Slots between the previous claim and this one that no node claimed."""
    run_id = peewee.CharField(null=True, max_length=32)
    command_id = peewee.BigIntegerField(null=True, unique=True)
    """The operator's trigger it runs for: unique, so that of the nodes that saw the command exactly one runs it."""

    class Meta:
        table_name = "tick"
        indexes = ((("worker", "slot_no"), True), (("worker", "state"), False))


MODELS = [SchemaVersion, WorkerRow, RunRow, OutputRow, FailureRow, CommandRow, NodeRow, TickRow]


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


def _migrate_4_to_5(db: peewee.Database) -> None:
    """Version 5: nodes and the tick ledger, for several supervisors on one PostgreSQL; runs name their node."""
    migrator = SchemaMigrator.from_database(db)
    migrate(migrator.add_column("run", "node_id", peewee.CharField(null=True, max_length=32)))
    db.create_tables([NodeRow, TickRow], safe=True)


def _migrate_5_to_6(db: peewee.Database) -> None:
    """Version 6: what runs that did not fail printed (their output, kept as long as `keep_output`)."""
    db.create_tables([OutputRow], safe=True)


def _migrate_6_to_7(db: peewee.Database) -> None:
    """Version 7: the alert state of each worker, so that a restart neither repeats nor loses an alert."""
    migrator = SchemaMigrator.from_database(db)
    migrate(
        migrator.add_column("worker", "alert_signature", peewee.CharField(null=True, max_length=200)),
        migrator.add_column("worker", "alert_sent_at", peewee.DateTimeField(null=True)),
    )


MIGRATIONS = {2: _migrate_1_to_2, 3: _migrate_2_to_3, 4: _migrate_3_to_4, 5: _migrate_4_to_5, 6: _migrate_5_to_6,
              7: _migrate_6_to_7}
