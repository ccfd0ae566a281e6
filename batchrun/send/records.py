"""The `Record` of an answer: a JSON body, a plain-text body, a media file, or a failure.

Pure functions of what came back: the `Sender` (`batchrun.send.client`) decides which applies
and keeps the run's state (limiter, outage clock); these only say what the row's line of the
results holds. The key is scrubbed by the caller before a body reaches them.

- JSON: the full body in `response`; the answer (`text`, `tool_calls`, `embedding`,
  `finish_reason`) and the usage read by the readers the endpoint's profile names; the model
  the body names, else the one in the path (Gemini), else the request's.
- Text (a transcription as text / srt / vtt): the body is the `text`, `response` null.
- Media (speech, any audio / image / video answer): `response` null, the file in `media`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from batchrun.endpoints.answers import Answer, read_answer
from batchrun.endpoints.billing import billed_units
from batchrun.endpoints.profiles import Profile
from batchrun.endpoints.usage import USAGE_READERS, Usage
from batchrun.models import Record, Request

__all__ = ["json_or_none", "json_record", "media_record", "storable", "text_record"]

CostFn = Callable[[str | None, Usage], float | None]


def storable(value: Any) -> str | None:
    """A string from the response that Parquet can store (JSON may carry lone surrogates)."""
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


def json_or_none(content: bytes) -> Any:
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        return None


def _finish_reason(body: dict[str, Any]) -> str | None:
    """For a path no profile knows: the chat or Responses shape, if it is one."""
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
        return reason if isinstance(reason, str) else None
    status = body.get("status")  # the responses API
    return status if isinstance(status, str) else None


_UNIT_BILLED = frozenset({"speech", "transcriptions", "images", "image_edits"})


def _billed(
    request: Request, profile: Profile, answer: Any, usage: Usage | None
) -> tuple[tuple[str, float], ...]:
    if profile.name not in _UNIT_BILLED:
        return ()
    return billed_units(profile, json_or_none(request.body), answer, request.uploads, usage)


def _ok(request: Request, status: int, attempts: int, latency_ms: float) -> dict[str, Any]:
    return {
        "custom_id": request.custom_id,
        "row": request.row,
        "status": "ok",
        "endpoint": request.url,
        "http_status": status,
        "attempts": attempts,
        "latency_ms": round(latency_ms, 3),
    }


def json_record(
    request: Request,
    profile: Profile,
    *,
    status: int,
    text: str,
    body: dict[str, Any],
    content_type: str | None,
    attempts: int,
    latency_ms: float,
    cost_fn: CostFn | None,
) -> Record:
    usage = USAGE_READERS[profile.usage](body)
    answer = read_answer(profile.answer, body) if profile.answer else Answer()
    model = (
        storable(body.get("model") or body.get("modelVersion"))
        or profile.model_in_path(request.url)
        or request.model
    )
    finish_reason = answer.finish_reason if profile.answer else _finish_reason(body)
    return Record(
        **_ok(request, status, attempts, latency_ms),
        response=text,
        model=model,
        finish_reason=storable(finish_reason),
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        cached_tokens=usage.cached_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cost_usd=cost_fn(model, usage) if cost_fn else None,
        text=storable(answer.text),
        tool_calls=storable(answer.tool_calls),
        embedding=answer.embedding,
        content_type=storable(content_type),
        billed=_billed(request, profile, body, usage),
    )


def text_record(
    request: Request,
    profile: Profile,
    *,
    status: int,
    text: str,
    content_type: str | None,
    attempts: int,
    latency_ms: float,
    cost_fn: CostFn | None,
) -> Record:
    return Record(
        **_ok(request, status, attempts, latency_ms),
        model=request.model,
        cost_usd=cost_fn(request.model, Usage()) if cost_fn else None,
        text=storable(text),
        content_type=storable(content_type),
        billed=_billed(request, profile, None, None),
    )


def media_record(
    request: Request,
    profile: Profile,
    *,
    status: int,
    media: tuple[str, ...],
    content_type: str | None,
    attempts: int,
    latency_ms: float,
    cost_fn: CostFn | None,
) -> Record:
    return Record(
        **_ok(request, status, attempts, latency_ms),
        model=request.model,
        cost_usd=cost_fn(request.model, Usage()) if cost_fn else None,
        media=media,
        content_type=storable(content_type),
        billed=_billed(request, profile, None, None),
    )
