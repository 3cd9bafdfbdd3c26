"""One supervisor to a journal, and one to a SQLite database: a lock each, held for the supervisor's life.

Two supervisors that shared a journal file read each other's records as their own: the second one's recorder
died on the first one's records, and at its stop it reported records waiting in a journal the other had just
emptied; those runs never reached the database. Two on one SQLite file ran every slot twice. So `run` takes an
exclusive `flock` on `<journal>.lock` and, on SQLite, on `<database>.lock`, before it touches either, and a
second supervisor is refused in one line naming the first (host, pid, since when).

flock, not a pid file: the kernel lets go of the lock when the process ends however it ends (SIGKILL, the OOM
killer), so a crash never leaves a stale lock to clear by hand, and a pid reused by another program means
nothing. (SQLite's own locks are POSIX record locks, which flock does not touch.) Several nodes on one database
need PostgreSQL, each with a journal of its own.

The lock also answers `status` and `nodes` on SQLite: `probe` tries a shared lock on a read-only descriptor (never
creating the file) to tell whether a supervisor runs, and reads who it is; `run` waits out such a probe.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass, field

from ..errors import SupervisorError
from .record_files import sqlite_file


PROBE_PATIENCE = 0.2
"""How long `run` keeps trying a lock that is held, before it refuses: a reader's probe lets go within it."""


class OwnedError(SupervisorError):
    """Another supervisor holds the journal or the database; `where` is the file."""

    exit_code = 1


@dataclass
class Ownership:
    """The locks this supervisor holds (open descriptors: closing them, or dying, lets go)."""

    held: list[tuple[str, int]] = field(default_factory=list)
    """Each lock file's path, and the descriptor that holds its lock."""

    def release(self) -> None:
        """Let go of every lock, and remove the lock files (a clean stop leaves none behind).

        Removed while still held: whoever opened the file meanwhile finds, once it has the lock, that the path
        names another file or none, and starts again (`_lock`), so no two ever hold locks they both believe in.
        """
        for path, fd in self.held:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            os.close(fd)
        self.held.clear()


def take(url: str, journal: str) -> Ownership:
    """Take the journal's lock and, on SQLite, the database's; raise OwnedError if another supervisor has one."""
    ownership = Ownership()
    wanted = [(journal, "the journal", "give this one a journal of its own (--journal), or stop the other")]
    database = sqlite_file(url)
    if database is not None:
        wanted.append((database, "this SQLite database",
                       "SQLite serves one supervisor at a time; several need PostgreSQL"))
    try:
        for path, what, advice in wanted:
            ownership.held.append((f"{path}.lock", _lock(path, what, advice)))
    except BaseException:
        ownership.release()
        raise
    return ownership


def _lock(path: str, what: str, advice: str) -> int:
    lock_path = f"{path}.lock"
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise OwnedError(f"cannot lock {what}: {exc.strerror}", lock_path) from exc
        try:
            _exclusive(fd)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OwnedError(f"cannot lock {what}: {exc.strerror}", lock_path) from exc
            raise OwnedError(f"another supervisor ({holder}) is using {what}; {advice}", path) from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its holder removed it as we opened it (see Ownership.release): take the one there now
    # Who holds it, for the one refused: written after taking the lock, read only by someone who could not.
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}).encode(), 0)
    return fd


def _exclusive(fd: int) -> None:
    """Take the exclusive lock without waiting for a holder, only for a reader's probe (`probe`): that holds a
    shared lock for microseconds, and must never be what refuses a supervisor that is starting."""
    deadline = time.monotonic() + PROBE_PATIENCE
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() >= deadline:
                raise
        time.sleep(0.005)


@dataclass(frozen=True, slots=True)
class Holder:
    """What a reader found of the SQLite database's supervisor (`probe`)."""

    running: bool | None
    """True: a supervisor holds the lock; False: none does; None: the lock file could not be read (`problem`)."""
    host: str | None = None
    pid: int | None = None
    since: float | None = None
    """When it took the lock (Unix time)."""
    problem: str | None = None


def probe(url: str) -> Holder | None:
    """Tell whether a supervisor holds the SQLite database's lock, and who (None for PostgreSQL).

    For `status` and `nodes`, which may run as a user that may only read: a shared lock tried on a read-only
    descriptor, let go at once; the lock file is never created (no file: no supervisor runs).
    """
    database = sqlite_file(url)
    if database is None:
        return None
    lock_path = f"{database}.lock"
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return Holder(False)
    except OSError as exc:
        return Holder(None, problem=f"cannot read {lock_path}: {exc.strerror}")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return Holder(None, problem=f"cannot lock {lock_path}: {exc.strerror}")
        else:
            return Holder(False)  # closing the descriptor lets go of it
        try:
            data = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return Holder(True, str(data["host"]), int(data["pid"]), float(data["since"]))
        except (OSError, ValueError, KeyError, TypeError):
            return Holder(True)  # it has not written who it is yet
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(data["since"])))
        return f"pid {int(data['pid'])} on {data['host']}, since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "one that has not said who it is yet"
