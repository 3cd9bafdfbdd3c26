"""When to tell, so that a job failing every minute does not page every minute (the storm users complain of).

Per worker: the first alert once it has failed `after` times in a row; then silence while it keeps failing, but
a reminder every `repeat`, and at once when the kind of failure changes (its signature: the outcome and the
exception type, signal or exit code); one `recovery` when it succeeds again after an alert. Across all
workers, at most `max_per_minute` messages a minute: the rest are folded into one summary, sent when the minute
is over (a database outage fails many workers at once).

The state of each worker (alerted or not, the signature alerted, when) is kept in the worker's row, so a
restart neither repeats an alert nor loses a recovery. Pure logic on given times: the tests drive it directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .settings import NotifySettings


@dataclass
class AlertState:
    """What was last told of one worker."""

    alerted: bool = False
    """A failure alert was sent and no recovery since."""
    signature: str | None = None
    sent_at: float | None = None
    """Unix time of the last failure alert or reminder."""


@dataclass(frozen=True)
class Decision:
    event: str | None
    """failure, recovery (or None: nothing to tell)."""
    reminder: bool = False
    changed: bool = False
    """The kind of failure changed since the last alert."""


def decide(state: AlertState, settings: NotifySettings, failed: bool, signature: str | None, streak: int,
           now: float) -> Decision:
    """What one run's end calls for (`streak`: failures in a row, this one included); `state` is updated."""
    if not failed:
        if state.alerted:
            state.alerted, state.signature, state.sent_at = False, None, None
            return Decision("recovery")
        return Decision(None)
    if streak < settings.after:
        return Decision(None)
    if not state.alerted:
        state.alerted, state.signature, state.sent_at = True, signature, now
        return Decision("failure")
    if signature != state.signature:
        state.signature, state.sent_at = signature, now
        return Decision("failure", changed=True)
    if settings.repeat and state.sent_at is not None and now - state.sent_at >= settings.repeat:
        state.sent_at = now
        return Decision("failure", reminder=True)
    return Decision(None)


@dataclass
class RateLimit:
    """At most `per_minute` messages in any minute-long window; the ones beyond are counted for a summary."""

    per_minute: int
    sent: list[float] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    """The workers whose messages were folded (for the summary)."""
    window_end: float | None = None

    def allow(self, now: float, worker: str) -> bool:
        self.sent = [t for t in self.sent if now - t < 60.0]
        if len(self.sent) < self.per_minute:
            self.sent.append(now)
            return True
        self.held.append(worker)
        if self.window_end is None:
            self.window_end = self.sent[0] + 60.0
        return False

    def summary_due(self, now: float) -> list[str] | None:
        """The workers folded since the window filled, once it is over (None: nothing to sum up yet)."""
        if self.window_end is None or now < self.window_end:
            return None
        held, self.held, self.window_end = self.held, [], None
        self.sent.append(now)
        return held
