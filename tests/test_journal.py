"""batchrun.store.journal: one write per frame, syncs, torn tails, release."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from batchrun.common.ranges import RangeSet
from batchrun.models import Record
from batchrun.store import journal as journal_mod
from batchrun.store.journal import Journal, read_file


def records(rows: range, **fields: object) -> list[Record]:
    return [
        Record(custom_id=f"c-{r}", row=r, status="ok", attempts=1, **fields)  # type: ignore[arg-type]
        for r in rows
    ]


def full_record(row: int) -> Record:
    """Every field set, with what JSON and UTF-8 find hard: non-ASCII, a lone surrogate, NaN."""
    return Record(
        custom_id=f"id-{row}-\u00e9\u4e2d",
        row=row,
        status="error",
        endpoint="/v1/chat/completions",
        http_status=500,
        response='{"error": {"message": "\u00fcber \\"quoted\\"\\n"}}',
        error_type="server_error",
        error_message="lone \ud800 surrogate",
        model="gpt-4o-mini",
        finish_reason="stop",
        prompt_tokens=10,
        completion_tokens=3,
        total_tokens=13,
        cached_tokens=2,
        reasoning_tokens=0,
        attempts=4,
        latency_ms=12.345,
        cost_usd=1.5e-05,
    )


def rows_of(path: Path) -> list[int]:
    return [r.row for r in read_file(path)]


def test_write_then_read_gives_back_every_field(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    written = [full_record(0), *records(range(1, 3)), full_record(3)]
    journal.write(written[:2])
    journal.write(written[2:])
    assert list(journal.read()) == written
    nan = records(range(4, 5), latency_ms=float("nan"))
    journal.write(nan)
    latency = list(journal.read())[-1].latency_ms
    assert latency is not None and latency != latency  # NaN survives


def test_write_is_one_write_and_sync_one_fdatasync_for_everything_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_write, real_sync, real_fsync_dir = os.write, journal_mod._sync, journal_mod.fsync_dir

    def write(fd: int, data: bytes) -> int:
        calls.append("write")
        return real_write(fd, data)

    def sync(fd: int) -> None:
        calls.append("fdatasync")
        real_sync(fd)

    def fsync_dir(path: Path) -> None:
        calls.append(f"fsync {path.name}")
        real_fsync_dir(path)

    monkeypatch.setattr(journal_mod.os, "write", write)
    monkeypatch.setattr(journal_mod, "_sync", sync)
    monkeypatch.setattr(journal_mod, "fsync_dir", fsync_dir)
    journal = Journal(tmp_path)
    for row in range(3):
        journal.write(records(range(row, row + 1)))
    # The journal's directory is made durable once; each answer is one write, no waiting.
    assert calls == [f"fsync {tmp_path.name}", "write", "write", "write"]
    calls.clear()
    journal.sync()  # the three answers, and the new segment's name
    assert calls == ["fdatasync", "fsync journal"]
    calls.clear()
    journal.sync()  # nothing new: nothing to wait for
    journal.write(records(range(3, 5)))
    journal.sync()
    assert calls == ["write", "fdatasync"]
    assert [r.row for r in journal.read()] == [0, 1, 2, 3, 4]


def test_release_syncs_the_segment_it_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(journal_mod, "_sync", synced.append)
    journal = Journal(tmp_path)
    journal.write(records(range(0, 4)))
    journal.release(RangeSet([(0, 2)]))  # rows 2-3 are only here: they must be on the disk
    assert len(synced) == 1


def test_a_sync_that_fails_is_tried_again_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path)
    journal.write(records(range(0, 2)))

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(journal_mod, "_sync", eio)
    with pytest.raises(OSError, match="Input/output error"):
        journal.sync()
    synced: list[int] = []
    monkeypatch.setattr(journal_mod, "_sync", synced.append)
    journal.sync()
    assert len(synced) == 1


def test_a_torn_tail_drops_only_the_group_it_cut(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write(records(range(0, 5)))
    journal.write(records(range(5, 8)))
    [path] = journal.files()
    data = path.read_bytes()
    whole = len(data)
    journal.write(records(range(8, 12)))
    longer = path.read_bytes()
    # Cut the third group at every byte: the first two groups always survive, the third never.
    for cut in range(whole, len(longer)):
        path.write_bytes(longer[:cut])
        assert rows_of(path) == list(range(8))
    path.write_bytes(longer)
    assert rows_of(path) == list(range(12))
    # The header itself cut short: the file holds nothing readable (nothing was acknowledged).
    path.write_bytes(longer[:5])
    assert rows_of(path) == []


@pytest.mark.parametrize(
    "damage",
    ["zeros", "random", "flipped bit", "wrong magic", "length past the end"],
)
def test_garbage_after_the_last_good_group_is_dropped(tmp_path: Path, damage: str) -> None:
    journal = Journal(tmp_path)
    journal.write(records(range(0, 3)))
    [path] = journal.files()
    good = path.read_bytes()
    journal.write(records(range(3, 6)))
    last = path.read_bytes()[len(good) :]
    rng = random.Random(7)
    tail = {
        "zeros": bytes(len(last)),
        "random": rng.randbytes(len(last)),
        "flipped bit": last[:-3] + bytes([last[-3] ^ 0x10]) + last[-2:],
        "wrong magic": b"XXXX" + last[4:],
        "length past the end": last[:4] + (1 << 30).to_bytes(4, "little") + last[8:],
    }[damage]
    path.write_bytes(good + tail)
    assert rows_of(path) == [0, 1, 2]


def test_a_frame_with_a_good_crc_that_is_not_a_group_stops_the_file(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write(records(range(0, 2)))
    [path] = journal.files()
    with path.open("ab") as f:
        f.write(journal_mod._frame(b'{"not": "a list of rows"}'))
        f.write(journal_mod._group(records(range(2, 3))))
    assert rows_of(path) == [0, 1]


def test_after_a_failed_write_the_next_goes_to_a_new_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path)
    journal.write(records(range(0, 3)))
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data)[: len(data) // 2])  # what a disk filling up leaves behind
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_mod.os, "write", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        journal.write(records(range(3, 6)))
    monkeypatch.undo()
    journal.write(records(range(6, 8)))
    first, second = journal.files()
    assert rows_of(first) == [0, 1, 2]  # the torn half-group is dropped
    assert rows_of(second) == [6, 7]


def test_release_deletes_the_segments_the_checkpoint_counts_and_only_those(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path)
    journal.write(records(range(0, 10)))
    # A part took rows 0-5; 6-9 are still only in the journal.
    journal.release(RangeSet([(0, 6)]))
    assert [rows_of(p) for p in journal.files()] == [list(range(0, 10))]
    journal.write(records(range(10, 14)))  # a new segment: the old one was closed
    assert len(journal.files()) == 2
    journal.release(RangeSet([(0, 9)]))  # row 9 is not counted yet: both stay
    assert len(journal.files()) == 2
    journal.release(RangeSet([(0, 12)]))  # the first segment is all counted, the second not
    assert [rows_of(p) for p in journal.files()] == [[10, 11, 12, 13]]
    journal.release(RangeSet([(0, 14)]))
    assert journal.files() == []
    journal.close()
    assert not journal.dir.exists()


def test_close_keeps_what_is_not_yet_in_a_part(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write(records(range(0, 3)))
    journal.close()
    again = Journal(tmp_path)
    assert [r.row for r in again.read()] == [0, 1, 2]
    again.write(records(range(3, 4)))  # numbering goes on after the existing segment
    assert [p.name for p in again.files()] == ["segment-000001.log", "segment-000002.log"]


def test_clear_deletes_every_segment(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write(records(range(0, 2)))
    journal.release(RangeSet())
    journal.write(records(range(2, 4)))
    assert len(journal.files()) == 2
    journal.clear()
    assert journal.files() == []
    journal.write(records(range(4, 5)))  # and the journal goes on after it
    assert [r.row for r in journal.read()] == [4]


def test_nothing_is_created_until_the_first_write(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.release(RangeSet([(0, 5)]))
    journal.sync()
    assert list(journal.read()) == []
    journal.close()
    assert not (tmp_path / "journal").exists()
