"""Parquet inputs, streamed batch by batch: a `body` column, optional `custom_id` and `url`.

Imported only when the input is Parquet, so that a JSONL run does not load pyarrow before its
first request (measured: ~0.1 s of a run's start-up).

Guarantees: as `batchrun.inputs.reader` says for every format; a struct `body` column's nulls
(fields a row did not have) are dropped, not sent as explicit nulls.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.common.ranges import RowFilter
from batchrun.inputs.rows import (
    InputError,
    ParsedRow,
    RowProblem,
    check_body,
    check_url,
    drop_nulls,
    dumps,
    json_type,
    row_id,
)
from batchrun.models import RowError

__all__ = ["iter_parquet", "iter_parquet_ids"]

_PARQUET_BATCH_ROWS = 2048


def iter_parquet(
    path: Path,
    endpoint: str,
    skip: RowFilter | None,
    seen: Callable[[int, str], None] | None = None,
    seen_below: int = 0,
) -> Iterator[ParsedRow | RowError]:
    """As `batchrun.inputs.reader.iter_rows` says, for a Parquet file."""
    pf = _open_parquet(path)
    names = set(pf.schema_arrow.names)
    columns = [c for c in ("custom_id", "url", "body") if c in names]
    for start, batch in _parquet_batches(pf, path, columns, skip, seen_below):
        n = batch.num_rows
        if skip is not None and skip.covers(start, start + n) and start >= seen_below:
            continue
        data = batch.to_pydict()
        bodies = data["body"]
        ids = data.get("custom_id")
        urls = data.get("url")
        for i in range(n):
            r = start + i
            if skip is not None and r in skip:
                if r < seen_below and seen is not None:
                    seen(r, _id_of(ids[i] if ids else None, r))
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
        url = check_url(url, endpoint)
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


def _parquet_batches(
    pf: pq.ParquetFile,
    path: Path,
    columns: list[str],
    skip: RowFilter | None,
    seen_below: int,
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """`(first row, batch)` a row group at a time; a group `skip` covers whole (and above
    `seen_below`) is not read. A shard reads only its own groups, and a damaged group fails only
    the shard that holds it."""
    meta = pf.metadata
    row = 0
    for group in range(meta.num_row_groups):
        n = meta.row_group(group).num_rows
        start, row = row, row + n
        if skip is not None and skip.covers(start, start + n) and start >= seen_below:
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


def iter_parquet_ids(path: Path) -> Iterator[tuple[int, str]]:
    """`(row, custom_id)` of every row, reading the `custom_id` column only."""
    pf = _open_parquet(path)
    if "custom_id" not in pf.schema_arrow.names:
        for r in range(pf.metadata.num_rows):
            yield r, str(r)
        return
    row = 0
    for batch in pf.iter_batches(batch_size=65536, columns=["custom_id"]):
        for value in batch.column(0).to_pylist():
            yield row, _id_of(value, row)
            row += 1


def _id_of(value: Any, row: int) -> str:
    """The custom_id a parse of the row gives (its row number when the value is unusable)."""
    try:
        return row_id(value, row)
    except RowProblem:
        return str(row)
