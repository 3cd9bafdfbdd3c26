"""The supervisor's side of keeping every process a run starts from outliving the supervisor tree.

A run that starts a process in a session of its own (`setsid`, `start_new_session=True`, a daemon's double fork)
takes it out of the run's process group, which is how runs are stopped. What catches it, by what dies first:

- the spawner dies (SIGKILL, the OOM killer): the spawner's cgroup is killed (cgroup.py); and the supervisor,
  a child subreaper too, adopts what the spawner held, kills it and reaps it (`reap_orphans`);
- the supervisor dies: the spawner gets SIGTERM (its parent-death signal) and kills its runs' groups and
  everything it adopted (spawner.shutdown);
- both die at once: nothing of the tree is left to act, but the guard (guard.py), a child of the supervisor
  outside the runs' tree that outlives it, kills the cgroup they left, or, without a cgroup, what the spawner
  noted in the record of escaped processes (escaped.py); and should the guard be gone too, the next start does.

The supervisor reaps by pid, never with waitpid(-1): its helpers' exit statuses belong to their handles (a
pidfd and waitpid(pid), helper.py), and a wait for any child would steal them.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import sys
import time

from .. import escaped
from . import guard
from ..cgroup import Cgroup, sweep_stale
from ..errors import HelperStartError
from ..process import become_subreaper, process_table

log = logging.getLogger("supervisor.supervise.containment")

CLOSE_TIMEOUT = 2.0  # at the end, how long killed orphans and the cgroup get to be gone


class Containment:
    """The cgroup, the subreaper and the record of escaped processes, as one supervisor uses them."""

    def __init__(self, journal: str) -> None:
        self.record = escaped.record_path(journal)
        self.cgroup: Cgroup | None = None
        self.subreaper = False
        self.guard: int | None = None
        """The pid of our guard (guard.py), until we end it."""

    def start(self) -> None:
        """Sweep what an earlier supervisor left running, become a subreaper, and make the spawner's cgroup."""
        for where, pids in (("in its cgroup", sweep_stale()), (f"noted in {self.record}", escaped.sweep(self.record))):
            if pids:
                log.warning("killed %d process(es) an earlier supervisor's runs left running (%s): %s",
                            len(pids), where, " ".join(map(str, pids)))
        become_subreaper()
        self.subreaper = True
        self.cgroup, why = Cgroup.create()
        if self.cgroup is None:
            log.info("no cgroup for the runs (%s); the subreaper and %s stand in", why, self.record)
        else:
            log.debug("runs go in cgroup %s", self.cgroup.path)
        if os.environ.get(guard.ENV) != "0":
            self.guard = self._start_guard()

    def _start_guard(self) -> int:
        """Start the guard: in a group of its own (a Ctrl-C is ours to act on), with nothing of ours but stderr."""
        argv = [sys.executable, "-m", "supervisor.supervise.guard", "--supervisor-pid", str(os.getpid()),
                "--escape-record", self.record]
        if self.cgroup is not None:
            argv += ["--cgroup", self.cgroup.path]
        try:
            return os.posix_spawn(
                sys.executable,
                argv,
                dict(os.environ),
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)],
                setpgroup=0,
                setsigdef=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE),
                setsigmask=(),
            )
        except OSError as exc:  # as for every helper: one line, not a traceback (helper.py)
            raise HelperStartError(f"cannot start supervisor.supervise.guard: {exc.strerror or exc}", sys.executable) from exc

    def spawner_args(self) -> list[str]:
        """The spawner's arguments: the cgroup to join, and where to note escaped processes without one."""
        args = ["--escape-record", self.record]
        if self.cgroup is not None:
            args += ["--cgroup", self.cgroup.path]
        return args

    def spawner_died(self, helpers: set[int]) -> None:
        """Kill everything the dead spawner's runs started; `helpers` are our live helpers' pids (not orphans)."""
        if self.cgroup is not None:
            self.cgroup.kill()  # the new spawner is not started yet: all that is in it is the dead one's
        escaped.sweep(self.record)
        self.reap_orphans(helpers)

    def reap_orphans(self, helpers: set[int]) -> list[int]:
        """SIGKILL the live processes we adopted and reap the dead ones; return the pids of those still to reap.

        Called on SIGCHLD: an orphan's adoption raises none, but it follows a death that does (its parent's, a run
        of the dead spawner, itself reparented to us and killed by its parent-death signal).
        """
        if not self.subreaper:
            return []
        if self.guard is not None:
            helpers = helpers | {self.guard}
        me, own_group = os.getpid(), os.getpgrp()
        left: list[int] = []
        for pid, stat in process_table().items():
            # Our own group: a child an embedding program started itself (the supervisor's helpers and the runs
            # are all in groups of their own), not one we adopted.
            if stat.ppid != me or pid in helpers or stat.pgid == own_group:
                continue
            if not stat.zombie:
                log.warning("pid %d: started by a run, adopted by the supervisor (its spawner is gone); SIGKILL", pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    left.append(pid)
            except ChildProcessError:
                pass
        return left

    def close(self, helpers: set[int]) -> None:
        """At the end: kill the cgroup and every orphan, reap them, remove the cgroup, stop adopting."""
        deadline = time.monotonic() + CLOSE_TIMEOUT
        if self.cgroup is not None:
            self.cgroup.kill()
        escaped.sweep(self.record)
        # Each kill can orphan more processes onto us (the killed one's children): repeat until none is left.
        while self.subreaper:
            left = self.reap_orphans(helpers)
            if not left:
                break
            if not _wait_any(left, deadline - time.monotonic()):
                log.error("pid(s) %s did not die within %gs of SIGKILL", " ".join(map(str, left)), CLOSE_TIMEOUT)
                break
        if self.cgroup is not None:
            if not self.cgroup.remove(timeout=max(0.0, deadline - time.monotonic())):
                log.error("cgroup %s still holds processes; the next start removes it", self.cgroup.path)
            self.cgroup = None
        if self.subreaper:
            become_subreaper(False)
            self.subreaper = False
        self._end_guard()

    def _end_guard(self) -> None:
        """Our end is a clean one: the guard has nothing left to do. End it and reap it."""
        if self.guard is None:
            return
        try:
            os.kill(self.guard, signal.SIGTERM)
            os.waitpid(self.guard, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        self.guard = None


def _wait_any(pids: list[int], timeout: float) -> bool:
    """Wait up to `timeout` for one of `pids` (our children) to exit; return False on timeout."""
    fds = []
    try:
        for pid in pids:
            try:
                fds.append(os.pidfd_open(pid))
            except ProcessLookupError:
                return True  # already reaped by now
        return bool(select.select(fds, [], [], max(0.0, timeout))[0])
    finally:
        for fd in fds:
            os.close(fd)
