"""Counting the input's rows and finding duplicate custom_ids before anything is sent.

Memory stays flat whatever the input size: each id is hashed to 8 bytes and spilled to one of 256
bucket files on disk; each bucket is then checked on its own. Hash matches are confirmed against
the real ids in a second pass, so a hash collision is never reported as a duplicate.
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

    The bucket files go in a `.batchrun-ids-*` directory under `tmp_dir` (the system's temporary
    directory by default), removed when the scan ends; `sweep_scan_dirs` removes those left by a
    process that was killed during a scan."""
    total = 0
    suspects: set[bytes] = set()
    duplicate_rows = 0
    with tempfile.TemporaryDirectory(prefix=_SCAN_PREFIX, dir=tmp_dir) as tmp:
        with contextlib.ExitStack() as stack:
            files = [
                stack.enter_context(open(Path(tmp) / f"{i:03d}", "wb", buffering=1 << 16))
                for i in range(_BUCKETS)
            ]
            for row, custom_id in ids():
                h = _digest(custom_id)
                files[h[0]].write(h + row.to_bytes(8, "little"))
                total += 1
        for i in range(_BUCKETS):
            first_seen: dict[bytes, int] = {}
            for h, row in _entries((Path(tmp) / f"{i:03d}").read_bytes()):
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
