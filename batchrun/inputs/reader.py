"""Streaming rows out of the input file and turning each into a `Request` or a `RowError`.

Inputs (Parquet is read by `batchrun.inputs.parquet`; the checks every format shares are in
`batchrun.inputs.rows`):
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
- With an id judge (`batchrun.inputs.idtable`), a row whose custom_id an earlier row had becomes
  a `bad_input` row error naming that row, and no row is handed out before it is judged.
- A bare body is sent byte for byte as it stands in the file.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import IO

from batchrun.common.ranges import RangeSet
from batchrun.endpoints.usage import max_output_tokens, rough_prompt_tokens
from batchrun.inputs.idtable import PENDING, IdJudge, Pending
from batchrun.inputs.rows import (
    InputError,
    ParsedRow,
    RowProblem,
    check_body,
    check_custom_id,
    check_url,
    dump_body,
    json_type,
)
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
# What reading a damaged compressed file raises, besides OSError (the .zst reader raises OSError).
_READ_ERRORS = (OSError, EOFError, zlib.error)


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
    seen: Callable[[int, str], None] | None = None,
    seen_below: int = 0,
) -> Iterator[ParsedRow | RowError]:
    """Every row of the input not in `skip`, in file order, parsed and checked.

    With `raw=False`, a Batch API line's body is not serialised again for sending (`raw_body`
    is then empty): for passes that only look at the rows, such as estimating. Rows in `skip`
    below `seen_below` are given to `seen` with their custom_id (the one a parse would give),
    read as cheaply as `iter_ids` reads it.
    """
    if seen is None:
        seen_below = 0
    if _format(path) == "parquet":
        from batchrun.inputs.parquet import iter_parquet

        yield from iter_parquet(path, endpoint, skip, seen, seen_below)
    else:
        yield from _iter_jsonl(path, endpoint, skip, max_row_bytes, raw, seen, seen_below)


def iter_requests(
    path: Path,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    skip: RangeSet | None = None,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    judge: IdJudge | None = None,
) -> Generator[Request | RowError | Pending, None, None]:
    """`iter_rows` turned into what the workers send.

    With a `judge`, every row's custom_id is judged in row order (skipped rows included, as far
    as the judge asks): a row whose id an earlier row had becomes a `bad_input` `RowError`
    naming that row. While the judge cannot tell, `PENDING` is yielded and the same row is asked
    about again on the next `next()`: nothing past it is handed out before it is judged.
    """
    seen = judge.seen if judge is not None else None
    seen_below = judge.seen_below() if judge is not None else 0
    rows = iter_rows(
        path,
        endpoint=endpoint,
        skip=skip,
        max_row_bytes=max_row_bytes,
        seen=seen,
        seen_below=seen_below,
    )
    for item in rows:
        if judge is not None:
            while isinstance(earlier := judge.verdict(item.row, item.custom_id), Pending):
                yield PENDING
            if earlier is not None:
                yield _repeated(item, earlier)
                continue
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
        )


def _repeated(item: ParsedRow | RowError, earlier: int) -> RowError:
    """The error of a row whose custom_id row `earlier` has: not sent, or the two results could
    not be told apart."""
    where = f"line {item.line}" if item.line is not None else f"row {item.row}"
    repeat = f"custom_id {item.custom_id!r} is already used by row {earlier}"
    if isinstance(item, RowError):
        message = f"{item.message}; also, its {repeat}"
    else:
        message = f"{where}: {repeat} (custom_ids must be unique); not sent"
    return RowError(row=item.row, custom_id=item.custom_id, message=message, line=item.line)


def _iter_jsonl(
    path: Path,
    endpoint: str,
    skip: RangeSet | None,
    max_row_bytes: int,
    raw: bool,
    seen: Callable[[int, str], None] | None,
    seen_below: int,
) -> Iterator[ParsedRow | RowError]:
    for row, line_no, line in _jsonl_lines(path):
        if skip is not None and row in skip:
            if row < seen_below and seen is not None:
                seen(row, _line_id(line, row))
            continue
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
            message=f"{where}: expected a JSON object, got {json_type(obj)}",
        )
    custom_id = str(row)
    try:
        if "body" in obj or "custom_id" in obj or "url" in obj:
            custom_id = check_custom_id(obj.get("custom_id"), row)
            body = obj.get("body")
            if body is None:
                raise RowProblem("the row has no 'body'")
            url = check_url(obj.get("url"), endpoint)
            method = obj.get("method", "POST")
            if method != "POST":
                raise RowProblem(f"'method' must be \"POST\", got {method!r}")
            if not isinstance(body, dict):
                raise RowProblem(f"'body' must be a JSON object, got {json_type(body)}")
            raw = dump_body(body) if want_raw else b""
        else:
            body, url, raw = obj, endpoint, line
        check_body(body, url)
    except RowProblem as exc:
        return RowError(row=row, custom_id=custom_id, line=line_no, message=f"{where}: {exc}")
    return ParsedRow(row=row, custom_id=custom_id, url=url, body=body, raw_body=raw, line=line_no)


def iter_ids(path: Path) -> Iterator[tuple[int, str]]:
    """`(row, custom_id)` of every row, cheaply (for the duplicate check and the row count)."""
    if _format(path) == "parquet":
        from batchrun.inputs.parquet import iter_parquet_ids

        yield from iter_parquet_ids(path)
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
                return check_custom_id(obj["custom_id"], row)
        except (ValueError, RecursionError, RowProblem):
            pass  # reported as a row error when the row is read for sending
    return str(row)
