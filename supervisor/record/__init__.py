"""The record: the database (store, statements, migrations), the records the supervisor journals, the journal
itself, and the recorder that writes it to the database.

The journal and `recording.py` run in the supervisor process (appending is all it does); the database is
opened by the recorder (`python -m supervisor.record.recorder`) while the supervisor runs, and by the operator's
commands, never by the spawner or a run.
"""
