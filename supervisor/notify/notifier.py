"""The notifier: a helper process (like the recorder) that delivers the supervisor's events to their sinks.

No HTTP, no subprocess and no waiting on a sink ever happens in the supervisor's loop: it sends each event here
and goes on. Here, one event at a time, each sink gets its delivery within its timeout and up to two more tries
(after 1 s and 3 s) while the queue is short. The queue holds at most MAX_QUEUE events: a sink that hangs makes
the oldest ones give way, counted, never the supervisor's memory grow. Each delivery's result goes back to the
supervisor, which logs a failing sink once per spell and counts every result.
"""
from __future__ import annotations

import os
import socket
import time
from collections import deque
from typing import NoReturn

from ..helper_main import become_helper, helper_arguments
from ..protocol import Message, receive, send
from .sinks import deliver

MAX_QUEUE = 1000
RETRY_DELAYS = (1.0, 3.0)
RETRY_WHEN_SHORTER = 10
"""Failed deliveries are tried again only while fewer events than this wait behind them."""


class Notifier:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.queue: deque[Message] = deque()
        self.dropped = 0
        self.closed = False

    def serve(self) -> None:
        while not self.closed or self.queue:
            self.take(block=not self.queue)
            if self.queue:
                self.handle(self.queue.popleft())

    def take(self, block: bool) -> None:
        """Queue every message waiting (waiting for one if `block`)."""
        while not self.closed:
            try:
                message, fds = receive(self.control, block=block)
            except BlockingIOError:
                return
            for fd in fds:
                os.close(fd)
            if message is None:
                self.closed = True  # the supervisor is gone (or stopping): deliver what is queued, then end
                return
            if len(self.queue) >= MAX_QUEUE:
                self.queue.popleft()
                self.dropped += 1
            self.queue.append(message)
            block = False

    def handle(self, message: Message) -> None:
        event = message["event"]
        for sink, target in dict(message["sinks"]).items():
            result = deliver(sink, target, event, float(message["timeout"]))
            for delay in RETRY_DELAYS:
                if result == "delivered" or len(self.queue) >= RETRY_WHEN_SHORTER or self.closed:
                    break
                time.sleep(delay)
                self.take(block=False)
                result = deliver(sink, target, event, float(message["timeout"]))
            self.report(sink, event, result)

    def report(self, sink: str, event: Message, result: str) -> None:
        if self.closed:
            return
        try:
            send(self.control, "delivered", sink=sink, event=event.get("event"), worker=event.get("worker"),
                 result=result, dropped=self.dropped)
        except OSError:
            self.closed = True


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of `python -m supervisor.notify.notifier`; only the supervisor starts it."""
    args = helper_arguments("supervisor.notify.notifier").parse_args(argv)
    # A supervisor that dies takes us with it (what is queued is lost); one that stops cleanly closes our channel
    # and gives us a few seconds for what is queued (supervise/alerts.py).
    Notifier(become_helper(args, "notifier")).serve()
    os._exit(0)


if __name__ == "__main__":
    main()
