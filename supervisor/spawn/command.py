"""External commands as workers: a run's child replaces itself with the command (exec), so the command is the run.

The command is then watched like any run: it is the leader of the run's process group (a timeout's SIGTERM and
SIGKILL reach it and whatever it starts), its stdout and stderr are the run's pipes, and its exit status is the
outcome (the result pipe closes on exec, so no result message comes; see outcome.classify). Nothing goes through
a shell unless `shell=True` says so: an argv is run as it is, `$HOME` and `;` included.
"""
from __future__ import annotations

import grp
import os
import pwd
import shlex
import signal
import sys
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import WorkerDefinitionError
from ..process import die_with_parent
from ..protocol import RESULT_FD
from ..worker import RunContext, Worker, WorkerDefinition

SHELL = "/bin/sh"
CONFIG_ORIGIN = "config"
"""The `module` of a command worker declared in the config file rather than in a worker module."""


class CommandStartError(OSError):
    """The command could not be started: no such program, a cwd that is not there, credentials refused."""


@dataclass(frozen=True, slots=True)
class Identity:
    """The user and group a command runs as, when they are not the supervisor's own."""

    uid: int | None
    """The user to become; None keeps the supervisor's (only the group changes)."""
    gid: int
    login: str | None
    """The user's name in the password database, when it has an entry (for its groups, USER and LOGNAME)."""
    home: str | None

    def environment(self) -> dict[str, str]:
        """The variables that name the user, set as su sets them, so the command does not act as root's."""
        if self.login is None or self.home is None:
            return {}
        return {"HOME": self.home, "USER": self.login, "LOGNAME": self.login}

    def assume(self) -> None:
        """Become this user and group (we are root): supplementary groups first, then the group, then the user."""
        parent = os.getppid()
        if self.login is not None:
            os.initgroups(self.login, self.gid)
        else:
            os.setgroups([self.gid])  # root's own supplementary groups must not come along
        os.setgid(self.gid)
        if self.uid is not None:
            os.setuid(self.uid)
        # A change of credentials clears the parent-death signal: set it again, or the command would outlive
        # the spawner. The check after it catches a spawner that died while it was cleared.
        if not die_with_parent(signal.SIGKILL, parent):
            raise CommandStartError("the spawner exited while the command was starting")


class CommandWorker(Worker):
    """An external command run as a worker: `register(CommandWorker(name="backup", command=[...], interval="1h"))`.

    `command` is an argv list; a string is split as a shell would split words (shlex), but nothing else of a
    shell applies unless `shell=True`, which runs the string as `/bin/sh -c STRING`. `env` is added to the
    supervisor's environment, `cwd` is the directory it runs in, and `user`/`group` say whom it runs as (the
    supervisor must then be root). Every other keyword is a worker setting (interval, timeout, retries, ...).
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        command: Sequence[str] | str | None = None,
        shell: bool = False,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        user: str | int | None = None,
        group: str | int | None = None,
        origin: str | None = None,
        **settings: Any,
    ) -> None:
        # Where the worker is declared: the module that builds it (as a class statement tells for other workers),
        # or "config" for one the config file declares.
        self.origin = origin if origin is not None else str(sys._getframe(1).f_globals.get("__name__", "__main__"))
        if name is None:
            # Other workers default to their class or function name; every command would be "CommandWorker".
            raise WorkerDefinitionError("a command worker needs a name", f"command {command!r} in {self.origin}")
        super().__init__(name=name, **settings)
        self.command = command
        self.shell = shell
        self.env = env
        self.cwd = cwd
        self.user = user
        self.group = group

    @property
    def module(self) -> str:
        return self.origin

    def command_argv(self) -> tuple[str, ...]:
        """The argv the command runs as; raise ValueError if `command` and `shell` do not make one."""
        return _argv(self.command, self.shell)

    def definition(self) -> WorkerDefinition:
        """Check the command's own settings, then the worker settings; raise WorkerDefinitionError if bad."""
        try:
            self.command_argv()
            _check_env(self.env)
            if self.cwd is not None and not isinstance(self.cwd, str):
                raise ValueError(f"cwd must be a directory path, got {self.cwd!r}")
            resolve_identity(self.user, self.group)
        except ValueError as exc:
            raise WorkerDefinitionError(str(exc), f"worker {self.name!r} in {self.module}") from None
        return super().definition()

    def run(self, ctx: RunContext) -> None:
        """Replace this run's process with the command; come back only by raising, when it cannot start."""
        argv = self.command_argv()
        try:
            identity = resolve_identity(self.user, self.group)
        except ValueError as exc:  # the user or group went away since the spawner checked it
            raise CommandStartError(f"cannot run {list(argv)!r}: {exc}") from None
        environment = {**os.environ, **(identity.environment() if identity else {}), **(self.env or {})}
        sys.stdout.flush()
        sys.stderr.flush()
        # The command must not hold the result pipe: exec closes it, and the supervisor, seeing no result message,
        # judges the run by the command's exit status. Should exec fail, the pipe is still ours to report on.
        os.set_inheritable(RESULT_FD, False)
        if identity is not None:
            try:
                identity.assume()
            except PermissionError as exc:
                raise CommandStartError(f"cannot run {list(argv)!r} as {self._whom()}: {exc.strerror}") from exc
        if self.cwd is not None:
            try:
                os.chdir(self.cwd)  # as the command's user, so it gets into no directory it could not enter itself
            except OSError as exc:
                raise CommandStartError(f"cannot run {list(argv)!r} in {self.cwd!r}: {exc.strerror}") from exc
        _default_signals_for_exec(ctx)
        try:
            os.execvpe(argv[0], argv, environment)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise CommandStartError(f"cannot run {list(argv)!r}: {reason}") from exc

    def _whom(self) -> str:
        return " and ".join(f"{key} {value!r}" for key, value in (("user", self.user), ("group", self.group)) if value)


def _argv(command: object, shell: object) -> tuple[str, ...]:
    if not isinstance(shell, bool):
        raise ValueError(f"shell must be true or false, got {shell!r}")
    if shell:
        if not isinstance(command, str) or not command.strip():
            kind = "a list" if isinstance(command, (list, tuple)) else repr(command)
            raise ValueError(f"command must be a non-empty string when shell is true (run as {SHELL} -c COMMAND), "
                             f"got {kind}")
        return (SHELL, "-c", command)
    if isinstance(command, str):
        try:
            command = shlex.split(command)
        except ValueError as exc:
            raise ValueError(f"command {command!r} cannot be split into words: {exc}") from None
    if not isinstance(command, (list, tuple)) or not command or not all(isinstance(a, str) for a in command):
        raise ValueError(f"command must be a non-empty list of strings, got {command!r}")
    return tuple(command)


def _check_env(env: object) -> None:
    if env is None:
        return
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ValueError(f"env must map variable names to strings, got {env!r}")
    for key in env:
        if not key or "=" in key or "\0" in key:
            raise ValueError(f"env has {key!r}, which is not a variable name")


def resolve_identity(user: object, group: object) -> Identity | None:
    """Look up whom a command runs as; None when that is the supervisor's own user and group.

    Raise ValueError for a user or group that does not exist, and for a change of user or group when the
    supervisor is not root (only root may become someone else).
    """
    if user is None and group is None:
        return None
    uid, entry = _lookup_user(user) if user is not None else (None, None)
    if group is not None:
        gid = _lookup_group(group)
    elif entry is not None:
        gid = entry.pw_gid  # the user's primary group, as su gives
    else:
        raise ValueError(f"user {user!r} has no entry in the password database; give its group as well")
    if uid in (None, os.geteuid()) and gid == os.getegid():
        return None
    if os.geteuid() != 0:
        whom = f"user {user!r}" if uid not in (None, os.geteuid()) else f"group {group!r}"
        raise ValueError(f"{whom} needs the supervisor to run as root")
    return Identity(uid, gid, entry.pw_name if entry else None, entry.pw_dir if entry else None)


def _lookup_user(user: object) -> tuple[int, pwd.struct_passwd | None]:
    uid = _numeric(user)
    if uid is not None:
        try:
            return uid, pwd.getpwuid(uid)
        except KeyError:
            return uid, None
    if not isinstance(user, str) or not user:
        raise ValueError(f"user must be a user name or a numeric uid, got {user!r}")
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"user {user!r} does not exist") from None
    return entry.pw_uid, entry


def _lookup_group(group: object) -> int:
    gid = _numeric(group)
    if gid is not None:
        return gid
    if not isinstance(group, str) or not group:
        raise ValueError(f"group must be a group name or a numeric gid, got {group!r}")
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"group {group!r} does not exist") from None


def _numeric(value: object) -> int | None:
    """The id a numeric user or group gives (1000 or "1000"), or None for a name."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _default_signals_for_exec(ctx: RunContext) -> None:
    """Give the command every signal at its default action, as a service manager does (systemd resets them all).

    exec resets caught signals to their defaults but keeps ignored ones: Python ignores SIGPIPE and SIGXFSZ (so
    `producer | head` would see write errors instead of ending quietly), and a supervisor started in the
    background or under nohup ignores SIGQUIT or SIGHUP. SIGTERM goes to its default now rather than at exec,
    and a stop request that came while we were starting (ctx.cancelled) is acted on now, so the run ends by
    SIGTERM as the command itself would have.
    """
    for sig in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
        signal.signal(sig, signal.SIG_DFL)
    if ctx.cancelled:
        signal.raise_signal(signal.SIGTERM)
