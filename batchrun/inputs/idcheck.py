"""Counting the input's rows and finding duplicate custom_ids, with memory bounded on any input.

Two ways, one layout: each id is hashed into one of 256 buckets, held in memory up to a limit and
spilled to bucket files past it (under the directory given: OUT, which the run has locked);
each bucket is then checked on its own.
- `scan_ids` (for `--check-ids-first`, before anything is sent): 8-byte hashes, 32 MiB in
  memory (about 2M rows); hash matches are confirmed against the real ids in a second pass, so
  a hash collision is never reported; the report names up to 20 ids and their rows.
- `IdBuckets` (the first pass that runs alongside sending): 16-byte digests, the ones
  `batchrun.inputs.idtable` uses, so both judge every row alike; it gives every repeated row with
  the first row of its id, in row order, with no second pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from batchrun.inputs.idtable import DIGEST_BYTES, id_digest

__all__ = ["IdBuckets", "IdScan", "scan_ids", "sweep_scan_dirs"]

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
    with _Buckets(tmp_dir, _MEMORY_LIMIT) as buckets:
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
    """256 byte buckets in memory, spilled to files (created only then) past `limit` bytes."""

    def __init__(self, tmp_dir: Path | None, limit: int) -> None:
        self._tmp_dir = tmp_dir
        self._limit = limit
        self._memory = [bytearray() for _ in range(_BUCKETS)]
        self._held = 0
        self._stack = contextlib.ExitStack()
        self._dir: Path | None = None

    def add(self, bucket: int, entry: bytes) -> None:
        self._memory[bucket] += entry
        self._held += len(entry)
        if self._held > self._limit:
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


_WIDE_ENTRY = DIGEST_BYTES + 8  # digest + row
_PAIR = 16  # row + first row, each 8 bytes little-endian


class IdBuckets:
    """Every row's id, fed in row order; then each row whose id an earlier row had.

    Memory: up to `memory_bytes` of entries (24 bytes a row), then bucket files under `tmp_dir`,
    removed when the context ends. Checking is done bucket by bucket; the repeats each bucket
    finds are written next to it and merged, so their number does not weigh on memory either.
    """

    def __init__(self, tmp_dir: Path, *, memory_bytes: int = 8 << 20) -> None:
        self._buckets = _Buckets(tmp_dir, memory_bytes)
        self._tmp_dir = tmp_dir
        self.total_rows = 0

    def __enter__(self) -> IdBuckets:
        self._buckets.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._buckets.__exit__(*exc_info)

    def add(self, custom_id: str, row: int) -> None:
        digest = id_digest(custom_id)
        self._buckets.add(digest[0], digest + row.to_bytes(8, "little"))
        self.total_rows += 1

    def duplicates(
        self, *, should_stop: Callable[[], bool] = lambda: False
    ) -> Iterator[tuple[int, int]]:
        """`(row, first_row)` for every row whose id a lower row had, in increasing row order.
        Ends early (with what it has) once `should_stop` is true: the caller checks it."""
        found: list[Path] = []
        scratch: Path | None = None
        try:
            for i in range(_BUCKETS):
                if should_stop():
                    return
                pairs = _bucket_duplicates(self._buckets.read(i))
                if pairs:
                    if scratch is None:
                        scratch = Path(tempfile.mkdtemp(prefix=_SCAN_PREFIX, dir=self._tmp_dir))
                    path = scratch / f"dup-{i:03d}"
                    path.write_bytes(pairs)
                    found.append(path)
            yield from heapq.merge(*(_read_pairs(path) for path in found))
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)


def _bucket_duplicates(data: bytes) -> bytes:
    """The repeats among one bucket's entries (in row order) as packed (row, first row) pairs."""
    first_seen: dict[bytes, int] = {}
    out = bytearray()
    view = memoryview(data)
    for off in range(0, len(data), _WIDE_ENTRY):
        digest = bytes(view[off : off + DIGEST_BYTES])
        row = int.from_bytes(view[off + DIGEST_BYTES : off + _WIDE_ENTRY], "little")
        first = first_seen.setdefault(digest, row)
        if first != row:
            out += row.to_bytes(8, "little") + first.to_bytes(8, "little")
    return bytes(out)


def _read_pairs(path: Path) -> Iterator[tuple[int, int]]:
    with path.open("rb") as f:
        while block := f.read(_PAIR * 4096):
            for off in range(0, len(block), _PAIR):
                yield (
                    int.from_bytes(block[off : off + 8], "little"),
                    int.from_bytes(block[off + 8 : off + _PAIR], "little"),
                )


def sweep_scan_dirs(tmp_dir: Path) -> None:
    """Remove scan directories under `tmp_dir` left behind by a killed process."""
    for stale in tmp_dir.glob(f"{_SCAN_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
