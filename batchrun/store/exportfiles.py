"""Export files: tables written as Parquet, CSV or JSONL, and the OpenAI Batch output format,
each under a temporary name next to its place and renamed into place once complete.

    with ExportFile(path, force=False) as target:    # an existing `path` refused unless force
        sink = table_sink("csv", target.tmp, schema)
        sink.write(table); ...; sink.close()
        target.commit()                                # fsync, rename, fsync the directory

Formats of a table:
- parquet: the columns' own types, zstd-compressed.
- csv: a header line, then RFC 4180 quoting (pyarrow's writer: strings quoted, a value with a
  newline stays one field); nested values (lists, structs) as JSON text, binary as base64.
- jsonl: one JSON object per row, keys in column order; nested values as JSON, timestamps as
  ISO 8601, binary as base64, NaN and infinities as null (JSON has no word for them).

OpenAI Batch output (`BatchOutputSink`): the lines OpenAI's Batch API writes to a batch's
output file (ok rows) and error file (the rest), documented as the `BatchRequestOutput` object:
`{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`.

Guarantees:
- Nothing is ever seen half-written at `path`: until `commit`, the data is in a hidden file
  beside it (same directory, so the rename is atomic); leaving the `with` block without a commit
  (an error, Ctrl-C) removes that file. A file left by a killed export is replaced by the next.
- Memory: one table (or window of results) at a time.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from batchrun.store.checkpoint import fsync_dir

__all__ = [
    "BATCH_COLUMNS",
    "TABLE_FORMATS",
    "BatchOutputSink",
    "ExportExistsError",
    "ExportFile",
    "TableSink",
    "batch_request_id",
    "table_sink",
]

TABLE_FORMATS = ("parquet", "csv", "jsonl")
_COMPACT = (",", ":")
_GROUP_ROWS = 65_536
_GROUP_BYTES = 16 << 20
_LINES_AT_ONCE = 2048


class ExportExistsError(Exception):
    """The export's file exists and may not be replaced (no `force`)."""


class ExportFile:
    """One export file: `tmp` to write, `commit()` to put it in place."""

    def __init__(self, path: Path, *, force: bool) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.batchrun-tmp")
        self._force = force
        self._committed = False

    def __enter__(self) -> ExportFile:
        if self.path.is_dir():
            raise ExportExistsError(f"{self.path} is a directory")
        if self.path.exists() and not self._force:
            raise ExportExistsError(f"{self.path} exists; add --force to replace it")
        self.tmp.unlink(missing_ok=True)  # left by an export that was killed
        return self

    def commit(self) -> None:
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.tmp.replace(self.path)
        fsync_dir(self.path.parent)
        self._committed = True

    def __exit__(self, *exc_info: object) -> None:
        if not self._committed:
            self.tmp.unlink(missing_ok=True)


class TableSink(Protocol):
    def write(self, table: pa.Table) -> None: ...
    def close(self) -> None: ...


def table_sink(fmt: str, path: Path, schema: pa.Schema) -> TableSink:
    """A writer of tables of `schema` into a new file at `path`, in format `fmt`."""
    if fmt == "parquet":
        return _ParquetSink(path, schema)
    if fmt == "csv":
        return _CsvSink(path, schema)
    if fmt == "jsonl":
        return _JsonlSink(path)
    raise ValueError(f"format must be one of {', '.join(TABLE_FORMATS)}, not {fmt!r}")


class _ParquetSink:
    """Tables gathered into row groups of about `_GROUP_ROWS` rows (a reader's unit of work)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._writer = pq.ParquetWriter(str(path), schema, compression="zstd")
        self._pending: list[pa.Table] = []
        self._rows = self._bytes = 0

    def write(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._rows += table.num_rows
        self._bytes += table.nbytes
        if self._rows >= _GROUP_ROWS or self._bytes >= _GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.concat_tables(self._pending), row_group_size=_GROUP_ROWS)
        self._pending = []
        self._rows = self._bytes = 0

    def close(self) -> None:
        self._flush()
        self._writer.close()


_Convert = Callable[[pa.ChunkedArray], pa.Array | pa.ChunkedArray]


def _json_text(column: pa.ChunkedArray) -> pa.Array:
    return pa.array([None if v is None else _dumps(v) for v in column.to_pylist()], pa.string())


def _base64(column: pa.ChunkedArray) -> pa.Array:
    values = column.to_pylist()
    return pa.array([None if v is None else base64.b64encode(v).decode() for v in values])


def _csv_converter(field: pa.Field) -> _Convert | None:
    kind = field.type
    if pa.types.is_dictionary(kind):
        value_type = kind.value_type
        inner = _csv_converter(pa.field(field.name, value_type))
        return lambda c: (inner or (lambda x: x))(c.cast(value_type))
    if pa.types.is_nested(kind):
        return _json_text
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return _base64
    if pa.types.is_fixed_size_binary(kind):
        return _base64
    return None


class _CsvSink:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._convert = {f.name: c for f in schema if (c := _csv_converter(f)) is not None}
        fields = [pa.field(f.name, pa.string()) if f.name in self._convert else f for f in schema]
        self._schema = pa.schema(fields)
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pcsv.CSVWriter(self._sink, self._schema)

    def write(self, table: pa.Table) -> None:
        for name, convert in self._convert.items():
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, convert(table.column(i)))
        self._writer.write_table(table.cast(self._schema))

    def close(self) -> None:
        self._writer.close()
        self._sink.close()


def _default(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)  # exact; a JSON number would be read back as a float
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    try:
        return json.dumps(
            value, ensure_ascii=False, default=_default, allow_nan=False, separators=_COMPACT
        )
    except ValueError:  # NaN or an infinity somewhere in it
        return json.dumps(_finite(value), ensure_ascii=False, default=_default, separators=_COMPACT)


class _JsonlSink:
    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("w", encoding="utf-8", buffering=1 << 20)

    def write(self, table: pa.Table) -> None:
        self._file.writelines(_dumps(row) + "\n" for row in table.to_pylist())

    def close(self) -> None:
        self._file.close()


def batch_request_id(seed: str, row: int) -> str:
    """A `batch_req_...` id for a row: the same on every export of the same output."""
    return "batch_req_" + hashlib.blake2b(f"{seed}:{row}".encode(), digest_size=16).hexdigest()


BATCH_COLUMNS = (
    "row",
    "custom_id",
    "status",
    "http_status",
    "response",
    "error_type",
    "error_message",
)


class BatchOutputSink:
    """OpenAI Batch output lines: ok records to `output`, every other record to `errors`.

    - An ok record: `response` is `{"status_code": http_status, "request_id": null, "body": the
      response JSON}` and `error` is null. batchrun does not keep response headers, so the
      request id (OpenAI's `x-request-id`) is not known; the body's own `id` is in the body.
    - An error record: `error` is `{"code": error_type, "message": error_message}` (OpenAI fills
      it only for failures without an HTTP answer and leaves HTTP errors in the body; here it is
      always set, so both ways of checking a line find the failure), and `response` is the last
      HTTP answer as above (its JSON body, or null when it was not JSON), or null when none
      arrived (bad input, timeout, connection error).
    """

    def __init__(self, output: Path, errors: Path, *, seed: str) -> None:
        self._seed = seed
        self._output: IO[str] = output.open("w", encoding="utf-8", buffering=1 << 20)
        self._errors: IO[str] = errors.open("w", encoding="utf-8", buffering=1 << 20)
        self.ok_lines = 0
        self.error_lines = 0

    def write(self, table: pa.Table) -> None:
        """`table` holds `BATCH_COLUMNS` of results (any order of rows; lines keep it)."""
        # A slice at a time: the lines of a whole window would hold its responses thrice over.
        for start in range(0, table.num_rows, _LINES_AT_ONCE):
            self._write(table.slice(start, _LINES_AT_ONCE))

    def _write(self, table: pa.Table) -> None:
        columns = [table.column(name).to_pylist() for name in BATCH_COLUMNS]
        ok: list[str] = []
        failed: list[str] = []
        for row, cid, status, http_status, response, error_type, message in zip(
            *columns, strict=True
        ):
            head = f'{{"id":"{batch_request_id(self._seed, row)}","custom_id":{_dumps(cid)},'
            if status == "ok":
                body = _ok_body(response)
                ok.append(f'{head}"response":{_response(http_status, body)},"error":null}}\n')
            else:
                body = _error_body(response)
                answer = "null" if http_status is None else _response(http_status, body)
                error = _dumps({"code": error_type, "message": message})
                failed.append(f'{head}"response":{answer},"error":{error}}}\n')
        self._output.writelines(ok)
        self._errors.writelines(failed)
        self.ok_lines += len(ok)
        self.error_lines += len(failed)

    def close(self) -> None:
        self._output.close()
        self._errors.close()


def _response(status_code: int, body: str) -> str:
    return f'{{"status_code":{status_code},"request_id":null,"body":{body}}}'


def _ok_body(text: str | None) -> str:
    # An ok record's response was parsed as a JSON object when it arrived: it goes in as it
    # stands, unless it spans lines (a server that pretty-prints), which a JSONL line cannot.
    if text and text.startswith("{") and "\n" not in text and "\r" not in text:
        return text
    return _error_body(text)


def _error_body(text: str | None) -> str:
    if not text:
        return "null"
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return "null"  # an HTML error page, say: its words are in the error message
    return _dumps(body) if isinstance(body, dict) else "null"
