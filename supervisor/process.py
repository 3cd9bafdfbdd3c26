"""Operating-system primitives for processes: parent-death signals, subreaping, process groups, pipes, wait status.

Linux only: `prctl` is how a child is tied to its parent's life. Imports nothing heavy, since the spawner and
every run's child use it.
"""
from __future__ import annotations

import ctypes
import errno
import os
import signal
import time
from dataclasses import dataclass

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_libc: ctypes.CDLL | None = None


def _prctl(option: int, value: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def die_with_parent(sig: int, expected_parent: int) -> bool:
    """Ask the kernel to send `sig` when our parent dies; return False if it is already gone.

    The check after prctl closes the race where the parent died between fork and prctl: we would then be
    reparented already and no signal would ever come.
    """
    _prctl(_PR_SET_PDEATHSIG, sig)
    return os.getppid() == expected_parent


def become_subreaper(on: bool = True) -> None:
    """Adopt orphaned descendants, so a grandchild whose parent died is still ours to find and stop (or, with
    `on` False, stop adopting them)."""
    _prctl(_PR_SET_CHILD_SUBREAPER, int(on))


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a process group; return False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A group can briefly hold a process that changed its credentials (setuid); nothing we may signal.
        return False
    return True


def decode_status(status: int) -> tuple[int | None, int | None]:
    """Split a raw wait status into (exit code, None) or (None, signal number)."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    raise ValueError(f"wait status {status!r} is neither an exit nor a signal")


def open_pipe() -> tuple[int, int]:
    """Return a close-on-exec pipe (read end, write end)."""
    return os.pipe2(os.O_CLOEXEC)


def set_nonblocking(fd: int) -> None:
    """Make reads on `fd` return at once instead of waiting for data."""
    os.set_blocking(fd, False)


def drain(fd: int) -> None:
    """Empty a non-blocking pipe whose bytes mean nothing but "wake up" (a signal's wakeup fd)."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def read_available(fd: int, limit: int = 1 << 20, chunk: int = 1 << 16) -> tuple[bytes, bool]:
    """Read what `fd` has now, up to `limit` bytes, without blocking; return (data, reached EOF)."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        try:
            data = os.read(fd, chunk)
        except BlockingIOError:
            return b"".join(parts), False
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise
        if not data:
            return b"".join(parts), True
        parts.append(data)
        size += len(data)
    return b"".join(parts), False


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to a blocking fd."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def children_of(pid: int) -> list[int]:
    """Return the pids whose parent is `pid`, read from /proc (no psutil in the lean spawner)."""
    return [child for child, stat in process_table().items() if stat.ppid == pid]


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/PID/stat that place a process in the tree and tell it apart from a later one."""

    ppid: int
    pgid: int
    start: int
    """Start time in clock ticks after boot (field 22): with the pid, names one process even after pid reuse."""
    zombie: bool


def _stat_fields(stat: bytes) -> list[bytes]:
    # The command name sits in parentheses and may itself hold spaces or ')'; fields follow the last ')',
    # starting with field 3 (the state).
    return stat[stat.rfind(b")") + 2 :].split()


def process_table() -> dict[int, ProcStat]:
    """Read every process's parent, group and start time from /proc in one pass."""
    table: dict[int, ProcStat] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = _stat_fields(f.read())
        except OSError:
            continue  # gone since the listing
        table[int(entry)] = ProcStat(int(fields[1]), int(fields[2]), int(fields[19]), fields[0] == b"Z")
    return table


def start_time(pid: int) -> int | None:
    """Return a process's start time (clock ticks after boot, /proc/PID/stat field 22), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(_stat_fields(f.read())[19])
    except OSError:
        return None


def thread_count() -> int:
    """Count this process's operating-system threads (Python's and any a C extension started)."""
    return len(os.listdir("/proc/self/task"))


def reset_signal_handlers(signals: tuple[int, ...]) -> None:
    """Put `signals` back to their default action and detach any wakeup fd inherited from the parent."""
    signal.set_wakeup_fd(-1)
    for sig in signals:
        signal.signal(sig, signal.SIG_DFL)


def ensure_standard_fds() -> None:
    """Open /dev/null on any of fds 0-2 that is closed, so no pipe or socket we open later lands there."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def boottime() -> float:
    """CLOCK_BOOTTIME: the clock a node's fencing deadlines are kept on (supervise/cluster.py, spawn/fence.py). Unlike
    the monotonic clock it counts a suspended machine's sleep, as the database's clock does."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)
