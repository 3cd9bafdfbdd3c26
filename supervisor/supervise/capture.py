"""A bounded buffer for what a child writes: the first bytes, the last bytes, and how much fell between."""
from __future__ import annotations

HEAD_BYTES = 4 * 1024
TAIL_BYTES = 64 * 1024


class Capture:
    """Keep the head and the tail of a stream of unknown length in bounded memory.

    A child may write gigabytes to stderr; the supervisor keeps `head` bytes from the start (where the first
    error usually is), `tail` bytes from the end (where the traceback or faulthandler dump is), and counts the
    bytes dropped in between.
    """

    __slots__ = ("head_limit", "tail_limit", "_head", "_tail", "dropped", "total")

    def __init__(self, head: int = HEAD_BYTES, tail: int = TAIL_BYTES) -> None:
        self.head_limit = head
        self.tail_limit = tail
        self._head = bytearray()
        self._tail = bytearray()
        self.dropped = 0
        self.total = 0

    def feed(self, data: bytes) -> None:
        """Add bytes read from the stream."""
        self.total += len(data)
        room = self.head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data:
            return
        self._tail += data
        # Trim only when the tail has doubled, so feeding many small chunks stays linear.
        excess = len(self._tail) - self.tail_limit
        if excess > self.tail_limit:
            del self._tail[:excess]
            self.dropped += excess

    def text(self) -> str:
        """Decode what was kept: the head, a marker with the count of dropped bytes, and the tail."""
        dropped = self.dropped + max(0, len(self._tail) - self.tail_limit)
        tail = self._tail[-self.tail_limit :]
        if not dropped:
            return (bytes(self._head) + bytes(tail)).decode("utf-8", errors="replace")
        marker = f"\n[... {dropped} bytes dropped ...]\n"
        return bytes(self._head).decode("utf-8", errors="replace") + marker + bytes(tail).decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return self.total
