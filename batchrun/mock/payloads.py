"""The JSON the mock answers with, shaped like OpenAI's (and one-api's for billing).

Pure functions from a parsed request body to response bytes: no I/O, no state, so that the shapes
can be read in one place and tested without a socket.

Token counts here are cheap approximations, not tiktoken: about one token per 4 characters of
every string in the messages, +3 per message, +1 per `name`, +3 priming for the reply (the
cookbook's recipe for gpt-4o-class models), plus the tool definitions' JSON. Good enough for
budgets and benchmarks; `MockConfig(exact_tokens=True)` (the demo's) counts with the estimate's
own tokenizers instead (`batchrun.cost.tokens`), and a client test that needs exact reply
lengths sets `mock_reply_tokens` in the body.

Images are billed as OpenAI bills them, by the model's rule and the image's size (OpenAI's
vision guide, as `batchrun.cost.image_tokens` implements it: gpt-4o 85 + 170 per tile, gpt-4o-mini
2,833 + 5,667 per tile, patches for gpt-4.1-mini...), the size read from a `data:` URL. The mock
cannot fetch a remote image, so it bills one as the largest image the model bills: a client's
worst case is tested against the most a real server could charge.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from batchrun.cost.image_tokens import image_size_from_data_url, image_tokens, largest_image_tokens
from batchrun.cost.tokens import image_rule_for

__all__ = [
    "billing_subscription",
    "billing_usage",
    "chat_completion",
    "claude_error",
    "claude_message",
    "dump",
    "echo_of",
    "embeddings",
    "error_body",
    "estimate_chat_prompt_tokens",
    "estimate_embedding_tokens",
    "is_reasoning_model",
    "models_list",
]

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_TOOL_CALL_TOKENS = 12
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
_FILLER = (
    "the quick brown fox jumps over a lazy dog while mock servers answer every request "
    "with plain words so that clients can count tokens store results and move on to the next row"
)
_WORDS = _FILLER.split()


def dump(obj: object) -> bytes:
    """Compact UTF-8 JSON."""
    return _ENCODER.encode(obj).encode()


def error_body(
    message: str, type_: str | None, *, param: str | None = None, code: str | int | None = None
) -> bytes:
    """OpenAI's error envelope: `{"error": {"message", "type", "param", "code"}}`."""
    return dump({"error": {"message": message, "type": type_, "param": param, "code": code}})


def is_reasoning_model(model: str) -> bool:
    """o-series and gpt-5 models spend hidden reasoning tokens before answering."""
    return model.startswith(_REASONING_PREFIXES)


def _text_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def _value_tokens(value: object, model: str | None) -> int:
    """Tokens of every string inside a message value (content parts, tool calls...)."""
    if isinstance(value, str):
        return _text_tokens(value)
    if isinstance(value, list):
        return sum(_value_tokens(item, model) for item in value)
    if isinstance(value, dict):
        if value.get("type") == "image_url":
            return _image_part_tokens(value, model)
        return sum(_value_tokens(item, model) for item in value.values())
    return 0


def _image_part_tokens(part: dict[str, Any], model: str | None) -> int:
    image = part.get("image_url")
    url, detail = (
        (image.get("url"), image.get("detail")) if isinstance(image, dict) else (image, None)
    )
    detail = detail if isinstance(detail, str) else "auto"
    rule = image_rule_for(model)
    size = image_size_from_data_url(url) if isinstance(url, str) else None
    if size is None:  # a remote image, which the mock cannot fetch: the most it could cost
        return largest_image_tokens(detail, rule)
    return image_tokens(size[0], size[1], detail, rule)


def estimate_chat_prompt_tokens(
    messages: list[Any], tools: object, *, model: str | None = None
) -> int:
    """Prompt tokens of a chat request, by the cheap recipe in the module docstring (`model`
    decides what an image costs)."""
    total = 3
    for message in messages:
        total += 3
        if isinstance(message, dict):
            for value in message.values():
                # Plain strings (role, content) are nearly all there is: skip the recursion.
                if isinstance(value, str):
                    total += (len(value) + 3) // 4
                else:
                    total += _value_tokens(value, model)
            if "name" in message:
                total += 1
    if tools:
        total += _text_tokens(_ENCODER.encode(tools))
    return total


def echo_of(messages: list[Any]) -> str:
    """The text of the last user message (its text parts joined), for a reply that echoes it."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                parts = [p.get("text") for p in content if isinstance(p, dict)]
                return " ".join(p for p in parts if isinstance(p, str))
    return ""


def estimate_embedding_tokens(inputs: Sequence[str | list[int]]) -> int:
    """Token ids count one each; text counts ~4 characters a token, at least 1 per input."""
    total = 0
    for item in inputs:
        total += len(item) if isinstance(item, list) else max(1, _text_tokens(item))
    return total


@lru_cache(maxsize=512)
def _reply_json(tokens: int) -> str:
    """The reply text of `tokens` words (about a token each), as a JSON string literal."""
    return _ENCODER.encode(" ".join(_WORDS[i % len(_WORDS)] for i in range(tokens)))


# The chat completion is the hot path: filling templates costs a fraction of json-encoding dicts.
_CHAT = (
    '{"id":"%s","object":"chat.completion","created":%d,"model":%s,"choices":[%s]%s,'
    '"service_tier":"default","system_fingerprint":"fp_mock"}'
)
_CHOICE = '{"index":%d,"message":%s,"logprobs":null,"finish_reason":"%s"}'
_TEXT_MESSAGE = '{"role":"assistant","content":%s,"refusal":null}'
_USAGE = (
    ',"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,'
    '"prompt_tokens_details":{"cached_tokens":%d,"audio_tokens":0},'
    '"completion_tokens_details":{"reasoning_tokens":%d,"audio_tokens":0,'
    '"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}'
)


def _tool_call(tools: list[Any], tool_choice: object, call_id: str) -> dict[str, Any]:
    """A call of the chosen (or first) tool, with a placeholder for each required argument."""
    chosen: Mapping[str, Any] = {}
    if isinstance(tool_choice, dict):
        chosen = tool_choice.get("function") or {}
    wanted = chosen.get("name") if isinstance(chosen, Mapping) else None
    function: Mapping[str, Any] = {}
    for tool in tools:
        candidate = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(candidate, dict) and (wanted is None or candidate.get("name") == wanted):
            function = candidate
            break
    params = function.get("parameters")
    arguments: dict[str, Any] = {}
    if isinstance(params, dict):
        properties = params.get("properties") or {}
        for name in params.get("required") or ():
            spec = properties.get(name) if isinstance(properties, dict) else None
            kind = spec.get("type") if isinstance(spec, dict) else None
            arguments[str(name)] = {"string": "mock", "integer": 1, "number": 1.0}.get(
                str(kind), True if kind == "boolean" else None
            )
    return {
        "id": call_id,
        "type": "function",
        "function": {
            "name": str(function.get("name", "tool")),
            "arguments": _ENCODER.encode(arguments),
        },
    }


def chat_completion(
    data: Mapping[str, Any],
    *,
    completion_id: str,
    created: int,
    prompt_tokens: int,
    cached_tokens: int,
    reply_tokens: int,
    reasoning_tokens: int,
    cap: int | None,
    n: int,
    with_usage: bool = True,
    echo: str | None = None,
) -> tuple[bytes, int]:
    """A `chat.completion` body and its completion tokens.

    With `echo`, the visible reply is that text (`reply_tokens` then counts it), cut to the cap
    as a real reply would be.

    Each of the `n` choices spends `reasoning_tokens` (reasoning models only), then
    `reply_tokens` of visible text, both cut by `cap` (max_tokens / max_completion_tokens),
    in which case finish_reason is "length". With `tools` (and tool_choice not "none") the
    answer is a tool call.
    """
    model = str(data["model"])
    tools = data.get("tools")
    wants_tool = bool(tools) and isinstance(tools, list) and data.get("tool_choice") != "none"
    reasoning = reasoning_tokens if is_reasoning_model(model) else 0
    visible = _TOOL_CALL_TOKENS if wants_tool else reply_tokens
    used_reasoning = reasoning if cap is None else min(reasoning, cap)
    used_visible = visible if cap is None else min(visible, cap - used_reasoning)
    cut = used_reasoning + used_visible < reasoning + visible
    if cut:
        # A reply cut short, as the API does: the visible text so far, never a half tool call.
        message = _TEXT_MESSAGE % _reply_json(0 if wants_tool else used_visible)
        finish = "length"
    elif wants_tool:
        assert isinstance(tools, list)
        call = _tool_call(tools, data.get("tool_choice"), "call_" + completion_id[9:])
        message = _ENCODER.encode(
            {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
        )
        finish = "tool_calls"
    else:
        message = _TEXT_MESSAGE % _reply_json(used_visible)
        finish = "stop"
    if echo is not None and not wants_tool:
        shown = echo if not cut else echo[: max(0, used_visible) * 4]
        message = _TEXT_MESSAGE % _ENCODER.encode(shown)
    choices = ",".join([_CHOICE % (i, message, finish) for i in range(n)])
    completion_tokens = (used_reasoning + used_visible) * n
    usage = ""
    if with_usage:
        usage = _USAGE % (
            prompt_tokens,
            completion_tokens,
            prompt_tokens + completion_tokens,
            cached_tokens,
            used_reasoning * n,
        )
    body = _CHAT % (completion_id, created, _ENCODER.encode(model), choices, usage)
    return body.encode(), completion_tokens


def _vector(item: str | list[int], dim: int) -> list[float]:
    """A deterministic vector in [-1, 1]^dim: the same input always embeds the same way."""
    seed = zlib.crc32(item.encode() if isinstance(item, str) else dump(item))
    values = []
    for i in range(dim):
        seed = (seed * 1103515245 + 12345 + i) & 0x7FFFFFFF
        values.append(round(seed / 0x7FFFFFFF * 2.0 - 1.0, 6))
    return values


def embeddings(
    inputs: Sequence[str | list[int]],
    *,
    model: str,
    dim: int,
    base64_floats: bool,
    prompt_tokens: int,
    with_usage: bool = True,
) -> bytes:
    """An embeddings `list`; vectors as float lists, or base64 float32 as the OpenAI SDK asks."""
    data = []
    for index, item in enumerate(inputs):
        vector = _vector(item, dim)
        embedding: list[float] | str = vector
        if base64_floats:
            embedding = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    body: dict[str, Any] = {"object": "list", "data": data, "model": model}
    if with_usage:
        body["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return dump(body)


def models_list(models: tuple[str, ...], created: int) -> bytes:
    """`GET /v1/models`."""
    data = [{"id": m, "object": "model", "created": created, "owned_by": "openai"} for m in models]
    return dump({"object": "list", "data": data})


def billing_subscription(quota_usd: float) -> bytes:
    """one-api's `GET /v1/dashboard/billing/subscription`: the grant, in USD."""
    return dump(
        {
            "object": "billing_subscription",
            "has_payment_method": True,
            "soft_limit_usd": quota_usd,
            "hard_limit_usd": quota_usd,
            "system_hard_limit_usd": quota_usd,
            "access_until": 0,
        }
    )


def billing_usage(used_usd: float) -> bytes:
    """one-api's `GET /v1/dashboard/billing/usage`: what was spent, in CENTS."""
    return dump({"object": "list", "total_usage": round(used_usd * 100, 6)})


def claude_message(
    data: Mapping[str, Any], *, message_id: str, prompt_tokens: int, reply_tokens: int
) -> tuple[bytes, int]:
    """An Anthropic Messages API answer (`type: message`) and its output tokens: at most the
    body's `max_tokens`, so `stop_reason` is `max_tokens` when it cut the reply short."""
    limit = data.get("max_tokens")
    tokens = min(reply_tokens, limit) if isinstance(limit, int) else reply_tokens
    stop = "max_tokens" if isinstance(limit, int) and reply_tokens > limit else "end_turn"
    text = " ".join(_WORDS[i % len(_WORDS)] for i in range(tokens))
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": data.get("model"),
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": prompt_tokens, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "output_tokens": tokens},
    }  # fmt: skip
    return dump(message), tokens


def claude_error(kind: str, message: str) -> bytes:
    """Anthropic's error envelope: `{"type": "error", "error": {"type", "message"}}`."""
    return dump({"type": "error", "error": {"type": kind, "message": message}})
