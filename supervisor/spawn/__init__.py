"""The spawner and the runs' children: the fork server, its standby children, a run's bootstrap (forked or a fresh
interpreter), command workers, worker discovery.

Runs in `python -m supervisor.spawn.spawner` and in every run's child. Single-threaded, and lean: nothing here
imports rich, peewee or a database driver, and nothing outside the spawner's processes imports spawner.py,
standby.py, child.py, exec_child.py or discovery.py (tests/test_boundaries.py holds both to it).
"""
