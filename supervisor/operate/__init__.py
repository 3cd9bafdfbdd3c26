"""The operator's side: the command line, the reports read from the record, the live table, `check`, logging.

`cli.main` is the entry point of `worker-supervisor` and `python -m supervisor`; `run` hands over to the
supervisor process (supervisor.supervise). The reading commands (`status`, `history`, `failures`) import
nothing of the spawner's side.
"""
