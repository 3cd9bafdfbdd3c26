"""The guard: a small process outside the supervisor's tree of runs that finishes the supervisor's work if it dies.

Process groups, the parent-death signals and the two subreapers (containment.py) catch what a run starts outside
its group whichever *one* part of the tree dies. When the supervisor and its spawner die together (an operator's
`kill -9` of both, the OOM killer taking one while the other is stopped), nothing of the tree is left to act,
and the processes the runs started in sessions of their own would live on under init until the next start.

So the supervisor starts this guard first: a child of its own, in a process group of its own, with no
parent-death signal and outside the spawner's cgroup, so that it outlives the supervisor. It blocks on a pidfd
of the supervisor. When the supervisor is gone, however it went, it does what the supervisor's own end does:
kill the spawner's cgroup and remove it, and kill what the record of escaped processes names (escaped.py). After
a clean stop both are gone already, and the supervisor ends its guard itself (SIGTERM) before it exits.

It imports nothing but the cgroup, the record and the process primitives, and never the database, rich or worker
code. SUPERVISOR_GUARD=0 leaves it out (the tests of the other layers use that).
"""
from __future__ import annotations

import argparse
import os
import select
import signal
import sys
from typing import NoReturn

from .. import escaped
from ..cgroup import Cgroup
from ..process_title import set_title

ENV = "SUPERVISOR_GUARD"
REMOVE_TIMEOUT = 2.0  # how long the killed cgroup's processes get to leave it


def finish(cgroup: str | None, record: str) -> list[int]:
    """Kill what the supervisor's runs left running: its cgroup (then removed) and what the record names."""
    killed: list[int] = []
    if cgroup is not None and os.path.isdir(cgroup):
        group = Cgroup(cgroup)
        try:
            with open(os.path.join(cgroup, "cgroup.procs")) as f:
                killed += [int(pid) for pid in f.read().split()]
        except OSError:
            pass
        group.kill()
        group.remove(timeout=REMOVE_TIMEOUT)
    killed += escaped.sweep(record)
    return killed


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of `python -m supervisor.supervise.guard`; only the supervisor starts it."""
    parser = argparse.ArgumentParser(prog="supervisor.supervise.guard")
    parser.add_argument("--supervisor-pid", type=int, required=True)
    parser.add_argument("--escape-record", required=True)
    parser.add_argument("--cgroup")
    args = parser.parse_args(argv)
    set_title("guard", "ws-guard")
    # Ctrl-C and a closed terminal are the supervisor's to act on; we wait for its end, not theirs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        supervisor = os.pidfd_open(args.supervisor_pid)
    except ProcessLookupError:
        supervisor = -1  # gone already
    if supervisor >= 0 and os.getppid() == args.supervisor_pid:
        select.select([supervisor], [], [])
    killed = finish(args.cgroup, args.escape_record)
    if killed:
        print(f"worker-supervisor guard: the supervisor (pid {args.supervisor_pid}) is gone; killed "
              f"{len(killed)} process(es) its runs left running: {' '.join(map(str, sorted(set(killed))))}",
              file=sys.stderr, flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
