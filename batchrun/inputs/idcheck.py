"""Counting the input's rows and finding duplicate custom_ids before anything is sent.

Memory stays bounded whatever the input size: each id is hashed to 8 bytes into one of 256
buckets, held in memory up to 32 MiB (about 2M rows) and spilled to bucket files past that; each
bucket is then checked on its own. Hash matches are confirmed against the real ids in a second
pass, so a hash collision is never reported as a duplicate.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["IdScan", "scan_ids", "sweep_scan_dirs"]

_SCAN_PREFIX = ".batchrun-ids-"
_BUCKETS = 256
_REPORT_LIMIT = 20
_REPORT_ROWS = 20  # rows reported per id: an id on every row must not hold every row number
_ENTRY = 16  # 8-byte hash + 8-byte row number
_MEMORY_LIMIT = 32 << 20


@dataclass(frozen=True, slots=True)
class IdScan:
    total_rows: int
    duplicates: dict[str, list[int]]  # custom_id -> first rows (_REPORT_LIMIT ids, _REPORT_ROWS)
    duplicate_rows: int  # rows whose id also appears on an earlier row


def _digest(custom_id: str) -> bytes:
    return hashlib.blake2b(custom_id.encode(), digest_size=8).digest()


def scan_ids(
    ids: Callable[[], Iterator[tuple[int, str]]], *, tmp_dir: Path | None = None
) -> IdScan:
    """`ids` is called once or twice; each call yields `(row, custom_id)` for every row.

    Past 32 MiB of hashes, bucket files go in a `.batchrun-ids-*` directory under `tmp_dir` (the
    system's temporary directory by default), removed when the scan ends; `sweep_scan_dirs`
    removes those left by a process that was killed during a scan."""
    total = 0
    suspects: set[bytes] = set()
    duplicate_rows = 0
    with _Buckets(tmp_dir) as buckets:
        for row, custom_id in ids():
            h = _digest(custom_id)
            buckets.add(h[0], h + row.to_bytes(8, "little"))
            total += 1
        for i in range(_BUCKETS):
            first_seen: dict[bytes, int] = {}
            for h, row in _entries(buckets.read(i)):
                earlier = first_seen.setdefault(h, row)
                if earlier != row:
                    duplicate_rows += 1
                    if len(suspects) < _REPORT_LIMIT:
                        suspects.add(h)
    return IdScan(
        total_rows=total,
        duplicates=_confirm(suspects, ids) if suspects else {},
        duplicate_rows=duplicate_rows,
    )


class _Buckets:
    """256 byte buckets in memory, spilled to files (created only then) past `_MEMORY_LIMIT`."""

    def __init__(self, tmp_dir: Path | None) -> None:
        self._tmp_dir = tmp_dir
        self._memory = [bytearray() for _ in range(_BUCKETS)]
        self._held = 0
        self._stack = contextlib.ExitStack()
        self._dir: Path | None = None

    def add(self, bucket: int, entry: bytes) -> None:
        self._memory[bucket] += entry
        self._held += len(entry)
        if self._held > _MEMORY_LIMIT:
            self._spill()

    def _spill(self) -> None:
        if self._dir is None:
            tmp = tempfile.TemporaryDirectory(prefix=_SCAN_PREFIX, dir=self._tmp_dir)
            self._dir = Path(self._stack.enter_context(tmp))
        for i, data in enumerate(self._memory):
            with open(self._dir / f"{i:03d}", "ab") as f:
                f.write(data)
            data.clear()
        self._held = 0

    def read(self, bucket: int) -> bytes:
        spilled = b""
        if self._dir is not None:
            path = self._dir / f"{bucket:03d}"
            spilled = path.read_bytes() if path.exists() else b""
        return spilled + bytes(self._memory[bucket])

    def __enter__(self) -> _Buckets:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()


def _entries(data: bytes) -> Iterable[tuple[bytes, int]]:
    for off in range(0, len(data), _ENTRY):
        yield data[off : off + 8], int.from_bytes(data[off + 8 : off + _ENTRY], "little")


def _confirm(
    suspects: set[bytes], ids: Callable[[], Iterator[tuple[int, str]]]
) -> dict[str, list[int]]:
    # Grouped by the real id, so ids that only share a hash fall apart here.
    by_id: dict[str, list[int]] = {}
    for row, custom_id in ids():
        if _digest(custom_id) in suspects:
            rows = by_id.setdefault(custom_id, [])
            if len(rows) < _REPORT_ROWS:
                rows.append(row)
    found = [(cid, rows) for cid, rows in by_id.items() if len(rows) > 1]
    return dict(found[:_REPORT_LIMIT])


def sweep_scan_dirs(tmp_dir: Path) -> None:
    """Remove scan directories under `tmp_dir` left behind by a killed process."""
    for stale in tmp_dir.glob(f"{_SCAN_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
