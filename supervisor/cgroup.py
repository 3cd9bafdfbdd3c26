"""A cgroup v2 of the supervisor's own for its spawner's tree, so that one write kills all of it (`cgroup.kill`).

Process groups and the subreaper miss what leaves them: a process in a session of its own that was reparented to
init once every subreaper above it was gone. A cgroup misses nothing: every process forked inside stays inside,
whatever it does with sessions, groups or parents, and writing "1" to `cgroup.kill` (Linux 5.14) SIGKILLs every
member at once, those forking at that moment included.

The supervisor makes `worker-supervisor.<pid>.<start time>` under the cgroup it runs in; each spawner moves itself
into it before it imports anything (`join`), so the runs, the standby and all they start are born inside. When a
spawner dies the supervisor kills the cgroup (nothing else is in it then); at its own end it kills and removes it.
One the supervisor could not remove (it was SIGKILLed together with its spawner) is found by the next start, whose
owner is then gone, and killed and removed there (`sweep_stale`).

Only the cgroup2 hierarchy is used (a hybrid host mounts it at /sys/fs/cgroup/unified). No controller is enabled,
so the "no internal processes" rule does not apply: the supervisor stays where it is, beside the new cgroup (a
cgroup that has processes cannot have controllers enabled below it, and that is the only case the rule forbids).
Where there is no cgroup2, no `cgroup.kill`, or no right to write (a container that mounts it read-only, a
non-root user without delegation), `create` returns None with the reason, and the subreaper and the record of
escaped processes (escaped.py) do the work alone. SUPERVISOR_CGROUP=0 turns it off.
"""
from __future__ import annotations

import errno
import os
import re
import select
import time

from .process import start_time

PREFIX = "worker-supervisor."
ENV = "SUPERVISOR_CGROUP"


def own_directory() -> str:
    """Return the directory of the cgroup v2 we are in; raise OSError if there is none we can see."""
    mount = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            # The filesystem type follows the " - " separator; the optional fields before it vary in number.
            after = fields[fields.index("-") + 1 :]
            if after and after[0] == "cgroup2" and fields[3] == "/":
                mount = _unescape(fields[4])
                break
    if mount is None:
        raise OSError(errno.ENOENT, "no cgroup2 hierarchy is mounted")
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                path = line[3:].rstrip("\n")
                break
        else:
            raise OSError(errno.ENOENT, "this process is in no cgroup2 cgroup")
    directory = os.path.join(mount, path.lstrip("/"))
    if not os.path.isdir(directory):  # e.g. a cgroup namespace whose root is not the mount's
        raise OSError(errno.ENOENT, f"cgroup {path!r} is not under {mount}")
    return directory


def _unescape(path: str) -> str:
    """Undo mountinfo's octal escapes (a space is \\040)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), path)


class Cgroup:
    """One cgroup of ours: made, joined by spawners, killed, removed."""

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def create(cls, pid: int | None = None) -> tuple[Cgroup | None, str]:
        """Make the cgroup of supervisor `pid` (ours by default) under the one we are in; return it, or None and why
        not."""
        if os.environ.get(ENV) == "0":
            return None, f"{ENV}=0"
        pid = os.getpid() if pid is None else pid
        try:
            parent = own_directory()
            path = os.path.join(parent, f"{PREFIX}{pid}.{start_time(pid)}")
            os.mkdir(path, 0o755)
        except OSError as exc:
            return None, str(exc)
        cgroup = cls(path)
        if not os.path.exists(os.path.join(path, "cgroup.kill")):
            cgroup.remove()
            return None, "the kernel has no cgroup.kill (Linux 5.14 or later)"
        return cgroup, ""

    def kill(self) -> None:
        """SIGKILL every process in the cgroup; the kernel also kills those forking meanwhile."""
        try:
            with open(os.path.join(self.path, "cgroup.kill"), "w") as f:
                f.write("1")
        except FileNotFoundError:
            pass

    def remove(self, timeout: float = 0.0) -> bool:
        """Remove the (killed) cgroup once it is empty, waiting up to `timeout`; return whether it is gone.

        Killed processes leave it as they die, a few milliseconds later; `cgroup.events` says when the last one
        has, and poll() wakes on its change (POLLPRI), so the wait is on the kernel's word, not a timer.
        """
        deadline = time.monotonic() + timeout
        try:
            events = os.open(os.path.join(self.path, "cgroup.events"), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            poller = select.poll()
            poller.register(events, select.POLLPRI)
            while True:
                # Reading arms the notification: poll() reports the first change after the last read.
                if b"populated 1" not in os.pread(events, 4096, 0):
                    return _remove_tree(self.path)
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                poller.poll(left * 1000)
        finally:
            os.close(events)

    def members(self) -> list[int]:
        """Return the pids of the processes in this cgroup."""
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                return [int(pid) for pid in f.read().split()]
        except OSError:
            return []


def _remove_tree(path: str) -> bool:
    """Remove an empty cgroup and any it holds (a run may have made its own), innermost first."""
    try:
        for directory, _subdirectories, _files in os.walk(path, topdown=False):
            os.rmdir(directory)  # a cgroup's files go with its directory
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def join(path: str) -> None:
    """Move the calling process into the cgroup at `path` (what it forks from now on is born there)."""
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write("0")


def sweep_stale() -> list[int]:
    """Kill and remove the cgroups of supervisors that are gone (killed with their spawner); return the pids that
    were still running in them."""
    if os.environ.get(ENV) == "0":
        return []
    try:
        parent = own_directory()
        names = os.listdir(parent)
    except OSError:
        return []
    killed: list[int] = []
    for name in names:
        if not name.startswith(PREFIX):
            continue
        try:
            pid_text, start_text = name[len(PREFIX) :].split(".", 1)
            pid = int(pid_text)
        except ValueError:
            continue
        if str(start_time(pid)) == start_text:
            continue  # its supervisor still runs (another instance beside us): its cgroup is its own
        stale = Cgroup(os.path.join(parent, name))
        killed += stale.members()
        stale.kill()
        stale.remove(timeout=2.0)
    return killed
