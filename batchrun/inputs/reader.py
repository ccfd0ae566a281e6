"""Streaming rows out of the input file and turning each into a `Request` or a `RowError`.

Inputs:
- JSONL, plain or compressed (`.gz`, `.zst`): each non-blank line is one row. A line is either an
  OpenAI Batch API line `{"custom_id", "method", "url", "body"}` or a bare request body
  `{"model", "messages", ...}` sent to the default endpoint.
- Parquet: a `body` column (JSON string or struct), optional `custom_id` and `url` columns.

Guarantees:
- The file is read line by line / batch by batch; memory does not depend on its size.
- `row` is the 0-based index of the row among non-blank lines (JSONL) or rows (Parquet); it is the
  same on every pass over an unchanged file, which is what resume relies on.
- A row that cannot be sent (invalid JSON or UTF-8, not an object, no body, wrong types, too large)
  becomes a `RowError` carrying its line number; it never stops the stream. Only a problem with
  the file as a whole (missing, unreadable, no usable column) raises `InputError`.
- Rows in `skip` (already done) are passed over without being parsed.
- A bare body is sent byte for byte as it stands in the file.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.common.ranges import RangeSet
from batchrun.endpoints.usage import max_output_tokens, output_limit, rough_prompt_tokens
from batchrun.inputs.zstd import ZstdReader
from batchrun.models import Request, RowError

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_MAX_ROW_BYTES",
    "InputError",
    "ParsedRow",
    "iter_ids",
    "iter_requests",
    "iter_rows",
    "open_input",
]

DEFAULT_ENDPOINT = "/v1/chat/completions"
DEFAULT_MAX_ROW_BYTES = 16 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_PARQUET_BATCH_ROWS = 2048
# The field each endpoint cannot do without; other endpoints are passed through unchecked.
_REQUIRED_FIELD: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "/v1/chat/completions": ("messages", list),
    "/v1/embeddings": ("input", (str, list)),
    "/v1/completions": ("prompt", (str, list)),
    "/v1/responses": ("input", (str, list)),
}
_INT_FIELDS = ("max_tokens", "max_completion_tokens", "n")
# What reading a damaged compressed file raises, besides OSError (the .zst reader raises OSError).
_READ_ERRORS = (OSError, EOFError, zlib.error)


class InputError(Exception):
    """The input file as a whole cannot be read: nothing is sent (exit code 2)."""


@dataclass(frozen=True, slots=True)
class ParsedRow:
    """A row whose JSON is valid and whose body has the shape its endpoint needs."""

    row: int
    custom_id: str
    url: str
    body: dict[str, Any]
    raw_body: bytes
    line: int | None


class _RowProblem(Exception):
    pass


def _format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    return "jsonl"


def open_input(path: Path) -> IO[bytes]:
    """Open a JSONL file for binary reading, decompressing `.gz` / `.zst` on the fly."""
    if not path.exists():
        raise InputError(f"input file not found: {path}")
    if path.is_dir():
        raise InputError(f"input is a directory, not a file: {path}")
    try:
        name = path.name.lower()
        if name.endswith(".gz"):
            return gzip.open(path, "rb")  # type: ignore[return-value]
        if name.endswith(".zst") or name.endswith(".zstd"):
            return io.BufferedReader(ZstdReader(path.open("rb")))
        return path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot open input file {path}: {exc.strerror or exc}") from exc


def iter_rows(
    path: Path,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    skip: RangeSet | None = None,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    raw: bool = True,
) -> Iterator[ParsedRow | RowError]:
    """Every row of the input not in `skip`, in file order, parsed and checked.

    With `raw=False`, a Batch API line's body is not serialised again for sending (`raw_body`
    is then empty): for passes that only look at the rows, such as estimating.
    """
    if _format(path) == "parquet":
        yield from _iter_parquet(path, endpoint, skip)
    else:
        yield from _iter_jsonl(path, endpoint, skip, max_row_bytes, raw)


def iter_requests(
    path: Path,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    skip: RangeSet | None = None,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
) -> Generator[Request | RowError, None, None]:
    """`iter_rows` turned into what the workers send."""
    for item in iter_rows(path, endpoint=endpoint, skip=skip, max_row_bytes=max_row_bytes):
        if isinstance(item, RowError):
            yield item
            continue
        body = item.body
        model = body.get("model")
        yield Request(
            row=item.row,
            custom_id=item.custom_id,
            url=item.url,
            body=item.raw_body,
            model=model if isinstance(model, str) else None,
            prompt_tokens_estimate=rough_prompt_tokens(item.url, body),
            max_output_tokens=max_output_tokens(item.url, body),
            output_limited=output_limit(item.url, body) is not None,
        )


def _iter_jsonl(
    path: Path, endpoint: str, skip: RangeSet | None, max_row_bytes: int, raw: bool
) -> Iterator[ParsedRow | RowError]:
    for row, line_no, line in _jsonl_lines(path):
        if skip is None or row not in skip:
            yield _parse_jsonl_row(line, row, line_no, endpoint, max_row_bytes, raw)


def _jsonl_lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """`(row, line number, line)` of every non-blank line, without BOM or surrounding space."""
    row = 0
    with open_input(path) as f:
        try:
            for line_no, line in enumerate(f, start=1):
                if line_no == 1 and line.startswith(_BOM):
                    line = line[len(_BOM) :]
                line = line.strip()
                if line:
                    yield row, line_no, line
                    row += 1
        except _READ_ERRORS as exc:
            # A truncated .gz or a read error half way: the rows so far stand, the file does not.
            raise InputError(f"cannot read {path} after line {row}: {exc}") from exc


def _parse_jsonl_row(
    line: bytes, row: int, line_no: int, endpoint: str, max_row_bytes: int, want_raw: bool = True
) -> ParsedRow | RowError:
    where = f"line {line_no}"
    if len(line) > max_row_bytes:
        return RowError(
            row=row,
            custom_id=_line_id(line, row),  # the id the duplicate check saw (iter_ids)
            line=line_no,
            message=f"{where}: the row is {len(line):,} bytes, over the limit of "
            f"{max_row_bytes:,} bytes (--max-row-bytes)",
        )
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RowError(
            row=row,
            custom_id=str(row),
            line=line_no,
            message=f"{where}: not valid UTF-8 (byte {exc.start})",
        )
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return RowError(
            row=row,
            custom_id=str(row),
            line=line_no,
            message=f"{where}: invalid JSON: {exc.msg} at column {exc.colno}",
        )
    except (ValueError, RecursionError) as exc:
        # Valid JSON that Python still refuses: an integer over 4,300 digits, nesting too deep.
        return RowError(
            row=row, custom_id=str(row), line=line_no, message=f"{where}: unreadable JSON: {exc}"
        )
    if not isinstance(obj, dict):
        return RowError(
            row=row,
            custom_id=str(row),
            line=line_no,
            message=f"{where}: expected a JSON object, got {_json_type(obj)}",
        )
    custom_id = str(row)
    try:
        if "body" in obj or "custom_id" in obj or "url" in obj:
            custom_id = _custom_id(obj.get("custom_id"), row)
            body = obj.get("body")
            if body is None:
                raise _RowProblem("the row has no 'body'")
            url = _url(obj.get("url"), endpoint)
            method = obj.get("method", "POST")
            if method != "POST":
                raise _RowProblem(f"'method' must be \"POST\", got {method!r}")
            if not isinstance(body, dict):
                raise _RowProblem(f"'body' must be a JSON object, got {_json_type(body)}")
            raw = _dumps(body) if want_raw else b""
        else:
            body, url, raw = obj, endpoint, line
        _check_body(body, url)
    except _RowProblem as exc:
        return RowError(row=row, custom_id=custom_id, line=line_no, message=f"{where}: {exc}")
    return ParsedRow(row=row, custom_id=custom_id, url=url, body=body, raw_body=raw, line=line_no)


def _iter_parquet(
    path: Path, endpoint: str, skip: RangeSet | None
) -> Iterator[ParsedRow | RowError]:
    pf = _open_parquet(path)
    names = set(pf.schema_arrow.names)
    columns = [c for c in ("custom_id", "url", "body") if c in names]
    row = 0
    for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns):
        start, n = row, batch.num_rows
        row += n
        if skip is not None and skip.covers(start, start + n):
            continue
        data = batch.to_pydict()
        bodies = data["body"]
        ids = data.get("custom_id")
        urls = data.get("url")
        for i in range(n):
            r = start + i
            if skip is not None and r in skip:
                continue
            yield _parse_parquet_row(
                r, bodies[i], ids[i] if ids else None, urls[i] if urls else None, endpoint
            )


def _open_parquet(path: Path) -> pq.ParquetFile:
    if not path.exists():
        raise InputError(f"input file not found: {path}")
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path} is not a readable Parquet file: {exc}") from exc
    schema = pf.schema_arrow
    if "body" not in schema.names:
        raise InputError(
            f"{path} has no 'body' column (columns: {', '.join(schema.names) or 'none'}); "
            "batchrun needs a 'body' column holding each request body as a JSON string or struct"
        )
    body_type = schema.field("body").type
    if not (pa.types.is_string(body_type) or pa.types.is_large_string(body_type)) and not (
        pa.types.is_struct(body_type)
    ):
        raise InputError(
            f"{path}: the 'body' column is {body_type}; it must be a JSON string or a struct"
        )
    return pf


def _parse_parquet_row(
    row: int, body: Any, custom_id: Any, url: Any, endpoint: str
) -> ParsedRow | RowError:
    where = f"row {row}"
    cid = str(row)
    try:
        cid = _custom_id(custom_id, row)
        url = _url(url, endpoint)
        if body is None:
            raise _RowProblem("the 'body' is empty")
        if isinstance(body, str):
            try:
                parsed = json.loads(body)
            except json.JSONDecodeError as exc:
                raise _RowProblem(
                    f"'body' is not valid JSON: {exc.msg} at column {exc.colno}"
                ) from None
            except (ValueError, RecursionError) as exc:
                raise _RowProblem(f"'body' is unreadable JSON: {exc}") from None
            if not isinstance(parsed, dict):
                raise _RowProblem(f"'body' must be a JSON object, got {_json_type(parsed)}")
            raw = body.encode()
        else:
            # A struct column gives every row every field; fields a row did not have come back
            # as nulls, which must not be sent as explicit nulls.
            parsed = _drop_nulls(body)
            try:
                raw = _dumps(parsed)
            except TypeError as exc:  # a binary or timestamp field, say
                raise _RowProblem(
                    f"the 'body' struct holds a value JSON cannot carry: {exc}"
                ) from None
        _check_body(parsed, url)
    except _RowProblem as exc:
        return RowError(row=row, custom_id=cid, message=f"{where}: {exc}")
    return ParsedRow(row=row, custom_id=cid, url=url, body=parsed, raw_body=raw, line=None)


def iter_ids(path: Path) -> Iterator[tuple[int, str]]:
    """`(row, custom_id)` of every row, cheaply (for the duplicate check and the row count)."""
    if _format(path) == "parquet":
        pf = _open_parquet(path)
        if "custom_id" not in pf.schema_arrow.names:
            for r in range(pf.metadata.num_rows):
                yield r, str(r)
            return
        row = 0
        for batch in pf.iter_batches(batch_size=65536, columns=["custom_id"]):
            for value in batch.column(0).to_pylist():
                yield row, (str(value) if value is not None else str(row))
                row += 1
        return
    for row, _, line in _jsonl_lines(path):
        yield row, _line_id(line, row)


def _line_id(line: bytes, row: int) -> str:
    """A JSONL line's custom_id, or its row number: what `iter_ids` reports for the line."""
    # Only lines that carry a custom_id need parsing; a bare body's id is its row.
    if b'"custom_id"' in line:
        try:
            obj = json.loads(line.decode("utf-8"))
            if isinstance(obj, dict) and obj.get("custom_id") is not None:
                return _custom_id(obj["custom_id"], row)
        except (ValueError, RecursionError, _RowProblem):
            pass  # reported as a row error when the row is read for sending
    return str(row)


def _custom_id(value: Any, row: int) -> str:
    if value is None:
        return str(row)
    if isinstance(value, str) and value:
        return _text("custom_id", value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    got = "an empty string" if value == "" else _json_type(value)
    raise _RowProblem(f"'custom_id' must be a non-empty string, got {got}")


def _url(value: Any, endpoint: str) -> str:
    if value is None:
        return endpoint
    if not isinstance(value, str) or not value.startswith("/"):
        raise _RowProblem(f"'url' must be a path such as \"/v1/chat/completions\", got {value!r}")
    return _text("url", value)


def _text(name: str, value: str) -> str:
    """`value`, if it can be stored: JSON's `\\ud800` escapes decode to text UTF-8 cannot hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _RowProblem(
            f"'{name}' is not valid Unicode: a lone surrogate at character {exc.start}"
        ) from None
    return value


def _dumps(body: dict[str, Any]) -> bytes:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate escape has no UTF-8 form: send it escaped, as it stood in the input.
        return json.dumps(body, separators=(",", ":")).encode()


def _check_body(body: dict[str, Any], url: str) -> None:
    required = _REQUIRED_FIELD.get(url)
    if required is not None:
        name, kind = required
        value = body.get(name)
        if value is None:
            raise _RowProblem(f"the body has no '{name}' (required by {url})")
        if not isinstance(value, kind) or (isinstance(value, list) and not value):
            raise _RowProblem(f"'{name}' must be a non-empty {_kind_name(kind)}")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _RowProblem(f"'model' must be a string, got {_json_type(model)}")
    if model is not None:
        _text("model", model)
    for name in _INT_FIELDS:
        value = body.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise _RowProblem(f"'{name}' must be a non-negative integer, got {value!r}")


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names: dict[type, str] = {list: "array", str: "string"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)
