"""batchrun.store.duplicates: OUT/duplicates.bin, written in row order, read forward."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrun.store.checkpoint import CheckpointError
from batchrun.store.duplicates import (
    DUPLICATES_NAME,
    DuplicateCursor,
    install_duplicates,
    make_scratch_dir,
    sweep_scratch_dirs,
    write_duplicates,
)


def test_written_pairs_are_read_back_in_row_order(tmp_path: Path) -> None:
    pairs = [(5, 2), (40, 3), (50, 45)] + [(1000 + i, 7) for i in range(10_000)]
    scratch = make_scratch_dir(tmp_path)
    assert write_duplicates(scratch / "list", pairs) == len(pairs)
    final = install_duplicates(tmp_path, scratch / "list")
    assert final == tmp_path / DUPLICATES_NAME and not (scratch / "list").exists()
    with DuplicateCursor(final) as cursor:
        got = {row: cursor.first_row_of(row) for row in range(0, 12_000)}
    assert {row: first for row, first in got.items() if first is not None} == dict(pairs)


def test_the_cursor_skips_rows_it_is_not_asked_about(tmp_path: Path) -> None:
    write_duplicates(tmp_path / "list", [(5, 2), (40, 3), (50, 45)])
    with DuplicateCursor(tmp_path / "list") as cursor:
        assert cursor.first_row_of(45) is None  # 5 and 40 passed by
        assert cursor.first_row_of(50) == 45
        assert cursor.first_row_of(51) is None


def test_pairs_out_of_order_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="go up by row"):
        write_duplicates(tmp_path / "a", [(5, 2), (4, 1)])
    with pytest.raises(ValueError, match="after its first"):
        write_duplicates(tmp_path / "b", [(5, 5)])


def test_a_missing_or_foreign_list_is_a_damaged_output(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is missing, but the checkpoint says"):
        DuplicateCursor(tmp_path / DUPLICATES_NAME)
    (tmp_path / "other").write_bytes(b"not a list at all")
    with pytest.raises(CheckpointError, match="is not a list of repeated rows"):
        DuplicateCursor(tmp_path / "other")


def test_scratch_directories_are_swept(tmp_path: Path) -> None:
    scratch = make_scratch_dir(tmp_path)
    (scratch / "000").write_bytes(b"x")
    sweep_scratch_dirs(tmp_path)
    assert list(tmp_path.iterdir()) == []
