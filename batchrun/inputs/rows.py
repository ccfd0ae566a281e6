"""What every input format shares: the parsed row, the file-level error, opening a file, and the
checks a request body passes before it is sent.

Readers (`batchrun.inputs.reader` for request files, `batchrun.inputs.tables` for records under a
template) build on these, so a body is judged by the same rules whichever way it was made.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from batchrun.endpoints.profiles import profile_for
from batchrun.inputs.zstd import ZstdReader

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_MAX_ROW_BYTES",
    "READ_ERRORS",
    "InputError",
    "Offset",
    "ParsedRow",
    "RowProblem",
    "check_body",
    "check_url",
    "drop_nulls",
    "dumps",
    "json_object",
    "json_type",
    "jsonl_lines",
    "open_input",
    "required_field",
    "row_id",
    "storable_text",
    "table_format",
]

DEFAULT_ENDPOINT = "/v1/chat/completions"
DEFAULT_MAX_ROW_BYTES = 16 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_COMPRESSED = (".gz", ".zst", ".zstd")
_INT_FIELDS = ("max_tokens", "max_completion_tokens", "n")
# What reading a damaged compressed file raises, besides OSError (the .zst reader raises OSError).
READ_ERRORS = (OSError, EOFError, zlib.error)


class InputError(Exception):
    """The input file as a whole cannot be read: nothing is sent (exit code 2)."""


class RowProblem(Exception):
    """One row cannot be sent; the message says why (the caller adds where)."""


@dataclass(frozen=True, slots=True)
class ParsedRow:
    """A row whose JSON is valid and whose body has the shape its endpoint needs."""

    row: int
    custom_id: str
    url: str
    body: dict[str, Any]
    raw_body: bytes
    line: int | None
    after: str | None = None  # a follow-up task row: the custom_id of the row it acts on


def open_input(path: Path) -> IO[bytes]:
    """Open a file for binary reading, decompressing `.gz` / `.zst` on the fly."""
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Offset:
    """Where a line starts in a plain JSONL file: its byte, its row and its line number (a
    shard of a cluster run starts reading there instead of at the top)."""

    byte: int
    row: int
    line: int


def jsonl_lines(path: Path, start: Offset | None = None) -> Iterator[tuple[int, int, bytes]]:
    """`(row, line number, line)` of every non-blank line, without BOM or surrounding space,
    from the top or from `start` (which must be the start of a line)."""
    row = start.row if start else 0
    with open_input(path) as f:
        try:
            if start is not None:
                f.seek(start.byte)
            for line_no, line in enumerate(f, start=start.line if start else 1):
                if line_no == 1 and line.startswith(_BOM):
                    line = line[len(_BOM) :]
                line = line.strip()
                if line:
                    yield row, line_no, line
                    row += 1
        except READ_ERRORS as exc:
            # A truncated .gz or a read error half way: the rows so far stand, the file does not.
            raise InputError(f"cannot read {path} after line {row}: {exc}") from exc


def json_object(line: bytes) -> dict[str, Any]:
    """The JSON object on `line`; RowProblem when it is not UTF-8, not JSON, or not an object."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RowProblem(f"not valid UTF-8 (byte {exc.start})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RowProblem(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        # Valid JSON that Python still refuses: an integer over 4,300 digits, nesting too deep.
        raise RowProblem(f"unreadable JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RowProblem(f"expected a JSON object, got {json_type(obj)}")
    return obj


def row_id(value: Any, row: int, *, name: str = "custom_id") -> str:
    """A row's id from `value` (its row number when None); `name` is the field, for messages."""
    if value is None:
        return str(row)
    if isinstance(value, str) and value:
        return storable_text(name, value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    got = "an empty string" if value == "" else json_type(value)
    raise RowProblem(f"'{name}' must be a non-empty string, got {got}")


def check_url(value: Any, endpoint: str) -> str:
    """A row's endpoint path from `value` (`endpoint` when None)."""
    if value is None:
        return endpoint
    if not isinstance(value, str) or not value.startswith("/"):
        raise RowProblem(f"'url' must be a path such as \"/v1/chat/completions\", got {value!r}")
    return storable_text("url", value)


def storable_text(name: str, value: str) -> str:
    """`value`, if it can be stored: JSON's `\\ud800` escapes decode to text UTF-8 cannot hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RowProblem(
            f"'{name}' is not valid Unicode: a lone surrogate at character {exc.start}"
        ) from None
    return value


def dumps(body: dict[str, Any]) -> bytes:
    """`body` as compact JSON; a lone surrogate (no UTF-8 form) is sent escaped, as it stood."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(body, separators=(",", ":")).encode()


def required_field(url: str) -> str | None:
    """The body field `url` cannot do without (None: the endpoint is passed through unchecked);
    the endpoint's profile says which (`batchrun.endpoints.profiles`)."""
    required = profile_for(url).required
    return required[0] if required else None


def check_body(body: dict[str, Any], url: str) -> None:
    """RowProblem unless `body` has what `url` needs and its common fields have the right types."""
    required = profile_for(url).required
    if required is not None:
        name, kind = required
        value = body.get(name)
        if value is None:
            raise RowProblem(f"the body has no '{name}' (required by {url})")
        if not isinstance(value, kind) or (isinstance(value, list) and not value):
            raise RowProblem(f"'{name}' must be a non-empty {_kind_name(kind)}")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RowProblem(f"'model' must be a string, got {json_type(model)}")
    if model is not None:
        storable_text("model", model)
    for name in _INT_FIELDS:
        value = body.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise RowProblem(f"'{name}' must be a non-negative integer, got {value!r}")


def drop_nulls(value: Any) -> Any:
    """`value` without the null fields of its objects, at any depth."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def json_type(value: Any) -> str:
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


def table_format(path: Path) -> str:
    """ "parquet", "csv", "tsv" or "jsonl" (anything else), from the file's name."""
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    for suffix in _COMPRESSED:
        name = name.removesuffix(suffix)
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    return "jsonl"
