"""Committed results read back in row order, window by window, through scratch files on disk."""

from __future__ import annotations

import fcntl
import os
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun.models import Record
from batchrun.store.checkpoint import Checkpoint, Fingerprint
from batchrun.store.ordered import (
    SCRATCH_PREFIX,
    ResultsError,
    RowOrder,
    Window,
    committed_parts,
    sweep_scratch,
)
from batchrun.store.writer import ResultWriter

SCHEMA = pa.schema([("row", pa.int64()), ("custom_id", pa.string()), ("response", pa.string())])


def output(tmp_path: Path, total: int, parts: list[list[int]], *, tag: str = "") -> Checkpoint:
    """An output of `total` rows whose parts hold the records of `parts` (in that order)."""
    checkpoint = Checkpoint(
        input_path="in.jsonl",
        fingerprint=Fingerprint(size=1, digest="d" * 64, method="sha256"),
        settings={},
        total_rows=total,
    )
    checkpoint.save(tmp_path)
    writer = ResultWriter(tmp_path, checkpoint)
    for rows in parts:
        writer.commit(
            [
                Record(custom_id=f"c{r}", row=r, status="ok", response=f"{tag}{r}", attempts=1)
                for r in rows
            ]
        )
    return checkpoint


def order(tmp_path: Path, checkpoint: Checkpoint, **kwargs: int) -> RowOrder:
    return RowOrder(
        tmp_path,
        checkpoint,
        columns=["custom_id", "response"],
        project=lambda batch: batch.select(SCHEMA.names),
        schema=SCHEMA,
        scratch=[tmp_path],
        **kwargs,  # type: ignore[arg-type]
    )


def check_windows(windows: list[Window], total: int) -> list[int]:
    """The windows tile 0..total-1; each is sorted and holds only its own rows."""
    assert [w.start for w in windows] == [0, *(w.stop for w in windows[:-1])]
    assert windows[-1].stop == total
    rows: list[int] = []
    for w in windows:
        these = w.table.column("row").to_pylist()
        assert these == sorted(these) and all(w.start <= r < w.stop for r in these)
        rows += these
    return rows


def completion_order(total: int, *, spread: int, seed: int = 1) -> list[int]:
    """Rows as they finish with `spread` rows in flight: near row order, never in it."""
    rng = random.Random(seed)
    return sorted(range(total), key=lambda r: r + rng.random() * spread)


@pytest.mark.parametrize(
    ("window_rows", "window_bytes"),
    [(65_536, 64 << 20), (50, 64 << 20), (7, 64 << 20), (4096, 2_000)],
    ids=["in-memory", "one-split", "two-splits", "split-by-bytes"],
)
def test_every_record_comes_back_once_in_row_order(
    tmp_path: Path, window_rows: int, window_bytes: int
) -> None:
    total = 3_000
    rows = completion_order(total, spread=200)
    assert rows != sorted(rows)
    checkpoint = output(tmp_path, total, [rows[i : i + 250] for i in range(0, total, 250)])
    ordered = order(tmp_path, checkpoint, window_rows=window_rows, window_bytes=window_bytes)
    windows = list(ordered.windows())
    assert check_windows(windows, total) == list(range(total))
    assert (len(windows) == 1) == (window_rows > total and window_bytes > 1 << 20)
    assert all(w.stop - w.start <= window_rows for w in windows)
    table = pa.concat_tables(w.table for w in windows)
    assert table.column("custom_id").to_pylist() == [f"c{r}" for r in range(total)]
    assert table.column("response").to_pylist() == [str(r) for r in range(total)]
    assert ordered.duplicates == 0
    assert not list(tmp_path.glob(f"{SCRATCH_PREFIX}*")), "the scratch directory is removed"


def test_rows_without_a_record_leave_gaps_inside_the_windows(tmp_path: Path) -> None:
    checkpoint = output(tmp_path, 1_000, [[999, 5], [500, 0]])
    windows = list(order(tmp_path, checkpoint, window_rows=100).windows())
    assert check_windows(windows, 1_000) == [0, 5, 500, 999]
    assert len(windows) == 10  # empty ranges still come, so a join sees every row


def test_a_retry_pass_scattered_over_the_rows_sorts_the_same(tmp_path: Path) -> None:
    total = 2_000
    first = [r for r in range(total) if r % 13]
    retried = [r for r in range(total) if not r % 13]  # a later pass: one part, every range
    checkpoint = output(tmp_path, total, [first[:1000], first[1000:], retried])
    rows = check_windows(list(order(tmp_path, checkpoint, window_rows=64).windows()), total)
    assert rows == list(range(total))


def test_of_two_records_of_a_row_the_later_part_wins_and_is_counted(tmp_path: Path) -> None:
    checkpoint = output(tmp_path, 10, [[0, 1, 2], [3, 4]])
    writer = ResultWriter(tmp_path, checkpoint)
    writer.commit([Record(custom_id="c1", row=1, status="ok", response="newer", attempts=2)])
    for window_rows in (10, 2):
        ordered = order(tmp_path, checkpoint, window_rows=window_rows)
        table = pa.concat_tables(w.table for w in ordered.windows())
        assert table.column("row").to_pylist() == [0, 1, 2, 3, 4]
        assert table.column("response").to_pylist() == ["0", "newer", "2", "3", "4"]
        assert ordered.duplicates == 1


def test_only_the_parts_the_checkpoint_counts_are_read(tmp_path: Path) -> None:
    checkpoint = output(tmp_path, 10, [[0, 1], [2, 3]])
    results = tmp_path / "results"
    # A part renamed into place after the checkpoint was read, and a half-written hidden one.
    later = Checkpoint.from_json(checkpoint.to_json())
    ResultWriter(tmp_path, later).commit([Record(custom_id="c4", row=4, status="ok", attempts=1)])
    (results / ".part-000003.parquet.tmp").write_bytes(b"half a part")
    assert [p.name for p in committed_parts(tmp_path, checkpoint)] == [
        "part-000000.parquet",
        "part-000001.parquet",
    ]
    windows = list(order(tmp_path, checkpoint).windows())
    assert check_windows(windows, 10) == [0, 1, 2, 3]


def test_a_column_older_parts_lack_reads_as_nulls(tmp_path: Path) -> None:
    checkpoint = output(tmp_path, 4, [[0, 1], [2, 3]])
    old = pa.table({"custom_id": ["c0", "c1"], "row": pa.array([0, 1], pa.int64())})
    pq.write_table(old, tmp_path / "results" / "part-000000.parquet")  # no "response" yet
    table = pa.concat_tables(w.table for w in order(tmp_path, checkpoint).windows())
    assert table.column("response").to_pylist() == [None, None, "2", "3"]


def test_a_record_outside_the_rows_of_the_output_is_refused(tmp_path: Path) -> None:
    checkpoint = output(tmp_path, 5, [[0, 7]])
    with pytest.raises(ResultsError, match=r"part-000000.parquet holds a record of row 7.*0\.\.4"):
        list(order(tmp_path, checkpoint).windows())
    assert not list(tmp_path.glob(f"{SCRATCH_PREFIX}*"))


def test_a_part_that_vanishes_is_a_clear_error(tmp_path: Path) -> None:
    checkpoint = output(tmp_path, 200, [list(range(100)), list(range(100, 200))])
    ordered = order(tmp_path, checkpoint, window_rows=50)
    (tmp_path / "results" / "part-000001.parquet").unlink()
    # committed_parts saw it at the start (a compaction removing it meanwhile, say).
    with pytest.raises(ResultsError, match=r"part-000001\.parquet vanished"):
        list(ordered.windows())


@pytest.mark.parametrize("window_rows", [1000, 50], ids=["in-memory", "split"])
def test_a_damaged_part_is_named(tmp_path: Path, window_rows: int) -> None:
    checkpoint = output(tmp_path, 200, [list(range(100)), list(range(100, 200))])
    part = tmp_path / "results" / "part-000001.parquet"
    part.write_bytes(part.read_bytes()[:-40])  # the footer cut off
    with pytest.raises(ResultsError, match=rf"cannot read {part}"):
        list(order(tmp_path, checkpoint, window_rows=window_rows).windows())
    assert not list(tmp_path.glob(f"{SCRATCH_PREFIX}*"))


def test_the_checkpoint_without_a_row_count_counts_from_the_parts(tmp_path: Path) -> None:
    checkpoint = output(tmp_path, 10, [[3, 8], [1]])
    checkpoint.total_rows = None
    ordered = order(tmp_path, checkpoint)
    assert ordered.total_rows == 9
    assert check_windows(list(ordered.windows()), 9) == [1, 3, 8]


def test_a_read_only_place_falls_back_to_the_next(tmp_path: Path) -> None:
    checkpoint = output(tmp_path, 300, [list(range(300))])
    other = tmp_path / "elsewhere"
    other.mkdir()
    seen: list[Path] = []
    ordered = RowOrder(
        tmp_path,
        checkpoint,
        columns=["custom_id", "response"],
        project=lambda batch: batch.select(SCHEMA.names),
        schema=SCHEMA,
        scratch=[tmp_path / "missing", other],  # mkdtemp fails in the first, as if read-only
        window_rows=100,
    )
    for window in ordered.windows():
        seen += list(other.glob(f"{SCRATCH_PREFIX}*"))
        assert window.table.num_rows == 100
    assert seen and not list(other.glob(f"{SCRATCH_PREFIX}*"))


def test_stopping_half_way_removes_the_scratch_files(tmp_path: Path) -> None:
    checkpoint = output(tmp_path, 1_000, [list(range(1_000))])
    windows = order(tmp_path, checkpoint, window_rows=100).windows()
    next(windows)
    assert list(tmp_path.glob(f"{SCRATCH_PREFIX}*/*.arrow"))
    windows.close()  # what an exception in the consumer or Ctrl-C does to the generator
    assert not list(tmp_path.glob(f"{SCRATCH_PREFIX}*"))


def test_sweep_removes_what_a_killed_export_left_but_not_a_live_one(tmp_path: Path) -> None:
    dead = tmp_path / f"{SCRATCH_PREFIX}dead"
    dead.mkdir()
    (dead / ".lock").touch()
    (dead / "r-000.arrow").write_bytes(b"x" * 100)
    live = tmp_path / f"{SCRATCH_PREFIX}live"
    live.mkdir()
    fd = os.open(live / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    young = tmp_path / f"{SCRATCH_PREFIX}young"  # being created: no lock file yet
    young.mkdir()
    try:
        assert sweep_scratch(tmp_path) == 1
        assert not dead.exists() and live.exists() and young.exists()
    finally:
        os.close(fd)
    old = os.stat(young).st_mtime - 3600
    os.utime(young, (old, old))
    assert sweep_scratch(tmp_path) == 2  # the lock holder died; the young one is old now
    assert not live.exists() and not young.exists()
