"""Test tools for `worker-supervisor web`: the real command in a subprocess, and plain HTTP requests to it."""
from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from helpers import wait_until

SERVING = re.compile(r"serving on (http://127\.0\.0\.1:(\d+))")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class WebProcess:
    """`python -m supervisor web` on a free loopback port, its log going to a file; `url` once it serves."""

    def __init__(self, cwd: Path, url: str | None, args: Iterable[str] = (), env: dict[str, str] | None = None) -> None:
        self.log_path = cwd / f"web-{time.monotonic_ns()}.log"
        argv = [sys.executable, "-m", "supervisor", "web", "--listen", "127.0.0.1:0", *args]
        if url is not None:
            argv += ["--db", url]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env={**environ, **(env or {})})
        # The handshake: the one line it logs once it listens (or it exits, saying why).
        found = wait_until(lambda: SERVING.search(self.log()) or self.process.poll() is not None, timeout=60,
                           what="the web process to listen")
        if not isinstance(found, re.Match):
            raise AssertionError(f"web exited {self.process.returncode}: {self.log()}")
        self.url = found.group(1)
        self.port = int(found.group(2))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, path: str, method: str = "GET", body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        """One request on a connection of its own (the server speaks HTTP/1.0: one request per connection)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()

    def get(self, path: str) -> Answer:
        return self.request(path)

    def stop(self) -> int:
        """SIGTERM, and its exit status (it must stop within 10 seconds)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()
