"""Streaming rows out of the input file and turning each into a `Request` or a `RowError`.

Inputs without a template are requests (Parquet is read by `batchrun.inputs.parquet`; the
checks every format shares are in `batchrun.inputs.rows`):
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
- With an id judge (`batchrun.inputs.idtable`), a row whose custom_id an earlier row had becomes
  a `bad_input` row error naming that row, and no row is handed out before it is judged.
- A bare body is sent byte for byte as it stands in the file.
- A row that uploads files (its endpoint's profile names the fields) has every file resolved
  inside the files root as it is read (`batchrun.inputs.files`): a path outside it, a missing
  file or one over the endpoint's limit is a `RowError` with the line number, never an upload.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrun.common.ranges import RowFilter
from batchrun.endpoints.audio_length import HEAD_BYTES, audio_seconds_of
from batchrun.endpoints.profiles import Profile, profile_for
from batchrun.endpoints.usage import max_output_tokens, output_limit, rough_prompt_tokens
from batchrun.inputs.files import FilesRoot, UploadProblem
from batchrun.inputs.idtable import PENDING, IdJudge, Pending
from batchrun.inputs.rows import (
    DEFAULT_ENDPOINT,
    DEFAULT_MAX_ROW_BYTES,
    InputError,
    Offset,
    ParsedRow,
    RowProblem,
    check_body,
    check_url,
    dumps,
    json_object,
    json_type,
    jsonl_lines,
    open_input,
    row_id,
    table_format,
)
from batchrun.models import Request, RowError, Upload

if TYPE_CHECKING:  # tables and templates bring pyarrow and Jinja2: loaded when a run has one
    from batchrun.inputs.shards import RowSpan
    from batchrun.inputs.template import Template

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

Seen = Callable[[int, str], None]


def iter_rows(
    path: Path,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    skip: RowFilter | None = None,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    raw: bool = True,
    template: Template | None = None,
    seen: Seen | None = None,
    seen_below: int = 0,
    span: RowSpan | None = None,
) -> Generator[ParsedRow | RowError, None, None]:
    """Every row of the input not in `skip`, in file order, parsed and checked.

    `span`: only the rows of one shard (`batchrun.inputs.shards`); a plain JSONL file is read
    from the shard's offset, any other up to the shard's end.

    With `raw=False`, a Batch API line's body is not serialised again for sending (`raw_body`
    is then empty): for passes that only look at the rows, such as estimating. A template's
    bodies are always serialised: their size is part of whether the row can be sent. Rows in
    `skip` below `seen_below` are given to `seen` with their custom_id (the one a parse would
    give), read as cheaply as `iter_ids` reads it, in row order with the rows handed out.
    """
    if seen is None:
        seen_below = 0
    if span is not None:
        outside = span.outside()
        skip = outside if skip is None else _Either(skip, outside)
        rows: Generator[ParsedRow | RowError, None, None]
        if span.offset is not None and template is None and table_format(path) == "jsonl":
            rows = _iter_jsonl(
                path, endpoint, skip, max_row_bytes, raw, seen, seen_below, span.offset
            )
        else:
            rows = iter_rows(
                path, endpoint=endpoint, skip=skip, max_row_bytes=max_row_bytes, raw=raw,
                template=template, seen=seen, seen_below=seen_below,
            )  # fmt: skip
        try:
            yield from span.clip(rows)
        finally:
            rows.close()
        return
    if template is not None:
        from batchrun.inputs.tables import iter_template_ids, iter_template_rows

        records = iter_template_rows(
            path, template, endpoint=endpoint, skip=skip, max_row_bytes=max_row_bytes
        )
        if seen is None or skip is None or seen_below == 0:
            yield from records
        else:
            ids = iter_template_ids(path, template, max_row_bytes=max_row_bytes)
            yield from _with_skipped_ids(records, ids, skip, seen, seen_below)
        return
    kind = table_format(path)
    if kind == "parquet":
        from batchrun.inputs.parquet import iter_parquet

        yield from iter_parquet(path, endpoint, skip, seen, seen_below)
    elif kind == "jsonl":
        yield from _iter_jsonl(path, endpoint, skip, max_row_bytes, raw, seen, seen_below)
    else:
        raise InputError(_needs_template(path, f"a {kind.upper()} file holds records"))


class _Either:
    """Rows in either filter: what a shard's reader skips (done, or outside the shard)."""

    def __init__(self, first: RowFilter, second: RowFilter) -> None:
        self._first, self._second = first, second

    def __contains__(self, value: object, /) -> bool:
        return value in self._first or value in self._second

    def covers(self, start: int, end: int) -> bool:
        # Conservative: a range neither covers whole is read (and its rows checked one by one).
        return self._first.covers(start, end) or self._second.covers(start, end)


def is_parquet_name(path: Path) -> bool:
    """The input is read as Parquet by its name (`.parquet`, `.pq`)."""
    return table_format(path) == "parquet"


def _needs_template(path: Path, what: str) -> str:
    return (
        f"{path}: {what}, not requests; say how to build each request from its columns with "
        "--template FILE, or --model M --prompt '{{ column }}' (see batchrun run --help)"
    )


def _with_skipped_ids(
    rows: Iterator[ParsedRow | RowError],
    ids: Iterator[tuple[int, str]],
    skip: RowFilter,
    seen: Seen,
    seen_below: int,
) -> Iterator[ParsedRow | RowError]:
    """`rows`, with `seen` told the ids of skipped rows below `seen_below` in row order: a
    template's records are read twice for those (once for ids), as far as `seen_below` only."""
    skipped = ((r, cid) for r, cid in ids if r < seen_below and r in skip)
    pending = next(skipped, None)
    for item in rows:
        while pending is not None and pending[0] < item.row:
            seen(*pending)
            pending = next(skipped, None)
        yield item
    while pending is not None:
        seen(*pending)
        pending = next(skipped, None)


def iter_requests(
    path: Path,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    skip: RowFilter | None = None,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    template: Template | None = None,
    judge: IdJudge | None = None,
    files_root: Path | None = None,
    span: RowSpan | None = None,
) -> Generator[Request | RowError | Pending, None, None]:
    """`iter_rows` turned into what the workers send.

    With a `judge`, every row's custom_id is judged in row order (skipped rows included, as far
    as the judge asks): a row whose id an earlier row had becomes a `bad_input` `RowError`
    naming that row. While the judge cannot tell, `PENDING` is yielded and the same row is asked
    about again on the next `next()`: nothing past it is handed out before it is judged.
    Files a row uploads are resolved inside `files_root` (default: the input file's folder).
    """
    root: FilesRoot | None = None
    seen = judge.seen if judge is not None else None
    seen_below = judge.seen_below() if judge is not None else 0
    rows = iter_rows(
        path,
        endpoint=endpoint,
        skip=skip,
        max_row_bytes=max_row_bytes,
        template=template,
        seen=seen,
        seen_below=seen_below,
        span=span,
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
        profile = profile_for(item.url)
        uploads: tuple[Upload, ...] = ()
        if profile.files:
            root = root or FilesRoot(files_root if files_root is not None else path.parent)
            resolved = resolve_uploads(item, root)
            if isinstance(resolved, RowError):
                yield resolved
                continue
            uploads = resolved
        model = body.get("model")
        if not isinstance(model, str):
            model = profile.model_in_path(item.url)  # Gemini native: the model is in the path
        yield Request(
            row=item.row,
            custom_id=item.custom_id,
            url=item.url,
            body=item.raw_body,
            model=model if isinstance(model, str) else None,
            prompt_tokens_estimate=rough_prompt_tokens(item.url, body),
            max_output_tokens=max_output_tokens(item.url, body),
            output_limited=output_limit(item.url, body) is not None,
            uploads=uploads,
            after=item.after,
        )


def _audio_seconds(path: Path) -> float | None:
    """The duration its header gives (one read of 64 KiB): what whisper bills by."""
    try:
        with path.open("rb") as f:
            head = f.read(HEAD_BYTES)
        return audio_seconds_of(head, path.stat().st_size)
    except OSError:
        return None  # read again when sent, where a failure is the row's error


def resolve_uploads(item: ParsedRow, root: FilesRoot) -> tuple[Upload, ...] | RowError:
    """The files the row uploads, resolved inside `root`; a path outside it, a missing file or
    one over the endpoint's limit is the row's `RowError`, with its line number (never sent).
    The same for `run` and `estimate`."""
    try:
        return _uploads(profile_for(item.url), item.body, root)
    except UploadProblem as exc:
        where = f"line {item.line}" if item.line is not None else f"row {item.row}"
        message = f"{where}: {exc}; not sent"
        return RowError(row=item.row, custom_id=item.custom_id, message=message, line=item.line)


def _uploads(profile: Profile, body: dict[str, Any], root: FilesRoot) -> tuple[Upload, ...]:
    """Every file the body names in the profile's file fields, resolved inside `root`. A list
    is sent as repeated `name[]` parts (`"image": ["a.png", "b.png"]`), as OpenAI's SDK does."""
    found: list[Upload] = []
    for name in profile.files:
        value = body.get(name)
        if value is None:
            continue
        names, field = ([value], name) if not isinstance(value, list) else (value, f"{name}[]")
        if not names:
            raise UploadProblem(f"'{name}' names no file")
        for given in names:
            resolved = root.resolve(given, limit_bytes=profile.max_upload_bytes)
            seconds = _audio_seconds(resolved) if profile.name == "transcriptions" else None
            filename = Path(str(given)).name
            found.append(
                Upload(field=field, path=str(resolved), filename=filename, seconds=seconds)
            )
    return tuple(found)


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
    skip: RowFilter | None,
    max_row_bytes: int,
    raw: bool,
    seen: Seen | None,
    seen_below: int,
    start: Offset | None = None,
) -> Generator[ParsedRow | RowError, None, None]:
    for row, line_no, line in jsonl_lines(path, start):
        if skip is not None and row in skip:
            if row < seen_below and seen is not None:
                seen(row, _line_id(line, row))
            continue
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
            url = check_url(obj.get("url"), endpoint)
            method = obj.get("method", "POST")
            if method != "POST":
                raise RowProblem(f"'method' must be \"POST\", got {method!r}")
            if not isinstance(body, dict):
                raise RowProblem(f"'body' must be a JSON object, got {json_type(body)}")
            raw = dumps(body) if want_raw else b""
            after = obj.get("after")
            if after is not None and not (isinstance(after, str) and after):
                raise RowProblem(f"'after' must be the custom_id of another row, got {after!r}")
        else:
            body, url, raw, after = obj, endpoint, line, None
        check_body(body, url)
    except RowProblem as exc:
        return RowError(row=row, custom_id=custom_id, line=line_no, message=f"{where}: {exc}")
    return ParsedRow(
        row=row, custom_id=custom_id, url=url, body=body, raw_body=raw, line=line_no, after=after
    )


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
        from batchrun.inputs.tables import iter_template_ids

        yield from iter_template_ids(path, template, max_row_bytes=max_row_bytes)
        return
    kind = table_format(path)
    if kind == "parquet":
        from batchrun.inputs.parquet import iter_parquet_ids

        yield from iter_parquet_ids(path)
        return
    if kind != "jsonl":
        raise InputError(_needs_template(path, f"a {kind.upper()} file holds records"))
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
