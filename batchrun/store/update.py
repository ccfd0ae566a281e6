"""`--update`: an output made from an earlier version of the input, matched to the new one.

    current records (RowOrder) ──┐ by a hash of custom_id           per bucket, in memory:
                                 ├──► bucket files (Arrow, lz4) ──► a record whose custom_id's
    the new input's rows ────────┘   in a scratch dir under OUT     first row has the same
      (row, custom_id, request_sha256: rendered by the caller)      request_sha256 is kept,
                                                                    renumbered to its new row
    kept records ──► hidden parts ──► checkpoint switch: the new input's fingerprint, settings
                                      and row count; done = the kept rows ──► the run sends
                                      the rest as an ordinary resume

Guarantees:
- Row identity is the custom_id (a row without one has its row number as custom_id, so such an
  input is matched row by row). A row whose request (url and body as sent) is unchanged keeps
  its record, and is not sent; a changed row, a new row, a row repeating an earlier row's
  custom_id, and a row that could not be sent (no hash: bad input) are left to send; a record
  whose custom_id the new input lacks leaves the results.
- Atomic: until the checkpoint switch the output is the old one, whole (the hidden parts and the
  scratch directory are swept by the next run); after it, an ordinary output of the new input
  with some rows done. So a kill at any instant leaves a resumable output, and no row is sent
  twice: the rows to send are those the checkpoint says are not done.
- An output whose parts lack `request_sha256` (made before it was kept) is refused: it cannot
  tell changed rows from unchanged ones.
- Memory: a window of the records, one bucket (about 16 MB of records, at most 256 buckets), and
  8 bytes per row left to send.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import zlib
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from batchrun.common.ranges import RangeSet
from batchrun.store.checkpoint import Checkpoint, CheckpointError, Fingerprint
from batchrun.store.compact import DEFAULT_PART_ROWS, NULLABLE_SCHEMA, PartSink, switch
from batchrun.store.duplicates import DUPLICATES_NAME
from batchrun.store.ordered import RowOrder, committed_parts
from batchrun.store.rerun import pass_path

__all__ = ["UpdateCounts", "update_output"]

_BUCKET_BYTES = 16 << 20
_MAX_BUCKETS = 256
_NEW_BATCH = 16_384
_IPC = ipc.IpcWriteOptions(compression="lz4", use_threads=False)
_NEW_SCHEMA = pa.schema(
    [
        pa.field("row", pa.int64()),
        pa.field("custom_id", pa.string()),
        pa.field("request_sha256", pa.string()),
    ]
)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateCounts:
    """What `--update` found, row by row of the new input."""

    total_rows: int
    unchanged: int  # kept their record, not sent
    changed: int  # a record of the same custom_id answered another request
    added: int  # no record had their custom_id
    repeated: int  # their custom_id is an earlier row's: recorded as bad input, not sent
    unsendable: int  # bad input: no request to compare, recorded again
    removed: int  # records whose custom_id the new input does not have

    @property
    def to_send(self) -> int:
        return self.total_rows - self.unchanged


def update_output(
    out_dir: Path,
    checkpoint: Checkpoint,
    new_rows: Iterable[tuple[int, str, str | None]],
    *,
    input_path: Path,
    fingerprint: Fingerprint,
    settings: dict[str, Any],
    part_rows: int = DEFAULT_PART_ROWS,
) -> UpdateCounts:
    """Match the output to the new input (`new_rows`: each row's number, custom_id and request
    hash, in row order) and switch the checkpoint to it (see the module docstring). Blocking;
    the caller holds OUT's lock, has opened the writer, and closed any retry pass."""
    parts = committed_parts(out_dir, checkpoint)
    for part in parts:
        if "request_sha256" not in pq.read_schema(part).names:
            raise CheckpointError(
                f"{part} was written by a batchrun that did not keep request hashes: --update "
                "cannot tell the changed rows from the unchanged ones in this output. Use a new "
                "--out directory for the new input."
            )
    size = sum(
        sum(m.row_group(i).total_byte_size for i in range(m.num_row_groups))
        for m in (pq.read_metadata(p) for p in parts)
    )
    count = max(1, min(_MAX_BUCKETS, math.ceil(size / _BUCKET_BYTES)))
    scratch = Path(tempfile.mkdtemp(prefix=".batchrun-scan-update-", dir=out_dir))
    sink = PartSink(out_dir, checkpoint.parts, part_rows)
    try:
        old = _Buckets(scratch, "old", count, NULLABLE_SCHEMA)
        order = RowOrder(
            out_dir,
            checkpoint,
            columns=NULLABLE_SCHEMA.names,
            project=lambda batch: batch.select(NULLABLE_SCHEMA.names),
            schema=NULLABLE_SCHEMA,
            scratch=[scratch],
        )
        for window in order.windows():
            old.add(window.table)
        old.close()
        new = _Buckets(scratch, "new", count, _NEW_SCHEMA)
        total = new.add_rows(new_rows)
        new.close()
        counts, send, status = _match(old, new, sink, total)
        sink.close()
        done = _complement(send, total)
        switch(
            out_dir, checkpoint, sink,
            input_path=str(input_path), fingerprint=fingerprint, settings=settings,
            total_rows=total, duplicates=None, done=done, counts=status,
        )  # fmt: skip
    except BaseException:
        sink.discard()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    # The list of repeated ids was the old input's: the first pass judges the new one again.
    (out_dir / DUPLICATES_NAME).unlink(missing_ok=True)
    for rerun in checkpoint.passes:
        pass_path(out_dir, rerun.number).unlink(missing_ok=True)
    return counts


class _Buckets:
    """Tables split by a hash of their custom_id into `count` Arrow stream files."""

    def __init__(self, scratch: Path, tag: str, count: int, schema: pa.Schema) -> None:
        self.paths = [scratch / f"{tag}-{i:03d}.arrow" for i in range(count)]
        self._schema = schema
        self._files = [pa.OSFile(str(p), "wb") for p in self.paths]
        self._writers = [ipc.new_stream(f, schema, options=_IPC) for f in self._files]

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        count = len(self.paths)
        ids = table.column("custom_id").to_pylist()
        buckets = pa.array([zlib.crc32(i.encode()) % count for i in ids], pa.int32())
        order = pc.sort_indices(buckets)
        table, buckets = table.take(order), buckets.take(order)
        offset = 0
        for item in pc.value_counts(buckets).to_pylist():
            n = int(item["counts"])
            self._writers[int(item["values"])].write_table(table.slice(offset, n))
            offset += n

    def add_rows(self, rows: Iterable[tuple[int, str, str | None]]) -> int:
        """Add `(row, custom_id, request_sha256)` in row order; how many rows there were."""
        total = 0
        batch: list[tuple[int, str, str | None]] = []
        for item in rows:
            if item[0] != total:
                raise ValueError(f"rows must come in order: row {item[0]} after {total - 1}")
            total += 1
            batch.append(item)
            if len(batch) >= _NEW_BATCH:
                self.add(_new_table(batch))
                batch = []
        self.add(_new_table(batch))
        return total

    def close(self) -> None:
        for writer, file in zip(self._writers, self._files, strict=True):
            writer.close()
            file.close()

    def read(self, i: int) -> pa.Table:
        with pa.OSFile(str(self.paths[i]), "rb") as f:
            return ipc.open_stream(f).read_all()


def _new_table(batch: list[tuple[int, str, str | None]]) -> pa.Table:
    rows, ids, hashes = zip(*batch, strict=True) if batch else ((), (), ())
    return pa.Table.from_arrays(
        [pa.array(rows, pa.int64()), pa.array(ids, pa.string()), pa.array(hashes, pa.string())],
        schema=_NEW_SCHEMA,
    )


def _match(
    old: _Buckets, new: _Buckets, sink: PartSink, total: int
) -> tuple[UpdateCounts, array[int], dict[str, int]]:
    """Bucket by bucket: the kept records (renumbered) into `sink`; the rows left to send; the
    kept records' ok / error counts."""
    send: array[int] = array("q")
    statuses = {"ok": 0, "error": 0}
    unchanged = changed = added = repeated = unsendable = removed = 0
    for i in range(len(old.paths)):
        fresh = new.read(i).sort_by("row")
        first: dict[str, tuple[int, str | None]] = {}
        for row, cid, digest in zip(
            fresh.column("row").to_pylist(),
            fresh.column("custom_id").to_pylist(),
            fresh.column("request_sha256").to_pylist(),
            strict=True,
        ):
            if cid in first:
                repeated += 1  # judged as the run goes: a bad_input record, not sent
                send.append(row)
            else:
                first[cid] = (row, digest)
        records = old.read(i)
        ids = records.column("custom_id").to_pylist()
        keep: list[bool] = []
        rows: list[int] = []
        kept_rows: set[int] = set()
        for cid, digest in zip(ids, records.column("request_sha256").to_pylist(), strict=True):
            match = first.get(cid)
            same = (
                match is not None
                and digest is not None
                and match[1] == digest
                and match[0] not in kept_rows
            )
            keep.append(same)
            if match is None:
                removed += 1
            elif same:
                rows.append(match[0])
                kept_rows.add(match[0])
        known = set(ids)
        for cid, (row, digest) in first.items():
            if row in kept_rows:
                unchanged += 1
                continue
            send.append(row)
            if digest is None:
                unsendable += 1
            elif cid in known:
                changed += 1
            else:
                added += 1
        if rows:
            kept = records.filter(pa.array(keep))
            kept = kept.set_column(
                kept.schema.get_field_index("row"), "row", pa.array(rows, pa.int64())
            )
            sink.write(kept)
            for item in pc.value_counts(kept.column("status")).to_pylist():
                name = str(item["values"])
                statuses[name] = statuses.get(name, 0) + int(item["counts"])
    counts = UpdateCounts(
        total_rows=total,
        unchanged=unchanged,
        changed=changed,
        added=added,
        repeated=repeated,
        unsendable=unsendable,
        removed=removed,
    )
    return counts, send, statuses


def _complement(send: array[int], total: int) -> RangeSet:
    """`[0, total)` without the rows in `send`."""
    done = RangeSet()
    at = 0
    for row in sorted(send):
        done.add_range(at, row)
        at = row + 1
    done.add_range(at, total)
    return done
