"""Worker modules of the benchmark: `lean` imports almost nothing, `heavy` imports large modules and holds ~200 MB.

Both declare the same workers, chosen by environment variables that the supervisor passes on to its spawner
(see _common.py), and the same job functions for the APScheduler peer (bench/peer_aps.py).
"""
