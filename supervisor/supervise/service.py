"""What the service manager hears from us: systemd's notify protocol (sd_notify), and its watchdog.

Under `Type=notify` systemd passes `NOTIFY_SOCKET` (a datagram socket: a path, or `@name` in the abstract
namespace) and, with `WatchdogSec=`, `WATCHDOG_USEC` (and `WATCHDOG_PID`). Each message is one datagram of
`KEY=VALUE` lines. The protocol is stable and is the API (systemd's own man page ships a self-contained
implementation), so it is a few lines here rather than a dependency on libsystemd.

- READY=1 once the first spawner has imported the workers and reported them: only then is the service up.
- STATUS=... a line for `systemctl status`: counts of workers, runs, failures, records waiting, the database.
- WATCHDOG=1 every half watchdog period, but only while the loop starts due work on time: a loop that passes but
  has fallen behind (a spawner that no longer answers, due runs that never start) stops pinging, and systemd
  restarts the service. A live process or a ticking loop does not prove work is started; a due run that starts does.
- RELOADING=1 and STOPPING=1 around a reload and at the first stop signal.

The variables are taken out of our environment at once, so that no helper, spawner or run inherits them and
speaks for the unit (sd_notify's `unset_environment`).
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import MutableMapping

log = logging.getLogger("supervisor")

STATUS_INTERVAL = 5.0
"""A changed STATUS line is sent at most this often (systemd keeps only the last one)."""
NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class ServiceManager:
    """Our side of sd_notify: a no-op when no service manager listens."""

    def __init__(self, environ: MutableMapping[str, str] = os.environ) -> None:
        found = {name: environ.pop(name, None) for name in NOTIFY_VARIABLES}
        address = found["NOTIFY_SOCKET"] or None
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog = _watchdog_period(found["WATCHDOG_USEC"], found["WATCHDOG_PID"])
        """The watchdog's period in seconds, when systemd set one for us; we ping every half of it."""
        self.socket: socket.socket | None = None
        self.failed = False
        self.ready_sent = False
        self.stopping_sent = False
        self.next_ping = 0.0
        self.withheld = False
        self.status = ""
        self.status_sent_at = -STATUS_INTERVAL

    @property
    def active(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one message (lines joined); never raise: a service manager that went away is not our failure."""
        if self.address is None:
            return False
        try:
            if self.socket is None:
                self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self.socket.setblocking(False)
            self.socket.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError as exc:
            if not self.failed:
                log.warning("systemd notify socket %s: %s (further failures are not logged)",
                            self.address.replace("\0", "@"), exc.strerror or exc)
                self.failed = True
            return False

    def ready(self, status: str) -> None:
        """The service is up: the first spawner reported its workers."""
        if not self.ready_sent:
            self.ready_sent = True
            self.status, self.status_sent_at = status, time.monotonic()
            self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def reloaded(self) -> None:
        self.send("READY=1")

    def stopping(self, status: str) -> None:
        if not self.stopping_sent:
            self.stopping_sent = True
            self.send("STOPPING=1", f"STATUS={status}")

    def tend(self, now: float, behind: float, status: str) -> None:
        """Ping the watchdog when due, unless the loop is `behind` (seconds its due work has waited) by more
        than a watchdog period; send the status line when it changed."""
        if self.address is None:
            return
        if self.watchdog is not None and now >= self.next_ping:
            if behind <= self.watchdog:
                self.send("WATCHDOG=1")
                if self.withheld:
                    log.warning("the loop caught up: the systemd watchdog is pinged again")
                self.withheld = False
            elif not self.withheld:
                log.error("due work has waited %.0fs to start: the systemd watchdog is no longer pinged "
                          "(systemd restarts the service if it does not catch up)", behind)
                self.withheld = True
            self.next_ping = now + self.watchdog / 2
        if self.ready_sent and status != self.status and now - self.status_sent_at >= STATUS_INTERVAL:
            if self.send(f"STATUS={status}"):
                self.status, self.status_sent_at = status, now

    def next_time(self) -> float | None:
        """When the loop must next come to us: the next watchdog ping (a status change waits for it too)."""
        if self.address is None:
            return None
        if self.watchdog is not None:
            return self.next_ping
        return self.status_sent_at + STATUS_INTERVAL if self.ready_sent else None

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None


def _watchdog_period(usec: str | None, pid: str | None) -> float | None:
    """The watchdog period systemd asks of us, in seconds; None when none, or when it is meant for another pid."""
    if not usec:
        return None
    try:
        period = int(usec) / 1_000_000
        if pid and int(pid) != os.getpid():
            return None
    except ValueError:
        log.warning("ignoring a WATCHDOG_USEC or WATCHDOG_PID that is not a number: %r, %r", usec, pid)
        return None
    return period if period > 0 else None
