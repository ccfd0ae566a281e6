"""Refusing an input in which no row could be sent, before anything is sent or created.

A JSON array, a pretty-printed JSON document, a CSV file, a Parquet or gzip file under a
`.jsonl` name: each is read as JSON Lines, and every row would become a `bad_input` record, a run
"finished" with exit 0 and nothing done. `check_sendable` looks at the first `SAMPLE_ROWS` rows
with the same reader as the run:

- one row there can be sent (or the file has no rows: the run says so itself): nothing to say;
- none can: `InputError` (exit 2) naming what the file looks like, from its first bytes, and
  what to do about it, or else the first rows' own problems.

Reads at most `SAMPLE_ROWS` rows and a few KiB more; never the whole file.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

from batchrun.inputs.reader import (
    DEFAULT_ENDPOINT,
    DEFAULT_MAX_ROW_BYTES,
    InputError,
    ParsedRow,
    is_parquet_name,
    iter_rows,
    open_input,
)
from batchrun.inputs.template import Template
from batchrun.models import RowError

__all__ = ["SAMPLE_ROWS", "check_sendable"]

SAMPLE_ROWS = 1000
_HEAD_BYTES = 64 * 1024
_SHOWN_PROBLEMS = 3
_TO_JSONL = (
    'python -c "import json,sys; [print(json.dumps(r)) for r in json.load(open(sys.argv[1]))]" '
    "{name} > {stem}.jsonl  (or: jq -c '.[]' {name} > {stem}.jsonl)"
)


def check_sendable(
    path: Path,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
    template: Template | None = None,
) -> None:
    """Raise `InputError` when none of the first `SAMPLE_ROWS` rows of `path` could be sent."""
    problems: list[RowError] = []
    rows = iter_rows(
        path, endpoint=endpoint, max_row_bytes=max_row_bytes, raw=False, template=template
    )
    try:
        for item in islice(rows, SAMPLE_ROWS):
            if isinstance(item, ParsedRow):
                return
            problems.append(item)
    finally:
        rows.close()
    if not problems:
        return  # no rows at all: the run's first pass says so
    sampled = "the only row" if len(problems) == 1 else f"none of the first {len(problems):,} rows"
    what = "" if template is not None or is_parquet_name(path) else _looks_like(path)
    if what:
        raise InputError(f"{path} {what}; nothing was sent")
    shown = "; ".join(p.message for p in problems[:_SHOWN_PROBLEMS])
    raise InputError(
        f"{path}: {sampled} can be sent ({shown}); nothing was sent. Fix the rows, or check "
        f"--endpoint (rows that name no url go to {endpoint})"
    )


def _looks_like(path: Path) -> str:
    """What a JSONL-named file whose rows are all bad looks like, and the fix; '' if unsure."""
    try:
        with path.open("rb") as raw:
            magic = raw.read(4)
        with open_input(path) as f:
            head = f.read(_HEAD_BYTES)
    except (OSError, EOFError, ValueError):
        head, magic = b"", b""
    name, stem = path.name, path.name.split(".", 1)[0]
    if magic == b"PAR1":
        return f"is a Parquet file under a JSON Lines name: rename it {stem}.parquet"
    if magic[:2] == b"\x1f\x8b":
        return f"is gzip-compressed under a plain name: rename it {stem}.jsonl.gz"
    if magic == b"\x28\xb5\x2f\xfd":
        return f"is zstd-compressed under a plain name: rename it {stem}.jsonl.zst"
    if b"\x00" in head[:4096]:
        return "is not text (it holds NUL bytes): batchrun reads JSON Lines or Parquet"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    first_line = text.split("\n", 1)[0].strip()
    if text.startswith("["):
        return (
            "holds one JSON array, not JSON Lines (one request object per line); convert it: "
            + _TO_JSONL.format(name=name, stem=stem)
        )
    if text.startswith("{") and not _is_json(first_line):
        return (
            "looks like one JSON document over many lines; JSON Lines needs each request on one "
            'line: python -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))" '
            f"{name} > {stem}.jsonl  (an array of requests: jq -c '.[]' {name} > {stem}.jsonl)"
        )
    if first_line and not first_line.startswith(("{", "[", '"')) and "," in first_line:
        header = first_line if len(first_line) <= 80 else first_line[:77] + "..."
        return (
            f"looks like CSV (first line: {header}): name it {stem}.csv and say how to build "
            "each request from its columns with --template FILE, or --model M --prompt "
            "'{{ column }}'"
        )
    return ""


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
