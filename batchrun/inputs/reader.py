"""Streaming rows out of the input file and turning each into a `Request` or a `RowError`.

Inputs without a template are requests:
- JSONL, plain or compressed (`.gz`, `.zst`): each non-blank line is one row. A line is either an
  OpenAI Batch API line `{"custom_id", "method", "url", "body"}` or a bare request body
  `{"model", "messages", ...}` sent to the default endpoint.
- Parquet: a `body` column (JSON string or struct), optional `custom_id` and `url` columns.
With a template (`batchrun.inputs.template`) every row is a record whose columns fill it:
JSONL of objects, CSV, TSV, Parquet of any columns (`batchrun.inputs.tables`). A CSV or TSV
without a template is refused, naming the flags that give one.

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

import json
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.common.ranges import RangeSet
from batchrun.endpoints.usage import max_output_tokens, output_limit, rough_prompt_tokens
from batchrun.inputs.rows import (
    DEFAULT_ENDPOINT,
    DEFAULT_MAX_ROW_BYTES,
    InputError,
    Offset,
    ParsedRow,
    RowProblem,
    check_body,
    drop_nulls,
    dumps,
    json_object,
    json_type,
    jsonl_lines,
    open_input,
    row_id,
    storable_text,
)
from batchrun.inputs.shards import RowSpan
from batchrun.inputs.tables import iter_template_ids, iter_template_rows, table_format
from batchrun.inputs.template import Template
from batchrun.models import Request, RowError

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_MAX_ROW_BYTES",
    "InputError",
    "ParsedRow",
    "is_parquet_name",
    "iter_ids",
    "iter_requests",
    "iter_rows",
    "open_input",
]

_PARQUET_BATCH_ROWS = 2048


def iter_rows(
    path: Path,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    skip: RangeSet | None = None,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    raw: bool = True,
    template: Template | None = None,
    span: RowSpan | None = None,
) -> Generator[ParsedRow | RowError, None, None]:
    """Every row of the input not in `skip`, in file order, parsed and checked.

    `span`: only the rows of one shard (`batchrun.inputs.shards`); a plain JSONL file is read
    from the shard's offset, any other up to the shard's end.

    With `raw=False`, a Batch API line's body is not serialised again for sending (`raw_body`
    is then empty): for passes that only look at the rows, such as estimating. A template's
    bodies are always serialised: their size is part of whether the row can be sent.
    """
    if span is not None:
        skip = RangeSet([*(skip.ranges() if skip is not None else []), *span.outside().ranges()])
        rows: Generator[ParsedRow | RowError, None, None]
        if span.offset is not None and template is None and table_format(path) == "jsonl":
            rows = _iter_jsonl(path, endpoint, skip, max_row_bytes, raw, span.offset)
        else:
            rows = iter_rows(
                path, endpoint=endpoint, skip=skip, max_row_bytes=max_row_bytes, raw=raw,
                template=template,
            )  # fmt: skip
        try:
            yield from span.clip(rows)
        finally:
            rows.close()
        return
    if template is not None:
        yield from iter_template_rows(
            path, template, endpoint=endpoint, skip=skip, max_row_bytes=max_row_bytes
        )
        return
    kind = table_format(path)
    if kind == "parquet":
        yield from _iter_parquet(path, endpoint, skip)
    elif kind == "jsonl":
        yield from _iter_jsonl(path, endpoint, skip, max_row_bytes, raw)
    else:
        raise InputError(_needs_template(path, f"a {kind.upper()} file holds records"))


def is_parquet_name(path: Path) -> bool:
    """The input is read as Parquet by its name (`.parquet`, `.pq`)."""
    return table_format(path) == "parquet"


def _needs_template(path: Path, what: str) -> str:
    return (
        f"{path}: {what}, not requests; say how to build each request from its columns with "
        "--template FILE, or --model M --prompt '{{ column }}' (see batchrun run --help)"
    )


def iter_requests(
    path: Path,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    skip: RangeSet | None = None,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    template: Template | None = None,
    span: RowSpan | None = None,
) -> Generator[Request | RowError, None, None]:
    """`iter_rows` turned into what the workers send."""
    rows = iter_rows(
        path,
        endpoint=endpoint,
        skip=skip,
        max_row_bytes=max_row_bytes,
        template=template,
        span=span,
    )
    for item in rows:
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
    path: Path,
    endpoint: str,
    skip: RangeSet | None,
    max_row_bytes: int,
    raw: bool,
    start: Offset | None = None,
) -> Generator[ParsedRow | RowError, None, None]:
    for row, line_no, line in jsonl_lines(path, start):
        if skip is None or row not in skip:
            yield _parse_jsonl_row(line, row, line_no, endpoint, max_row_bytes, raw)


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
        obj = json_object(line)
    except RowProblem as exc:
        return RowError(row=row, custom_id=str(row), line=line_no, message=f"{where}: {exc}")
    custom_id = str(row)
    try:
        if "body" in obj or "custom_id" in obj or "url" in obj:
            custom_id = row_id(obj.get("custom_id"), row)
            body = obj.get("body")
            if body is None:
                raise RowProblem("the row has no 'body'")
            url = _url(obj.get("url"), endpoint)
            method = obj.get("method", "POST")
            if method != "POST":
                raise RowProblem(f"'method' must be \"POST\", got {method!r}")
            if not isinstance(body, dict):
                raise RowProblem(f"'body' must be a JSON object, got {json_type(body)}")
            raw = dumps(body) if want_raw else b""
        else:
            body, url, raw = obj, endpoint, line
        check_body(body, url)
    except RowProblem as exc:
        return RowError(row=row, custom_id=custom_id, line=line_no, message=f"{where}: {exc}")
    return ParsedRow(row=row, custom_id=custom_id, url=url, body=body, raw_body=raw, line=line_no)


def _iter_parquet(
    path: Path, endpoint: str, skip: RangeSet | None
) -> Iterator[ParsedRow | RowError]:
    pf = _open_parquet(path)
    names = set(pf.schema_arrow.names)
    columns = [c for c in ("custom_id", "url", "body") if c in names]
    for start, batch in _parquet_batches(pf, path, columns, skip):
        n = batch.num_rows
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


def _parquet_batches(
    pf: pq.ParquetFile, path: Path, columns: list[str], skip: RangeSet | None
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """`(first row, batch)` a row group at a time; a group `skip` covers whole is not read. A
    shard reads only its own groups, and a damaged group fails only the shard that holds it."""
    meta = pf.metadata
    row = 0
    for group in range(meta.num_row_groups):
        n = meta.row_group(group).num_rows
        start, row = row, row + n
        if skip is not None and skip.covers(start, start + n):
            continue
        at = start
        try:
            for batch in pf.iter_batches(
                batch_size=_PARQUET_BATCH_ROWS, row_groups=[group], columns=columns
            ):
                yield at, batch
                at += batch.num_rows
        except (OSError, pa.ArrowException) as exc:
            # A damaged row group: the rows so far stand, the file does not (as tables does).
            raise InputError(f"cannot read {path} after row {at}: {exc}") from exc


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
            "batchrun needs a 'body' column holding each request body as a JSON string or struct; "
            "if its rows are records, say how to build each request from its columns with "
            "--template FILE, or --model M --prompt '{{ column }}'"
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
        cid = row_id(custom_id, row)
        url = _url(url, endpoint)
        if body is None:
            raise RowProblem("the 'body' is empty")
        if isinstance(body, str):
            try:
                parsed = json.loads(body)
            except json.JSONDecodeError as exc:
                raise RowProblem(
                    f"'body' is not valid JSON: {exc.msg} at column {exc.colno}"
                ) from None
            except (ValueError, RecursionError) as exc:
                raise RowProblem(f"'body' is unreadable JSON: {exc}") from None
            if not isinstance(parsed, dict):
                raise RowProblem(f"'body' must be a JSON object, got {json_type(parsed)}")
            raw = body.encode()
        else:
            # A struct column gives every row every field; fields a row did not have come back
            # as nulls, which must not be sent as explicit nulls.
            parsed = drop_nulls(body)
            try:
                raw = dumps(parsed)
            except TypeError as exc:  # a binary or timestamp field, say
                raise RowProblem(
                    f"the 'body' struct holds a value JSON cannot carry: {exc}"
                ) from None
        check_body(parsed, url)
    except RowProblem as exc:
        return RowError(row=row, custom_id=cid, message=f"{where}: {exc}")
    return ParsedRow(row=row, custom_id=cid, url=url, body=parsed, raw_body=raw, line=None)


def iter_ids(
    path: Path,
    *,
    template: Template | None = None,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    span: RowSpan | None = None,
) -> Iterator[tuple[int, str]]:
    """`(row, custom_id)` of every row (of `span`), cheaply (for the duplicate check and the
    row count)."""
    if span is not None:
        if span.offset is not None and template is None and table_format(path) == "jsonl":
            lines = jsonl_lines(path, span.offset)
            yield from span.clip(((r, _line_id(x, r)) for r, _, x in lines), lambda p: p[0])
            return
        ids = iter_ids(path, template=template, max_row_bytes=max_row_bytes)
        for row, cid in span.clip(ids, lambda p: p[0]):
            if row >= span.start_row:
                yield row, cid
        return
    if template is not None:
        yield from iter_template_ids(path, template, max_row_bytes=max_row_bytes)
        return
    kind = table_format(path)
    if kind not in ("parquet", "jsonl"):
        raise InputError(_needs_template(path, f"a {kind.upper()} file holds records"))
    if kind == "parquet":
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
    for row, _, line in jsonl_lines(path):
        yield row, _line_id(line, row)


def _line_id(line: bytes, row: int) -> str:
    """A JSONL line's custom_id, or its row number: what `iter_ids` reports for the line."""
    # Only lines that carry a custom_id need parsing; a bare body's id is its row.
    if b'"custom_id"' in line:
        try:
            obj = json.loads(line.decode("utf-8"))
            if isinstance(obj, dict) and obj.get("custom_id") is not None:
                return row_id(obj["custom_id"], row)
        except (ValueError, RecursionError, RowProblem):
            pass  # reported as a row error when the row is read for sending
    return str(row)


def _url(value: Any, endpoint: str) -> str:
    if value is None:
        return endpoint
    if not isinstance(value, str) or not value.startswith("/"):
        raise RowProblem(f"'url' must be a path such as \"/v1/chat/completions\", got {value!r}")
    return storable_text("url", value)
