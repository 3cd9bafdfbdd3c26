"""How much CPU and memory a run uses: its child and every descendant, measured with psutil."""
from __future__ import annotations

import psutil


class ResourceSampler:
    """CPU and memory of a run: its child and every descendant, as psutil sees them now."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.known: dict[int, psutil.Process] = {}  # kept, so cpu_percent measures since the previous sample
        self.cpu_percent: float | None = None
        self.rss: int | None = None

    def sample(self) -> None:
        """Measure now; a process that ended meanwhile just drops out."""
        try:
            members = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        cpu, rss, alive = 0.0, 0, {}
        for member in members:
            process = self.known.get(member.pid, member)
            try:
                with process.oneshot():
                    cpu += process.cpu_percent()
                    rss += process.memory_info().rss
            except psutil.Error:
                continue
            alive[process.pid] = process
        self.known = alive
        self.cpu_percent, self.rss = cpu, rss
