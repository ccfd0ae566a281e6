"""Prompt token counts and output token budgets for a request body, offline.

    count_request_tokens(url, body) ──► PromptCount(tokens, encoding, exact, note)
    max_output_tokens(body)         ──► what the request may generate at most (None: no limit set)
    expected_output_tokens(body)    ──► what it will probably generate, by a stated OutputRule

Which tokenizer (`tokenizer_for`): o200k_base for the gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1, o3 and
o4 families (with -mini/-nano, dated snapshots, `chatgpt-4o-latest`), cl100k_base for gpt-4,
gpt-4-turbo, gpt-3.5-turbo and the embedding models; a provider prefix (`openai/gpt-4o`) is
ignored. The encoding files come from this machine only (`batchrun.cost.tokenizer_files`). When
o200k_base is not there, those models are counted with cl100k_base and the result says so. Unknown
models get a heuristic: ceil(characters / 4) per text, with the same overheads.

How a chat request is counted (OpenAI cookbook, "How to count tokens with tiktoken", whose figures
the tests reproduce): 3 tokens per message plus the tokens of each string field (role, content,
name...), +1 when `name` is set, +3 priming the reply. Content parts: text by the tokenizer, images
by `batchrun.cost.image_tokens` (size read from `data:` URLs; remote images assumed high detail
1024x1024). Tool definitions by the cookbook's `num_tokens_for_tools` recipe. Parts with no
published rule (assistant `tool_calls`, `response_format` schemas, nested tool parameters) are
estimated from their JSON text; audio and file parts are not counted. Either makes the count
inexact.

`exact` is True only when the model's own encoding was used and every part was counted by a
published rule: the count then matches what the API reported in OpenAI's published examples. Even
so it is a prediction, not a promise (OpenAI may change the message format). Counting never raises
on odd request shapes: what it cannot read is estimated from its JSON text, and `note` says so.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, TypeGuard

from batchrun.cost.image_tokens import (
    DEFAULT_IMAGE_SIZE,
    PatchRule,
    TileRule,
    image_size_from_data_url,
    image_tokens,
    largest_image_tokens,
)
from batchrun.cost.tokenizer_files import INSTALL_HINT, TIKTOKEN_DIR_ENV, load_encoding

__all__ = [
    "DEFAULT_OUTPUT_RULE",
    "OutputRule",
    "PromptCount",
    "TokenizerInfo",
    "count_request_tokens",
    "expected_output_tokens",
    "image_rule_for",
    "max_output_tokens",
    "tokenizer_for",
]

_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING = 3
# num_tokens_for_tools in the cookbook; func_init depends on the model family.
_PROP_INIT, _PROP_KEY, _ENUM_INIT, _ENUM_ITEM, _FUNC_END = 3, 3, -3, 3, 12
_CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class TokenizerInfo:
    """The tokenizer used for a model: `encoding` None means the chars/4 heuristic."""

    encoding: str | None
    exact: bool
    note: str


@dataclass(frozen=True, slots=True)
class PromptCount:
    """Prompt tokens of one request, how they were counted and what was approximated."""

    tokens: int
    encoding: str | None
    exact: bool
    note: str
    uncounted_parts: int = 0  # audio and file parts, whose size the request does not state


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputRule:
    """How many output tokens to expect: a share of the request's maximum, else a fixed figure.

    The default (half of `max_tokens`/`max_completion_tokens`, or 256 per choice when the request
    sets no maximum) suits cost previews; use `fraction_of_max=1.0` for a worst case.
    """

    fraction_of_max: float = 0.5
    tokens_without_max: int = 256

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction_of_max <= 1.0:
            raise ValueError(f"fraction_of_max must be within [0, 1], got {self.fraction_of_max}")
        if self.tokens_without_max < 0:
            raise ValueError(f"tokens_without_max must be >= 0, got {self.tokens_without_max}")


DEFAULT_OUTPUT_RULE = OutputRule()


@dataclass(frozen=True, slots=True)
class _Family:
    encoding: str
    func_init: int
    image_rule: TileRule | PatchRule


_GPT4O_TILES = TileRule(85, 170)
_O200K_FAMILY = _Family("o200k_base", 7, _GPT4O_TILES)
_CL100K_FAMILY = _Family("cl100k_base", 10, _GPT4O_TILES)
# First match wins. Image rules: OpenAI's vision guide, "Calculating costs".
_FAMILIES: tuple[tuple[re.Pattern[str], _Family], ...] = tuple(
    (re.compile(pattern), family)
    for pattern, family in [
        (r"gpt-4o-mini", _Family("o200k_base", 7, TileRule(2833, 5667))),
        (r"(gpt-4o|chatgpt-4o)", _O200K_FAMILY),
        (r"gpt-4\.1-mini", _Family("o200k_base", 7, PatchRule(1.62))),
        (r"gpt-4\.1-nano", _Family("o200k_base", 7, PatchRule(2.46))),
        (r"gpt-4\.[15]", _O200K_FAMILY),
        (r"gpt-5(\.\d+)?-mini", _Family("o200k_base", 7, PatchRule(1.62))),
        (r"gpt-5(\.\d+)?-nano", _Family("o200k_base", 7, PatchRule(2.46))),
        (r"gpt-5", _Family("o200k_base", 7, TileRule(70, 140))),
        (r"o4-mini", _Family("o200k_base", 7, PatchRule(1.72))),
        (r"o[134](-|$)", _Family("o200k_base", 7, TileRule(75, 150))),
        (r"gpt-oss", _O200K_FAMILY),
        (r"gpt-4(-|$)", _CL100K_FAMILY),
        (r"gpt-3\.5-turbo", _CL100K_FAMILY),
        (r"text-embedding-(3-|ada-002)", _CL100K_FAMILY),
        (r"(davinci|babbage)-002$", _CL100K_FAMILY),
    ]
)
_UNKNOWN_FAMILY = _O200K_FAMILY  # overheads and image rule assumed for unknown models


@dataclass(frozen=True, slots=True)
class _Counter:
    info: TokenizerInfo
    count_text: Callable[[str], int]
    family: _Family


def _heuristic_count(text: str) -> int:
    return -(-len(text) // _CHARS_PER_TOKEN)


_MEMO_MAX_CHARS = 1024
_MEMO_MAX_ENTRIES = 4096


@cache
def _text_counter(encoding_name: str) -> Callable[[str], int] | None:
    """Token count of a text in one encoding (one per encoding and process), None if unavailable."""
    encoding = load_encoding(encoding_name).encoding
    if encoding is None:
        return None
    encode = encoding.encode_ordinary
    # Bulk inputs repeat short strings on every row (roles, a shared system prompt, tool names);
    # remembering their counts saves most of the per-row encoding work. Bounded: cleared when full.
    memo: dict[str, int] = {}

    def count(text: str) -> int:
        if len(text) > _MEMO_MAX_CHARS:
            return len(encode(text))
        tokens = memo.get(text)
        if tokens is None:
            if len(memo) >= _MEMO_MAX_ENTRIES:
                memo.clear()
            tokens = memo[text] = len(encode(text))
        return tokens

    return count


def _family_for(model: str) -> _Family | None:
    name = model.lower().rsplit("/", 1)[-1].replace("gpt-35-", "gpt-3.5-")  # Azure spelling
    for pattern, family in _FAMILIES:
        if pattern.match(name):
            return family
    return None


@lru_cache(maxsize=512)
def _counter_for(model: str | None) -> _Counter:
    family = _family_for(model) if model else None
    if family is None:
        what = f"no tokenizer known for model {model!r}" if model else "no model given"
        info = TokenizerInfo(None, False, f"{what}; estimated as ceil(characters / 4)")
        return _Counter(info, _heuristic_count, _UNKNOWN_FAMILY)
    count = _text_counter(family.encoding)
    wanted = load_encoding(family.encoding)
    if count is not None:
        info = TokenizerInfo(family.encoding, True, f"{family.encoding} from {wanted.source}")
        return _Counter(info, count, family)
    problems = "".join(f" ({problem})" for problem in wanted.problems)
    missing = f"{family.encoding} not available offline{problems}"
    hint = f"run: {INSTALL_HINT}; or put {family.encoding}.tiktoken in ${TIKTOKEN_DIR_ENV}"
    fallback = _text_counter("cl100k_base") if family.encoding != "cl100k_base" else None
    if fallback is not None:
        note = f"{missing}; fell back to cl100k_base ({hint} for exact counts)"
        return _Counter(TokenizerInfo("cl100k_base", False, note), fallback, family)
    note = f"{missing}; estimated as ceil(characters / 4) ({hint})"
    return _Counter(TokenizerInfo(None, False, note), _heuristic_count, family)


def image_rule_for(model: str | None) -> TileRule | PatchRule:
    """How `model` bills an image (OpenAI's vision guide; gpt-4o's tiles for unknown models)."""
    family = _family_for(model) if model else None
    return (family or _UNKNOWN_FAMILY).image_rule


def tokenizer_for(model: str | None) -> TokenizerInfo:
    """The tokenizer `count_request_tokens` uses for `model` (cached per model)."""
    return _counter_for(model).info


def count_request_tokens(
    url: str, body: dict[str, Any], *, largest_images: bool = False
) -> PromptCount:
    """Prompt tokens of a request to `url` (`.../chat/completions`, `/embeddings`, `/completions`;
    `/responses` and unknown endpoints are estimated). `largest_images`: count an image of
    unknown size as the largest the model bills (a bound), not as 1024x1024."""
    model = body.get("model")
    counter = _counter_for(model if isinstance(model, str) else None)
    tally = _Tally(counter, largest_images=largest_images)
    path = url.split("?", 1)[0].rstrip("/")
    if path.endswith("/chat/completions"):
        tally.chat(body)
    elif path.endswith("/embeddings"):
        tally.prompt_input(body.get("input"))
    elif path.endswith("/completions"):
        tally.prompt_input(body.get("prompt"))
    elif path.endswith("/responses"):
        tally.responses(body)
    else:
        tally.guess(body, f"endpoint {path!r} not recognised; counted the request's JSON text")
    return tally.result()


def max_output_tokens(body: dict[str, Any]) -> int | None:
    """`max_completion_tokens` (else `max_tokens`, `max_output_tokens`) times the choices asked
    for (`n`, or `best_of` on completions); None when the request sets no maximum."""
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(key)
        if _is_count(value):
            return value * _choices(body)
    return None


def expected_output_tokens(
    body: dict[str, Any], rule: OutputRule = DEFAULT_OUTPUT_RULE, *, url: str | None = None
) -> int:
    """Output tokens to expect from a request under `rule` (0 for embeddings)."""
    if url is not None and url.split("?", 1)[0].rstrip("/").endswith("/embeddings"):
        return 0
    maximum = max_output_tokens(body)
    if maximum is None:
        return rule.tokens_without_max * _choices(body)
    return math.ceil(maximum * rule.fraction_of_max)


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _choices(body: dict[str, Any]) -> int:
    counts = [v for v in (body.get("n"), body.get("best_of")) if _is_count(v) and v > 0]
    return max(counts, default=1)


class _Tally:
    """Adds up one request; collects the reasons it is not exact."""

    __slots__ = ("count_text", "counter", "estimates", "largest_images", "tokens", "uncounted")

    def __init__(self, counter: _Counter, *, largest_images: bool = False) -> None:
        self.counter = counter
        self.count_text = counter.count_text
        self.largest_images = largest_images
        self.tokens = 0
        self.uncounted = 0
        self.estimates: list[str] = []

    def result(self) -> PromptCount:
        info = self.counter.info
        if not self.estimates:
            return PromptCount(self.tokens, info.encoding, info.exact, info.note)
        note = "; ".join([info.note, *dict.fromkeys(self.estimates)])
        return PromptCount(self.tokens, info.encoding, False, note, self.uncounted)

    def guess(self, value: object, why: str) -> None:
        self.tokens += self.count_text(json.dumps(value, ensure_ascii=False, default=str))
        self.estimates.append(why)

    def chat(self, body: dict[str, Any]) -> None:
        messages = body.get("messages")
        if isinstance(messages, list):
            for message in messages:
                self.message(message)
        else:
            self.guess(messages, "`messages` is not a list")
        self.tokens += _REPLY_PRIMING
        self.tools(body)
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and "json_schema" in response_format:
            self.guess(response_format["json_schema"], "response_format schema estimated")

    def responses(self, body: dict[str, Any]) -> None:
        self.estimates.append("Responses API counted with chat-completions overheads")
        if isinstance(body.get("instructions"), str):
            self.message({"role": "system", "content": body["instructions"]})
        items = body.get("input")
        if isinstance(items, str):
            items = [{"role": "user", "content": items}]
        if isinstance(items, list):
            for item in items:
                self.message(item)
        self.tokens += _REPLY_PRIMING
        self.tools(body)

    def message(self, message: object) -> None:
        if not isinstance(message, dict):
            self.guess(message, "a message is not an object")
            return
        self.tokens += _TOKENS_PER_MESSAGE
        for key, value in message.items():
            if isinstance(value, str):
                self.tokens += self.count_text(value)
                if key == "name":
                    self.tokens += _TOKENS_PER_NAME
            elif key == "content" and isinstance(value, list):
                for part in value:
                    self.content_part(part)
            elif key in ("tool_calls", "function_call") and value:
                self.guess(value, "assistant tool calls estimated (no published rule)")
            elif value is not None:
                self.guess(value, f"message field {key!r} estimated")

    def content_part(self, part: object) -> None:
        if isinstance(part, str):
            self.tokens += self.count_text(part)
            return
        if not isinstance(part, dict):
            self.guess(part, "a content part is not an object")
            return
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text", "refusal"):
            text = part.get("text", part.get("refusal"))
            if isinstance(text, str):
                self.tokens += self.count_text(text)
                return
        if kind in ("image_url", "input_image"):
            self.image(part)
            return
        if kind in ("input_audio", "file", "input_file"):
            # Their cost depends on duration or pages, which the request does not state; counting
            # the base64 payload as text would overstate it by orders of magnitude.
            self.estimates.append(f"{kind} content not counted")
            self.uncounted += 1
            return
        self.guess(part, f"content part {kind!r} estimated")

    def image(self, part: dict[str, Any]) -> None:
        image = part.get("image_url")
        url, detail = (
            (image.get("url"), image.get("detail")) if isinstance(image, dict) else (image, None)
        )
        detail = detail or part.get("detail") or "auto"
        rule = self.counter.family.image_rule
        if isinstance(rule, TileRule) and detail == "low":
            self.tokens += rule.base_tokens
            return
        size = image_size_from_data_url(url) if isinstance(url, str) else None
        if size is None and self.largest_images:
            self.tokens += largest_image_tokens(detail, rule)
            self.estimates.append("image of unknown size counted at the largest size billed")
            return
        if size is None:
            size = DEFAULT_IMAGE_SIZE
            self.estimates.append("image of unknown size assumed 1024x1024 high detail")
        self.tokens += image_tokens(size[0], size[1], detail, rule)

    def tools(self, body: dict[str, Any]) -> None:
        tools, functions = body.get("tools"), body.get("functions")
        definitions: list[object] = []
        if isinstance(tools, list):
            definitions += tools
        if isinstance(functions, list):
            definitions += [{"type": "function", "function": f} for f in functions]
        if not definitions:
            return
        for tool in definitions:
            function = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(function, dict):
                self.function(function)
            else:
                self.guess(tool, "non-function tool estimated")
        self.tokens += _FUNC_END

    def function(self, function: dict[str, Any]) -> None:
        count = self.count_text
        self.tokens += self.counter.family.func_init
        name = str(function.get("name", ""))
        self.tokens += count(f"{name}:{_without_final_dot(function.get('description'))}")
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, dict) else None
        if not isinstance(properties, dict) or not properties:
            return
        self.tokens += _PROP_INIT
        for key, schema in properties.items():
            self.tokens += _PROP_KEY
            schema = schema if isinstance(schema, dict) else {}
            enum = schema.get("enum")
            if isinstance(enum, list):
                self.tokens += _ENUM_INIT
                for item in enum:
                    self.tokens += _ENUM_ITEM + count(str(item))
            kind = schema.get("type", "")
            self.tokens += count(f"{key}:{kind}:{_without_final_dot(schema.get('description'))}")
            nested = {k: v for k, v in schema.items() if k in ("properties", "items", "anyOf")}
            if nested:
                self.guess(nested, "nested tool parameters estimated")

    def prompt_input(self, value: object) -> None:
        """An embeddings `input` or completions `prompt`: text, texts, token ids, lists of those."""
        if isinstance(value, str):
            self.tokens += self.count_text(value)
        elif isinstance(value, list) and all(_is_count(v) for v in value):
            self.tokens += len(value)
        elif isinstance(value, list):
            for item in value:
                self.prompt_input(item)
        elif value is not None:
            self.guess(value, "input of unexpected type estimated")


def _without_final_dot(text: object) -> str:
    text = text if isinstance(text, str) else ""
    return text[:-1] if text.endswith(".") else text
