"""What the first pass leaves under OUT: its scratch directory, and the rows that repeat an id.

    OUT/.batchrun-scan-XXXX/       the first pass's own files while it runs (bucket files, the
                                   list below as it is written); removed when it ends, swept
                                   by the next run if a crash left it
    OUT/duplicates.bin             every row whose custom_id an earlier row has, with the first
                                   such row: 16-byte records (row, first_row), little-endian
                                   unsigned, in increasing row order, after an 8-byte header

Guarantees:
- `install_duplicates` moves a finished list into place atomically (rename, fsync of OUT) before
  the checkpoint says how many rows it lists, so a checkpoint never points at half a file.
- `DuplicateCursor` reads the list forward only, a block at a time: memory does not depend on
  how many rows repeat an id.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from batchrun.store.checkpoint import CheckpointError, fsync_dir

__all__ = [
    "DUPLICATES_NAME",
    "DuplicateCursor",
    "install_duplicates",
    "make_scratch_dir",
    "sweep_scratch_dirs",
    "write_duplicates",
]

DUPLICATES_NAME = "duplicates.bin"
_HEADER = b"BRDUPS01"
_RECORD = 16
_SCRATCH_PREFIX = ".batchrun-scan-"
_BLOCK_RECORDS = 4096


def make_scratch_dir(out_dir: Path) -> Path:
    """A new directory under OUT for the first pass's files."""
    return Path(tempfile.mkdtemp(prefix=_SCRATCH_PREFIX, dir=out_dir))


def sweep_scratch_dirs(out_dir: Path) -> None:
    """Remove scratch directories a killed run left behind (the caller holds OUT's lock)."""
    for stale in out_dir.glob(f"{_SCRATCH_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def write_duplicates(path: Path, pairs: Iterable[tuple[int, int]]) -> int:
    """Write `(row, first_row)` pairs (in increasing row order) to `path`; return how many."""
    count = 0
    previous = -1
    with path.open("wb") as f:
        f.write(_HEADER)
        block = bytearray()
        for row, first in pairs:
            if not first < row or row <= previous:
                raise ValueError(f"pairs must go up by row, each after its first: {row}, {first}")
            previous = row
            block += row.to_bytes(8, "little") + first.to_bytes(8, "little")
            count += 1
            if len(block) >= _RECORD * _BLOCK_RECORDS:
                f.write(block)
                block.clear()
        f.write(block)
        f.flush()
        os.fsync(f.fileno())
    return count


def install_duplicates(out_dir: Path, written: Path) -> Path:
    """Move a list `write_duplicates` made (anywhere on OUT's file system) to OUT."""
    final = out_dir / DUPLICATES_NAME
    written.replace(final)
    fsync_dir(out_dir)
    return final


class DuplicateCursor:
    """`first_row_of(row)` for rows asked in increasing order: the earlier row with the same
    custom_id, or None."""

    def __init__(self, path: Path) -> None:
        try:
            self._file = path.open("rb")
        except FileNotFoundError:
            raise CheckpointError(
                f"{path} is missing, but the checkpoint says rows repeat a custom_id; the output "
                "is damaged: use a new --out directory"
            ) from None
        if self._file.read(len(_HEADER)) != _HEADER:
            self._file.close()
            raise CheckpointError(f"{path} is not a list of repeated rows; use a new --out")
        self._block = b""
        self._pos = 0
        self._next: tuple[int, int] | None = self._read()

    def _read(self) -> tuple[int, int] | None:
        if self._pos >= len(self._block):
            self._block = self._file.read(_RECORD * _BLOCK_RECORDS)
            self._pos = 0
            if len(self._block) < _RECORD:
                return None
        b, p = self._block, self._pos
        self._pos += _RECORD
        return int.from_bytes(b[p : p + 8], "little"), int.from_bytes(b[p + 8 : p + 16], "little")

    def first_row_of(self, row: int) -> int | None:
        while self._next is not None and self._next[0] < row:
            self._next = self._read()
        if self._next is not None and self._next[0] == row:
            return self._next[1]
        return None

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> DuplicateCursor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
