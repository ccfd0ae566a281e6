"""The answer inside a JSON response body, as typed values: text, tool calls, embeddings.

One reader per answer shape, each a pure function of the decoded body:

    chat completions   choices[0].message.content / .tool_calls / finish_reason
    completions        choices[0].text
    responses API      output_text, or output[] message text and function_call items
    Claude /messages   content[] text blocks and tool_use blocks, stop_reason
    Gemini native      candidates[0].content.parts[] text and functionCall, finishReason
    embeddings         data[].embedding, floats or base64 little-endian float32
    transcriptions     text (json / verbose_json); plain-text formats are read by the caller

Guarantees:
- Every field is optional: a missing or malformed one is None, never an exception, since the
  body is whatever the server sent (gateways add, drop and rename fields).
- `tool_calls` is a JSON array of `{"id", "name", "arguments"}` whatever the family, with
  `arguments` as the JSON text the model wrote (Claude's and Gemini's argument objects are
  serialised), so one column reads the same for every provider.
- Embeddings keep the order of `data[].index` (one vector per input of the request).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ANSWER_READERS", "Answer", "read_answer"]


@dataclass(frozen=True, slots=True)
class Answer:
    text: str | None = None
    tool_calls: str | None = None  # JSON: [{"id", "name", "arguments"}, ...]
    embedding: list[list[float]] | None = None
    finish_reason: str | None = None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _join(texts: list[str]) -> str | None:
    return "".join(texts) if texts else None


def _content_text(content: Any) -> str | None:
    """A message's content: a string, or a list of parts whose text parts are joined."""
    if isinstance(content, str):
        return content
    texts = []
    for part in _list(content):
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type") in ("text", "output_text", None):
            text = _str(part.get("text"))
            if text is not None:
                texts.append(text)
    return _join(texts)


def _calls(items: list[tuple[Any, Any, Any]]) -> str | None:
    """`(id, name, arguments)` triples as the column's JSON; arguments kept as text."""
    calls = []
    for call_id, name, arguments in items:
        if not isinstance(name, str):
            continue
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
        calls.append({"id": _str(call_id), "name": name, "arguments": arguments})
    return json.dumps(calls, ensure_ascii=False) if calls else None


def chat_answer(body: dict[str, Any]) -> Answer:
    choice = _dict(next(iter(_list(body.get("choices"))), None))
    message = _dict(choice.get("message"))
    calls = []
    for call in _list(message.get("tool_calls")):
        call = _dict(call)
        function = _dict(call.get("function"))
        calls.append((call.get("id"), function.get("name"), function.get("arguments")))
    legacy = _dict(message.get("function_call"))  # the pre-tools `functions` API
    if legacy:
        calls.append((None, legacy.get("name"), legacy.get("arguments")))
    return Answer(
        text=_content_text(message.get("content")),
        tool_calls=_calls(calls),
        finish_reason=_str(choice.get("finish_reason")),
    )


def completion_answer(body: dict[str, Any]) -> Answer:
    choice = _dict(next(iter(_list(body.get("choices"))), None))
    return Answer(text=_str(choice.get("text")), finish_reason=_str(choice.get("finish_reason")))


def responses_answer(body: dict[str, Any]) -> Answer:
    texts: list[str] = []
    calls = []
    for item in _list(body.get("output")):
        item = _dict(item)
        if item.get("type") == "message":
            text = _content_text(item.get("content"))
            if text is not None:
                texts.append(text)
        elif item.get("type") == "function_call":
            calls.append((item.get("call_id"), item.get("name"), item.get("arguments")))
    text = _str(body.get("output_text"))  # the SDKs' convenience field, if a server sends it
    return Answer(
        text=text if text is not None else _join(texts),
        tool_calls=_calls(calls),
        finish_reason=_str(body.get("status")),
    )


def claude_answer(body: dict[str, Any]) -> Answer:
    texts: list[str] = []
    calls = []
    for block in _list(body.get("content")):
        block = _dict(block)
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            calls.append((block.get("id"), block.get("name"), block.get("input")))
    return Answer(
        text=_join(texts), tool_calls=_calls(calls), finish_reason=_str(body.get("stop_reason"))
    )


def gemini_answer(body: dict[str, Any]) -> Answer:
    candidate = _dict(next(iter(_list(body.get("candidates"))), None))
    texts: list[str] = []
    calls = []
    for part in _list(_dict(candidate.get("content")).get("parts")):
        part = _dict(part)
        if part.get("thought") is True:
            continue  # a thought summary, not the answer
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        call = _dict(part.get("functionCall"))
        if call:
            calls.append((call.get("id"), call.get("name"), call.get("args")))
    return Answer(
        text=_join(texts),
        tool_calls=_calls(calls),
        finish_reason=_str(candidate.get("finishReason")),
    )


def _vector(value: Any) -> list[float] | None:
    if isinstance(value, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in value
    ):
        return [float(x) for x in value]
    if isinstance(value, str):  # encoding_format "base64": little-endian float32
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) % 4:
            return None
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return None


def embeddings_answer(body: dict[str, Any]) -> Answer:
    items = [_dict(item) for item in _list(body.get("data"))]
    items.sort(key=lambda item: item["index"] if isinstance(item.get("index"), int) else 0)
    vectors = [_vector(item.get("embedding")) for item in items]
    if not vectors or any(v is None for v in vectors):
        return Answer()
    return Answer(embedding=[v for v in vectors if v is not None])


def transcription_answer(body: dict[str, Any]) -> Answer:
    return Answer(text=_str(body.get("text")))


ANSWER_READERS: dict[str, Callable[[dict[str, Any]], Answer]] = {
    "chat": chat_answer,
    "completions": completion_answer,
    "responses": responses_answer,
    "claude": claude_answer,
    "gemini": gemini_answer,
    "embeddings": embeddings_answer,
    "transcription": transcription_answer,
}


def read_answer(kind: str, body: Any) -> Answer:
    """The answer of a decoded JSON body of family `kind` (a key of `ANSWER_READERS`)."""
    reader = ANSWER_READERS.get(kind)
    if reader is None or not isinstance(body, dict):
        return Answer()
    return reader(body)
