"""The wire shapes of the providers' Batch APIs: what a batch may hold, how a row is written into
one, and how each line of the results reads.

    OpenAI Batch API              one JSONL file per batch, uploaded to /v1/files (purpose=batch):
      in   {"custom_id", "method": "POST", "url", "body"}
      out  {"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}
    Anthropic Message Batches     one JSON body, POST /v1/messages/batches:
      in   {"requests": [{"custom_id", "params": {...Messages API body...}}, ...]}
      out  {"custom_id", "result": {"type": "succeeded" | "errored" | "canceled" | "expired", ...}}

Pure functions and values: no I/O. Results are matched to rows by `custom_id`, never by order
(lines come back in any order).

Guarantees:
- `BatchLimits` are the providers' documented limits per batch (OpenAI 50,000 requests and
  200 MB per file, one endpoint per batch, 50,000 embedding inputs; Anthropic 100,000 requests
  or 256 MB); a batch packed within them is not refused for its size.
- `anthropic_wire_id` gives every row an id Anthropic accepts (`^[a-zA-Z0-9_-]{1,64}$`): the
  row's own custom_id where it fits, else `batchrun-row-N`; two rows never share one, since
  custom_ids are unique in an input and no own id of that prefix is kept.
- `read_openai_line` / `read_anthropic_line` never raise on a malformed line: it reads as a
  `BatchLine` of kind "malformed" with what was wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "ANTHROPIC",
    "ANTHROPIC_ENDPOINT",
    "BACKEND_LIMITS",
    "OPENAI",
    "BatchLimits",
    "BatchLine",
    "LineKind",
    "anthropic_item",
    "anthropic_wire_id",
    "embedding_inputs",
    "openai_line",
    "read_anthropic_line",
    "read_openai_line",
]

_MB = 1024 * 1024
ANTHROPIC_ENDPOINT = "/v1/messages"


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchLimits:
    """What one batch may hold, as the provider documents it."""

    max_requests: int
    max_bytes: int
    endpoints: frozenset[str]  # the endpoints its rows may name
    max_embedding_inputs: int | None = None  # summed over a batch of /v1/embeddings rows


OPENAI = BatchLimits(
    max_requests=50_000,
    max_bytes=200 * _MB,
    endpoints=frozenset(
        {
            "/v1/responses",
            "/v1/chat/completions",
            "/v1/embeddings",
            "/v1/completions",
            "/v1/moderations",
            "/v1/images/generations",
            "/v1/images/edits",
            "/v1/videos",
        }
    ),
    max_embedding_inputs=50_000,
)
ANTHROPIC = BatchLimits(
    max_requests=100_000, max_bytes=256 * _MB, endpoints=frozenset({ANTHROPIC_ENDPOINT})
)
BACKEND_LIMITS = {"openai-batch": OPENAI, "anthropic-batch": ANTHROPIC}

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def openai_line(wire_id: str, url: str, body: bytes) -> bytes:
    """One line of an OpenAI batch input file; `body` is the row's JSON as sent online."""
    head = f'{{"custom_id":{_ENCODE(wire_id)},"method":"POST","url":{_ENCODE(url)},"body":'
    return head.encode() + body.strip() + b"}\n"


def anthropic_item(wire_id: str, body: bytes) -> bytes:
    """One element of a Message Batch's `requests` array (no separator)."""
    return f'{{"custom_id":{_ENCODE(wire_id)},"params":'.encode() + body.strip() + b"}"


_ANTHROPIC_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_OWN_PREFIX = "batchrun-row-"


def anthropic_wire_id(custom_id: str, row: int) -> str:
    """The custom_id a row goes under in a Message Batch (see the module docstring)."""
    if _ANTHROPIC_ID.fullmatch(custom_id) and not custom_id.startswith(_OWN_PREFIX):
        return custom_id
    return f"{_OWN_PREFIX}{row}"


def embedding_inputs(body: dict[str, Any]) -> int:
    """How many inputs an embeddings body embeds (a list of strings or of token arrays)."""
    value = body.get("input")
    if isinstance(value, list) and value and not all(isinstance(v, int) for v in value):
        return len(value)
    return 1


LineKind = Literal["ok", "error", "expired", "cancelled", "malformed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchLine:
    """One result line, read. `answer` is the response body of an ok line (a chat completion, a
    Claude message); for an error line `answer` is the error body when there is one."""

    kind: LineKind
    custom_id: str | None
    status_code: int | None = None
    answer: Any = None
    error_code: str | None = None
    error_message: str | None = None


def _parse(line: bytes) -> dict[str, Any] | str:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        return f"not JSON ({exc})"
    return obj if isinstance(obj, dict) else "not a JSON object"


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def read_openai_line(line: bytes) -> BatchLine:
    """A line of an OpenAI batch output or error file.

    `response.status_code` 2xx with a body that is not `{"error": ...}`: ok. Another status:
    error, the body being the API's error body. `error` set and no response: an error the batch
    itself reports for the row (`batch_expired`, `batch_cancelled`, ...), by its code.
    """
    obj = _parse(line)
    if isinstance(obj, str):
        return BatchLine(kind="malformed", custom_id=None, error_message=obj)
    custom_id = obj.get("custom_id")
    custom_id = str(custom_id) if isinstance(custom_id, str | int) else None
    response = obj.get("response")
    error = obj.get("error")
    if isinstance(response, dict) and isinstance(response.get("status_code"), int):
        status, body = response["status_code"], response.get("body")
        if 200 <= status < 300 and isinstance(body, dict) and body.get("error") is None:
            return BatchLine(kind="ok", custom_id=custom_id, status_code=status, answer=body)
        code, message = _error_fields(body)
        return BatchLine(
            kind="error",
            custom_id=custom_id,
            status_code=status,
            answer=body,
            error_code=code,
            error_message=message,
        )
    if isinstance(error, dict):
        code, message = _str(error.get("code")), _str(error.get("message"))
        kind: LineKind = "error"
        if code in ("batch_expired", "expired"):
            kind = "expired"
        elif code in ("batch_cancelled", "batch_canceled", "cancelled"):
            kind = "cancelled"
        return BatchLine(kind=kind, custom_id=custom_id, error_code=code, error_message=message)
    return BatchLine(
        kind="malformed", custom_id=custom_id, error_message="neither a response nor an error"
    )


def _error_fields(body: Any) -> tuple[str | None, str | None]:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        return (str(code) if code else None), _str(error.get("message"))
    return None, None


def read_anthropic_line(line: bytes) -> BatchLine:
    """A line of a Message Batch's results: `result.type` says succeeded / errored / canceled /
    expired; an errored one carries `{"type": "error", "error": {"type", "message"}}`."""
    obj = _parse(line)
    if isinstance(obj, str):
        return BatchLine(kind="malformed", custom_id=None, error_message=obj)
    custom_id = _str(obj.get("custom_id"))
    result = obj.get("result")
    kind = result.get("type") if isinstance(result, dict) else None
    if kind == "succeeded" and isinstance(result, dict) and isinstance(result.get("message"), dict):
        return BatchLine(kind="ok", custom_id=custom_id, status_code=200, answer=result["message"])
    if kind == "errored" and isinstance(result, dict):
        envelope = result.get("error")
        inner = envelope.get("error") if isinstance(envelope, dict) else None
        if not isinstance(inner, dict):
            inner = envelope if isinstance(envelope, dict) else {}
        return BatchLine(
            kind="error",
            custom_id=custom_id,
            answer=envelope,
            error_code=_str(inner.get("type")),
            error_message=_str(inner.get("message")),
        )
    if kind == "canceled":
        return BatchLine(kind="cancelled", custom_id=custom_id, error_code="canceled")
    if kind == "expired":
        return BatchLine(kind="expired", custom_id=custom_id, error_code="expired")
    return BatchLine(
        kind="malformed", custom_id=custom_id, error_message=f"unknown result type {kind!r}"
    )
