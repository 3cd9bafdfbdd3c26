"""The supervisor process: its loop, a run's life, scheduling, operators' commands, and the links to its helpers.

Runs in `python -m supervisor run` (one thread, one select). It never imports worker code and never forks a run:
the spawner does (supervisor.spawn). It starts three helper processes: the spawner, the recorder
(supervisor.record.recorder) and the guard (guard.py, here: a small process that outlives it).
"""
