"""`batchrun compact OUT`: the committed records rewritten as fewer, larger parts, one per row.

    committed parts (any number, superseded records among them)
       │ RowOrder: in row order, the latest record of each row
       ▼
    OUT/results/.part-N.parquet.compact ...   hidden, fsynced      (a crash: swept, nothing lost)
       │ checkpoint: first_part = N, parts = N + M, stale_records = 0   (the atomic switch)
       ▼
    renamed to part-N.parquet ..., the parts below N removed      (a crash: finished on resume)

Guarantees:
- At every instant the checkpoint names a complete set of parts: the old ones until the switch,
  the new ones after it (some still under their hidden name, which `finish_compaction` renames
  on the next run, compact or export... before anything reads them). A kill -9 at any instant
  leaves a resumable output whose records, read through the checkpoint, are the same.
- After it, plain Parquet readers of `OUT/results` see exactly one record per row, in row order.
- Memory: one window of `RowOrder` (16,384 rows) and one row group being written.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.store.checkpoint import (
    RESULTS_DIR,
    RESULTS_SCHEMA_VERSION,
    Checkpoint,
    CheckpointError,
    OutputLock,
    fsync_dir,
)
from batchrun.store.ordered import RowOrder
from batchrun.store.rerun import writer_for
from batchrun.store.writer import RESULT_SCHEMA, ResultWriter, part_name

__all__ = [
    "DEFAULT_PART_ROWS",
    "NULLABLE_SCHEMA",
    "CompactSummary",
    "PartSink",
    "compact",
    "compact_output",
    "finish_compaction",
    "open_writer",
    "switch",
]

DEFAULT_PART_ROWS = 1_000_000
_SUFFIX = ".compact"
_HIDDEN = re.compile(r"^\.part-(\d+)\.parquet\.compact$")
_PART = re.compile(r"^part-(\d+)\.parquet$")
NULLABLE_SCHEMA = pa.schema([f.with_nullable(True) for f in RESULT_SCHEMA])


@dataclass(frozen=True, slots=True, kw_only=True)
class CompactSummary:
    parts_before: int
    parts_after: int
    records: int  # records kept: one per row that has one
    dropped: int  # superseded records left out
    seconds: float


def _hidden(results: Path, index: int) -> Path:
    return results / f".{part_name(index)}{_SUFFIX}"


def finish_compaction(out_dir: Path, checkpoint: Checkpoint) -> None:
    """What a compaction killed part way left: finish it (after its switch) or sweep it (before).
    Blocking; the caller holds OUT's lock."""
    results = out_dir / RESULTS_DIR
    if not results.is_dir():
        return
    changed = False
    for entry in list(results.iterdir()):
        hidden = _HIDDEN.match(entry.name)
        part = _PART.match(entry.name)
        if hidden is not None:
            index = int(hidden.group(1))
            if checkpoint.first_part <= index < checkpoint.parts:
                entry.replace(results / part_name(index))  # the switch was made: finish it
            else:
                entry.unlink()  # written before a switch that never came
            changed = True
        elif part is not None and int(part.group(1)) < checkpoint.first_part:
            entry.unlink()  # replaced by the compacted parts
            changed = True
    if changed:
        fsync_dir(results)


def open_writer(out_dir: Path, checkpoint: Checkpoint) -> ResultWriter:
    """The output's writer, after tidying what a killed compaction or run left. Blocking."""
    finish_compaction(out_dir, checkpoint)
    writer = writer_for(out_dir, checkpoint)
    writer.recover()
    return writer


class PartSink:
    """New parts of up to `part_rows` records, written under hidden names from part `start` on,
    each fsynced; `discard` removes them. Counted by nothing until `switch`."""

    def __init__(self, out_dir: Path, start: int, part_rows: int) -> None:
        if part_rows <= 0:
            raise ValueError(f"part_rows must be positive, got {part_rows!r}")
        self._results = out_dir / RESULTS_DIR
        self.start = self.end = start
        self.records = 0
        self._part_rows = part_rows
        self._in_part = 0
        self._sink: pa.NativeFile | None = None
        self._writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        table = table.cast(RESULT_SCHEMA)
        while table.num_rows:
            if self._writer is None:
                self._sink = pa.OSFile(str(_hidden(self._results, self.end)), "wb")
                self._writer = pq.ParquetWriter(self._sink, RESULT_SCHEMA, compression="zstd")
            piece = table.slice(0, self._part_rows - self._in_part)
            table = table.slice(piece.num_rows)
            self._writer.write_table(piece)
            self.records += piece.num_rows
            self._in_part += piece.num_rows
            if self._in_part >= self._part_rows:
                self._close_part()

    def _close_part(self) -> None:
        assert self._writer is not None and self._sink is not None
        self._writer.close()
        self._sink.close()
        self._writer = self._sink = None
        fd = os.open(_hidden(self._results, self.end), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.end += 1
        self._in_part = 0

    def close(self) -> None:
        """Every part complete on disk; the parts are `start .. end - 1`."""
        if self._writer is not None:
            self._close_part()
        fsync_dir(self._results)

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._sink is not None:
            self._sink.close()
        for i in range(self.start, self.end + 1):
            _hidden(self._results, i).unlink(missing_ok=True)


def switch(out_dir: Path, checkpoint: Checkpoint, sink: PartSink, **changes: Any) -> None:
    """Make `sink`'s parts the output's, with `changes` to the checkpoint, in one atomic save;
    then finish (rename the parts into place, remove the old ones). On a failed save the
    checkpoint in memory stays as on disk."""
    # Every part is rewritten in the latest columns: an old output's schema moves up with them.
    changes.update(
        first_part=sink.start,
        parts=sink.end,
        stale_records=0,
        results_schema=RESULTS_SCHEMA_VERSION,
    )
    was = {name: getattr(checkpoint, name) for name in changes}
    for name, value in changes.items():
        setattr(checkpoint, name, value)
    try:
        checkpoint.save(out_dir)  # the switch
    except BaseException:
        for name, value in was.items():
            setattr(checkpoint, name, value)
        raise
    finish_compaction(out_dir, checkpoint)


def compact(
    out_dir: Path, checkpoint: Checkpoint, *, part_rows: int = DEFAULT_PART_ROWS
) -> CompactSummary:
    """Rewrite the committed records as parts of up to `part_rows` rows, in row order, one record
    per row (see the module docstring). Blocking; the caller holds OUT's lock and has opened the
    writer (`open_writer`), so no part is uncounted."""
    began = time.monotonic()
    parts_before = checkpoint.parts - checkpoint.first_part
    sink = PartSink(out_dir, checkpoint.parts, part_rows)
    order = RowOrder(
        out_dir,
        checkpoint,
        columns=RESULT_SCHEMA.names,
        project=lambda batch: batch.select(RESULT_SCHEMA.names),
        schema=NULLABLE_SCHEMA,
        scratch=[out_dir],
    )
    try:
        for window in order.windows():
            if window.table.num_rows:
                sink.write(window.table)
        sink.close()
    except BaseException:
        sink.discard()
        raise
    switch(out_dir, checkpoint, sink)
    return CompactSummary(
        parts_before=parts_before,
        parts_after=sink.end - sink.start,
        records=sink.records,
        dropped=order.duplicates,
        seconds=time.monotonic() - began,
    )


def compact_output(out_dir: Path, *, part_rows: int = DEFAULT_PART_ROWS) -> CompactSummary:
    """`batchrun compact OUT`: take OUT's lock, tidy, compact. `CheckpointError` when OUT is not
    a batchrun output, or another run holds it."""
    if not out_dir.is_dir():
        raise CheckpointError(f"no output directory at {out_dir}")
    with OutputLock(out_dir):
        checkpoint = Checkpoint.load(out_dir)
        if checkpoint is None:
            raise CheckpointError(
                f"{out_dir} has no checkpoint.json: it is not a batchrun output directory"
            )
        writer = open_writer(out_dir, checkpoint)
        try:
            return compact(out_dir, checkpoint, part_rows=part_rows)
        finally:
            if writer.rerun is not None:
                writer.rerun.close()
