"""A run in a fresh interpreter (`isolation = "exec"`): the run's child execs Python, which imports the worker's
module for this run alone and runs it.

Forking the spawner is what makes a run start in about 2 ms, and it is only safe for code that a fork copies
whole: a module that starts a thread at import (`sentry_sdk.init()`, an OpenTelemetry exporter, a gRPC client)
would have that thread copied, mid-flight, into every run, and some libraries are unsafe in a forked child
whatever they do at import (CUDA, gRPC). Such workers run here instead: the spawner still forks the run's child
(or hands the run to its standby), which takes the run's pipes and closes everything else as every run does,
then replaces itself with `python -m supervisor.spawn.exec_child`. Same pid, same process group, same pipes, same
parent-death signal, so the supervisor's view of the run (deadlines, memory limit, signals, exit status,
result) does not change; the price is an interpreter's start and the module's import, on every run.

The request travels in the environment (argv is visible to every user in ps, and a run's database URL may hold
a password) and is taken out before any worker code runs.
"""
from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, NoReturn

from ..outcome import EXIT_BOOT_FAILED
from ..worker import Worker
from ..process_title import set_title, title_run

if TYPE_CHECKING:
    from .child import Prepared

REQUEST_ENV = "SUPERVISOR_RUN_REQUEST"


def become_fresh_interpreter(request: dict[str, object], signal_mask: set[int]) -> NoReturn:
    """In a run's child whose pipes are on fds 1-3 already: exec a fresh interpreter that runs the worker.

    SIGTERM stays blocked across the exec (a signal mask is kept), until the new interpreter has its handler.
    """
    from ..protocol import RESULT_FD

    for fd in (0, 1, 2, RESULT_FD):
        os.set_inheritable(fd, True)
    _exec_interpreter({"request": request, "signal_mask": sorted(signal_mask), "spawner_pid": os.getppid()})


def become_fresh_standby(link: int, spawner_pid: int, signal_mask: set[int]) -> NoReturn:
    """In a standby child forked for exec runs: exec a fresh interpreter that waits on `link` for its run."""
    os.set_inheritable(link, True)
    _exec_interpreter({"standby_link": link, "signal_mask": sorted(signal_mask), "spawner_pid": spawner_pid})


def _exec_interpreter(payload: dict[str, object]) -> NoReturn:
    """Become `python -m supervisor.spawn.exec_child`, with `payload` in the environment (see `main`)."""
    env = {**os.environ, REQUEST_ENV: json.dumps(payload)}
    os.execve(sys.executable, [sys.executable, "-m", "supervisor.spawn.exec_child"], env)


def main() -> NoReturn:
    """Entry point of `python -m supervisor.spawn.exec_child`: only a run's child, or a fresh standby, execs it."""
    payload = json.loads(os.environ.pop(REQUEST_ENV))
    from .child import Prepared, report_run

    try:
        prepared = Prepared(int(payload["spawner_pid"]))
    except BaseException:  # noqa: B036 - nothing is bound to the run's pipes yet; the exit status tells
        os._exit(EXIT_BOOT_FAILED)
    if "request" not in payload:
        set_title("standby (exec)", "ws-standby")
    request: dict[str, object] = payload["request"] if "request" in payload else _wait_for_run(prepared, payload)
    settings = request.get("settings")
    module = str(settings.get("module")) if isinstance(settings, dict) else ""
    title_run(str(request["worker"]), str(request["run"]), " (exec)")

    def import_worker() -> Worker:
        from . import discovery

        found = discovery.import_module(module)
        # As the spawner does after its imports: what the module made of logging gives way to the run's stderr.
        prepared.streams.take_logging()
        for candidate in discovery.workers_in(found):
            if candidate.definition().name == request["worker"]:
                return candidate
        raise LookupError(f"module {module} defines no worker named {request['worker']!r} any more")

    report_run(prepared, import_worker, request, set(payload["signal_mask"]))


def _wait_for_run(prepared: Prepared, payload: dict[str, object]) -> dict[str, object]:
    """As a fresh standby: wait for the run's request and pipes, and take the pipes as a forked run's child does."""
    import socket

    from .child import take_stdio
    from ..protocol import receive

    link = socket.socket(fileno=int(payload["standby_link"]))  # type: ignore[call-overload]
    os.set_inheritable(link.fileno(), False)
    try:
        request, fds = receive(link)
    except BaseException:  # noqa: B036 - before any run is ours there is nobody to tell; the spawner sees us die
        os._exit(EXIT_BOOT_FAILED)
    if request is None or len(fds) != 3:
        os._exit(0)  # let go unused (the spawner stops, or drops us)
    take_stdio(fds, prepared.keep)  # closes the link too: it has served its one run
    return request


if __name__ == "__main__":
    main()
