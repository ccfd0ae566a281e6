"""What every input format shares: the checks a row's fields pass before it can be sent.

A row that fails one raises `RowProblem` with the reason; the readers turn it into a `RowError`
with its line (JSONL) or row (Parquet) number. Pure functions: no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "InputError",
    "ParsedRow",
    "RowProblem",
    "check_body",
    "check_custom_id",
    "check_text",
    "check_url",
    "drop_nulls",
    "dump_body",
    "json_type",
]

# The field each endpoint cannot do without; other endpoints are passed through unchecked.
_REQUIRED_FIELD: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "/v1/chat/completions": ("messages", list),
    "/v1/embeddings": ("input", (str, list)),
    "/v1/completions": ("prompt", (str, list)),
    "/v1/responses": ("input", (str, list)),
}
_INT_FIELDS = ("max_tokens", "max_completion_tokens", "n")


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


class RowProblem(Exception):
    """Why one row cannot be sent."""


def check_custom_id(value: Any, row: int) -> str:
    if value is None:
        return str(row)
    if isinstance(value, str) and value:
        return check_text("custom_id", value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    got = "an empty string" if value == "" else json_type(value)
    raise RowProblem(f"'custom_id' must be a non-empty string, got {got}")


def check_url(value: Any, endpoint: str) -> str:
    if value is None:
        return endpoint
    if not isinstance(value, str) or not value.startswith("/"):
        raise RowProblem(f"'url' must be a path such as \"/v1/chat/completions\", got {value!r}")
    return check_text("url", value)


def check_text(name: str, value: str) -> str:
    """`value`, if it can be stored: JSON's `\\ud800` escapes decode to text UTF-8 cannot hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RowProblem(
            f"'{name}' is not valid Unicode: a lone surrogate at character {exc.start}"
        ) from None
    return value


def dump_body(body: dict[str, Any]) -> bytes:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate escape has no UTF-8 form: send it escaped, as it stood in the input.
        return json.dumps(body, separators=(",", ":")).encode()


def check_body(body: dict[str, Any], url: str) -> None:
    required = _REQUIRED_FIELD.get(url)
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
        check_text("model", model)
    for name in _INT_FIELDS:
        value = body.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise RowProblem(f"'{name}' must be a non-negative integer, got {value!r}")


def drop_nulls(value: Any) -> Any:
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
