"""Run a command in a real pseudo-terminal and read its screen as a person would (pyte emulates the terminal)."""
from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Sequence

import pyte


class Terminal:
    """A command in a pseudo-terminal of a given size, with an emulated screen fed from its output."""

    def __init__(self, argv: Sequence[str], cwd: Path, columns: int = 140, lines: int = 40) -> None:
        self.screen = pyte.Screen(columns, lines)
        self.stream = pyte.ByteStream(self.screen)
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(lines)}
        self.process = subprocess.Popen(
            list(argv), cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.master = master

    def pump(self, timeout: float = 0.05) -> None:
        """Feed whatever the program wrote to the screen."""
        while select.select([self.master], [], [], timeout)[0]:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the program closed the terminal
                return
            if not data:
                return
            self.stream.feed(data)
            timeout = 0

    def text(self) -> str:
        """The screen as it shows now, one line per row."""
        return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, predicate: "object", timeout: float = 60.0) -> str:
        """Pump until `predicate(screen text)` holds; return the screen; fail with the screen otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            screen = self.text()
            if predicate(screen):  # type: ignore[operator]
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"the screen never showed what was expected:\n{screen}")

    def interrupt(self) -> int:
        """Press Ctrl-C (SIGINT to the foreground program) and return its exit code."""
        self.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        while self.process.poll() is None and time.monotonic() < deadline:
            self.pump()
        self.pump()
        return self.process.wait(5)

    def close(self) -> None:
        """Stop the program if it still runs, and release the terminal."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)
