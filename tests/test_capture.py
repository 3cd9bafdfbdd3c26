"""Tests of supervisor/supervise/capture.py: head + tail of a stream in bounded memory, with an exact dropped count."""
from __future__ import annotations

import re

from supervisor.supervise.capture import HEAD_BYTES, TAIL_BYTES, Capture

CHUNK = 64 * 1024


def _chunk(index: int, size: int = CHUNK) -> bytes:
    """A chunk whose content says where it came from, so a wrong slice shows up."""
    pattern = f"<{index:07d}>".encode()  # 9 bytes
    return (pattern * (size // len(pattern) + 1))[:size]


def _dropped(text: str) -> int | None:
    match = re.search(r"\[\.\.\. (\d+) bytes dropped \.\.\.\]", text)
    return int(match.group(1)) if match else None


def test_defaults() -> None:
    capture = Capture()
    assert capture.head_limit == HEAD_BYTES == 4 * 1024
    assert capture.tail_limit == TAIL_BYTES == 64 * 1024
    assert capture.text() == ""
    assert len(capture) == 0


def test_small_input_is_kept_whole_without_a_marker() -> None:
    capture = Capture()
    capture.feed(b"hello ")
    capture.feed(b"")
    capture.feed(b"world\n")
    assert capture.text() == "hello world\n"
    assert len(capture) == 12
    assert capture.dropped == 0


def test_input_of_exactly_head_plus_tail_is_kept_whole() -> None:
    capture = Capture(head=10, tail=20)
    data = bytes(range(65, 65 + 30))  # 'A'..'^'
    for i in range(0, len(data), 7):
        capture.feed(data[i : i + 7])
    assert capture.text() == data.decode()
    assert "dropped" not in capture.text()


def test_one_byte_over_head_plus_tail_drops_exactly_one_byte() -> None:
    capture = Capture(head=10, tail=20)
    data = b"0123456789" + b"X" + b"abcdefghijklmnopqrst"
    capture.feed(data)
    text = capture.text()
    assert text == "0123456789\n[... 1 bytes dropped ...]\nabcdefghijklmnopqrst"


def test_huge_input_keeps_head_and_last_tail_with_exact_dropped_count() -> None:
    capture = Capture()
    chunks = 800  # 50 MiB in 64 KiB chunks, then a short last one
    last = b"the end: Traceback (most recent call last) ...\n" * 20
    total = chunks * CHUNK + len(last)
    first_chunk = _chunk(0)
    previous = b""
    peak_tail = 0
    for i in range(chunks):
        data = _chunk(i)
        capture.feed(data)
        peak_tail = max(peak_tail, len(capture._tail))
        assert len(capture._head) <= capture.head_limit
        previous = data
    capture.feed(last)
    peak_tail = max(peak_tail, len(capture._tail))

    assert len(capture) == total
    # Memory stays bounded: the tail buffer never holds more than twice its limit between feeds.
    assert peak_tail <= 2 * TAIL_BYTES
    assert len(capture._head) == HEAD_BYTES

    expected_tail = (previous + last)[-TAIL_BYTES:]
    expected_dropped = total - HEAD_BYTES - TAIL_BYTES
    text = capture.text()
    head, marker, tail = text.partition(f"\n[... {expected_dropped} bytes dropped ...]\n")
    assert marker, f"no marker with {expected_dropped} dropped bytes in {text[HEAD_BYTES - 20 : HEAD_BYTES + 60]!r}"
    assert head == first_chunk[:HEAD_BYTES].decode()
    assert tail == expected_tail.decode()
    assert tail.endswith(last.decode())
    assert _dropped(text) == expected_dropped
    assert len(head) + expected_dropped + len(tail) == total


def test_dropped_count_is_exact_for_many_small_feeds() -> None:
    capture = Capture(head=100, tail=1000)
    fed = 0
    for i in range(10_000):
        piece = f"line {i}\n".encode()
        capture.feed(piece)
        fed += len(piece)
        assert len(capture._tail) <= 2 * 1000
    text = capture.text()
    dropped = _dropped(text)
    assert dropped == fed - 100 - 1000
    assert text.endswith("line 9999\n")
    assert text.startswith("line 0\nline 1\n")


def test_text_is_stable_across_calls_and_more_feeds() -> None:
    capture = Capture(head=4, tail=8)
    capture.feed(b"abcdefghijklmnopqrstuvwxyz")
    first = capture.text()
    assert first == capture.text()
    assert first == "abcd\n[... 14 bytes dropped ...]\nstuvwxyz"
    capture.feed(b"0123")
    assert capture.text() == "abcd\n[... 18 bytes dropped ...]\nwxyz0123"


def test_invalid_utf8_is_decoded_with_replacement() -> None:
    capture = Capture()
    capture.feed(b"before \xff\xfe after")
    text = capture.text()
    assert text == "before \ufffd\ufffd after"


def test_invalid_utf8_in_head_and_tail_of_a_dropped_stream() -> None:
    capture = Capture(head=4, tail=4)
    capture.feed(b"ab\xffc" + b"x" * 100 + b"\xc3(yz")
    text = capture.text()
    assert text.startswith("ab\ufffdc\n")
    assert text.endswith("\n\ufffd(yz")
    assert _dropped(text) == 100


def test_multibyte_character_split_across_feeds_is_kept() -> None:
    capture = Capture(head=3, tail=100)
    # 'é' is 0xC3 0xA9; the head limit cuts it between its two bytes.
    capture.feed(b"ab\xc3")
    capture.feed(b"\xa9 done")
    assert capture.text() == "ab\u00e9 done"


def test_head_zero_keeps_only_the_tail() -> None:
    capture = Capture(head=0, tail=5)
    capture.feed(b"0123456789abcdef")
    assert capture.text() == "\n[... 11 bytes dropped ...]\nbcdef"
