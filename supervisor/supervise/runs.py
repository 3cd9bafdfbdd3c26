"""A run's life in the supervisor: ask the spawner for it, read its pipes, stop it, tell how it ended, record it.

The supervisor never forks a run. It opens the run's three pipes (result, stdout, stderr), records that the run
starts, and asks the spawner for it; the spawner reports the pid and, once it has reaped the child, the exit
status. In between, the pipes are read as soon as they are readable (into bounded buffers), the run's deadlines
(its timeout, then the end of its grace) wait on an agenda of their own, and a run with a memory limit is sampled
a few times a second. How the run ended is decided once, from the exit status, the result and why it was
stopped (`end`), and recorded with what the end did to its worker (`record_end`).
"""
from __future__ import annotations

import json
import logging
import os
import selectors
import signal
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from ..record import records
from .agenda import Agenda
from .limits import MemoryWatch, cpu_limit_verdict, open_files_verdict, run_settings
from ..outcome import Outcome, StopReason, Verdict, WorkerState, classify
from ..process import decode_status, open_pipe, read_available, set_nonblocking
from ..protocol import Message
from ..record.recording import Recording, Urgency
from .scheduling import RunEnded, utc
from .spawner_link import SpawnerLink
from ..record.store import utcnow
from .worker_status import Run, WorkerStatus

log = logging.getLogger("supervisor")

RESULT_LIMIT = 1 << 20  # a result message larger than this is not a result; cut and reported as garbled


@dataclass(frozen=True, slots=True)
class RunEnd:
    """How a run ended, decided once: its verdict, exit status and usage, when it ended and how long it took."""

    run: Run
    verdict: Verdict
    exit_code: int | None
    signal: int | None
    usage: tuple[float, int] | None
    """CPU seconds and peak RSS bytes, from the spawner's wait4."""
    finished_at: datetime
    duration: float


def new_run_id() -> str:
    """A run's id: as random as uuid4().hex, without building a UUID object per run."""
    return os.urandom(16).hex()


class RunKeeper:
    """The runs in progress, by id, and what each needs from the loop next."""

    def __init__(
        self,
        recording: Recording,
        selector: selectors.BaseSelector,
        workers: dict[str, WorkerStatus],
        node: str,
        clock: Callable[[], float],
    ) -> None:
        self.recording = recording
        self.selector = selector
        self.workers = workers
        """The scheduler's statuses (shared): a run's start and stop show on its worker."""
        self.node = node
        """This node's name, on every run's record."""
        self.node_id: str | None = None
        """This node's incarnation on a shared PostgreSQL (supervise/cluster.py); None on SQLite."""
        self.pid = os.getpid()
        self.clock = clock
        self.runs: dict[str, Run] = {}
        self.deadlines = Agenda()
        """When each run next needs the loop (its timeout, then the end of its grace), keyed by run id: with
        200 runs in flight, walking them all on every pass was most of the supervisor's CPU between runs."""
        self.memory = MemoryWatch()
        self.memory_limited: set[str] = set()
        """Runs in progress that have a memory limit and a pid: the ones the memory watch samples."""

    # -- start ------------------------------------------------------------------------------------------------------

    def start(
        self, spawner: SpawnerLink, status: WorkerStatus, now: float, wall: float, attempt: int, slot: float,
        module: str | None,
        run_id: str | None = None,
    ) -> Run:
        """Ask the spawner for a run of this worker (and record that it starts); `slot` is when it was due, and
        `module` where the worker was found (a fresh interpreter imports it from there). `run_id` is the id a
        claim on the shared database already gave it (cluster.py)."""
        definition = status.definition
        run = Run(
            id=run_id or new_run_id(),
            definition=definition,
            attempt=attempt,
            started=now,
            started_at=utcnow(),
            deadline=now + definition.timeout if definition.timeout else None,
            node_id=self.node_id,
            spawner=spawner,
        )
        ends = [open_pipe() for _ in range(3)]
        for (read_end, _), stream in zip(ends, ("result", "stdout", "stderr")):
            set_nonblocking(read_end)
            run.fds[read_end] = stream
        # The record is written before the request, so a supervisor killed from here on leaves the run to be
        # found lost.
        self.recording.record(
            records.run_started(
                run.id,
                definition.name,
                run.attempt,
                run.started_at,
                utc(status.timetable.slot_wall(now, wall)),
                self.node,
                self.pid,
                skipped=status.unrecorded_skips,
                node_id=run.node_id,
            ),
            Urgency.LATER,
        )
        status.unrecorded_skips = 0
        # The spawner link owns the write ends from here: it closes them once the request is sent. If the spawner
        # is already dead, its exit (on its pidfd) ends this run like every other run it had.
        spawner.spawn(
            run.id,
            definition.name,
            run.attempt,
            run.deadline,
            [w for _, w in ends],
            {**run_settings(definition), "due_at": wall - (now - slot), "module": module},
        )
        for r, _ in ends:
            self.selector.register(r, selectors.EVENT_READ, ("run", run))
        self.runs[run.id] = run
        self._watch_deadline(run)
        status.runs.append(run)
        status.state = WorkerState.RUNNING
        log.debug("%s: run %s requested (attempt %d)", definition.name, run.id, attempt)
        return run

    def spawned(self, message: Message) -> None:
        """Note the pid a run got."""
        run = self.runs.get(message["run"])
        if run is None:
            return
        run.pid = int(message["pid"])
        definition = run.definition
        # A line per start; at DEBUG for workers that run more often than once a minute (their end line says it).
        frequent = definition.interval is not None and definition.interval < 60
        log.log(logging.DEBUG if frequent else logging.INFO, "%s: pid %d started (run %s%s)", definition.name, run.pid,
                run.id[:8], f", attempt {run.attempt}" if run.attempt > 1 else "",
                extra={"worker": definition.name, "run_id": run.id, "pid": run.pid, "attempt": run.attempt})
        if run.definition.memory_limit:
            self.memory_limited.add(run.id)
        self.recording.record(records.run_spawned(run.id, run.definition.name, run.pid), Urgency.LATER)

    # -- its pipes --------------------------------------------------------------------------------------------------

    def read_pipe(self, run: Run, fd: int) -> None:
        """Read what a child wrote on one of its pipes (64 KiB at a time, so it never blocks on a full pipe)."""
        if fd not in run.fds:
            return  # closed earlier in this same pass, when the run ended
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        if data:
            self._feed(run, run.fds[fd], data)
        else:
            self.selector.unregister(fd)
            os.close(fd)
            del run.fds[fd]

    def _feed(self, run: Run, stream: str, data: bytes) -> None:
        if stream == "stderr":
            run.stderr.feed(data)
        elif stream == "stdout":
            run.stdout.feed(data)
        elif len(run.result) < RESULT_LIMIT:
            run.result += data[: RESULT_LIMIT - len(run.result)]

    def close_pipes(self, run: Run, drain: bool = False) -> None:
        """Close the run's pipes; with `drain`, read what the child wrote before it exited first (bounded)."""
        # We do not wait for EOF, which a grandchild that escaped the run's group could hold back forever.
        for fd, stream in list(run.fds.items()):
            if drain:
                data, _eof = read_available(fd, limit=4 << 20)
                self._feed(run, stream, data)
            self.selector.unregister(fd)
            os.close(fd)
        run.fds.clear()

    # -- its end ----------------------------------------------------------------------------------------------------

    def end(self, run: Run, verdict: Verdict | None, status: int | None, usage: tuple[float, int] | None) -> RunEnd:
        """The run is over: drain and close its pipes, decide how it ended (unless `verdict` says), forget it."""
        self.close_pipes(run, drain=True)
        exit_code = signum = None
        if status is not None:
            exit_code, signum = decode_status(status)
        if verdict is None:
            result = _parse_result(run.result)
            verdict = (
                run.limit_verdict
                or cpu_limit_verdict(run.definition, signum, usage[0] if usage else None)
                or open_files_verdict(run.definition, result)
                or classify(
                    exit_code,
                    signum,
                    result,
                    run.stop_reason,
                    run.definition.timeout,
                    command=run.definition.command is not None,
                )
            )
        now = self.clock()
        finished_at = utcnow()
        del self.runs[run.id]
        self.memory.forget(run.id)
        self.memory_limited.discard(run.id)
        self.deadlines.set(run.id, None)
        return RunEnd(run, verdict, exit_code, signum, usage, finished_at, now - run.started)

    def record_end(self, end: RunEnd, ended: RunEnded) -> None:
        """Record the run's end, with what it did to its worker (`ended`), and log it."""
        run, verdict, usage = end.run, end.verdict, end.usage
        self.recording.record(
            records.run_finished(
                run.id,
                run.definition.name,
                run.attempt,
                run.started_at,
                end.finished_at,
                end.duration,
                verdict,
                self.node,
                self.pid,
                pid=run.pid,
                exit_code=end.exit_code,
                signal=end.signal,
                cpu_time=usage[0] if usage else None,
                peak_rss=usage[1] if usage else None,
                # A failure keeps what the capture kept; a run that did not fail its worker's keep_output.
                stderr=kept_output(run.stderr.text(), verdict, run.definition.keep_output),
                stdout=kept_output(run.stdout.text(), verdict, run.definition.keep_output),
                next_run_at=ended.next_run_at,
                skipped=ended.skipped,
                node_id=run.node_id,
            ),
            # A failure is on record within milliseconds; a success too unless runs end faster than a batch's gap.
            Urgency.NOW if verdict.outcome.failed else Urgency.SOON,
        )
        # An interrupted run is no failure, but work left undone: a warning, as a failure that needs no one is.
        level = logging.INFO if verdict.outcome is Outcome.SUCCEEDED else logging.WARNING
        if verdict.outcome in (Outcome.CRASH, Outcome.KILLED):
            level = logging.ERROR
        log.log(
            level,
            "%s: pid %s %s in %.3fs%s",
            run.definition.name,
            run.pid,
            verdict.outcome.value,
            end.duration,
            f": {verdict.message}" if verdict.message else "",
            extra={"worker": run.definition.name, "run_id": run.id, "attempt": run.attempt, "pid": run.pid,
                   "outcome": verdict.outcome.value, "duration": round(end.duration, 6), "exit_code": end.exit_code,
                   "signal": end.signal, "node": self.node},
        )

    # -- stopping it ------------------------------------------------------------------------------------------------

    def stop(self, run: Run, reason: StopReason, now: float) -> None:
        """Ask a run to stop: SIGTERM to its group now, SIGKILL after its grace period."""
        spawner: SpawnerLink = run.spawner
        run.stop_reason = reason
        run.kill_at = now + run.definition.grace
        self._watch_deadline(run)
        if reason is StopReason.TIMEOUT and run.definition.command is None:
            spawner.dump_stack(run.id)  # where it hung, into its stderr, before anything may change it
        spawner.signal_run(run.id, signal.SIGTERM)
        self._show_stopping(run)
        log.info("%s: pid %s asked to stop (%s)", run.definition.name, run.pid, reason.value)

    def kill_all_now(self, now: float) -> None:
        """A second stop request: every run's grace ends now."""
        for run in self.runs.values():
            run.kill_at = now
            self._watch_deadline(run)

    def enforce_deadlines(self, now: float) -> None:
        """Stop runs past their deadline, and kill those still alive past their grace (through each run's own
        spawner)."""
        for run_id in self.deadlines.due(now):
            run = self.runs.get(run_id)
            if run is None:
                continue
            if run.stop_reason is None and run.deadline is not None and now >= run.deadline:
                self.stop(run, StopReason.TIMEOUT, now)
            elif run.kill_at is not None and now >= run.kill_at and not run.killed:
                run.killed = True
                log.warning("%s: pid %s did not stop within its grace; SIGKILL", run.definition.name, run.pid)
                run.spawner.signal_run(run.id, signal.SIGKILL)
            self._watch_deadline(run)

    def _watch_deadline(self, run: Run) -> None:
        """Put the run's next deadline on its agenda: its timeout until it is asked to stop, then its kill time."""
        when = None
        if run.stop_reason is None:
            when = run.deadline
        elif run.kill_at is not None and not run.killed:
            when = run.kill_at
        self.deadlines.set(run.id, when)

    def enforce_memory_limits(self, now: float) -> None:
        """Kill (SIGKILL, at once) the runs whose memory, with their descendants', is over their limit.

        At once, as the kernel's OOM killer would: a run over its memory limit is a danger to the server now,
        and the grace a timeout gets would let it grow further.
        """
        if not self.memory_limited or not self.memory.due(now):
            return
        limited = [self.runs[run_id] for run_id in sorted(self.memory_limited) if run_id in self.runs]
        for run, verdict in self.memory.check(limited, now):
            run.stop_reason, run.limit_verdict = StopReason.LIMIT, verdict
            run.kill_at, run.killed = now, True
            self._watch_deadline(run)
            self.memory_limited.discard(run.id)
            run.spawner.signal_run(run.id, signal.SIGKILL)
            # The group kill misses descendants that left the run's group (start_new_session, setsid), and the
            # spawner does not look for them until it shuts down: kill those the memory watch saw, by pid.
            self.memory.kill_descendants(run.id)
            self._show_stopping(run)
            log.warning("%s: pid %s killed: %s", run.definition.name, run.pid, verdict.message)

    def _show_stopping(self, run: Run) -> None:
        worker = self.workers.get(run.definition.name)
        if worker is not None:
            worker.state = WorkerState.STOPPING

    def waiting_on_spawner(self, now: float) -> float:
        """How long the spawner has kept us waiting: for a run's child to start, or for a run it was told to
        SIGKILL to be reported dead (0: nothing waits; both take it milliseconds when it answers)."""
        started = (now - run.started for run in self.runs.values() if run.pid is None)
        killed = (now - run.kill_at for run in self.runs.values() if run.killed and run.kill_at is not None)
        return max((*started, *killed), default=0.0)

    def next_times(self) -> list[float]:
        """When the runs next need the loop: a deadline, or the memory watch's next sample."""
        times = [] if not self.memory_limited else [self.memory.next_sample]
        deadline = self.deadlines.next_time()
        if deadline is not None:
            times.append(deadline)
        return times


def kept_output(text: str, verdict: Verdict, keep: int) -> str:
    """What of a run's output its record keeps: all the capture kept for a failure, else the last `keep` bytes."""
    if verdict.outcome.failed or not text:
        return text
    if keep <= 0:
        return ""
    data = text.encode()
    return text if len(data) <= keep else data[-keep:].decode("utf-8", errors="ignore")


def _parse_result(data: bytearray) -> dict[str, object] | None:
    if not data:
        return None
    try:
        parsed = json.loads(bytes(data))
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
