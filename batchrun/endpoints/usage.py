"""Token figures: what a request will cost the budget before it is sent, what it cost after.

- `rough_prompt_tokens` is the cheap estimate the rate limiter charges before a response says the
  real figure (characters / 4 plus message overheads, a fixed figure per image). It runs once per
  row on the hot path, so it walks the body once and never tokenizes; `batchrun estimate` uses the
  exact tokenizers in `batchrun.cost.tokens` instead.
- `parse_usage` reads the usage out of any OpenAI-shaped response (chat, embeddings,
  completions, responses API, gpt-image-1); `claude_usage` and `gemini_usage` read Anthropic's and
  Google's native shapes into the same figures. Every field is optional and a missing or
  malformed one is `None`, never an error.
- The figures mean the same for every family: `prompt_tokens` is every input token billed
  (Anthropic's cache reads and writes included, though its `input_tokens` leaves them out),
  `cached_tokens` the part of it read from a cache, `completion_tokens` every output token
  billed (Gemini's thinking tokens included, though `candidatesTokenCount` leaves them out),
  `reasoning_tokens` the part of it spent thinking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "USAGE_READERS",
    "Usage",
    "claude_usage",
    "gemini_usage",
    "max_output_tokens",
    "output_limit",
    "parse_usage",
    "rough_prompt_tokens",
]

# Charged to the TPM budget when a chat body sets no output limit; the real usage corrects it.
# Not a bound on what the row may cost: `--max-cost` reserves the model's maximum output instead.
DEFAULT_MAX_OUTPUT_TOKENS = 256
_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4
_TOKENS_PER_IMAGE = 765  # OpenAI's high-detail 1024x1024 image; low detail is 85
_REPLY_PRIMING = 3


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cache_write_tokens: int | None = None  # Anthropic's cache_creation_input_tokens
    image_input_tokens: int | None = None  # gpt-image-1: input_tokens_details.image_tokens


def _text_chars(value: Any, *, nested: bool = False) -> tuple[int, int]:
    """(characters of text, number of images) in a message content or an input value."""
    if isinstance(value, str):
        return len(value), 0
    chars = images = 0
    if isinstance(value, list):
        for part in value:
            if isinstance(part, str):
                chars += len(part)
            elif isinstance(part, dict):
                kind = part.get("type")
                if kind in ("image_url", "input_image", "image"):
                    images += 1
                elif isinstance(part.get("text"), str):
                    chars += len(part["text"])
                elif not nested and "content" in part:  # a message in a responses API `input`
                    c, i = _text_chars(part["content"], nested=True)
                    chars += c
                    images += i
            elif isinstance(part, int):
                chars += _CHARS_PER_TOKEN  # a pre-tokenized input: one token each
    return chars, images


def rough_prompt_tokens(url: str, body: dict[str, Any]) -> int:
    """A quick over-rather-than-under estimate of a request's prompt tokens."""
    messages = body.get("messages")
    chars = images = 0
    tokens = 0
    if isinstance(messages, list):
        tokens += _REPLY_PRIMING
        for message in messages:
            tokens += _TOKENS_PER_MESSAGE
            if isinstance(message, dict):
                c, i = _text_chars(message.get("content"))
                chars += c
                images += i
                calls = message.get("tool_calls")
                if calls:
                    chars += len(str(calls))
        tools = body.get("tools") or body.get("functions")
        if tools:
            chars += len(str(tools))
    else:
        for key in ("input", "prompt"):
            if key in body:
                c, i = _text_chars(body[key])
                chars += c
                images += i
    return tokens + -(-chars // _CHARS_PER_TOKEN) + images * _TOKENS_PER_IMAGE


def output_limit(url: str, body: dict[str, Any]) -> int | None:
    """The most output tokens the request itself allows (its limit times `n`; 0 for
    embeddings), or None when it sets no limit: the server then decides how long to go on."""
    if "embeddings" in url:
        return 0
    limit = _count(body.get("max_completion_tokens"))
    if limit is None:
        limit = _count(body.get("max_tokens"))
    if limit is None:
        limit = _count(body.get("max_output_tokens"))  # the responses API's name
    if limit is None:
        return None
    return limit * _choices(body)


def max_output_tokens(url: str, body: dict[str, Any]) -> int:
    """The output tokens the rate limiter charges up front: the request's limit, else
    `DEFAULT_MAX_OUTPUT_TOKENS` per choice (an assumption the real usage corrects, not a bound)."""
    limit = output_limit(url, body)
    return DEFAULT_MAX_OUTPUT_TOKENS * _choices(body) if limit is None else limit


def _choices(body: dict[str, Any]) -> int:
    n = _count(body.get("n"))
    return n if n else 1


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    """A usable limit: a non-negative integer (a negative one would refund the token budget)."""
    number = _int(value)
    return number if number is not None and number >= 0 else None


def parse_usage(response: Any) -> Usage:
    """The usage block of a response body, whatever its shape."""
    if not isinstance(response, dict):
        return Usage()
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return Usage()
    prompt = _int(usage.get("prompt_tokens"))
    if prompt is None:
        prompt = _int(usage.get("input_tokens"))  # the responses API
    completion = _int(usage.get("completion_tokens"))
    if completion is None:
        completion = _int(usage.get("output_tokens"))
    total = _int(usage.get("total_tokens"))
    if total is None and prompt is not None:
        total = prompt + (completion or 0)
    prompt_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    completion_details = usage.get("completion_tokens_details") or usage.get(
        "output_tokens_details"
    )
    cached = _int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else None
    reasoning = (
        _int(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, dict)
        else None
    )
    images = _int(prompt_details.get("image_tokens")) if isinstance(prompt_details, dict) else None
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        image_input_tokens=images,
    )


def claude_usage(response: Any) -> Usage:
    """Anthropic's `usage`: `input_tokens` excludes the cache reads and writes, so they are
    added back to give every input token billed."""
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return Usage()
    fresh = _int(usage.get("input_tokens"))
    written = _int(usage.get("cache_creation_input_tokens"))
    read = _int(usage.get("cache_read_input_tokens"))
    completion = _int(usage.get("output_tokens"))
    prompt = None if fresh is None else fresh + (written or 0) + (read or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=None if prompt is None else prompt + (completion or 0),
        cached_tokens=read,
        cache_write_tokens=written,
    )


def gemini_usage(response: Any) -> Usage:
    """Google's `usageMetadata`, counted as the gateway bills it: prompt = prompt + tool-use
    prompt tokens, completion = candidates + thoughts."""
    meta = response.get("usageMetadata") if isinstance(response, dict) else None
    if not isinstance(meta, dict):
        return Usage()
    prompt = _int(meta.get("promptTokenCount"))
    tool_prompt = _int(meta.get("toolUsePromptTokenCount")) or 0
    candidates = _int(meta.get("candidatesTokenCount"))
    thoughts = _int(meta.get("thoughtsTokenCount"))
    completion = None
    if candidates is not None or thoughts is not None:
        completion = (candidates or 0) + (thoughts or 0)
    if prompt is not None:
        prompt += tool_prompt
    total = _int(meta.get("totalTokenCount"))
    if total is None and prompt is not None:
        total = prompt + (completion or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        cached_tokens=_int(meta.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


USAGE_READERS = {"openai": parse_usage, "claude": claude_usage, "gemini": gemini_usage}
