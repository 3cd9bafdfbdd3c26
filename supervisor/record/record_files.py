"""The SQLite record's files on disk: who may read them, and what stops a process from opening them.

The record holds workers' tracebacks and the tails of their output, which can hold secrets, so its files (the
database and SQLite's -wal and -shm beside it) are readable by their owner only (0600), like the journal; with
`database_group` they are 0640 and belong to that group, for monitoring users who run `status`, `history` and
`failures`. SQLite itself gives -wal and -shm the database file's permissions, and its owner and group when it
runs as root; a supervisor that is not root copies the group over after opening (`share_companions`).

A reader who may not write the directory cannot let SQLite create -wal and -shm, which a WAL database needs:
while a supervisor has the record open they exist (and are readable by the group), so the reader opens it
read-only; once the last connection closed cleanly SQLite has removed them and everything is in the database file,
so the reader reads that file as it stands (SQLite's `immutable`: no locks, no -shm). See `reading_uri`.
"""
from __future__ import annotations

import grp
import os
import pwd
import stat
from urllib.parse import quote

from playhouse import db_url

from .database import redact
from ..errors import ConfigError, StoreUnavailable

COMPANIONS = ("-wal", "-shm")
PRIVATE = 0o600
GROUP_READABLE = 0o640


def sqlite_file(url: str) -> str | None:
    """The file a `sqlite:///` URL names (as the store reads it), or None (PostgreSQL, or in memory)."""
    if not url.startswith("sqlite:"):
        return None
    path = db_url.parse(url)["database"]
    return path if path and path != ":memory:" else None


def group_id(group: str) -> int:
    """The id of a group given by name or number; raise ConfigError if this host has no such group."""
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        if group.isdigit():
            return int(group)
        raise ConfigError(f"no group named {group!r} on this host", "database_group setting") from None


def check_writable(url: str) -> None:
    """Before `run` opens the record: raise StoreUnavailable saying which directory or file stops it, and why."""
    path = sqlite_file(url)
    if path is None:
        return
    directory = os.path.dirname(path) or "."
    problem = _directory_problem(directory)
    if problem is None and not os.access(directory, os.W_OK | os.X_OK):
        problem = (f"directory {os.path.abspath(directory)} is not writable by {_user()} ({_owner(directory)}); SQLite keeps its -wal "
                   "and -shm files beside the database")
    if problem is None and os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        problem = f"the database file {path} is not writable by {_user()} ({_owner(path)})"
    if problem is not None:
        raise StoreUnavailable(f"cannot open the database: {problem}", redact(url))


def make_private(url: str, group: str | None) -> None:
    """Create the database file 0600 (0640 with `group`, and that group) before SQLite opens it, or give an
    existing one (and its -wal and -shm) those permissions: the setting says who may read the record."""
    path = sqlite_file(url)
    if path is None:
        return
    gid = group_id(group) if group else None
    mode = GROUP_READABLE if group else PRIVATE
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode))
    except FileExistsError:
        pass  # an earlier start's record: given the permissions below
    for each in (path, *(path + suffix for suffix in COMPANIONS)):
        _give(each, mode, gid, url)


def closed_to_group(url: str, group: str) -> str | None:
    """Say (one line) if members of `group` cannot enter the database's directory, and how to let them; else None.

    Only said: the directory may be shared with other files (a home directory), so its group and mode are the
    administrator's to choose."""
    path = sqlite_file(url)
    if path is None:
        return None
    directory = os.path.abspath(os.path.dirname(path) or ".")
    st = os.stat(directory)
    if st.st_mode & stat.S_IXOTH or (st.st_gid == group_id(group) and st.st_mode & stat.S_IXGRP):
        return None
    return (f"members of group {group} cannot enter {directory} ({_owner(directory)}), so they cannot read the "
            f"record: chgrp {group} {directory} && chmod g+x {directory}")


def share_companions(url: str) -> None:
    """Give SQLite's -wal and -shm files the database file's permissions and group, as SQLite does when root."""
    path = sqlite_file(url)
    if path is None:
        return
    try:
        st = os.stat(path)
    except OSError:
        return
    for suffix in COMPANIONS:
        _give(path + suffix, stat.S_IMODE(st.st_mode) & 0o666, st.st_gid, url)


def reading_uri(path: str) -> str:
    """A URI that opens the database at `path` for reading only, with no file created beside it."""
    location = quote(path)  # as given: a relative path needs no search permission on the cwd's parents
    if os.path.exists(path + "-wal"):
        return f"file:{location}?mode=ro"  # a supervisor has it open: read through its -wal and -shm
    # No -wal: no connection has the database open in WAL mode, so the file holds everything. (A supervisor that
    # starts while we read writes to a new -wal, not to this file, until its first checkpoint.)
    return f"file:{location}?immutable=1"


def reading_problem(url: str) -> str | None:
    """What keeps this process from reading the record's files (one line), or None."""
    path = sqlite_file(url)
    if path is None:
        return None
    directory = os.path.dirname(path) or "."
    if not os.path.lexists(directory) and _directory_problem(os.path.dirname(directory)) is None:
        return None  # simply not there: the caller says "no database file there"
    problem = _directory_problem(directory)
    if problem is not None:
        return problem
    for each in (path, *(path + suffix for suffix in COMPANIONS)):
        if os.path.exists(each) and not os.access(each, os.R_OK):
            return (f"cannot read {each}: permission denied for {_user()} ({_owner(each)}); the record is readable "
                    "by its owner, and by the database_group if one is set")
    return None


def may_write(url: str) -> bool:
    """Tell whether this process may write the record and its directory (else it opens it read-only)."""
    path = sqlite_file(url)
    if path is None:
        return True
    directory = os.path.dirname(path) or "."
    return os.access(directory, os.W_OK | os.X_OK) and os.access(path, os.R_OK | os.W_OK)


def _give(path: str, mode: int, gid: int | None, url: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if st.st_uid != os.geteuid() and os.geteuid() != 0:
        return  # not ours to change (an administrator's file we may write): left as it is
    try:
        if gid is not None and st.st_gid != gid:
            os.chown(path, -1, gid)
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(path, mode)
    except PermissionError:
        raise StoreUnavailable(
            f"cannot give {path} to group {_group_name(gid)}: {_user()} is not a member of it", redact(url)
        ) from None


def _directory_problem(directory: str) -> str | None:
    """What is wrong with the database's directory for getting at files in it (missing, a file, shut), or None.

    `directory` is checked as given (relative to the cwd, maybe) and named in full."""
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return f"directory {os.path.abspath(directory)} does not exist"
    except NotADirectoryError:
        return f"{_first_file(os.path.abspath(directory))} is not a directory"
    except PermissionError:
        return f"{_user()} may not enter a directory on the way to {os.path.abspath(directory)} (permission denied)"
    if not stat.S_ISDIR(st.st_mode):
        return f"{os.path.abspath(directory)} is not a directory"
    if not os.access(directory, os.X_OK):
        return f"{_user()} may not enter directory {os.path.abspath(directory)} ({_owner(directory)}; permission denied)"
    return None


def _first_file(directory: str) -> str:
    """The first component of `directory` that exists and is not a directory."""
    path = "/"
    for part in directory.strip("/").split("/"):
        path = os.path.join(path, part)
        if os.path.exists(path) and not os.path.isdir(path):
            return path
    return directory


def _user() -> str:
    uid = os.geteuid()
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"


def _group_name(gid: int | None) -> str:
    if gid is None:
        return "?"
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _owner(path: str) -> str:
    """`owner:group mode` of a file, as ls shows them, for an error line."""
    st = os.stat(path)
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    return f"{owner}:{_group_name(st.st_gid)} {stat.S_IMODE(st.st_mode):04o}"
