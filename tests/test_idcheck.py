"""batchrun.inputs.idcheck: row count and duplicate custom_ids, on disk, checked on real ids."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun.inputs import idcheck as idcheck_mod
from batchrun.inputs.idcheck import IdBuckets, scan_ids
from batchrun.inputs.reader import iter_ids, iter_rows


def _write(path: Path, ids: list[str | None], *, blank_every: int = 0) -> Path:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    lines = []
    for i, cid in enumerate(ids):
        if blank_every and i % blank_every == 0:
            lines.append("")
        lines.append(json.dumps(body if cid is None else {"custom_id": cid, "body": body}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_no_duplicates_among_20k_unique_ids(tmp_path: Path) -> None:
    path = _write(tmp_path / "in.jsonl", [f"id-{i}" for i in range(20_000)], blank_every=1000)
    scan = scan_ids(lambda: iter_ids(path))
    assert scan.total_rows == 20_000
    assert scan.duplicates == {}
    assert scan.duplicate_rows == 0


def test_duplicates_found_with_their_rows(tmp_path: Path) -> None:
    ids: list[str | None] = [f"id-{i}" for i in range(1000)]
    ids[500] = "id-3"
    ids[900] = "id-3"
    ids[700] = "id-10"
    ids.append(None)  # a bare body: its id is its row number, 1000
    ids.append("1000")  # ...which this row repeats
    path = _write(tmp_path / "in.jsonl", ids, blank_every=97)
    scan = scan_ids(lambda: iter_ids(path))
    assert scan.total_rows == 1002
    assert scan.duplicates == {"id-3": [3, 500, 900], "id-10": [10, 700], "1000": [1000, 1001]}
    assert scan.duplicate_rows == 4


def test_row_count_equals_non_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\n{"custom_id": "a", "body": {}}\n\n  \n{bad json\n[1]\r\n\n{"x": 1}')
    scan = scan_ids(lambda: iter_ids(path))
    assert scan.total_rows == 4
    assert scan.duplicates == {}


def test_empty_input(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"")
    scan = scan_ids(lambda: iter_ids(path))
    assert (scan.total_rows, scan.duplicates, scan.duplicate_rows) == (0, {}, 0)


def test_parquet_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"custom_id": ["a", "b", "a", None], "body": ["{}"] * 4}), path)
    scan = scan_ids(lambda: iter_ids(path))
    assert scan.total_rows == 4
    assert scan.duplicates == {"a": [0, 2]}


def test_hash_collision_is_not_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every id hashes alike: only the second pass over the real ids can tell them apart.
    monkeypatch.setattr(idcheck_mod, "_digest", lambda custom_id: b"\x07" * 8)
    ids = [(i, f"id-{i}") for i in range(50)] + [(50, "id-7")]
    scan = scan_ids(lambda: iter(ids))
    assert scan.total_rows == 51
    assert scan.duplicates == {"id-7": [7, 50]}


def test_ids_is_read_once_without_duplicates() -> None:
    calls = 0

    def ids() -> Iterator[tuple[int, str]]:
        nonlocal calls
        calls += 1
        return iter([(0, "a"), (1, "b")])

    assert scan_ids(ids).duplicates == {}
    assert calls == 1


def test_report_is_bounded_in_ids() -> None:
    ids = [f"dup-{i % 30}" for i in range(90)]
    scan = scan_ids(lambda: enumerate(ids))
    assert scan.total_rows == 90
    assert scan.duplicate_rows == 60  # every repeat is counted...
    assert len(scan.duplicates) == 20  # ...but only 20 ids are reported
    for cid, rows in scan.duplicates.items():
        assert rows == [r for r, c in enumerate(ids) if c == cid]


def test_report_is_bounded_in_rows() -> None:
    # One id on every row of a big input: memory must not hold every row number.
    scan = scan_ids(lambda: ((r, "same") for r in range(50_000)))
    assert scan.total_rows == 50_000
    assert scan.duplicate_rows == 49_999
    assert list(scan.duplicates) == ["same"]
    assert scan.duplicates["same"] == list(range(20))


def test_unusable_ids_fall_back_to_the_row_number_as_in_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = [
        b'{"custom_id": "\\ud800", "body": {}}',  # no UTF-8 form: cannot be stored
        b'{"custom_id": {"a": 1}, "body": {}}',
        b'{"custom_id": "x", "body": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"custom_id": "x", "body": {"seed": ' + b"9" * 5000 + b"}}",
        b'{"custom_id": "\xff", "body": {}}',
        b'{"custom_id": "good", "body": {}}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    ids = list(iter_ids(path))
    assert ids == [(0, "0"), (1, "1"), (2, "2"), (3, "3"), (4, "4"), (5, "good")]
    assert [(item.row, item.custom_id) for item in iter_rows(path)] == ids
    scan = scan_ids(lambda: iter_ids(path))
    assert (scan.total_rows, scan.duplicates) == (6, {})


def test_small_scan_stays_in_memory(tmp_path: Path) -> None:
    ids = [(i, f"id-{i % 50}") for i in range(100)]
    scan = scan_ids(lambda: iter(ids), tmp_dir=tmp_path)
    assert scan.total_rows == 100 and scan.duplicate_rows == 50
    assert list(tmp_path.iterdir()) == []  # nothing written to disk


def test_large_scan_spills_under_the_given_directory_and_finds_duplicates_across_spills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idcheck_mod, "_MEMORY_LIMIT", 16 * 40)  # spill every ~40 rows
    seen_dirs: list[int] = []

    def ids() -> Iterator[tuple[int, str]]:
        for i in range(1000):
            if i == 500:
                seen_dirs.append(len(list(tmp_path.glob(".batchrun-ids-*"))))
            yield i, "twin" if i in (3, 997) else f"id-{i}"

    scan = scan_ids(ids, tmp_dir=tmp_path)
    assert scan.total_rows == 1000
    assert scan.duplicates == {"twin": [3, 997]}  # the first went to disk, the second not
    assert seen_dirs[0] == 1  # spilled under tmp_path during the first pass
    assert list(tmp_path.glob(".batchrun-ids-*")) == []  # and removed afterwards


def test_stale_scan_directories_are_swept(tmp_path: Path) -> None:
    from batchrun.inputs.idcheck import sweep_scan_dirs

    stale = tmp_path / ".batchrun-ids-killed"
    stale.mkdir()
    (stale / "000").write_bytes(b"x" * 16)
    sweep_scan_dirs(tmp_path)
    assert not stale.exists()


# ------------------------------------------------------- IdBuckets: the pass alongside sending


def _repeats(ids: list[str]) -> list[tuple[int, int]]:
    first: dict[str, int] = {}
    found = []
    for row, cid in enumerate(ids):
        if cid in first:
            found.append((row, first[cid]))
        first.setdefault(cid, row)
    return found


def test_id_buckets_give_every_repeat_with_its_first_row_in_row_order(tmp_path: Path) -> None:
    ids = [f"id-{i % 700}" if i % 3 == 0 else f"u-{i}" for i in range(5000)]
    with IdBuckets(tmp_path) as buckets:
        for row, cid in enumerate(ids):
            buckets.add(cid, row)
        assert buckets.total_rows == 5000
        assert list(buckets.duplicates()) == _repeats(ids)
    assert list(tmp_path.iterdir()) == []  # everything fitted in memory: nothing on disk


def test_id_buckets_spill_to_disk_and_judge_across_spills(tmp_path: Path) -> None:
    ids = [f"id-{i}" for i in range(3000)]
    ids[2999] = ids[1]  # first seen in the first spill, repeated in memory
    ids[1500] = ids[1400]
    seen_dirs: list[int] = []
    with IdBuckets(tmp_path, memory_bytes=24 * 50) as buckets:  # spill every ~50 rows
        for row, cid in enumerate(ids):
            buckets.add(cid, row)
        seen_dirs.append(len(list(tmp_path.glob(".batchrun-ids-*"))))
        assert list(buckets.duplicates()) == [(1500, 1400), (2999, 1)]
    assert seen_dirs == [1]
    assert list(tmp_path.iterdir()) == []


def test_id_buckets_stop_early_when_asked(tmp_path: Path) -> None:
    with IdBuckets(tmp_path) as buckets:
        for row in range(100):
            buckets.add("same", row)
        assert list(buckets.duplicates(should_stop=lambda: True)) == []
