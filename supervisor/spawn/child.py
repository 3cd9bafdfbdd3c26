"""Everything that happens in a run's child after the spawner forks it, ending in `os._exit`.

Order matters and follows gunicorn's worker start-up and rq's work horse: join our own process group, tie our
life to the spawner's, drop every handler inherited from the spawner, make fresh stdio objects, turn on
faulthandler (`Prepared`); then take the run's pipes and close every other descriptor, apply the run's limits,
run the worker and report how it went on the result pipe (`become_run`). The first part needs nothing from the
run's request, so a standby child (standby.py) does it before the run is due. The child never returns into the
spawner's code and never runs interpreter shutdown (no atexit handlers, no finalizers of objects it inherited).
"""
from __future__ import annotations

import faulthandler
import fcntl
import io
import json
import logging
import os
import select
import signal
import sys
import time
import traceback
from typing import Callable, NoReturn

from .run_limits import apply_limits
from ..outcome import EXIT_BOOT_FAILED, EXIT_OK, EXIT_RAISED
from ..process import die_with_parent, reset_signal_handlers, write_all
from ..protocol import RESULT_FD, STACK_SIGNAL, clip
from ..worker import RunContext, Worker
from ..process_title import title_run

# Signals the spawner handles itself; a run must start with their default actions.
INHERITED_HANDLERS = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP, signal.SIGALRM)


class Cancellation:
    """SIGTERM from the supervisor sets this flag; `wait` sleeps on a pipe the signal writes to."""

    def __init__(self) -> None:
        self.requested = False
        self._read, write = (_above_result_fd(fd) for fd in os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC))
        self.fds = (self._read, write)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._handle_term)

    def _handle_term(self, signum: int, frame: object) -> None:
        # Only record: the worker decides at its next check how to wind down.
        self.requested = True

    def is_set(self) -> bool:
        return self.requested

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for cancellation; return whether it was requested."""
        deadline = time.monotonic() + seconds
        while not self.requested:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            select.select([self._read], [], [], left)
            try:
                os.read(self._read, 512)
            except BlockingIOError:
                pass
        return self.requested


class Streams:
    """Fresh text streams on fds 0-2 and a log handler on the stderr one, for the runs' children.

    Never the spawner's sys.stdout (which may be a proxy or hold a buffer): these are made once in the spawner
    after its imports, never written to there, and inherited untouched by every child, which saves each run the
    ~0.4 ms its child spent making them (on a forked child every first touch of a page is a copy). They write to
    whatever the fds are, so once `become_run` has put the run's pipes on 1 and 2, they are the run's.
    """

    def __init__(self) -> None:
        self.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="replace")
        self.stdout = io.TextIOWrapper(
            io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
        )
        self.stderr = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
        )
        self.log_handler = logging.StreamHandler(self.stderr)
        self.log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def take_logging(self) -> None:
        """Make the root logger write to our stderr, and only there (unless it does already)."""
        root = logging.getLogger()
        if root.handlers != [self.log_handler]:
            for handler in root.handlers[:]:
                root.removeHandler(handler)
            root.addHandler(self.log_handler)
        root.setLevel(logging.INFO)


class Prepared:
    """What a run's child sets up before it knows its run: everything that depends on nothing in the request.

    A standby child (standby.py) does this while it waits, so that a run's start pays only for `become_run`.
    """

    def __init__(self, spawner_pid: int, streams: Streams | None = None) -> None:
        # The spawner calls setpgid(pid, pid) too; whichever runs first wins, and the group exists before the
        # supervisor can ever be told our pid.
        os.setpgid(0, 0)
        if not die_with_parent(signal.SIGKILL, spawner_pid):
            os._exit(EXIT_BOOT_FAILED)
        reset_signal_handlers(INHERITED_HANDLERS)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        self.streams = streams or Streams()
        self.streams.take_logging()
        # The spawner's faulthandler (inherited) writes to fd 2 already, which will be the run's stderr: it keeps
        # the fd number, not the file.
        if not faulthandler.is_enabled():
            faulthandler.enable(file=2, all_threads=True)
        # Where it hangs, asked at its timeout (runs.py): every thread's stack to stderr, from C, so a run stuck in a
        # C call answers too. A worker that takes the signal for itself replaces this.
        faulthandler.register(STACK_SIGNAL, file=2, all_threads=True, chain=False)
        self.cancellation = Cancellation()
        self.keep = set(self.cancellation.fds)
        """Descriptors of ours that `become_run` must not close."""


def _above_result_fd(fd: int) -> int:
    """Move `fd` above RESULT_FD if it is not, so that taking the run's pipes cannot overwrite it."""
    if fd > RESULT_FD:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, RESULT_FD + 1)
    os.close(fd)
    return moved


def run_child(
    worker: Worker | None,
    request: dict[str, object],
    fds: list[int],
    spawner_pid: int,
    signal_mask: set[int],
    streams: Streams | None = None,
) -> NoReturn:
    """Become the run described by `request` on the pipes `fds` (result, stdout, stderr), then exit.

    The spawner forks with SIGTERM blocked; `signal_mask` is the mask to restore once our handler is in place.
    """
    try:
        prepared = Prepared(spawner_pid, streams)
    except BaseException as exc:  # noqa: B036 - report it as the run's error, on the result pipe
        _finish({"error": _describe(exc, "could not start the worker: ")}, fds[0])
        os._exit(EXIT_BOOT_FAILED)
    become_run(prepared, worker, request, fds, signal_mask)


def become_run(
    prepared: Prepared, worker: Worker | None, request: dict[str, object], fds: list[int], signal_mask: set[int]
) -> NoReturn:
    """Take the run's pipes, apply its limits, run the worker and report how it went; never returns.

    A run with `isolation = "exec"` becomes a fresh interpreter here instead (exec_child.py), on the same pipes,
    in the same process group, with the same pid: everything the supervisor knows of the run stays true.
    """
    result_fd = fds[0]
    try:
        title_run(str(request["worker"]), str(request["run"]))
        take_stdio(fds, prepared.keep)
        result_fd = RESULT_FD
        if _settings(request).get("isolation") == "exec":
            from .exec_child import become_fresh_interpreter

            become_fresh_interpreter(request, signal_mask)
    except BaseException as exc:  # noqa: B036 - the bootstrap itself failed: report it as the run's error
        _finish({"error": _describe(exc, "could not start the worker: ")}, result_fd)
        os._exit(EXIT_BOOT_FAILED)
    report_run(prepared, lambda: _named(worker, request), request, signal_mask)


def report_run(
    prepared: Prepared, find_worker: Callable[[], Worker], request: dict[str, object], signal_mask: set[int]
) -> NoReturn:
    """With the run's pipes on fds 1-3: find the worker, run it, report how it went on RESULT_FD; never returns.

    `find_worker` is where the worker's code comes from: the spawner's copy (a fork), or an import of its module
    in this process (a fresh interpreter); what it raises is the run's error, as a failure to start.
    """
    code = EXIT_BOOT_FAILED
    result: dict[str, object] | None = None
    run_pid = os.getpid()
    try:
        streams = prepared.streams
        sys.stdin, sys.stdout, sys.stderr = streams.stdin, streams.stdout, streams.stderr
        worker = find_worker()
        ctx = _context(request, prepared.cancellation, signal_mask)
        try:
            worker.run(ctx)
            result, code = {"ok": True}, EXIT_OK
        except SystemExit as exc:
            result, code = _exit_result(exc)
        except BaseException as exc:  # noqa: B036 - a run's every exception is a result to report
            result, code = _error_result(exc), EXIT_RAISED
    except BaseException as exc:  # the bootstrap itself failed: report it as the run's error
        result, code = {"error": _describe(exc, "could not start the worker: ")}, EXIT_BOOT_FAILED
    finally:
        try:
            if os.getpid() == run_pid:
                _finish(result, RESULT_FD)
            else:
                _leave_as_copy(result)
        finally:
            os._exit(code)


def _named(worker: Worker | None, request: dict[str, object]) -> Worker:
    if worker is None:
        raise LookupError(f"no worker named {request['worker']!r} here")
    return worker


def _settings(request: dict[str, object]) -> dict[str, object]:
    settings = request.get("settings")
    return settings if isinstance(settings, dict) else {}


def _context(request: dict[str, object], cancellation: Cancellation, signal_mask: set[int]) -> RunContext:
    settings = _settings(request)
    apply_limits(settings)
    # SIGTERM was blocked from the fork on: our handler is in place now, so a stop that came meanwhile is
    # delivered here and sets ctx.cancelled.
    signal.pthread_sigmask(signal.SIG_SETMASK, signal_mask)
    deadline = request.get("deadline")
    return RunContext(
        run_id=str(request["run"]),
        worker=str(request["worker"]),
        attempt=int(request.get("attempt", 1)),  # type: ignore[call-overload]
        deadline=float(deadline) if isinstance(deadline, (int, float)) else None,
        log=logging.getLogger(f"worker.{request['worker']}"),
        is_cancelled=cancellation.is_set,
        wait_cancelled=cancellation.wait,
        database=str(settings["database"]) if settings.get("database") else None,
        due_at=float(settings["due_at"]) if settings.get("due_at") else None,  # type: ignore[arg-type]
    )


def take_stdio(fds: list[int], keep: set[int]) -> None:
    """Put our pipes on fds 1, 2 and 3 and close every other descriptor but `keep` (stdin is /dev/null already)."""
    result_w, stdout_w, stderr_w = fds
    os.dup2(stdout_w, 1)
    os.dup2(stderr_w, 2)
    if result_w != RESULT_FD:
        os.dup2(result_w, RESULT_FD)
    # Sibling runs' pipes, the spawner's control socket and wakeup pipe, whatever a worker module opened at
    # import: none of it is ours to use, and holding a sibling's pipe would keep its EOF from ever coming.
    low = RESULT_FD + 1
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = max(low, fd + 1)
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _exit_result(exc: SystemExit) -> tuple[dict[str, object] | None, int]:
    """Treat `sys.exit()` as Python does: 0/None succeed, a number is the status, a message means 1."""
    if exc.code is None or exc.code == 0:
        return {"ok": True}, EXIT_OK
    if isinstance(exc.code, int):
        return None, exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return None, 1


def _error_result(exc: BaseException) -> dict[str, object]:
    return {"error": _describe(exc)}


def _describe(exc: BaseException, prefix: str = "") -> dict[str, str]:
    return {
        "type": type(exc).__qualname__,
        "message": prefix + clip(str(exc), 4096),
        "traceback": clip("".join(traceback.format_exception(exc))),
    }


def _leave_as_copy(result: dict[str, object] | None) -> None:
    """End a copy of the run that the worker forked and let return from `run()`: say nothing on the result pipe.

    Only the run's own process reports its result: a second report on the same pipe would make both unreadable,
    and the run would be recorded as having exited without one. What the copy raised still goes to stderr.
    """
    error = result.get("error") if result is not None else None
    if isinstance(error, dict):
        print(f"a process forked by the run (pid {os.getpid()}) raised:\n{error.get('traceback', '')}", file=sys.stderr)
    _finish(None, RESULT_FD)


def _finish(result: dict[str, object] | None, result_fd: int) -> None:
    """Flush our output, then report the result (if any) on the result pipe."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    if result is not None:
        try:
            write_all(result_fd, json.dumps(result).encode())
        except OSError:
            pass  # the supervisor is gone; our exit status still tells the spawner what happened
