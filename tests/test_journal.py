"""Tests of supervisor/record/journal.py (the local file records wait in) and recording.prepare (start-up replays what
an earlier supervisor left there into the database, once), on real files and real databases."""
from __future__ import annotations

import json
import os
import socket
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest

from dbtools import query
from supervisor.record import records
from supervisor.errors import StoreUnavailable
from supervisor.record.journal import READ_CHUNK, Journal, read_records, replay
from supervisor.outcome import Outcome, Verdict
from supervisor.record.recording import RecordingSettings, prepare
from supervisor.record.records import Record
from supervisor.record.store import Store, utcnow
from supervisor.worker import WorkerDefinition

NODE = socket.gethostname()
OK = Verdict(Outcome.SUCCEEDED, "")
BOOM = Verdict(Outcome.ERROR, "ValueError: boom", "Traceback (most recent call last):\nValueError: boom\n")
TORN = b'{"type":"run_started","run":"cut-sho'


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "journal")


@pytest.fixture
def journal(path: str) -> Iterator[Journal]:
    j = Journal(path)
    try:
        yield j
    finally:
        j.close()


def _record(n: int, text: str = "") -> Record:
    return {"type": "run_spawned", "run": f"run-{n}", "worker": "w", "pid": n, "text": text}


def _tear(path: str, data: bytes = TORN) -> None:
    """Append the start of a line and no end, as a writer killed mid-write leaves it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _read(path: str, start: int, end: int, limit: int = READ_CHUNK) -> tuple[list[Record], int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_records(fd, start, end, limit)
    finally:
        os.close(fd)


# -- the journal file --------------------------------------------------------------------------------------------------


def test_append_returns_the_offset_each_record_ends_at(journal: Journal, path: str) -> None:
    offsets = [journal.append(_record(n, "x" * n)) for n in range(5)]
    assert offsets == sorted(set(offsets)) and offsets[0] > 0
    data = Path(path).read_bytes()
    assert len(data) == offsets[-1] == journal.size
    ends, total = [], 0
    for line in data.splitlines(keepends=True):
        total += len(line)
        ends.append(total)
    assert ends == offsets
    assert [json.loads(line) for line in data.splitlines()] == [_record(n, "x" * n) for n in range(5)]


def test_a_reopened_journal_appends_after_what_it_holds(path: str) -> None:
    first = Journal(path)
    end = first.append(_record(1))
    first.close()
    again = Journal(path)
    try:
        assert again.size == end
        assert again.append(_record(2)) > end
        assert [r["run"] for batch, _ in replay(path) for r in batch] == ["run-1", "run-2"]
        again.truncate()
        assert (again.size, os.path.getsize(path)) == (0, 0)
        assert list(replay(path)) == []
        line_end = again.append(_record(3))
        assert line_end == os.path.getsize(path)
        assert [r["run"] for batch, _ in replay(path) for r in batch] == ["run-3"]
    finally:
        again.close()


def test_read_records_returns_whole_records_only(journal: Journal, path: str) -> None:
    offsets = [journal.append(_record(n)) for n in range(3)]
    _tear(path)
    size = os.path.getsize(path)
    assert size == offsets[-1] + len(TORN)
    found, end = _read(path, 0, size)
    assert found == [_record(n) for n in range(3)]
    assert end == offsets[-1]
    # From the end of the last whole record, only the torn line is left: nothing, and no progress.
    assert _read(path, end, size) == ([], end)
    # From the middle: the records between two offsets.
    assert _read(path, offsets[0], offsets[2]) == ([_record(1), _record(2)], offsets[2])
    # A limit that cuts a record in two returns the records before it.
    assert _read(path, 0, size, limit=offsets[1] + 5) == ([_record(0), _record(1)], offsets[1])
    assert list(replay(path)) == [([_record(n) for n in range(3)], offsets[-1])]


def test_a_record_larger_than_the_read_limit_is_read_whole(journal: Journal, path: str) -> None:
    big = _record(2, "y" * 10_000)
    o1 = journal.append(_record(1))
    o2 = journal.append(big)
    ends = [journal.append(_record(n)) for n in range(3, 400)]  # a backlog behind the big record
    limit = 256
    assert o2 - o1 > 10 * limit and ends[-1] - o2 > 50 * limit
    assert _read(path, 0, ends[-1], limit) == ([_record(1)], o1)
    found, following = _read(path, o1, ends[-1], limit)
    assert found[0] == big and following >= o2  # whole
    # ... and that record is what the read is about: not the whole backlog behind it in one batch (one
    # transaction, all in memory), when `limit` says "at most about this many bytes".
    assert following - o2 <= limit, (
        f"read_records(limit={limit}) returned {len(found)} records, {following - o1} bytes, for one record of {o2 - o1}"
    )
    # Reading on from there gives the rest, in order.
    rest = []
    while following < ends[-1]:
        batch, following = _read(path, following, ends[-1], limit)
        rest += batch
    assert [r["pid"] for r in found[1:] + rest] == list(range(3, 400))


def test_a_large_record_cut_short_is_no_record(journal: Journal, path: str) -> None:
    end = journal.append(_record(1))
    _tear(path, b'{"type":"run_spawned","text":"' + b"z" * 5000)
    size = os.path.getsize(path)
    assert _read(path, 0, size, limit=256) == ([_record(1)], end)
    assert _read(path, end, size, limit=256) == ([], end)
    assert list(replay(path)) == [([_record(1)], end)]


def test_replay_yields_every_record_in_batches_ending_on_record_boundaries(journal: Journal, path: str) -> None:
    count = 2500
    offsets = [journal.append(_record(n, "p" * 1000)) for n in range(count)]
    assert offsets[-1] > 2 * READ_CHUNK
    _tear(path)
    batches = list(replay(path))
    assert len(batches) >= 3
    ends = [end for _, end in batches]
    assert ends == sorted(set(ends)) and set(ends) <= set(offsets) and ends[-1] == offsets[-1]
    assert [r["pid"] for batch, _ in batches for r in batch] == list(range(count))


def test_replay_of_a_missing_or_empty_journal_yields_nothing(tmp_path: Path) -> None:
    assert list(replay(str(tmp_path / "never-written"))) == []
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert list(replay(str(empty))) == []
    only_torn = tmp_path / "torn"
    only_torn.write_bytes(TORN)
    assert list(replay(str(only_torn))) == []


def test_non_ascii_and_control_characters_round_trip(journal: Journal, path: str) -> None:
    text = (
        "café Ünïcödé 中文 日本語 🎉 "
        "\x00\x01\x07\x08\t\n\r\x0b\x0c\x1b[31m\x1c\x1d\x1e\x1f\x7f\x85\xa0\u2028\u2029\ufeff \\ \" ' end"
    )
    first = _record(1, text)
    second = {**_record(2, text[::-1]), "nested": {"lines": text.splitlines(), "key \n 中": [text]}}
    third = _record(3, "after")
    ends = [journal.append(r) for r in (first, second, third)]
    assert Path(path).read_bytes().count(b"\n") == 3  # one line per record, whatever the text holds
    assert list(replay(path)) == [([first, second, third], ends[-1])]


def test_text_that_is_not_valid_unicode_does_not_break_the_journal(journal: Journal, path: str) -> None:
    # Output decoded with surrogateescape can hold lone surrogates; the journal stays readable.
    odd = _record(1, "before \udcff\ud800 after")
    journal.append(odd)
    journal.append(_record(2))
    ((found, _end),) = list(replay(path))
    assert [r["run"] for r in found] == ["run-1", "run-2"]
    assert found[0]["text"].startswith("before ") and found[0]["text"].endswith(" after")


# -- start-up: what an earlier supervisor left --------------------------------------------------------------------------


def _definition(name: str, module: str = "jobs") -> WorkerDefinition:
    return WorkerDefinition(name=name, module=module, interval=60.0, timeout=None, grace=5.0)


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _run(run: str, worker: str, verdict: Verdict, at: datetime, pid: int) -> list[Record]:
    return [
        records.run_started(run, worker, 1, at, at + timedelta(minutes=1), NODE, os.getpid(), skipped=1),
        records.run_spawned(run, worker, pid),
        records.run_finished(run, worker, 1, at, at + timedelta(seconds=2), 2.0, verdict, NODE, os.getpid(),
                             pid=pid, exit_code=0 if verdict is OK else 1),
    ]


def _snapshot(url: str) -> dict[str, list[str]]:
    return {table: sorted(repr(sorted(row.items())) for row in query(url, f"select * from {table}")) for table in ("worker", "run", "failure")}


def _left_behind(url: str, path: str) -> tuple[list[Record], dict[str, Any]]:
    """What an earlier supervisor left: a journal of which the first part is in the database already (applied,
    but the supervisor died before emptying the journal), and a run its death left unfinished."""
    t = utcnow() - timedelta(minutes=30)
    journal: list[Record] = [records.workers_synced([_definition("a"), _definition("b")], [], t)]
    for n in range(6):
        journal += _run(f"r{n}", "a", OK if n % 2 == 0 else BOOM, t + timedelta(minutes=n + 1), 1000 + n)
    journal.append(records.broken("pkg.gone", "pkg.gone", "ImportError: pkg.gone", t + timedelta(minutes=8)))
    journal.append(records.run_started("r-orphan", "b", 1, t + timedelta(minutes=9), None, NODE, _dead_pid()))
    store = Store(url)
    store.open()
    try:
        store.apply(journal[:9])  # up to r2's start and spawn: r2 ends in the part never applied
    finally:
        store.close()
    writer = Journal(path)
    try:
        for record in journal:
            writer.append(record)
    finally:
        writer.close()
    _tear(path)
    expected = {"runs": {f"r{n}" for n in range(6)} | {"r-orphan"}, "a": (3, 3, 1, 6), "b": (0, 1, 1, 0)}
    return journal, expected


def test_prepare_writes_what_the_journal_holds_exactly_once(store_url: str, path: str) -> None:
    _, expected = _left_behind(store_url, path)
    assert {r["id"] for r in query(store_url, "select id from run")} == {"r0", "r1", "r2"}

    stored = prepare(RecordingSettings(url=store_url, journal=path))

    runs = query(store_url, "select id, outcome from run")
    assert sorted(r["id"] for r in runs) == sorted(expected["runs"])  # each run once
    assert {r["id"]: r["outcome"] for r in runs}["r-orphan"] == "lost"  # then its unfinished run is lost
    for name in ("a", "b"):
        (row,) = query(store_url, "select * from worker where name = ?", name)
        got = (row["success_count"], row["failure_count"], row["consecutive_failures"], row["skipped_count"])
        assert got == expected[name], name
        assert (stored[name].success_count, stored[name].failure_count) == got[:2]
    assert sorted(stored) == ["a", "b", "pkg.gone"]
    failures = sorted((r["worker"], r["kind"]) for r in query(store_url, "select worker, kind from failure"))
    assert failures == [("a", "error")] * 3 + [("b", "lost"), ("pkg.gone", "import")]
    assert os.path.getsize(path) == 0  # all of it is in: the journal is emptied

    # A second start finds nothing left, and changes nothing.
    before = _snapshot(store_url)
    again = prepare(RecordingSettings(url=store_url, journal=path))
    assert _snapshot(store_url) == before
    assert sorted(again) == ["a", "b", "pkg.gone"]


def test_prepare_without_a_journal_reads_the_workers(store_url: str, path: str) -> None:
    store = Store(store_url)
    store.open()
    try:
        store.apply(_run("r1", "a", OK, utcnow() - timedelta(minutes=1), 4242))
    finally:
        store.close()
    stored = prepare(RecordingSettings(url=store_url, journal=path))
    assert list(stored) == ["a"] and stored["a"].success_count == 1
    assert not os.path.exists(path)


@pytest.mark.parametrize("where", ["postgres-port-1", "sqlite-unwritable"])
def test_prepare_with_the_database_unreachable_leaves_the_journal_intact(tmp_path: Path, path: str, where: str) -> None:
    url = (
        "postgresql://postgres:s3cret@127.0.0.1:1/x"
        if where == "postgres-port-1"
        else f"sqlite:///{tmp_path}/no-such-dir/x.db"
    )
    writer = Journal(path)
    try:
        for record in _run("r1", "a", BOOM, utcnow(), 77):
            writer.append(record)
    finally:
        writer.close()
    _tear(path)
    before = Path(path).read_bytes()
    with pytest.raises(StoreUnavailable) as info:
        prepare(RecordingSettings(url=url, journal=path))
    assert "s3cret" not in str(info.value)
    assert Path(path).read_bytes() == before


def test_prepare_that_fails_midway_leaves_the_journal_intact(store_url: str, path: str) -> None:
    bad = records.run_started("r-bad", "a", 1, utcnow(), None, NODE, os.getpid())
    bad["node"] = None  # run.node is NOT NULL: the database refuses it
    writer = Journal(path)
    try:
        for record in [*_run("r1", "a", OK, utcnow() - timedelta(minutes=1), 77), bad]:
            writer.append(record)
    finally:
        writer.close()
    before = Path(path).read_bytes()
    with pytest.raises(StoreUnavailable, match=f"cannot write the records left in {path}"):
        prepare(RecordingSettings(url=store_url, journal=path))
    assert Path(path).read_bytes() == before
    assert query(store_url, "select * from run") == []  # one batch, all or nothing
    # Once the bad record is gone (say, by hand), the rest goes in once.
    lines = before.splitlines(keepends=True)
    Path(path).write_bytes(b"".join(lines[:-1]))
    stored = prepare(RecordingSettings(url=store_url, journal=path))
    assert stored["a"].success_count == 1
    assert [r["id"] for r in query(store_url, "select id from run")] == ["r1"]
