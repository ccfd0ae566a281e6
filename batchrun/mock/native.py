"""The mock's other text families: Anthropic's `/v1/messages`, Google's `generateContent`,
and OpenAI's `/v1/completions` and `/v1/responses`.

    POST /v1/messages {"model": "claude-sonnet-4-5", "max_tokens": 200, "messages": [...]}
      -> {"type": "message", "content": [{"type": "text", "text": ...}], "stop_reason", "usage"}
    POST /v1beta/models/gemini-2.5-flash:generateContent {"contents": [{"parts": [...]}]}
      -> {"candidates": [{"content": {"parts": [...]}, "finishReason"}], "usageMetadata", ...}

As new-api passes them through: Claude's usage has `input_tokens` without the cached part,
`cache_read_input_tokens` / `cache_creation_input_tokens` beside it (a system prompt of 4,096
characters or more is written to the cache the first time and read from it after); Gemini
2.5 models think, and report `thoughtsTokenCount` apart from `candidatesTokenCount`. With
`tools` the answer is a call of the first one (Claude `tool_use`, Gemini `functionCall`).
Replies echo the last user text when asked (`"mock_echo": true` or `MockConfig.echo`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from batchrun.mock.jobs import Invalid, Job, model_of, optional_int
from batchrun.mock.payloads import _WORDS

__all__ = ["GEMINI_PATH", "claude_job", "completions_job", "gemini_job", "responses_job"]

GEMINI_PATH = re.compile(r"^/v1(?:beta)?/models/(?P<model>[^/:]+):generateContent$")
_CACHEABLE_CHARS = 4096
_GEMINI_THOUGHTS = 48


def _words(tokens: int) -> str:
    return " ".join(_WORDS[i % len(_WORDS)] for i in range(tokens))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def claude_job(
    data: dict[str, Any], *, echo: bool, reply_tokens: int, seen_prefix: Callable[[str], bool]
) -> Job:
    """`seen_prefix(system)`: whether that system prompt was seen before (read from cache)."""
    model = model_of(data)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Invalid("messages: Field required", "messages")
    cap = optional_int(data, "max_tokens", 1)
    if cap is None:
        raise Invalid("max_tokens: Field required", "max_tokens")
    system = _text_of(data.get("system"))
    prompt = system + " ".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
    user = next((_text_of(m.get("content")) for m in reversed(messages) if isinstance(m, dict)), "")
    cacheable = len(system) >= _CACHEABLE_CHARS
    tools = data.get("tools")
    wants_echo = echo or data.get("mock_echo") is True

    def build(with_usage: bool) -> tuple[bytes, int, int]:
        total_prompt = _tokens(prompt) + 8
        cached = _tokens(system) if cacheable else 0
        read = cached if cacheable and seen_prefix(system) else 0
        written = cached - read
        if isinstance(tools, list) and tools and isinstance(tools[0], dict):
            block = {"type": "tool_use", "id": "toolu_mock01", "name": tools[0].get("name")}
            block["input"] = {"query": "mock"}
            content, stop, out = [block], "tool_use", 12
        else:
            text = user if wants_echo else _words(reply_tokens)
            out = min(cap, _tokens(text))
            content, stop = [{"type": "text", "text": text}], "end_turn"
            if out < _tokens(text):
                stop = "max_tokens"
        body: dict[str, Any] = {
            "id": "msg_mock01",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
        }
        if with_usage:
            body["usage"] = {
                "input_tokens": total_prompt - cached,
                "cache_creation_input_tokens": written,
                "cache_read_input_tokens": read,
                "output_tokens": out,
            }
        return json.dumps(body).encode(), total_prompt, out

    return Job(model, _tokens(prompt) + cap, build)


def gemini_job(data: dict[str, Any], *, model: str, echo: bool, reply_tokens: int) -> Job:
    contents = data.get("contents")
    if not isinstance(contents, list) or not contents:
        raise Invalid("* GenerateContentRequest.contents: contents is not specified", "contents")
    texts = [
        _text_of(c.get("parts"))
        for c in contents
        if isinstance(c, dict) and c.get("role") != "model"
    ]
    prompt = " ".join(texts)
    tools = data.get("tools")
    declarations = (
        tools[0].get("functionDeclarations")
        if isinstance(tools, list) and tools and isinstance(tools[0], dict)
        else None
    )
    wants_echo = echo or data.get("mock_echo") is True
    thinks = "2.5" in model
    config = data.get("generationConfig")
    cap = config.get("maxOutputTokens") if isinstance(config, dict) else None

    def build(with_usage: bool) -> tuple[bytes, int, int]:
        prompt_tokens = _tokens(prompt)
        if isinstance(declarations, list) and declarations and isinstance(declarations[0], dict):
            call = {"name": declarations[0].get("name"), "args": {"query": "mock"}}
            parts: list[dict[str, Any]] = [{"functionCall": call}]
            out, finish = 10, "STOP"
        else:
            text = texts[-1] if wants_echo and texts else _words(reply_tokens)
            out, finish = _tokens(text), "STOP"
            if isinstance(cap, int) and out > cap:
                out, finish = cap, "MAX_TOKENS"
            parts = [{"text": text}]
        thoughts = _GEMINI_THOUGHTS if thinks else 0
        body: dict[str, Any] = {
            "candidates": [
                {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}
            ],
            "modelVersion": model,
            "responseId": "mock-response",
        }
        if with_usage:
            meta = {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": out,
                "totalTokenCount": prompt_tokens + out + thoughts,
            }
            if thinks:
                meta["thoughtsTokenCount"] = thoughts
            body["usageMetadata"] = meta
        return json.dumps(body).encode(), prompt_tokens, out + thoughts

    return Job(model, _tokens(prompt) + (cap if isinstance(cap, int) else 256), build)


def completions_job(data: dict[str, Any], *, echo: bool, reply_tokens: int) -> Job:
    """`/v1/completions` (the legacy text API): `choices[0].text`."""
    model = model_of(data)
    prompt = data.get("prompt")
    if not isinstance(prompt, str | list) or not prompt:
        raise Invalid("Missing required parameter: 'prompt'.", "prompt")
    text_in = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
    cap = optional_int(data, "max_tokens", 0)
    limit = 16 if cap is None else cap  # OpenAI's default max_tokens for completions

    def build(with_usage: bool) -> tuple[bytes, int, int]:
        text = text_in if echo or data.get("mock_echo") is True else " " + _words(reply_tokens)
        out = min(limit, _tokens(text))
        body: dict[str, Any] = {
            "id": "cmpl-mock",
            "object": "text_completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "text": text,
                    "finish_reason": "stop" if out == _tokens(text) else "length",
                }
            ],
        }
        if with_usage:
            prompt_tokens = _tokens(text_in)
            body["usage"] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": out,
                "total_tokens": prompt_tokens + out,
            }
        return json.dumps(body).encode(), _tokens(text_in), out

    return Job(model, _tokens(text_in) + limit, build)


def responses_job(data: dict[str, Any], *, echo: bool, reply_tokens: int) -> Job:
    """`/v1/responses`: an `output` message (or a function_call with `tools`), `status`."""
    model = model_of(data)
    given = data.get("input")
    if not isinstance(given, str | list) or not given:
        raise Invalid("Missing required parameter: 'input'.", "input")
    if isinstance(given, str):
        text_in = given
    else:
        text_in = " ".join(_text_of(i.get("content")) for i in given if isinstance(i, dict))
    tools = data.get("tools")

    def build(with_usage: bool) -> tuple[bytes, int, int]:
        if isinstance(tools, list) and tools and isinstance(tools[0], dict):
            call = {"type": "function_call", "id": "fc_mock", "call_id": "call_mock"}
            item: dict[str, Any] = call | {"name": tools[0].get("name"), "arguments": "{}"}
            out = 10
        else:
            text = text_in if echo or data.get("mock_echo") is True else _words(reply_tokens)
            content = [{"type": "output_text", "text": text, "annotations": []}]
            item = {"type": "message", "id": "msg_mock", "role": "assistant", "content": content}
            out = _tokens(text)
        reasoning = 64 if model.startswith(("o1", "o3", "o4", "gpt-5")) else 0
        body: dict[str, Any] = {
            "id": "resp_mock",
            "object": "response",
            "status": "completed",
            "model": model,
            "output": [item],
        }
        if with_usage:
            prompt_tokens = _tokens(text_in)
            body["usage"] = {
                "input_tokens": prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": out + reasoning,
                "output_tokens_details": {"reasoning_tokens": reasoning},
                "total_tokens": prompt_tokens + out + reasoning,
            }
        return json.dumps(body).encode(), _tokens(text_in), out + reasoning

    return Job(model, _tokens(text_in) + 256, build)
