"""Committed result records in input-row order, one window of consecutive rows at a time.

    ordered = RowOrder(out_dir, checkpoint, columns=[...], project=f, schema=s, scratch=[OUT])
    for window in ordered.windows():   # Window(start, stop, table): rows start..stop-1
        ...                            # table: their records, sorted by row, one per row

Records are committed in completion order, a part file per flush, and an output can hold 100M
rows, so they are never loaded all at once. The records (only the columns asked for, after
`project`) are split by row range into scratch files, Arrow IPC streams compressed with lz4,
then each range again until a range fits in memory: a radix sort on disk, on the row number.
A range is held in memory when it spans at most `window_rows` rows and its records take at
most `window_bytes`; the first split of 100M rows makes 256 ranges, the next one windows.

Guarantees:
- Only committed parts are read: parts `checkpoint.first_part` .. `checkpoint.parts - 1` (a
  part is counted only once it is complete on disk). Hidden temporary files, and parts a
  `batchrun run` that is still going commits after the checkpoint was read, are not: a run may
  go on meanwhile.
- The windows cover rows 0 .. total_rows - 1 in order, without gaps (a window may hold no
  record). Each row has at most one record: the one in the later part. A pass that re-sends
  rows (`--retry-errors`) leaves the superseded records in earlier parts until `batchrun
  compact`; `duplicates` counts the records left out.
- A record whose row is outside the output's rows, a part that vanished or cannot be read, is a
  `ResultsError` naming the part.
- Memory: one batch of a part, write buffers of at most 8 MiB, one window. Disk: the asked
  columns once or twice over (lz4), in a `.batchrun-export-*` directory of the first writable
  place in `scratch`, removed at the end; `sweep_scratch` removes those of a process that was
  killed (never one still in use: each is held by an flock for its life).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from batchrun.store.checkpoint import Checkpoint
from batchrun.store.writer import RESULT_SCHEMA, RESULTS_DIR, part_name

__all__ = ["ResultsError", "RowOrder", "Window", "committed_parts", "sweep_scratch"]

SCRATCH_PREFIX = ".batchrun-export-"
_LOCK = ".lock"
_FANOUT = 256  # ranges per split: open scratch files at once
_READ_ROWS = 8192
_FLUSH_ROWS = 8192  # a range's buffered rows written as one IPC batch
_BUFFER_BYTES = 8 << 20  # all ranges' buffers together
_PART = "_part"  # the part a record came from: the later part wins a duplicate row
# lz4: the scratch copy of text-heavy columns takes about a third of the disk. One thread: the
# codec's buffers on pyarrow's worker threads stayed in RSS (248 against 223 MB at 200k rows).
_IPC = ipc.IpcWriteOptions(compression="lz4", use_threads=False)
_STALE_UNLOCKED_S = 60.0  # a scratch dir whose lock file is not there yet may be being created


class ResultsError(Exception):
    """The results cannot be read as committed (a part vanished, a row out of range...)."""


@dataclass(frozen=True, slots=True)
class Window:
    start: int
    stop: int
    table: pa.Table  # records of rows start..stop-1, sorted by row, one per row


def committed_parts(out_dir: Path, checkpoint: Checkpoint) -> list[Path]:
    """The part files the checkpoint counts that are on disk, in commit order."""
    results = out_dir / RESULTS_DIR
    found = []
    for i in range(checkpoint.first_part, checkpoint.parts):
        path = results / part_name(i)
        # A compaction killed after its switch leaves some parts under their hidden name until
        # the next run or compact renames them (batchrun.store.compact).
        hidden = results / f".{path.name}.compact"
        if path.is_file() or hidden.is_file():
            found.append(path if path.is_file() else hidden)
    return found


class RowOrder:
    """The committed records of `out_dir`, projected and delivered in row order."""

    def __init__(
        self,
        out_dir: Path,
        checkpoint: Checkpoint,
        *,
        columns: Sequence[str],
        project: Callable[[pa.RecordBatch], pa.RecordBatch],
        schema: pa.Schema,
        scratch: Sequence[Path],
        window_rows: int = 16_384,
        window_bytes: int = 16 << 20,
    ) -> None:
        if "row" not in schema.names:
            raise ValueError("schema must have the 'row' column")
        self._parts = committed_parts(out_dir, checkpoint)
        self._columns = list(dict.fromkeys(["row", *columns]))
        self._project = project
        self._schema = schema
        self._internal = schema.append(pa.field(_PART, pa.int32()))
        self._scratch = list(scratch)
        self._window_rows = window_rows
        self._window_bytes = window_bytes
        self.total_rows = (
            checkpoint.total_rows if checkpoint.total_rows is not None else _rows_named(self._parts)
        )
        self.duplicates = 0

    @property
    def parts(self) -> int:
        return len(self._parts)

    def windows(self) -> Generator[Window, None, None]:
        with _Scratch(self._scratch) as scratch:
            size = None
            if self.total_rows <= self._window_rows:  # maybe no split at all: weigh it first
                size = sum(_uncompressed_bytes(p) for p in self._parts)
            yield from self._ranges(self._read_parts(), 0, self.total_rows, size, scratch, "r")

    def _ranges(
        self,
        source: Iterable[pa.RecordBatch],
        start: int,
        stop: int,
        size: int | None,
        scratch: Path,
        tag: str,
    ) -> Iterator[Window]:
        width = stop - start
        if (
            width <= self._window_rows
            and size is not None
            and (size <= self._window_bytes or width == 1)
        ):
            yield Window(start, stop, self._sorted(list(source)))
            return
        by_rows = math.ceil(width / self._window_rows)
        by_size = math.ceil(2 * size / self._window_bytes) if size is not None else 0
        count = max(2, min(_FANOUT, width, max(by_rows, by_size)))
        step = math.ceil(width / count)
        with _Split(scratch, tag, start, step, math.ceil(width / step), self._internal) as split:
            for batch in source:
                split.add(batch)
            split.close()
            for i, path in enumerate(split.paths):
                lo = start + i * step
                hi = min(stop, lo + step)
                sub = f"{tag}.{i}"
                yield from self._ranges(_read(path), lo, hi, split.sizes[i], scratch, sub)
                path.unlink(missing_ok=True)

    def _sorted(self, batches: list[pa.RecordBatch]) -> pa.Table:
        table = pa.Table.from_batches(batches, schema=self._internal)
        if table.num_rows > 1:
            order = pc.sort_indices(table, sort_keys=[("row", "ascending"), (_PART, "ascending")])
            table = table.take(order)
            rows = table.column("row")
            # The last record of each row is the one from the latest part.
            last = pc.not_equal(rows.slice(0, len(rows) - 1), rows.slice(1))
            keep = pa.chunked_array([*last.chunks, pa.array([True])])
            kept = pc.sum(keep).as_py()
            if kept != table.num_rows:
                self.duplicates += table.num_rows - kept
                table = table.filter(keep)
        return table.drop_columns([_PART]).combine_chunks()

    def _read_parts(self) -> Iterator[pa.RecordBatch]:
        for index, path in enumerate(self._parts):
            try:
                pf = pq.ParquetFile(path)
                present = set(pf.schema_arrow.names)
                wanted = [c for c in self._columns if c in present]
                for batch in pf.iter_batches(batch_size=_READ_ROWS, columns=wanted):
                    yield self._prepared(batch, index, path)
            except FileNotFoundError:
                raise ResultsError(
                    f"{path.name} vanished while it was being read (was the output compacted "
                    "meanwhile?); run the export again"
                ) from None
            except (OSError, pa.ArrowException) as exc:
                raise ResultsError(f"cannot read {path}: {exc}") from exc

    def _prepared(self, batch: pa.RecordBatch, index: int, path: Path) -> pa.RecordBatch:
        for name in self._columns:
            if name not in batch.schema.names and name in RESULT_SCHEMA.names:
                # A part written before the column existed: the column reads as nulls.
                field = RESULT_SCHEMA.field(name)
                batch = batch.append_column(name, pa.nulls(batch.num_rows, field.type))
        low, high = (value.as_py() for value in pc.min_max(batch.column("row")).values())
        if batch.num_rows and (low < 0 or high >= self.total_rows):
            raise ResultsError(
                f"{path.name} holds a record of row {low if low < 0 else high}, but the output "
                f"has rows 0..{self.total_rows - 1}: it is damaged"
            )
        projected = self._project(batch)
        if projected.schema != self._schema:
            projected = projected.cast(self._schema)
        # `project` may drop records (a caller that knows no row has two keeps only some).
        return projected.append_column(_PART, pa.array([index] * projected.num_rows, pa.int32()))


def _read(path: Path) -> Iterator[pa.RecordBatch]:
    if not path.exists():  # a range no record fell in
        return
    with pa.OSFile(str(path), "rb") as f:
        yield from ipc.open_stream(f)


def _uncompressed_bytes(path: Path) -> int:
    try:
        metadata = pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        raise ResultsError(f"cannot read {path}: {exc}") from exc
    return sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))


def _rows_named(parts: list[Path]) -> int:
    """One more than the highest row in the parts' statistics (a checkpoint without a count)."""
    highest = -1
    for path in parts:
        try:
            metadata = pq.read_metadata(path)
        except (OSError, pa.ArrowException) as exc:
            raise ResultsError(f"cannot read {path}: {exc}") from exc
        column = metadata.schema.names.index("row")
        for i in range(metadata.num_row_groups):
            stats = metadata.row_group(i).column(column).statistics
            if stats is not None and stats.has_min_max:
                highest = max(highest, int(stats.max))
            else:
                table = pq.read_table(path, columns=["row"])
                highest = max(highest, int(pc.max(table.column("row")).as_py() or -1))
                break
    return highest + 1


class _Split:
    """`count` scratch files, file i for rows start + i*step ..; rows buffered before writing."""

    def __init__(
        self, scratch: Path, tag: str, start: int, step: int, count: int, schema: pa.Schema
    ) -> None:
        self.paths = [scratch / f"{tag}-{i:03d}.arrow" for i in range(count)]
        self.sizes = [0] * count
        self._start, self._step, self._schema = start, step, schema
        self._writers: list[ipc.RecordBatchStreamWriter | None] = [None] * count
        self._sinks: list[pa.NativeFile | None] = [None] * count
        self._pending: list[list[pa.RecordBatch]] = [[] for _ in range(count)]
        self._pending_rows = [0] * count
        self._held = 0

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        batch = batch.take(pc.sort_indices(batch.column("row")))
        ranges = pc.divide(pc.subtract(batch.column("row"), self._start), self._step)
        offset = 0
        for item in pc.value_counts(ranges).to_pylist():  # in order: the rows are sorted
            i, n = int(item["values"]), int(item["counts"])
            piece = batch.slice(offset, n)
            offset += n
            self._pending[i].append(piece)
            self._pending_rows[i] += n
            self._held += piece.nbytes
            if self._pending_rows[i] >= _FLUSH_ROWS:
                self._flush(i)
        if self._held > _BUFFER_BYTES:
            for i in range(len(self.paths)):
                self._flush(i)

    def _flush(self, i: int) -> None:
        if not self._pending[i]:
            return
        table = pa.Table.from_batches(self._pending[i], schema=self._schema).combine_chunks()
        writer = self._writers[i]
        if writer is None:
            sink = pa.OSFile(str(self.paths[i]), "wb")
            self._sinks[i] = sink
            writer = self._writers[i] = ipc.new_stream(sink, self._schema, options=_IPC)
        writer.write_table(table)
        self.sizes[i] += table.nbytes
        self._held -= sum(piece.nbytes for piece in self._pending[i])
        self._pending[i] = []
        self._pending_rows[i] = 0

    def close(self) -> None:
        for i in range(len(self.paths)):
            self._flush(i)
        self._close_files()

    def _close_files(self) -> None:
        for i, writer in enumerate(self._writers):
            if writer is not None:
                writer.close()
                self._writers[i] = None
            sink = self._sinks[i]
            if sink is not None:
                sink.close()
                self._sinks[i] = None

    def __enter__(self) -> _Split:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(OSError, pa.ArrowException):
            self._close_files()
        for path in self.paths:
            path.unlink(missing_ok=True)


class _Scratch:
    """A `.batchrun-export-*` directory of our own, locked for as long as we use it."""

    def __init__(self, places: Sequence[Path]) -> None:
        self._places = places
        self._fd: int | None = None
        self.path: Path | None = None

    def __enter__(self) -> Path:
        failures = []
        for place in self._places:
            try:
                path = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=place))
            except OSError as exc:  # a read-only OUT: try the next place
                failures.append(f"{place}: {exc.strerror or exc}")
                continue
            self.path = path
            self._fd = os.open(path / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            return path
        raise ResultsError(f"no place to sort the results in: {'; '.join(failures)}")

    def __exit__(self, *exc_info: object) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)


def sweep_scratch(place: Path) -> int:
    """Remove the scratch directories under `place` that no live export holds; how many."""
    removed = 0
    for stale in place.glob(f"{SCRATCH_PREFIX}*"):
        if not stale.is_dir():
            continue
        try:
            fd = os.open(stale / _LOCK, os.O_RDWR)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                if time.time() - stale.stat().st_mtime > _STALE_UNLOCKED_S:
                    shutil.rmtree(stale, ignore_errors=True)
                    removed += 1
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # another export is using it
        finally:
            os.close(fd)  # closing drops the lock too: remove right after, as its owner died
        shutil.rmtree(stale, ignore_errors=True)
        removed += 1
    return removed
