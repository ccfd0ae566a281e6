"""Committing result records to `OUT/results/part-NNNNNN.parquet`, then the checkpoint.

Inputs: `Record`s in any order. Output: an ordinary Parquet dataset (one file per flush) and an
up-to-date `checkpoint.json`. Between two parts, the records live in the journal
(`batchrun.store.journal`, `OUT/journal/`), which the writer owns too.

Guarantees:
- A part file is written under a hidden temporary name, fsynced, renamed into place and the
  directory fsynced; only then does the checkpoint count it. Hidden files are ignored by pyarrow,
  pandas, polars and DuckDB, so a reader never sees half a part.
- Only once the checkpoint counts a part are its rows released from the journal, so a row is
  always in a counted part, in the journal, or in both, from the instant it was journaled.
- A commit that fails (a full disk, say) raises `OSError` and leaves the checkpoint as it was; a
  half-written part is removed. If it fails after the part was renamed into place, `recover`
  adopts that part on resume.
- `recover` then `fold_journal` run before a resumed run sends anything: `recover` deletes
  temporary files and adopts a part committed after the last checkpoint (a crash between the two
  steps), so its rows are neither lost nor sent twice; `fold_journal` commits the journaled
  records that no counted part holds, priced as a flush prices them, and only then empties the
  journal. A crash at any step leaves a state that the next resume finishes: no row lost, none
  counted (or its cost added) twice.
- Memory holds at most one flush of records (the fold: what the journal held, at most about two
  flushes).
- `recover` runs before a resumed run sends anything: it deletes temporary files and adopts a part
  committed after the last checkpoint (a crash between the two steps), so its rows are neither
  lost nor sent twice.
- Memory holds at most one flush of records.
- Every part of one output has the same columns: `checkpoint.results_schema` says which (2 since
  the answer columns, 1 for an output started before them). A resumed old output keeps its old
  columns, because pyarrow, polars and DuckDB read a directory by its first part's schema and
  drop or refuse what a later part adds; a media file such an output's row produced is named in
  its `response` instead (`{"batchrun_media": [...], "content_type": ...}`).
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.common.ranges import RangeSet
from batchrun.models import Record
from batchrun.store.checkpoint import RESULTS_DIR, RESULTS_SCHEMA_VERSION, Checkpoint, fsync_dir
from batchrun.store.journal import Journal


class Superseding(Protocol):
    """A pass whose records supersede the rows' earlier ones (`batchrun.store.rerun.PassRows`)."""

    @property
    def number(self) -> int: ...

    def to_send(self, row: int) -> bool: ...

    def supersede(self, records: list[Record]) -> list[Record]: ...

    def count(self, checkpoint: Checkpoint, rows: list[int], statuses: list[str]) -> None: ...

    def close(self) -> None: ...


__all__ = [
    "RESULTS_DIR",
    "RESULT_SCHEMA",
    "ResultWriter",
    "Superseding",
    "part_name",
    "result_schema",
    "skip_pandas_import",
]

# The columns of results schema 1, the first: outputs started before the answer columns.
_SCHEMA_V1 = pa.schema(
    [
        pa.field("custom_id", pa.string(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("endpoint", pa.string()),
        pa.field("http_status", pa.int32()),
        pa.field("response", pa.string()),
        pa.field("error_type", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("model", pa.string()),
        pa.field("finish_reason", pa.string()),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),
        pa.field("total_tokens", pa.int64()),
        pa.field("cached_tokens", pa.int64()),
        pa.field("reasoning_tokens", pa.int64()),
        pa.field("attempts", pa.int32(), nullable=False),
        pa.field("latency_ms", pa.float64()),
        pa.field("cost_usd", pa.float64()),
    ]
)
# Schema 2 appends the request's hash (`--update`) and the answer as typed columns
# (batchrun.endpoints.answers). Appended, so that a reader that knows only the first 18 finds
# them where they were.
RESULT_SCHEMA = _SCHEMA_V1.append(pa.field("request_sha256", pa.string()))
for _field in (
    pa.field("text", pa.string()),
    pa.field("tool_calls", pa.string()),  # JSON: [{"id", "name", "arguments"}]
    # One vector per input of the row, in input order, even for a single input: one shape for
    # every embeddings row, so `embedding[0]` is always the first input's vector.
    pa.field("embedding", pa.list_(pa.list_(pa.float32()))),
    pa.field("media", pa.list_(pa.string())),  # paths relative to OUT
    pa.field("content_type", pa.string()),
):
    RESULT_SCHEMA = RESULT_SCHEMA.append(_field)
_SCHEMAS = {1: _SCHEMA_V1, RESULTS_SCHEMA_VERSION: RESULT_SCHEMA}
_PART = re.compile(r"^part-(\d+)\.parquet$")


class _NoPandas:
    """A meta path finder that refuses pandas, for the moment pyarrow looks for it."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("pandas is not needed to write results", name=name)
        return None


def skip_pandas_import() -> None:
    """Keep pyarrow from importing pandas in this process; for processes that are batchrun's own.

    The first time pyarrow turns a Python list into an array it checks whether pandas can be
    imported, and imports it if so: 0.4-0.5 s of CPU at the first commit of a run, for nothing
    (the writer hands pyarrow lists only). The check runs once per process and remembers what it
    found, so it is run here with pandas out of reach. pyarrow still imports pandas when asked
    for it (`Table.to_pandas`); only its guess that a list might be a pandas object is skipped.
    """
    if "pandas" in sys.modules:
        return
    blocker = _NoPandas()
    sys.meta_path.insert(0, blocker)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(blocker)


def part_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


def result_schema(version: int) -> pa.Schema:
    """The columns of results schema `version` (see the module docstring)."""
    try:
        return _SCHEMAS[version]
    except KeyError:
        raise ValueError(f"unknown results schema version {version!r}") from None


def records_to_table(
    records: list[Record],
    costs: list[float | None] | None = None,
    *,
    version: int = RESULTS_SCHEMA_VERSION,
) -> pa.Table:
    """The records as a table of schema `version`; `costs`, when given, is the cost_usd column."""
    schema = result_schema(version)
    columns: dict[str, list[Any]] = {
        name: [getattr(r, name) for r in records] for name in schema.names
    }
    if costs is not None:
        columns["cost_usd"] = costs
    if version == 1:
        columns["response"] = [_v1_response(r) for r in records]
    return pa.Table.from_pydict(columns, schema=schema)


def _v1_response(record: Record) -> str | None:
    """An old output has no `media` column: a media file is named in `response` instead, so that
    nothing the row produced is lost."""
    if not record.media:
        return record.response
    reference: dict[str, Any] = {"batchrun_media": list(record.media)}
    if record.content_type is not None:
        reference["content_type"] = record.content_type
    if record.response is not None:
        reference["response"] = record.response
    return json.dumps(reference, ensure_ascii=False)


class ResultWriter:
    """Owns `OUT/results/` and the checkpoint. Not shared: only the writer task calls it."""

    def __init__(self, out_dir: Path, checkpoint: Checkpoint) -> None:
        self.out_dir = out_dir
        self.results_dir = out_dir / RESULTS_DIR
        self.checkpoint = checkpoint
        self.journal = Journal(out_dir)
        # Rows committed by this writer: what the journal may let go. Not the checkpoint's done
        # set, whose rows a retry pass (`rerun`) sends again: their journaled answers are not
        # committed until their own part is.
        self._committed = RangeSet()
        self.results_dir.mkdir(parents=True, exist_ok=True)
        # The writer task commits in a worker thread while the first pass's news is saved from
        # another: one checkpoint file, one writer at a time.
        self._saving = threading.Lock()
        # A pass re-sending rows: its records supersede the rows' old ones (store.rerun).
        self._rerun: Superseding | None = None

    def existing_parts(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.results_dir.iterdir():
            match = _PART.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def recover(self) -> int:
        """Tidy up after a crash; return how many rows an adopted part brought in."""
        for path in self.results_dir.iterdir():
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                path.unlink()
        adopted = 0
        for index, path in self.existing_parts():
            if index < self.checkpoint.parts:
                continue
            table = pq.read_table(path, columns=["row", "status", "cost_usd"])
            self._count(
                table.column("row").to_pylist(),
                table.column("status").to_pylist(),
                table.column("cost_usd").to_pylist(),
            )
            self.checkpoint.parts = index + 1
            adopted += table.num_rows
        if adopted:
            self.save()
        return adopted

    def has_journal(self) -> bool:
        """Whether a crash left journal files for `fold_journal` (one directory listing)."""
        return bool(self.journal.files())

    def fold_journal(self, price: Callable[[Record], float | None]) -> int:
        """Commit the journaled records that no counted part holds, each priced by `price` (the
        run's price book, as a flush prices them), then empty the journal; after `recover`.
        While a retry pass is open, its own journaled answers are what no counted part holds:
        they are committed for the pass (superseding the rows' old records), the rest is counted
        already. Returns how many rows it brought in. Raises OSError when the part cannot be
        written (a disk still full): the journal is then kept as it was."""
        done = self.checkpoint.done
        rerun = self.rerun
        seen: set[int] = set()
        records = []
        for tag, record in self.journal.read_tagged():
            if record.row in seen:
                continue  # journaled twice: taken once
            if rerun is not None:
                # A pass re-sends rows the checkpoint counts: its answer counts once its part
                # does (a crash between the checkpoint and the release leaves it journaled too).
                wanted = tag == rerun.number and rerun.to_send(record.row)
            else:
                # A row in a counted part (a crash between the checkpoint and the release).
                wanted = tag is None and record.row not in done
            if wanted:
                seen.add(record.row)
                records.append(record)
        if records:
            if rerun is not None:
                records = rerun.supersede(records)
            self._write_part(records, [price(r) for r in records])
        # Only now: had the fold not reached the checkpoint, the journal would still hold them.
        self.journal.clear()
        self.journal.close()  # and its directory goes: an output finished by the fold is tidy
        return len(records)

    def close(self) -> None:
        """Close the journal (its directory goes when nothing in it is left uncommitted)."""
        self.journal.close()

    def save(self) -> None:
        """Write the checkpoint as it stands (atomically, one save at a time)."""
        with self._saving:
            self.checkpoint.save(self.out_dir)

    def record_first_pass(self, *, total_rows: int, duplicates: int | None) -> None:
        """The row count and (once every id is judged) the number of repeated rows; saved now.
        `duplicates` > 0 only once `OUT/duplicates.bin` is in place."""
        with self._saving:
            self.checkpoint.total_rows = total_rows
            self.checkpoint.duplicates = duplicates
            self.checkpoint.save(self.out_dir)

    @property
    def rerun(self) -> Superseding | None:
        """The retry pass whose records this writer commits, superseding the old ones."""
        return self._rerun

    @rerun.setter
    def rerun(self, rerun: Superseding | None) -> None:
        self._rerun = rerun
        self._committed = RangeSet()  # the pass sends committed rows again: not released yet
        self.journal.tag(rerun.number if rerun is not None else None)

    def commit(self, records: list[Record], costs: list[float | None] | None = None) -> None:
        """Write one part file with `records`, then the checkpoint that counts it, then release
        from the journal what the checkpoint now counts. `costs`, one per record, replaces their
        `cost_usd` (the run prices answers as it commits them)."""
        if not records:
            return
        if costs is None:
            costs = [r.cost_usd for r in records]
        if self.rerun is not None:
            records = self.rerun.supersede(records)
        self._write_part(records, costs)
        for record in records:
            self._committed.add(record.row)
        self.journal.release(self._committed)

    def _write_part(self, records: list[Record], costs: list[float | None]) -> None:
        table = records_to_table(records, costs, version=self.checkpoint.results_schema)
        index = self.checkpoint.parts
        final = self.results_dir / part_name(index)
        tmp = self.results_dir / f".{final.name}.tmp"
        try:
            with tmp.open("wb") as f:
                pq.write_table(table, f, compression="zstd")
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            # A full disk: give back what the half-written part took (recover() would, later).
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(final)
        fsync_dir(self.results_dir)
        with self._saving:
            self._count([r.row for r in records], [r.status for r in records], costs)
            self.checkpoint.parts = index + 1
            self.checkpoint.save(self.out_dir)

    def _count(self, rows: list[int], statuses: list[str], costs: list[float | None]) -> None:
        if self.rerun is not None:
            self.rerun.count(self.checkpoint, rows, statuses)
        else:
            done: RangeSet = self.checkpoint.done
            for row in sorted(rows):
                done.add(row)
            counts = self.checkpoint.counts
            for status in statuses:
                counts[status] = counts.get(status, 0) + 1
        self.checkpoint.cost_usd += sum(c for c in costs if c is not None)
