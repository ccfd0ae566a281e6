"""The input's own columns, row by row in file order, as Arrow tables: what an export puts next
to the answers.

    columns = input_columns(path, records=True)   # True: the records of a run with a template
    columns.schema                                 # known before the first row is read
    for chunk in columns.chunks(): ...             # InputChunk(start, table): consecutive rows

What the columns are:
- Records (CSV / TSV, JSONL objects, Parquet of any columns: the rows of a run with a template):
  every column of the file under its own name. CSV / TSV values are text and an empty cell is
  null, as the template saw them; Parquet columns keep their types; JSONL keys become columns in
  the order they first appear, typed by a first pass over the file: all strings -> string, all
  integers -> int64, integers and floats -> float64, all booleans -> bool, anything else
  (objects, arrays, mixed types) -> text, strings as they are and other values as JSON.
- Requests (OpenAI Batch lines, bare bodies, a Parquet `body` column: a run without a template):
  `model`, the body's model, and `prompt`, the text of the last user message (chat, Claude,
  Gemini, a Responses input list) or the body's `input` / `prompt` text (Responses, embeddings,
  completions), a list of strings as JSON.

Guarantees:
- Rows are numbered as the readers number them (`reader`, `tables`): the chunks hold rows 0, 1,
  2, ... of the run, none left out. A row that cannot be read (invalid JSON, a CSV record with
  the wrong number of fields) is there with every column null.
- Streaming: memory holds one chunk (`chunk_rows` rows), plus for JSONL records the name and
  kinds of each column. A file that cannot be read raises `InputError`, as it does for a run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.inputs.rows import (
    DEFAULT_MAX_ROW_BYTES,
    InputError,
    RowProblem,
    drop_nulls,
    json_object,
    jsonl_lines,
)
from batchrun.inputs.tables import csv_header, iter_records, table_format

__all__ = ["REQUEST_COLUMNS", "InputChunk", "InputColumns", "input_columns", "prompt_text"]

REQUEST_COLUMNS = ("model", "prompt")
_CHUNK_ROWS = 2048
# A JSONL "table" whose records all have different keys has no columns worth the name, and the
# first pass would hold every key.
_MAX_JSONL_COLUMNS = 10_000
_INT64 = (-(2**63), 2**63)

_Values = tuple[int, list[Any] | None]  # (row, its values in column order, or None: unreadable)


@dataclass(frozen=True, slots=True)
class InputChunk:
    start: int  # the row number of the table's first row
    table: pa.Table

    @property
    def stop(self) -> int:
        return self.start + int(self.table.num_rows)


class InputColumns:
    """The columns of one input file; `chunks()` reads it from the start each time it is called."""

    def __init__(self, schema: pa.Schema, chunks: Callable[[], Iterator[InputChunk]]) -> None:
        self.schema = schema
        self._chunks = chunks

    def chunks(self) -> Iterator[InputChunk]:
        return self._chunks()


def input_columns(
    path: Path,
    *,
    records: bool,
    chunk_rows: int = _CHUNK_ROWS,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
) -> InputColumns:
    """The columns of `path`: its records' (`records=True`) or its requests' (see above)."""
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    kind = table_format(path)
    if kind == "parquet":
        pf = _open_parquet(path)
        if records:
            return InputColumns(pf.schema_arrow, lambda: _parquet_chunks(path, pf, chunk_rows))
        return _request_columns(lambda: _parquet_requests(path, pf, chunk_rows), chunk_rows)
    if not records:
        if kind != "jsonl":
            raise InputError(f"{path}: a {kind.upper()} file holds records, not requests")
        return _request_columns(lambda: _jsonl_requests(jsonl_lines(path)), chunk_rows)
    if kind == "jsonl":
        return _jsonl_records(path, chunk_rows, max_row_bytes)
    header = csv_header(path, max_row_bytes=max_row_bytes)
    schema = pa.schema([pa.field(name, pa.string()) for name in header])

    def csv_values() -> Iterator[_Values]:
        for row, record in iter_records(path, max_row_bytes=max_row_bytes):
            yield row, None if isinstance(record, str) else [record[name] for name in header]

    return InputColumns(schema, lambda: _chunked(csv_values(), schema, chunk_rows))


def _chunked(values: Iterable[_Values], schema: pa.Schema, chunk_rows: int) -> Iterator[InputChunk]:
    """Rows of Python values into tables of `chunk_rows` rows, checking that none is missing."""
    width = len(schema)
    columns: list[list[Any]] = [[] for _ in range(width)]
    start = expected = 0
    for row, row_values in values:
        if row != expected:  # the readers number every row; a gap would pair rows wrongly
            raise AssertionError(f"row {row} read where row {expected} was due")
        expected += 1
        for i in range(width):
            columns[i].append(None if row_values is None else row_values[i])
        if expected - start == chunk_rows:
            yield InputChunk(start, _table(columns, schema))
            columns = [[] for _ in range(width)]
            start = expected
    if expected > start:
        yield InputChunk(start, _table(columns, schema))


def _table(columns: list[list[Any]], schema: pa.Schema) -> pa.Table:
    if not columns:  # no columns at all: the rows still count
        return pa.table({})
    return pa.Table.from_arrays(
        [pa.array(values, type=field.type) for values, field in zip(columns, schema, strict=True)],
        schema=schema,
    )


# --- Parquet ----------------------------------------------------------------------------------


def _open_parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path} is not a readable Parquet file: {exc}") from exc


def _parquet_batches(
    path: Path, pf: pq.ParquetFile, chunk_rows: int, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    try:
        yield from pf.iter_batches(batch_size=chunk_rows, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc


def _parquet_chunks(path: Path, pf: pq.ParquetFile, chunk_rows: int) -> Iterator[InputChunk]:
    start = 0
    for batch in _parquet_batches(path, pf, chunk_rows):
        yield InputChunk(start, pa.Table.from_batches([batch]))
        start += batch.num_rows


def _parquet_requests(path: Path, pf: pq.ParquetFile, chunk_rows: int) -> Iterator[_Values]:
    if "body" not in pf.schema_arrow.names:
        raise InputError(f"{path} has no 'body' column")
    row = 0
    for batch in _parquet_batches(path, pf, chunk_rows, ["body"]):
        for body in batch.column(0).to_pylist():
            if isinstance(body, str):
                try:
                    body = json.loads(body)
                except (ValueError, RecursionError):
                    body = None
            elif isinstance(body, dict):
                body = drop_nulls(body)  # a struct's absent fields come back as nulls
            yield row, _request_values(body)
            row += 1


# --- JSONL ------------------------------------------------------------------------------------


def _jsonl_requests(lines: Iterator[tuple[int, int, bytes]]) -> Iterator[_Values]:
    for row, _, line in lines:
        try:
            obj: Any = json_object(line)
        except RowProblem:
            yield row, None
            continue
        if "body" in obj or "custom_id" in obj or "url" in obj:  # a Batch API line
            obj = obj.get("body")
        yield row, _request_values(obj)


def _request_columns(values: Callable[[], Iterator[_Values]], chunk_rows: int) -> InputColumns:
    schema = pa.schema([pa.field(name, pa.string()) for name in REQUEST_COLUMNS])
    return InputColumns(schema, lambda: _chunked(values(), schema, chunk_rows))


def _request_values(body: Any) -> list[Any] | None:
    if not isinstance(body, dict):
        return None
    model = body.get("model")
    return [model if isinstance(model, str) else None, prompt_text(body)]


def prompt_text(body: dict[str, Any]) -> str | None:
    """What a request body asks, as text: the last user message, else its `input` / `prompt`."""
    for name, content_key in (("messages", "content"), ("contents", "parts")):
        messages = body.get(name)
        if isinstance(messages, list):
            return _last_user_text(messages, content_key)
    for name in ("input", "prompt"):
        value = body.get(name)
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value:
            if all(isinstance(item, dict) for item in value):  # a Responses input list
                return _last_user_text(value, "content")
            return json.dumps(value, ensure_ascii=False)
    return None


def _last_user_text(messages: list[Any], content_key: str) -> str | None:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role", "user") == "user":
            return _text(message.get(content_key))
    return None


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts = [
        part if isinstance(part, str) else part["text"]
        for part in content
        if isinstance(part, str) or (isinstance(part, dict) and isinstance(part.get("text"), str))
    ]
    return "\n".join(texts) if texts else None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return "str"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if _INT64[0] <= value < _INT64[1] else "json"
    if isinstance(value, float):
        return "float"
    return "json"


def _as_text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _as_float(value: Any) -> Any:
    return None if value is None else float(value)


def _column_type(kinds: set[str]) -> tuple[pa.DataType, Callable[[Any], Any] | None]:
    kinds = kinds - {"null"}
    if kinds == {"int"}:
        return pa.int64(), None
    if kinds == {"bool"}:
        return pa.bool_(), None
    if kinds and kinds <= {"int", "float"}:
        return pa.float64(), _as_float
    if kinds <= {"str"}:
        return pa.string(), None
    return pa.string(), _as_text


def _jsonl_records(path: Path, chunk_rows: int, max_row_bytes: int) -> InputColumns:
    kinds: dict[str, set[str]] = {}
    for _, record in iter_records(path, max_row_bytes=max_row_bytes):
        if isinstance(record, str):
            continue
        for name, value in record.items():
            kinds.setdefault(name, set()).add(_kind(value))
        if len(kinds) > _MAX_JSONL_COLUMNS:
            raise InputError(
                f"{path}: its records have more than {_MAX_JSONL_COLUMNS:,} different keys, too "
                "many to be columns of a table"
            )
    names = list(kinds)
    typed = [_column_type(kinds[name]) for name in names]
    schema = pa.schema([pa.field(name, t) for name, (t, _) in zip(names, typed, strict=True)])
    converters = [convert for _, convert in typed]

    def values() -> Iterator[_Values]:
        for row, record in iter_records(path, max_row_bytes=max_row_bytes):
            if isinstance(record, str):
                yield row, None
                continue
            yield (
                row,
                [
                    convert(record.get(name)) if convert else record.get(name)
                    for name, convert in zip(names, converters, strict=True)
                ],
            )

    return InputColumns(schema, lambda: _chunked(values(), schema, chunk_rows))
