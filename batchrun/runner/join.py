"""The joined table of an export: the result columns, read out of each record and sorted by row,
then each chunk of input rows set beside its records.

    schema, renames = joined_schema(input_columns.schema)
    RowOrder(..., columns=READ_COLUMNS, project=project, schema=SORTED)   # the results, by row
    for start, stop, inputs in chunks(input_columns, total_rows, chunk_rows):
        table = joined(start, stop, inputs, cursor.take(start, stop), schema)

Guarantees:
- Every row start..stop-1 is in the table, in order, whether it has a record or not (status
  `pending` when not); the input's columns come as the input gives them, renamed `input.NAME`
  where a result column has the name.
- `chunks` checks that the input has exactly the output's rows: a file over 1 GiB is
  fingerprinted by sampled blocks, so an edit between them is caught here, by the row count.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from batchrun.endpoints.answers import read_answer
from batchrun.endpoints.profiles import profile_for
from batchrun.inputs.columns import InputColumns
from batchrun.inputs.rows import InputError
from batchrun.store.ordered import Window
from batchrun.store.writer import RESULT_SCHEMA

__all__ = [
    "READ_COLUMNS",
    "SORTED",
    "Cursor",
    "chunks",
    "joined",
    "joined_schema",
    "project",
    "status_counts",
]

_ANSWER = ("text", "tool_calls")
_FIELDS = [
    pa.field("status", pa.string()),
    pa.field("text", pa.string()),
    pa.field("tool_calls", pa.string()),  # JSON: [{"id", "name", "arguments"}, ...]
    *(
        RESULT_SCHEMA.field(name).with_nullable(True)
        for name in (
            "embedding", "media", "content_type", "finish_reason", "model", "prompt_tokens",
            "completion_tokens", "total_tokens",
            "cached_tokens", "reasoning_tokens", "cost_usd", "error_type", "error_message",
            "http_status", "attempts", "latency_ms", "endpoint",
        )
    ),
]  # fmt: skip
_KEYS = [pa.field("row", pa.int64()), pa.field("custom_id", pa.string())]
# What goes through the sort: the result columns of the joined table, the answer read already.
SORTED = pa.schema([f.with_nullable(True) for f in (*_KEYS, *_FIELDS)])
# The answer columns are among SORTED's names: the results' own where a part has them.
READ_COLUMNS = list(dict.fromkeys([*SORTED.names, "response", *_ANSWER]))


def joined_schema(input_schema: pa.Schema) -> tuple[pa.Schema, dict[str, str]]:
    """The export's columns, and each input column's name in it."""
    renamed = _renames(input_schema)
    inputs = [f.with_name(renamed[f.name]) for f in input_schema]
    return pa.schema([*_KEYS, *inputs, *_FIELDS]), renamed


def _renames(input_schema: pa.Schema) -> dict[str, str]:
    """Each input column's name in the export: its own, or `input.NAME` where a result has it."""
    taken = {f.name for f in (*_KEYS, *_FIELDS)}
    names: dict[str, str] = {}
    for name in input_schema.names:
        new = name
        while new in taken:
            new = f"input.{new}"
        taken.add(new)
        names[name] = new
    return names


def project(batch: pa.RecordBatch) -> pa.RecordBatch:
    text, tool_calls = _answers(batch)
    arrays = [batch.column(name) for name in ("row", "custom_id", "status")]
    arrays += [text, tool_calls]
    arrays += [batch.column(f.name) for f in _FIELDS[3:]]
    return pa.RecordBatch.from_arrays(arrays, schema=SORTED)


def _answers(batch: pa.RecordBatch) -> tuple[pa.Array, pa.Array]:
    """The `text` and `tool_calls` of each record.

    The results carry `text` and `tool_calls` columns of their own (results schema 2): where a
    record has either, they are taken as they stand; only records without them (parts of an
    output started before, which read as nulls) have the answer read here out of the stored
    `response`.
    """
    names = batch.schema.names
    stored = [batch.column(n).to_pylist() if n in names else None for n in _ANSWER]
    texts, calls = stored[0] or [None] * batch.num_rows, stored[1] or [None] * batch.num_rows
    readers: dict[str | None, str | None] = {}
    columns = [batch.column(n).to_pylist() for n in ("status", "endpoint", "response")]
    for i, (status, endpoint, response) in enumerate(zip(*columns, strict=True)):
        if status != "ok" or not response or texts[i] is not None or calls[i] is not None:
            continue
        if endpoint not in readers:
            readers[endpoint] = profile_for(endpoint or "").answer
        kind = readers[endpoint]
        if kind is None:
            continue
        try:
            answer = read_answer(kind, json.loads(response))
        except (ValueError, RecursionError):
            continue
        texts[i], calls[i] = answer.text, answer.tool_calls
    return pa.array(texts, pa.string()), pa.array(calls, pa.string())


def chunks(
    columns: InputColumns | None, total_rows: int, chunk_rows: int
) -> Iterator[tuple[int, int, pa.Table | None]]:
    """Consecutive row ranges covering the output's rows, with the input's columns if joined."""
    if columns is None:
        for start in range(0, total_rows, chunk_rows):
            yield start, min(total_rows, start + chunk_rows), None
        return
    seen = 0
    for chunk in columns.chunks():
        if chunk.stop > total_rows:
            raise InputError(_row_count_changed("more", total_rows))
        yield chunk.start, chunk.stop, chunk.table
        seen = chunk.stop
    if seen != total_rows:
        raise InputError(_row_count_changed("fewer", total_rows))


def _row_count_changed(more_or_fewer: str, total_rows: int) -> str:
    # The fingerprint of a file over 1 GiB samples blocks: an edit between them goes unseen.
    return (
        f"the input reads as {more_or_fewer} rows than the {total_rows:,} this output was made "
        "from: it has changed"
    )


class Cursor:
    """The records of any row range, taken from the windows in order."""

    def __init__(self, windows: Iterator[Window]) -> None:
        self._windows = windows
        self._window: Window | None = None
        self._rows: list[int] = []
        self._advance()

    def _advance(self) -> None:
        self._window = next(self._windows, None)
        self._rows = [] if self._window is None else self._window.table.column("row").to_pylist()

    def take(self, start: int, stop: int) -> pa.Table:
        pieces = []
        while (window := self._window) is not None:
            if window.stop <= start:
                self._advance()
                continue
            lo = bisect.bisect_left(self._rows, start)
            hi = bisect.bisect_left(self._rows, stop)
            pieces.append(window.table.slice(lo, hi - lo))
            if window.stop >= stop:
                break
            self._advance()
        if not pieces:
            return SORTED.empty_table()
        return pa.concat_tables(pieces)


def joined(
    start: int, stop: int, inputs: pa.Table | None, results: pa.Table, schema: pa.Schema
) -> pa.Table:
    n = stop - start
    if results.num_rows != n:  # some rows have no record: line the records up with the rows
        positions: list[int | None] = [None] * n
        for i, row in enumerate(results.column("row").to_pylist()):
            positions[row - start] = i
        results = results.take(pa.array(positions, pa.int64()))
    arrays: list[Any] = [pa.array(range(start, stop), pa.int64()), results.column("custom_id")]
    if inputs is not None:
        arrays += inputs.columns
    arrays.append(pc.fill_null(results.column("status"), "pending"))
    arrays += [results.column(f.name) for f in _FIELDS[1:]]
    return pa.Table.from_arrays(arrays, schema=schema)


def status_counts(table: pa.Table) -> list[tuple[str, int]]:
    counted = pc.value_counts(table.column("status")).to_pylist()
    return [(str(item["values"]), int(item["counts"])) for item in counted]
