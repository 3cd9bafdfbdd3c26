"""The supervisor's side of alerting: decide, at each run's end, what to tell (notify/policy.py), build the event
(notify/events.py), and hand it to the notifier process, which delivers it. Only the supervisor can report a
crash, a timeout or a lost run, so it is the one that tells; nothing here waits on a sink.

A failing sink is logged once per spell (when it starts failing, and when it works again), not per event.
"""
from __future__ import annotations

import logging
import selectors
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from ..notify.events import run_event, summary_event
from ..notify.policy import AlertState, RateLimit, decide
from ..notify.settings import NotifySettings
from ..outcome import Outcome, Verdict, signal_name
from ..record import records
from ..record.recording import Recording
from .helper import HelperProcess
from .worker_status import Run, WorkerStatus

log = logging.getLogger("supervisor")

CLOSE_WAIT = 5.0
MAX_WAITING = 1000
"""Events waiting for the notifier to read them (it may be stuck on a sink): beyond this many, new ones are dropped
and counted, so the supervisor's memory stays bounded whatever a sink does."""
PING_EVERY = 60.0
"""A worker that runs more often pings its starts and successes at most this often (its failures always)."""
"""At a clean stop, how long the notifier may take over what is still queued."""


class NotifierProcess(HelperProcess):
    module = "supervisor.notify.notifier"


class Alerts:
    """Alert state per worker, the rate limit, and the notifier."""

    def __init__(self, settings: NotifySettings, recording: Recording, selector: selectors.BaseSelector, node: str,
                 pid: int) -> None:
        self.settings = settings
        self.wanted = self._wanted(settings)
        """Anything to send at all (kept, as every run's end asks)."""
        self.recording = recording
        self.selector = selector
        self.node, self.pid = node, pid
        self.states: dict[str, AlertState] = {}
        self.limit = RateLimit(settings.max_per_minute)
        self.notifier: NotifierProcess | None = None
        self.failing_sinks: set[str] = set()
        self.waiting: list[dict[str, Any]] = []
        self.pinged: set[str] = set()
        """Runs whose start was pinged (their end is pinged with the same run id)."""
        self.last_ping: dict[str, float] = {}
        self.results: dict[tuple[str, str], int] = {}
        """Deliveries by (sink, delivered|failed), and events held by the rate limit as (*, held)."""

    @staticmethod
    def _wanted(settings: NotifySettings) -> bool:
        """Whether any sink or ping is configured, for all workers or for one."""
        return any(s.sinks or s.ping_url for s in (settings, *settings.workers.values()))

    def start(self) -> None:
        if not self.wanted:
            return
        notifier = NotifierProcess([])
        notifier.start()
        notifier.watch(self.selector, "notifier")
        self.notifier = notifier
        for run in self.waiting:
            self.lost([run])
        self.waiting = []

    def lost(self, runs: list[dict[str, Any]]) -> None:
        """Runs recorded lost without this loop seeing them end: an earlier supervisor's, found at start, or a dead
        node's, declared by this one. Each is told (`lost` events), within the rate limit."""
        if self.notifier is None and self.wanted:
            self.waiting.extend(runs)  # found before the notifier started: told once it has
            return
        now = time.time()
        for run in runs:
            name = str(run["worker"])
            settings = self.settings.for_worker(name)
            if not settings.sinks or "lost" not in settings.on:
                continue
            facts = {"outcome": Outcome.LOST.value, "ended_at": now, **run}
            payload = run_event("lost", name, self.node, self.pid, facts, {})
            if self.limit.allow(now, name):
                self.send(payload, settings)

    def reconfigure(self, settings: NotifySettings) -> None:
        """A reload's [notify] tables: they apply from the next run's end; a notifier starts if none ran."""
        self.settings = settings
        self.wanted = self._wanted(settings)
        self.limit.per_minute = settings.max_per_minute
        if self.notifier is None:
            self.start()

    def seed(self, stored: dict[str, Any]) -> None:
        """The alert state the record keeps (a restart neither repeats an alert nor loses its recovery)."""
        for name, row in stored.items():
            signature = getattr(row, "alert_signature", None)
            if signature and name not in self.states:
                sent = getattr(row, "alert_sent_at", None)
                self.states[name] = AlertState(True, signature, _unix(sent))

    # -- a run ended -------------------------------------------------------------------------------------------------

    def run_ended(self, run: Run, verdict: Verdict, status: WorkerStatus, exit_code: int | None,
                  signum: int | None, duration: float, quarantined: bool) -> None:
        """Tell what this run's end calls for. With nothing configured it returns at once: every run ends here."""
        if not self.wanted:
            return
        name = run.definition.name
        settings = self.settings.for_worker(name)
        if not verdict.outcome.counted:
            self.pinged.discard(run.id)
            return  # our own stop interrupted it: nothing to tell
        self._ping_end(settings, run, verdict.outcome.failed)
        if not settings.sinks:
            return
        state = self.states.setdefault(name, AlertState())
        before = (state.alerted, state.signature, state.sent_at)
        now = time.time()
        failed = verdict.outcome.failed
        decision = decide(state, settings, failed, _signature(verdict, exit_code, signum), status.consecutive_failures,
                          now)
        events = []
        if decision.event == "failure":
            events.append("lost" if verdict.outcome is Outcome.LOST else "failure")
        elif decision.event == "recovery":
            events.append("recovery")
        elif not failed and "success" in settings.on:
            events.append("success")
        if quarantined:
            events.append("quarantine")
        if before != (state.alerted, state.signature, state.sent_at):
            self.recording.record(records.alert_state(name, state.signature, _moment(state.sent_at)))
        events = [event for event in events if event in settings.on]
        if not events:
            return
        facts = {"id": run.id, "attempt": run.attempt, "outcome": verdict.outcome.value, "exit_code": exit_code,
                 "signal": signal_name(signum) if signum else None, "pid": run.pid, "started_at": run.started_at,
                 "ended_at": now, "duration": round(duration, 6), "message": verdict.message,
                 "traceback": verdict.traceback, "stderr": run.stderr.text()}
        counts = {"consecutive_failures": status.consecutive_failures, "success_count": status.successes,
                  "failure_count": status.failures, "paused": status.paused, "quarantined": status.quarantined}
        for event in events:
            note = "the kind of failure changed" if decision.changed else "still failing" if decision.reminder else ""
            payload = run_event(event, name, self.node, self.pid, facts, counts, note)
            if self.limit.allow(now, name):
                self.send(payload, settings)
            else:
                self.results[("*", "held")] = self.results.get(("*", "held"), 0) + 1

    # -- a dead man's switch, pinged at each run's start and end -------------------------------------------------

    def run_started(self, run: Run) -> None:
        """Ping the start of a run (a worker that runs more often than once a minute: at most once a minute, as a
        ping service drops more than a few a minute; its success is pinged only for the runs whose start was)."""
        settings = self.settings.for_worker(run.definition.name)
        if settings.sinks and "start" in settings.on and self.limit.allow(time.time(), run.definition.name):
            facts = {"id": run.id, "attempt": run.attempt, "pid": run.pid, "started_at": run.started_at}
            self.send(run_event("start", run.definition.name, self.node, self.pid, facts, {}), settings)
        if not settings.ping_url:
            return
        interval, name, now = run.definition.interval, run.definition.name, time.monotonic()
        if interval is not None and interval < PING_EVERY:
            last = self.last_ping.get(name)
            if last is not None and now - last < PING_EVERY:
                return
            self.last_ping[name] = now
        self.pinged.add(run.id)
        self._ping(settings, run, "start")

    def _ping_end(self, settings: NotifySettings, run: Run, failed: bool) -> None:
        """Ping the end: a failure always (with the stderr tail), a success when its start was pinged."""
        started = run.id in self.pinged
        self.pinged.discard(run.id)
        if settings.ping_url and (failed or started):
            self._ping(settings, run, "fail" if failed else "success", run.stderr.text() if failed else "")

    def _ping(self, settings: NotifySettings, run: Run, kind: str, body: str = "") -> None:
        rid = str(uuid.UUID(run.id))
        self._to_notifier({"event": f"ping-{kind}", "worker": run.definition.name},
                          {"ping": {"url": settings.ping_url, "kind": kind, "rid": rid, "body": body}}, settings.timeout)

    def send(self, payload: dict[str, Any], settings: NotifySettings) -> None:
        self._to_notifier(payload, settings.sinks, settings.timeout)

    def _to_notifier(self, event: dict[str, Any], sinks: dict[str, Any], timeout: float) -> None:
        notifier = self.notifier
        if notifier is None or notifier.channel_closed:
            return
        if len(notifier.outbox) >= MAX_WAITING:
            self.results[("*", "dropped")] = self.results.get(("*", "dropped"), 0) + 1
            if self.results[("*", "dropped")] == 1:
                log.warning("notify: the notifier is %d events behind (a sink hangs?); new ones are dropped",
                            MAX_WAITING)
            return
        notifier.send("event", event=event, sinks=sinks, timeout=timeout)

    # -- the loop's calls --------------------------------------------------------------------------------------------

    def tend(self) -> None:
        """Send the summary of what the rate limit held back, once its minute is over (each pass asks)."""
        if self.limit.window_end is None:
            return
        held = self.limit.summary_due(time.time())
        if held and self.settings.sinks:
            self.send(summary_event(held, self.node, self.pid), self.settings)

    def next_time(self, now: float) -> float | None:
        """When the loop must come back for the summary (monotonic), if one is pending."""
        if self.limit.window_end is None:
            return None
        return now + max(0.0, self.limit.window_end - time.time())

    def handle(self, kind: str) -> None:
        notifier = self.notifier
        if notifier is None:
            return
        if kind == "message":
            for message in notifier.messages():
                self._delivered(message)
            if notifier.channel_closed:
                notifier.unwatch(self.selector, notifier.control)
        elif kind == "output":
            notifier.log_output(self.selector, log, logging.WARNING, "notifier")
        else:
            exit_code, signum = notifier.reap()
            log.error("notifier (pid %d) exited (%s); alerts are not sent until the next start", notifier.pid,
                      f"signal {signum}" if signum else f"status {exit_code}")
            notifier.unwatch(self.selector)
            notifier.close()
            self.notifier = None

    def _delivered(self, message: Any) -> None:
        sink, result = str(message["sink"]), str(message["result"])
        outcome = "delivered" if result == "delivered" else "failed"
        self.results[(sink, outcome)] = self.results.get((sink, outcome), 0) + 1
        if outcome == "failed" and sink not in self.failing_sinks:
            self.failing_sinks.add(sink)
            log.warning("notify: the %s sink failed to deliver %s of %s: %s (said once until it works again)", sink,
                        message.get("event"), message.get("worker"), result)
        elif outcome == "delivered" and sink in self.failing_sinks:
            self.failing_sinks.discard(sink)
            log.info("notify: the %s sink delivers again", sink)

    def close(self) -> None:
        """Let the notifier deliver what is queued (a few seconds at most), then let it go."""
        notifier = self.notifier
        if notifier is None:
            return
        notifier.unwatch(self.selector)
        if not notifier.exited:
            notifier.flush()
            notifier.close_channel()
            ready = selectors.DefaultSelector()
            ready.register(notifier.pidfd, selectors.EVENT_READ)
            if not ready.select(CLOSE_WAIT):
                notifier.kill()
            ready.close()
            notifier.reap()
        notifier.close()
        self.notifier = None


def _signature(verdict: Verdict, exit_code: int | None, signum: int | None) -> str:
    """The kind of failure: its outcome and what tells it apart (an exception's type, a signal, an exit status)."""
    outcome = verdict.outcome
    if outcome is Outcome.ERROR:
        return f"error:{verdict.message.split(':', 1)[0]}"
    if signum:
        return f"{outcome.value}:{signal_name(signum)}"
    if exit_code:
        return f"{outcome.value}:{exit_code}"
    return str(outcome.value)


def _unix(moment: datetime | None) -> float | None:
    return None if moment is None else moment.replace(tzinfo=timezone.utc).timestamp()


def _moment(unix: float | None) -> datetime | None:
    return None if unix is None else datetime.fromtimestamp(unix, timezone.utc).replace(tzinfo=None)
