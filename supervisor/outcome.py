"""How a run ended, what state a worker is in, and the exit codes a run's child uses on purpose."""
from __future__ import annotations

import enum
import signal
from dataclasses import dataclass


class Outcome(str, enum.Enum):
    """How one run ended; every run row carries exactly one."""

    SUCCEEDED = "succeeded"
    """`run()` returned (or called `sys.exit(0)`) and the child said so before exiting 0."""
    ERROR = "error"
    """`run()` raised; the child sent the exception's type, message and traceback."""
    EXIT = "exit"
    """The child exited with no result message: `sys.exit(3)`, `os._exit(7)`."""
    CRASH = "crash"
    """The child was killed by a signal it raised itself: SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL."""
    KILLED = "killed"
    """The child was killed from outside (SIGKILL, SIGTERM: the OOM killer, an operator, a dying spawner)."""
    TIMEOUT = "timeout"
    """The supervisor stopped the run at its deadline (SIGTERM, grace, SIGKILL)."""
    LIMIT = "limit"
    """The supervisor stopped the run over a memory or CPU limit."""
    LOST = "lost"
    """The supervisor itself died during the run; the next start found the run unfinished."""
    INTERRUPTED = "interrupted"
    """The supervisor's own graceful stop ended the run (SIGTERM, its grace, SIGKILL): a deploy or a restart, not a
    failure of the worker. It counts neither as a success nor as a failure."""

    @property
    def failed(self) -> bool:
        """Tell whether this outcome counts as a failure (gets a failure row, bumps failure_count)."""
        return self not in (Outcome.SUCCEEDED, Outcome.INTERRUPTED)

    @property
    def counted(self) -> bool:
        """Tell whether this outcome counts as a success or a failure (an interrupted run is neither)."""
        return self is not Outcome.INTERRUPTED


class WorkerState(str, enum.Enum):
    """What a worker is doing now, as shown in the table and stored in `worker.status`."""

    IDLE = "idle"
    """Waiting for its next due time."""
    RUNNING = "running"
    """A run of it is in progress."""
    STOPPING = "stopping"
    """Its run was asked to stop (deadline or shutdown) and has not exited yet."""
    BROKEN = "broken"
    """Its module failed to import (or crashed the spawner importing), so it cannot run."""
    PAUSED = "paused"
    """An operator paused it: it keeps no schedule until resumed (a trigger still runs it once)."""
    RETIRED = "retired"
    """Known to the database but no longer defined by any loaded module."""


# Exit codes a run's child uses on purpose; anything else came from the worker (sys.exit, os._exit).
EXIT_OK = 0
EXIT_RAISED = 1
EXIT_BOOT_FAILED = 78  # EX_CONFIG: the child could not even start the worker.

# Signals a process raises against itself when it breaks; any other fatal signal came from outside.
CRASH_SIGNALS = frozenset(
    {
        signal.SIGSEGV,
        signal.SIGABRT,
        signal.SIGBUS,
        signal.SIGFPE,
        signal.SIGILL,
        signal.SIGTRAP,
        signal.SIGSYS,
        signal.SIGQUIT,
    }
)


def signal_name(signum: int) -> str:
    """Name a signal number (`SIGSEGV`), or say `signal 42` for one Python does not know."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopReason(str, enum.Enum):
    """Why the supervisor asked a run to stop before it ended on its own."""

    TIMEOUT = "timeout"
    """The run passed its deadline."""
    SHUTDOWN = "shutdown"
    """The supervisor is shutting down."""
    SPAWNER_LOST = "spawner lost"
    """The spawner, the run's parent, died; the run died with it."""
    LIMIT = "limit"
    """The run went over its memory limit and was killed."""
    FENCED = "fenced"
    """The node's lease on the shared database was about to run out: its spawner killed the run, which a peer
    may now run elsewhere (spawn/fence.py)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """An outcome with the one-line message that explains it (stored as `last_error` and in the failure row)."""

    outcome: Outcome
    message: str
    traceback: str = ""


def classify(
    exit_code: int | None,
    signum: int | None,
    result: dict[str, object] | None,
    stop_reason: StopReason | None,
    timeout: float | None = None,
    command: bool = False,
) -> Verdict:
    """Decide how a run ended from its wait status, the child's result message and why we stopped it.

    An external command (`command`) sends no result message: it replaced the child's Python with exec, so its
    exit status alone tells how it went, as it would to a shell.
    """
    error = result.get("error") if result else None
    if stop_reason is StopReason.TIMEOUT:
        message = f"stopped after its timeout of {timeout:g}s" if timeout else "stopped at its deadline"
        # A Python run wrote its stack when the timeout came (runs.py, STACK_SIGNAL); a command has none to give.
        return Verdict(Outcome.TIMEOUT, message if command else message + " (its stack at the timeout is in stderr)")
    if result and result.get("ok") and exit_code == EXIT_OK:
        return Verdict(Outcome.SUCCEEDED, "")
    if command and result is None and exit_code == EXIT_OK:
        return Verdict(Outcome.SUCCEEDED, "")
    if isinstance(error, dict):
        kind, text = error.get("type", "Exception"), error.get("message", "")
        message = f"{kind}: {text}" if text else str(kind)
        return Verdict(Outcome.ERROR, message, str(error.get("traceback", "")))
    if signum is not None:
        name = signal_name(signum)
        # Only the signals we send count as ours; a run that segfaults while being stopped still crashed.
        if stop_reason is StopReason.SHUTDOWN and signum in (signal.SIGTERM, signal.SIGKILL):
            return Verdict(Outcome.INTERRUPTED, f"stopped by {name} at supervisor shutdown")
        if stop_reason is StopReason.FENCED and signum == signal.SIGKILL:
            return Verdict(Outcome.LOST, "killed by the node's spawner: its lease on the database was running out")
        if stop_reason is StopReason.SPAWNER_LOST and signum == signal.SIGKILL:
            return Verdict(Outcome.KILLED, f"killed by {name} when the spawner died")
        if signum in CRASH_SIGNALS:
            return Verdict(Outcome.CRASH, f"crashed with {name}")
        return Verdict(Outcome.KILLED, f"killed by {name}")
    if stop_reason is StopReason.SPAWNER_LOST:
        return Verdict(Outcome.KILLED, "the spawner died during the run; its exit status is unknown")
    if command:
        return Verdict(Outcome.EXIT, f"exited with status {exit_code}")
    return Verdict(Outcome.EXIT, f"exited with status {exit_code} without a result")
