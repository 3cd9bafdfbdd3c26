"""The record of processes that could outlive their run, kept beside the journal for the next start to sweep.

A run's process group is killed when the run ends, and the spawner (a child subreaper) kills what it adopted when
it shuts down. Neither helps when the supervisor and its spawner are both SIGKILLed at once (the OOM killer, an
operator's `kill -9` of the tree): the runs die by their parent-death signal, but nothing kills what they
started, which init adopts. Where the supervisor has a cgroup (cgroup.py), the cgroup left behind names all of it.
Where it has none, the spawner surveys its subtree every SURVEY_INTERVAL while runs go and writes here:

- each run's process group, with the start time of its leader (the run), and
- each process in its subtree outside every run's group (a `setsid`, `start_new_session=True`, a daemon's
  double fork), with its start time.

The next start (and the supervisor, when its spawner dies) kills what the record names, and only that: a
process only if its pid *and* start time (/proc/PID/stat field 22) still match, since pids are reused; a group
only if its number does not name a different process's group now (while any member lives, the kernel does not
hand out its number as a new pid, so members of a group whose leader is gone are the old run's).

The survey runs at most every SURVEY_INTERVAL, so a process started and escaped within that window of the
double SIGKILL is missed: the record is the last of three layers, after the cgroup and the subreaper.
"""
from __future__ import annotations

import json
import os
import signal

from .process import ProcStat, process_table

SURVEY_INTERVAL = 0.5  # seconds between the spawner's surveys while runs go (one reads /proc: 2 ms for 100 processes)

Noted = list[tuple[int, int]]
"""(pid, start time) pairs."""


def record_path(journal: str) -> str:
    """Where the record of a supervisor with this journal is kept."""
    return journal + ".escaped"


def survey(root: int, runs: set[int], others: set[int]) -> tuple[Noted, Noted]:
    """Return the runs' groups (pgid = the run's pid) and the processes in `root`'s subtree outside them.

    `others` are `root`'s own children that are neither runs nor escaped (the standby child).
    """
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, stat in table.items():
        children.setdefault(stat.ppid, []).append(pid)
    groups = [(pid, table[pid].start) for pid in sorted(runs) if pid in table]
    ours = runs | others
    escaped: Noted = []
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        stat = table[pid]
        stack.extend(children.get(pid, []))
        if not stat.zombie and pid not in ours and stat.pgid not in ours:
            escaped.append((pid, stat.start))
    return groups, sorted(escaped)


class EscapeRecord:
    """The spawner's writing end of the record: rewritten whole (atomically) when what it holds changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._written: tuple[Noted, Noted] | None = None

    @property
    def empty(self) -> bool:
        """Tell whether the record names nothing."""
        return not self._written or not any(self._written)

    def write(self, groups: Noted, processes: Noted) -> None:
        """Make the record name these groups and processes (and nothing else)."""
        if (groups, processes) == self._written:
            return
        if not groups and not processes:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        else:
            # Renamed into place, so a reader (the next start) never sees half a record.
            temporary = f"{self.path}.{os.getpid()}"
            # Owner-only, as the journal beside it: nothing secret, but nobody else's to read or to plant.
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with open(fd, "w") as f:
                json.dump({"groups": groups, "processes": processes}, f)
            os.replace(temporary, self.path)
        self._written = (groups, processes)


def _read(path: str) -> tuple[Noted, Noted]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd) as f:
            # Only a record we wrote ourselves: a planted one would have us SIGKILL whatever it names.
            if os.fstat(fd).st_uid != os.geteuid():
                return [], []
            data = json.load(f)
        return [(int(p), int(s)) for p, s in data["groups"]], [(int(p), int(s)) for p, s in data["processes"]]
    except (OSError, ValueError, KeyError, TypeError):
        return [], []  # absent, or not ours to trust: nothing is killed on a guess


def sweep(path: str) -> list[int]:
    """SIGKILL what the record at `path` names and is still the same process; remove the record; return the pids."""
    groups, processes = _read(path)
    killed: list[int] = []
    if groups or processes:
        table = process_table()
        for pgid, start in groups:
            leader = table.get(pgid)
            if leader is not None and leader.start != start:
                continue  # the number is another process's now, and so is any group it leads
            members = [pid for pid, stat in table.items() if stat.pgid == pgid and not stat.zombie]
            if members and _kill(pgid, group=True):
                killed += members
        for pid, start in processes:
            stat: ProcStat | None = table.get(pid)
            if stat is not None and stat.start == start and not stat.zombie and pid not in killed:
                if _kill(pid, group=False):
                    killed.append(pid)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return killed


def _kill(pid: int, group: bool) -> bool:
    try:
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True
