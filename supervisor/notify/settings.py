"""The `[notify]` table of the config, and a worker's own `[worker.NAME.notify]` table over it.

    [notify]
    webhook = "https://hooks.slack.com/services/..."   # JSON POST with a Slack-compatible "text"
    command = ["/usr/local/bin/page-oncall"]            # the event as JSON on stdin, SUPERVISOR_* in its environment
    mailto = "ops@example.com"                          # mail, through sendmail -t (cron's way) or smtp_host
    smtp_host = "127.0.0.1:25"                          # an SMTP server instead of sendmail
    ping_url = "https://hc-ping.com/<uuid>"             # a dead man's switch (worker tables): /start, success, /fail
    on = ["failure", "recovery", "quarantine", "lost"]  # the events sent (default)
    after = 1             # failures in a row before the first alert
    repeat = "6h"         # a reminder while it keeps failing (0: never)
    max_per_minute = 10   # beyond it, one summary instead of many
    timeout = "10s"       # per delivery

A worker's table may override any key (its own webhook, `after = 3`, `on = []` to silence it).
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from ..units import parse_duration

EVENTS = ("failure", "recovery", "quarantine", "lost", "start", "success")
DEFAULT_ON = ("failure", "recovery", "quarantine", "lost")
KEYS = ("webhook", "command", "mailto", "smtp_host", "mail_from", "ping_url", "on", "after", "repeat",
        "max_per_minute", "timeout")
SENDMAIL = "/usr/sbin/sendmail"


@dataclass(frozen=True)
class NotifySettings:
    webhook: str | None = None
    command: tuple[str, ...] | None = None
    mailto: tuple[str, ...] | None = None
    smtp_host: str | None = None
    mail_from: str | None = None
    ping_url: str | None = None
    """A Healthchecks-style check of this worker's runs: pinged at each start, success and failure."""
    on: tuple[str, ...] = DEFAULT_ON
    after: int = 1
    repeat: float = 6 * 3600.0
    max_per_minute: int = 10
    timeout: float = 10.0
    workers: dict[str, NotifySettings] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def sinks(self) -> dict[str, Any]:
        """The configured sinks by name (what the notifier delivers to); read at every run's end, made once."""
        found: dict[str, Any] = {}
        if self.webhook:
            found["webhook"] = self.webhook
        if self.command:
            found["command"] = list(self.command)
        if self.mailto:
            found["mail"] = {"to": list(self.mailto), "smtp": self.smtp_host, "from": self.mail_from}
        return found

    def for_worker(self, name: str) -> NotifySettings:
        return self.workers.get(name, self)


def read_notify(table: Any, where: str, base: NotifySettings | None = None) -> NotifySettings:
    """Read a `[notify]` table (over `base`, for a worker's own); raise ValueError naming the key."""
    if not isinstance(table, dict):
        raise ValueError(f"[notify] must be a table, got {table!r}")
    settings = base or NotifySettings()
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key not in KEYS:
            raise ValueError(f"unknown key {key!r} in [notify] (known: {', '.join(KEYS)})")
        try:
            changes[key] = _READERS[key](value)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return replace(settings, **changes)


def _webhook(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
        raise ValueError(f"webhook must be an http:// or https:// URL, got {value!r}")
    return value


def _command(value: Any) -> tuple[str, ...] | None:
    if value in (None, "", []):
        return None
    if isinstance(value, str):
        value = shlex.split(value)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"command must be a list of words (or one string), got {value!r}")
    return tuple(value)


def _addresses(value: Any) -> tuple[str, ...] | None:
    if value in (None, "", []):
        return None
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) and "@" in v for v in value):
        raise ValueError(f"must be a mail address, or a list of them, got {value!r}")
    return tuple(value)


def _host_port(value: Any) -> str | None:
    if value in (None, ""):
        return None
    host, _, port = str(value).rpartition(":")
    if not isinstance(value, str) or not host or not port.isdigit():
        raise ValueError(f"must be HOST:PORT, such as 127.0.0.1:25, got {value!r}")
    return value


def _text(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ValueError(f"must be text, got {value!r}")
    return value


def _events(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(v in EVENTS for v in value):
        raise ValueError(f"on must be a list of events among {', '.join(EVENTS)}, got {value!r}")
    return tuple(value)


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be a whole number of at least 1, got {value!r}")
    return value


def _duration(value: Any, zero: bool = False) -> float:
    if zero and value in (0, "0"):
        return 0.0
    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ValueError(f"must be a duration such as '30s' or '6h'{' (0: never)' if zero else ''}, got {value!r}")
    return seconds


_READERS: dict[str, Any] = {
    "webhook": _webhook,
    "command": _command,
    "mailto": _addresses,
    "smtp_host": _host_port,
    "mail_from": _text,
    "ping_url": _webhook,
    "on": _events,
    "after": _whole,
    "repeat": lambda v: _duration(v, zero=True),
    "max_per_minute": _whole,
    "timeout": _duration,
}
