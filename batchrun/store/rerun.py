"""A pass that re-sends rows of a finished output (`--retry-errors`), kept exact across crashes.

    start_retry_pass(OUT, checkpoint, types)    the current records, in row order ──► the rows
         │                                      whose record is such an error ──► OUT/pass-N.rows
         ▼                                      then the checkpoint that names the pass
    PassRows(OUT, pass)   skip= for the reader: every row but the pass's rows still to send
    writer.rerun          each new record: its attempts carried over, its list position done

`OUT/pass-N.rows` lists the pass's rows in increasing row order, 16 bytes each after an 8-byte
header: row (u64), the superseded record's attempts (u32) and status (u8: 1 ok, 2 error), padding;
little-endian.

Guarantees:
- The list is written whole, fsynced and renamed into place before the checkpoint that counts
  the pass is saved: a checkpoint never names half a list.
- A row's current record is the one in its latest committed part: the part that holds a row's new
  record supersedes the old one in the same atomic step that commits it (the checkpoint that
  counts the part). `RowOrder`, the report and export read the output that way; plain readers
  of `OUT/results` see the superseded records too until `batchrun compact`.
- Money is spent once: a row counts as done in the pass when the part holding its new record is
  committed (or adopted after a crash), so a resumed pass never sends it again.
- Memory: one block of the list, and the entries of rows handed out and not yet committed
  (bounded by what is in flight and buffered). The list is built by `RowOrder` (on disk).
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from batchrun.common.ranges import RangeSet
from batchrun.models import Record
from batchrun.store.checkpoint import Checkpoint, CheckpointError, RerunPass, fsync_dir
from batchrun.store.ordered import RowOrder
from batchrun.store.writer import RESULT_SCHEMA, ResultWriter

__all__ = [
    "DEFAULT_RETRY_TYPES",
    "PassRows",
    "pass_path",
    "start_retry_pass",
    "writer_for",
]

# The failures a later attempt may well not meet again (the default list).
DEFAULT_RETRY_TYPES = (
    "rate_limited",
    "server_error",
    "timeout",
    "connection_error",
    "bad_response",
)

_HEADER = b"BRPASS01"
_ENTRY = struct.Struct("<QIB3x")
_BLOCK_ENTRIES = 4096
_STATUS = {"ok": 1, "error": 2}
_STATUS_NAME = {1: "ok", 2: "error"}
_LIST_COLUMNS = ["row", "status", "error_type", "attempts"]
_LIST_SCHEMA = pa.schema([RESULT_SCHEMA.field(n).with_nullable(True) for n in _LIST_COLUMNS])


def pass_path(out_dir: Path, number: int) -> Path:
    return out_dir / f"pass-{number}.rows"


def start_retry_pass(
    out_dir: Path, checkpoint: Checkpoint, error_types: Sequence[str], scratch: Path
) -> RerunPass:
    """List the rows whose current record is an error of `error_types`, and open a pass for
    them in the checkpoint (saved). Blocking; the caller holds OUT's lock."""
    number = len(checkpoint.passes) + 1
    final = pass_path(out_dir, number)
    tmp = final.with_name(f".{final.name}.tmp")
    wanted = pa.array(list(error_types), pa.string())

    def project(batch: pa.RecordBatch) -> pa.RecordBatch:
        batch = batch.select(_LIST_COLUMNS)
        if checkpoint.stale_records:
            return batch  # a later record may supersede an error: every record is sorted
        # One record per row: only the candidates are sorted (a tenth of 1M records took
        # 12 MB less of pyarrow's memory to list than all of them).
        return batch.filter(_chosen(batch, wanted))

    order = RowOrder(
        out_dir,
        checkpoint,
        columns=_LIST_COLUMNS,
        project=project,
        schema=_LIST_SCHEMA,
        scratch=[scratch],
    )
    count = 0
    with tmp.open("wb") as f:
        f.write(_HEADER)
        for window in order.windows():
            table = window.table
            if table.num_rows == 0:
                continue
            chosen = table.filter(_chosen(table, wanted))
            block = bytearray()
            for row, attempts in zip(
                chosen.column("row").to_pylist(), chosen.column("attempts").to_pylist(), strict=True
            ):
                block += _ENTRY.pack(row, attempts or 0, _STATUS["error"])
            f.write(block)
            count += chosen.num_rows
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(final)
    fsync_dir(out_dir)
    new = RerunPass(number=number, kind="retry", error_types=list(error_types), rows=count)
    checkpoint.passes.append(new)
    checkpoint.save(out_dir)
    return new


def _chosen(table: pa.Table | pa.RecordBatch, wanted: pa.Array) -> pa.Array:
    """Which records are errors of the `wanted` types."""
    keep = pc.and_(
        pc.equal(table.column("status"), "error"),
        pc.is_in(table.column("error_type"), value_set=wanted),
    )
    return pc.fill_null(keep, False)


def writer_for(out_dir: Path, checkpoint: Checkpoint) -> ResultWriter:
    """The output's writer; while a pass is open, its records supersede the rows' old ones
    (also those of a part adopted after a crash, which is why this is set up before `recover`)."""
    writer = ResultWriter(out_dir, checkpoint)
    open_pass = checkpoint.open_pass
    if open_pass is not None:
        writer.rerun = PassRows(out_dir, open_pass)
    return writer


class PassRows:
    """The open pass's list: what the reader skips, and what each new record supersedes.

    As the reader's `skip`: a row is skipped unless the pass lists it and has not done it yet
    (asked in increasing row order, as the readers do). Asking about a row to send remembers its
    entry until its record is committed; a record of a row not remembered (its part was adopted
    after a crash) is looked up in the file.
    """

    def __init__(self, out_dir: Path, rerun: RerunPass) -> None:
        self.rerun = rerun
        self._path = pass_path(out_dir, rerun.number)
        try:
            self._file = self._path.open("rb")
        except FileNotFoundError:
            raise CheckpointError(
                f"{self._path} is missing, but the checkpoint says pass {rerun.number} re-sends "
                "the rows it lists; the output is damaged: use a new --out directory"
            ) from None
        if self._file.read(len(_HEADER)) != _HEADER:
            self._file.close()
            raise CheckpointError(f"{self._path} is not a list of rows to re-send")
        size = os.fstat(self._file.fileno()).st_size - len(_HEADER)
        if size != rerun.rows * _ENTRY.size:
            self._file.close()
            raise CheckpointError(
                f"{self._path} lists {size // _ENTRY.size} rows, the checkpoint says "
                f"{rerun.rows}; the output is damaged: use a new --out directory"
            )
        self._done = RangeSet(rerun.done.ranges())  # as the run began: the reader's view
        self._rows: list[int] = []  # a window of the list: rows of positions _base ..
        self._entries: list[tuple[int, int]] = []  # (attempts, status) of the same
        self._base = 0
        self._read_to = 0  # positions read from the file so far
        self._handed: dict[int, tuple[int, int, int]] = {}  # row -> (position, attempts, status)

    def resume(self) -> None:
        """Take up what was committed for the pass since this list was opened (a part that
        `recover` adopted, the journal's fold): the reader skips those rows too."""
        self._done = RangeSet(self.rerun.done.ranges())
        self._restart()

    @property
    def number(self) -> int:
        return self.rerun.number

    @property
    def pending(self) -> int:
        return self.rerun.rows - len(self._done)

    def to_send(self, row: int) -> bool:
        """Whether the pass lists `row` and has not committed its new record yet (a journaled
        answer of the pass, on resume). CheckpointError if the pass does not list it."""
        position, _, _ = self._lookup(row)
        return position not in self.rerun.done

    # --- the reader's side ---------------------------------------------------------------

    def __contains__(self, row: object) -> bool:
        if not isinstance(row, int):
            return False
        i = self._seek(row)
        if i >= len(self._rows) or self._rows[i] != row:
            return True
        position = self._base + i
        if position in self._done:
            return True
        attempts, status = self._entries[i]
        self._handed[row] = (position, attempts, status)
        return False

    def covers(self, start: int, end: int) -> bool:
        """Whether no row in `[start, end)` is to be sent."""
        if end <= start:
            return True
        first = self._seek(start)
        while (not self._rows or self._rows[-1] < end) and self._more():
            pass
        last = bisect.bisect_left(self._rows, end, lo=first)
        return self._done.covers(self._base + first, self._base + last)

    def _seek(self, row: int) -> int:
        """The window index of the first listed row >= `row`, the window moved up to it."""
        if self._rows and row < self._rows[0] and self._base > 0:
            self._restart()
        while True:
            i = bisect.bisect_left(self._rows, row)
            if i < len(self._rows) or not self._more():
                break
        if i > _BLOCK_ENTRIES:  # drop what is behind: the window stays a few blocks long
            del self._rows[:i], self._entries[:i]
            self._base += i
            i = 0
        return i

    def _more(self) -> bool:
        data = self._file.read(_ENTRY.size * _BLOCK_ENTRIES)
        if not data:
            return False
        for row, attempts, status in _ENTRY.iter_unpack(data):
            self._rows.append(row)
            self._entries.append((attempts, status))
        self._read_to += len(data) // _ENTRY.size
        return True

    def _restart(self) -> None:
        self._file.seek(len(_HEADER))
        self._rows, self._entries, self._base, self._read_to = [], [], 0, 0

    # --- the writer's side ---------------------------------------------------------------

    def supersede(self, records: list[Record]) -> list[Record]:
        """`records` as they are to be written: attempts count across passes."""
        carried = []
        for record in records:
            _, attempts, _ = self._entry(record.row, keep=True)
            carried.append(replace(record, attempts=record.attempts + attempts))
        return carried

    def count(self, checkpoint: Checkpoint, rows: list[int], statuses: list[str]) -> None:
        """Committed: each row is done in the pass, and its new record replaces the old one in
        the counts."""
        counts = checkpoint.counts
        for row, status in zip(rows, statuses, strict=True):
            position, _, old = self._entry(row, keep=False)
            self.rerun.done.add(position)
            if old in _STATUS_NAME:
                counts[_STATUS_NAME[old]] -= 1
                checkpoint.stale_records += 1
            counts[status] = counts.get(status, 0) + 1
            if status == "ok":
                self.rerun.fixed += 1

    def _entry(self, row: int, *, keep: bool) -> tuple[int, int, int]:
        found = self._handed.get(row) if keep else self._handed.pop(row, None)
        return found if found is not None else self._lookup(row)

    def _lookup(self, row: int) -> tuple[int, int, int]:
        """Binary search of the file, for a record whose row this process did not hand out."""
        lo, hi = 0, self.rerun.rows
        fd = self._file.fileno()
        while lo < hi:
            mid = (lo + hi) // 2
            entry = _ENTRY.unpack(os.pread(fd, _ENTRY.size, len(_HEADER) + mid * _ENTRY.size))
            if entry[0] < row:
                lo = mid + 1
            elif entry[0] > row:
                hi = mid
            else:
                return mid, entry[1], entry[2]
        raise CheckpointError(
            f"a record of row {row} was written in pass {self.rerun.number}, which does not "
            f"list that row ({self._path}); the output is damaged"
        )

    def close(self) -> None:
        self._file.close()


def iter_listed_rows(path: Path) -> Iterator[int]:
    """The rows a pass lists, in order (for tests and tools)."""
    with path.open("rb") as f:
        if f.read(len(_HEADER)) != _HEADER:
            raise CheckpointError(f"{path} is not a list of rows to re-send")
        while data := f.read(_ENTRY.size * _BLOCK_ENTRIES):
            for row, _, _ in _ENTRY.iter_unpack(data):
                yield row
