"""Shards: an input cut into row ranges that read, and run, exactly as the whole file does."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import httpx2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batchrun
from batchrun.inputs.reader import iter_ids, iter_requests
from batchrun.inputs.shards import RowSpan, Shard, plan_shards
from batchrun.models import Request, RowError
from tests.helpers import TEST_KEY, chat_rows, openai_handler, read_results, write_jsonl


def _messy_jsonl(path: Path, n: int) -> Path:
    """Batch lines with blank lines, a bad row and a BOM: the row numbers a shard must keep."""
    lines = [json.dumps(r) for r in chat_rows(n)]
    lines[0] = "\ufeff" + lines[0]
    lines.insert(5, "")
    lines.insert(9, "   ")
    lines[13] = "{not json"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _seen(items: list[Request | RowError]) -> list[tuple[int, str, object]]:
    return [(i.row, i.custom_id, i.line if isinstance(i, RowError) else i.body) for i in items]


def test_jsonl_shards_cover_every_row_once_and_read_as_the_whole_file(tmp_path: Path) -> None:
    path = _messy_jsonl(tmp_path / "in.jsonl", 60)
    shards = plan_shards(str(path), target_bytes=700)
    assert len(shards) > 4
    assert shards[0].span.start_row == 0
    for a, b in itertools.pairwise(shards):
        assert a.span.end_row == b.span.start_row  # contiguous, no gap, no overlap
        assert a.end_byte == b.span.offset.byte  # type: ignore[union-attr]
    whole = list(iter_requests(path))
    assert shards[-1].span.end_row == len(whole)
    pieces = [item for s in shards for item in iter_requests(path, span=s.span)]
    assert _seen(pieces) == _seen(whole)
    bad = [i for i in pieces if isinstance(i, RowError)]
    assert len(bad) == 1 and "line 14" in bad[0].message  # the physical line, from the offset
    ids = [pair for s in shards for pair in iter_ids(path, span=s.span)]
    assert ids == list(iter_ids(path))


def test_a_shard_is_read_from_its_offset_not_from_the_top(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(30))
    last = plan_shards(str(path), target_bytes=500)[-1]
    assert last.span.offset is not None and last.span.offset.byte > 0
    # Damage the bytes before the shard: a reader that started at the top would see them.
    data = bytearray(path.read_bytes())
    data[: last.span.offset.byte - 1] = b"x" * (last.span.offset.byte - 1)
    path.write_bytes(bytes(data))
    rows = list(iter_requests(path, span=last.span))
    assert all(isinstance(r, Request) for r in rows)
    assert [r.custom_id for r in rows] == [
        f"req-{i}" for i in range(last.span.start_row, last.span.end_row)
    ]


def test_parquet_is_cut_at_row_groups(tmp_path: Path) -> None:
    bodies = [json.dumps(r["body"]) for r in chat_rows(100)]
    table = pa.table({"custom_id": [f"p{i}" for i in range(100)], "body": bodies})
    path = tmp_path / "in.parquet"
    pq.write_table(table, path, row_group_size=10)
    shards = plan_shards(str(path), target_bytes=1)
    assert [(s.span.start_row, s.span.end_row) for s in shards] == [
        (i, i + 10) for i in range(0, 100, 10)
    ]
    got = [r.custom_id for s in shards for r in iter_requests(path, span=s.span)]
    assert got == [f"p{i}" for i in range(100)]


def test_a_csv_or_a_compressed_file_is_one_shard(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.csv").write_text("q\nx\ny\n")
    write_jsonl(tmp_path / "d" / "b.jsonl", chat_rows(3))
    (tmp_path / "d" / ".hidden.jsonl").write_text("{}\n")
    shards = plan_shards(str(tmp_path / "d"), target_bytes=10)
    assert [Path(s.path).name for s in shards] == ["a.csv", "b.jsonl", "b.jsonl", "b.jsonl"]
    assert shards[0].span.offset is None


def test_ids_are_stable_and_round_trip(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(40))
    first = plan_shards(str(path), target_bytes=800)
    again = plan_shards(str(path), target_bytes=800)
    assert [s.id for s in first] == [s.id for s in again]
    assert len({s.id for s in first}) == len(first)
    assert [Shard.from_json(s.to_json()) for s in first] == first


def test_a_missing_input_and_a_bad_span_are_refused(tmp_path: Path) -> None:
    with pytest.raises(batchrun.InputError, match="not found"):
        plan_shards(str(tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match="start_row <= end_row"):
        RowSpan(start_row=5, end_row=2)


def test_a_run_on_a_shard_sends_and_counts_only_its_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(50))
    shard = plan_shards(str(path), target_bytes=2000)[1]
    handler, seen = openai_handler()
    config = batchrun.RunConfig(
        input_path=path,
        out_dir=tmp_path / "out",
        base_url="http://mock.test/v1",
        api_key=TEST_KEY,
        concurrency=4,
        flush_rows=5,
        rows=shard.span,
    )
    summary = batchrun.run_sync(config, transport=httpx2.MockTransport(handler))
    assert summary.total_rows == shard.span.rows and summary.done_rows == shard.span.rows
    rows = [r["row"] for r in read_results(tmp_path / "out")]
    assert rows == list(range(shard.span.start_row, shard.span.end_row))
    assert len(seen) == shard.span.rows


def test_a_damaged_row_group_fails_only_the_shard_that_holds_it(tmp_path: Path) -> None:
    bodies = [json.dumps(r["body"]) for r in chat_rows(100)]
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"body": bodies}), path, row_group_size=25, compression="none")
    start = pq.ParquetFile(path).metadata.row_group(2).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[start : start + 16] = b"\xff" * 16  # the third group's page header
    path.write_bytes(bytes(data))
    shards = plan_shards(str(path), target_bytes=1)
    for shard in (shards[0], shards[1], shards[3]):
        assert len(list(iter_requests(path, span=shard.span))) == 25
    with pytest.raises(batchrun.InputError, match=r"cannot read .* after row 50"):
        list(iter_requests(path, span=shards[2].span))
