"""store/batch_journal.py: every step durable, a torn last line cut off, damage refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from batchrun.common.ranges import RangeSet
from batchrun.store.batch_files import (
    ChunkWriter,
)
from batchrun.store.batch_journal import BatchJournal, JournalError


def seal_chunk(out: Path, number: int, rows: list[int], **frame: bytes) -> ChunkWriter:
    writer = ChunkWriter(out, number, **frame)
    for row in rows:
        writer.add(b'{"row":%d}' % row + (b"\n" if not frame else b""), row=row,
                   wire_id=f"w{row}", custom_id=f"w{row}" if row % 2 else f"id {row}")  # fmt: skip
    return writer


def test_journal_records_every_step_and_reads_back(tmp_path: Path) -> None:
    journal = BatchJournal.open(tmp_path)
    sealed = seal_chunk(tmp_path, 0, [0, 1, 2, 5]).seal()
    chunk = journal.add(
        sealed,
        backend="openai-batch",
        base_url="http://127.0.0.1:9/v1",
        endpoint="/v1/chat/completions",
    )
    assert chunk.stage == "packed" and chunk.rows == RangeSet([(0, 3), (5, 6)])
    journal.record(0, "uploading")
    assert chunk.stage == "uploading"
    journal.record(0, "uploaded", file_id="file-1")
    journal.record(0, "creating")
    journal.record(0, "created", batch_id="batch_1", status="validating")
    journal.record(0, "status", status="in_progress", counts={"total": 4, "completed": 1})
    journal.record(0, "ended", status="completed", output_file_id="file-2", error_file_id=None)
    journal.record(0, "downloaded", kind="output")
    assert journal.claimed_rows() == RangeSet([(0, 3), (5, 6)])
    journal.close()

    again = BatchJournal.load(tmp_path)
    assert again is not None and again.out_id == journal.out_id
    (read,) = again.chunks.values()
    assert (read.file_id, read.batch_id, read.status) == ("file-1", "batch_1", "completed")
    assert read.counts == {"total": 4, "completed": 1} and read.downloaded == {"output"}
    assert read.ended and read.output_file_id == "file-2" and read.stage == "ended"
    assert read.sha256 == hashlib.sha256(sealed.path.read_bytes()).hexdigest()
    reopened = BatchJournal.open(tmp_path)
    reopened.record(0, "committed")
    assert reopened.claimed_rows() == RangeSet() and reopened.next_number() == 1
    reopened.close()


def test_a_torn_last_line_is_cut_off_and_the_rest_stands(tmp_path: Path) -> None:
    journal = BatchJournal.open(tmp_path)
    journal.add(
        seal_chunk(tmp_path, 0, [0]).seal(),
        backend="openai-batch",
        base_url="http://127.0.0.1:9/v1",
        endpoint="/v1/x",
    )
    journal.record(0, "uploading")
    journal.close()
    path = BatchJournal.path_in(tmp_path)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"chunk":0,"step":"uplo')  # kill -9 mid-write
    reopened = BatchJournal.open(tmp_path)
    assert path.read_bytes() == whole
    assert reopened.chunks[0].stage == "uploading"
    reopened.record(0, "uploaded", file_id="file-9")
    reopened.close()
    loaded = BatchJournal.load(tmp_path)
    assert loaded is not None and loaded.chunks[0].file_id == "file-9"


def test_a_damaged_journal_is_refused_with_its_path(tmp_path: Path) -> None:
    path = BatchJournal.path_in(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("hello\n")
    with pytest.raises(JournalError, match="not a batchrun batch journal"):
        BatchJournal.load(tmp_path)
    BatchJournal.path_in(tmp_path).unlink()
    journal = BatchJournal.open(tmp_path)
    journal.close()
    with path.open("a") as f:
        f.write('{"chunk": 7, "step": "uploaded", "at": 1}\n')  # a chunk never packed
    with pytest.raises(JournalError, match="line 2 is damaged"):
        BatchJournal.load(tmp_path)


def test_abandoned_chunks_free_their_rows(tmp_path: Path) -> None:
    journal = BatchJournal.open(tmp_path)
    journal.add(
        seal_chunk(tmp_path, 0, [0, 1]).seal(),
        backend="openai-batch",
        base_url="http://127.0.0.1:9/v1",
        endpoint="/x",
    )
    journal.add(
        seal_chunk(tmp_path, 1, [2, 3]).seal(),
        backend="openai-batch",
        base_url="http://127.0.0.1:9/v1",
        endpoint="/x",
    )
    journal.record(0, "abandoned", reason="the batch failed validation")
    assert journal.claimed_rows() == RangeSet([(2, 4)])
    assert [c.number for c in journal.live_chunks] == [1]
    journal.close()
