"""batchrun.endpoints.usage: usage out of every response shape; the cheap token estimates."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrun.endpoints.usage import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    Usage,
    claude_usage,
    gemini_usage,
    max_output_tokens,
    output_limit,
    parse_usage,
    rough_prompt_tokens,
)

CHAT = "/v1/chat/completions"

# ----------------------------------------------------------------------------------- parse_usage


def test_chat_completion_usage_with_details() -> None:
    response = {
        "object": "chat.completion",
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 30,
            "total_tokens": 150,
            "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 12,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
    }
    assert parse_usage(response) == Usage(
        prompt_tokens=120,
        completion_tokens=30,
        total_tokens=150,
        cached_tokens=64,
        reasoning_tokens=12,
    )


def test_chat_usage_without_details() -> None:
    response = {"usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
    assert parse_usage(response) == Usage(5, 2, 7, None, None)


def test_embeddings_usage() -> None:
    response = {"object": "list", "usage": {"prompt_tokens": 8, "total_tokens": 8}}
    assert parse_usage(response) == Usage(prompt_tokens=8, completion_tokens=None, total_tokens=8)


def test_responses_api_usage() -> None:
    response = {
        "object": "response",
        "status": "completed",
        "usage": {
            "input_tokens": 36,
            "input_tokens_details": {"cached_tokens": 4},
            "output_tokens": 87,
            "output_tokens_details": {"reasoning_tokens": 20},
            "total_tokens": 123,
        },
    }
    assert parse_usage(response) == Usage(36, 87, 123, 4, 20)


def test_total_is_derived_when_missing() -> None:
    assert parse_usage({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}).total_tokens == 7
    assert parse_usage({"usage": {"input_tokens": 3}}).total_tokens == 3
    assert parse_usage({"usage": {"completion_tokens": 4}}).total_tokens is None


@pytest.mark.parametrize(
    "response",
    [
        None,
        [],
        "usage",
        42,
        {},
        {"usage": None},
        {"usage": []},
        {"usage": "10"},
        {"usage": {}},
    ],
)
def test_no_usage_is_all_none(response: Any) -> None:
    assert parse_usage(response) == Usage()


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": "10", "completion_tokens": 2}, Usage(None, 2, None)),
        ({"prompt_tokens": 1.5, "total_tokens": True}, Usage()),
        ({"prompt_tokens": True, "completion_tokens": False}, Usage()),
        (
            {"prompt_tokens": 1, "total_tokens": 1, "prompt_tokens_details": "x"},
            Usage(1, None, 1),
        ),
        (
            {
                "prompt_tokens": 1,
                "total_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": "2"},
            },
            Usage(1, None, 1),
        ),
        (
            {"prompt_tokens": 1, "total_tokens": 1, "completion_tokens_details": [1]},
            Usage(1, None, 1),
        ),
        (
            {"prompt_tokens": None, "input_tokens": 9, "output_tokens": 1},
            Usage(9, 1, 10),
        ),
    ],
)
def test_malformed_fields_are_none(usage: dict[str, Any], expected: Usage) -> None:
    assert parse_usage({"usage": usage}) == expected


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "usage",
                    "prompt_tokens",
                    "completion_tokens",
                    "total_tokens",
                    "input_tokens",
                    "output_tokens",
                    "prompt_tokens_details",
                    "completion_tokens_details",
                    "input_tokens_details",
                    "output_tokens_details",
                    "cached_tokens",
                    "reasoning_tokens",
                ]
            )
            | st.text(max_size=4),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(response=_json)
def test_fuzz_parse_usage_never_raises(response: Any) -> None:
    usage = parse_usage(response)
    for value in (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        usage.cached_tokens,
        usage.reasoning_tokens,
    ):
        assert value is None or (type(value) is int)


@settings(max_examples=150, deadline=None)
@given(body=st.dictionaries(st.text(max_size=10), _json, max_size=6), url=st.text(max_size=20))
def test_fuzz_estimates_never_raise(body: dict[str, Any], url: str) -> None:
    assert rough_prompt_tokens(url, body) >= 0
    assert max_output_tokens(url, body) >= 0


# --------------------------------------------------------------------------- rough_prompt_tokens


def test_chat_estimate_counts_characters_and_message_overheads() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "x" * 40},
            {"role": "user", "content": "y" * 41},
        ]
    }
    # 3 priming + 4 per message + ceil(81 / 4)
    assert rough_prompt_tokens(CHAT, body) == 3 + 8 + 21


def test_chat_estimate_grows_with_text() -> None:
    short = {"messages": [{"role": "user", "content": "hello"}]}
    long = {"messages": [{"role": "user", "content": "hello " * 1000}]}
    assert rough_prompt_tokens(CHAT, long) > rough_prompt_tokens(CHAT, short) + 1000


def test_chat_estimate_counts_content_parts_and_images() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "z" * 80},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    {"type": "image_url", "image_url": {"url": "https://x/z.png"}},
                ],
            }
        ]
    }
    assert rough_prompt_tokens(CHAT, body) == 3 + 4 + 20 + 2 * 765


def test_chat_estimate_counts_tools_and_tool_calls() -> None:
    plain = {"messages": [{"role": "user", "content": "hi"}]}
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"a" * 200: {}}}}]
    with_tools = {**plain, "tools": tools}
    assert rough_prompt_tokens(CHAT, with_tools) >= rough_prompt_tokens(CHAT, plain) + 50
    calls = [{"id": "c1", "function": {"name": "g", "arguments": "b" * 400}}]
    with_calls = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": calls},
        ]
    }
    assert rough_prompt_tokens(CHAT, with_calls) >= rough_prompt_tokens(CHAT, plain) + 100


def test_embeddings_and_completions_estimates() -> None:
    assert rough_prompt_tokens("/v1/embeddings", {"input": "a" * 40}) == 10
    assert rough_prompt_tokens("/v1/embeddings", {"input": ["a" * 40, "b" * 40]}) == 20
    assert rough_prompt_tokens("/v1/embeddings", {"input": [1, 2, 3]}) == 3  # token ids
    assert rough_prompt_tokens("/v1/completions", {"prompt": "c" * 8}) == 2


def test_responses_api_estimate_counts_message_inputs() -> None:
    text = {"input": "q" * 400}
    messages = {"input": [{"role": "user", "content": "q" * 400}]}
    parts = {
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "q" * 400},
                    {"type": "input_image", "image_url": "https://x/y.png"},
                ],
            }
        ]
    }
    assert rough_prompt_tokens("/v1/responses", text) == 100
    assert rough_prompt_tokens("/v1/responses", messages) >= 100
    assert rough_prompt_tokens("/v1/responses", parts) >= 100 + 765


def test_estimate_of_a_body_without_text_is_small() -> None:
    assert rough_prompt_tokens("/v1/other", {}) == 0
    assert rough_prompt_tokens(CHAT, {"messages": []}) == 3


# ----------------------------------------------------------------------------- max_output_tokens


@pytest.mark.parametrize(
    ("url", "body", "expected"),
    [
        (CHAT, {"max_tokens": 100}, 100),
        (CHAT, {"max_completion_tokens": 300}, 300),
        (CHAT, {"max_completion_tokens": 300, "max_tokens": 100}, 300),  # preferred
        (CHAT, {"max_completion_tokens": None, "max_tokens": 100}, 100),
        (CHAT, {"max_tokens": 100, "n": 3}, 300),  # n multiplies
        (CHAT, {"max_completion_tokens": 50, "n": 4}, 200),
        (CHAT, {"n": 2}, 2 * DEFAULT_MAX_OUTPUT_TOKENS),
        (CHAT, {}, DEFAULT_MAX_OUTPUT_TOKENS),
        (CHAT, {"max_tokens": "100"}, DEFAULT_MAX_OUTPUT_TOKENS),
        (CHAT, {"max_tokens": 100, "n": 0}, 100),
        (CHAT, {"max_tokens": 100, "n": "2"}, 100),
        ("/v1/responses", {"max_output_tokens": 64}, 64),
        ("/v1/embeddings", {"max_tokens": 100, "n": 5}, 0),
        ("/v1/embeddings", {}, 0),
        ("/v1/completions", {"max_tokens": 16}, 16),
        # Values no server accepts never make the charge negative or odd.
        ("/v1/responses", {"max_output_tokens": -64}, DEFAULT_MAX_OUTPUT_TOKENS),
        (CHAT, {"max_tokens": 10, "n": -2}, 10),
        (CHAT, {"max_tokens": True}, DEFAULT_MAX_OUTPUT_TOKENS),
        (CHAT, {"max_completion_tokens": -1, "max_tokens": 7}, 7),
    ],
)
def test_max_output_tokens(url: str, body: dict[str, Any], expected: int) -> None:
    assert max_output_tokens(url, body) == expected


# -------------------------------------------------------------------- native Claude and Gemini


def test_claude_usage_adds_the_cache_back_to_the_input() -> None:
    body = {
        "usage": {
            "input_tokens": 20,
            "cache_creation_input_tokens": 1000,
            "cache_read_input_tokens": 3000,
            "output_tokens": 50,
        }
    }
    assert claude_usage(body) == Usage(
        prompt_tokens=4020,
        completion_tokens=50,
        total_tokens=4070,
        cached_tokens=3000,
        cache_write_tokens=1000,
    )


def test_claude_usage_without_cache_fields() -> None:
    usage = claude_usage({"usage": {"input_tokens": 12, "output_tokens": 3}})
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (12, 3, None)


def test_gemini_usage_counts_thoughts_as_output_and_tool_prompts_as_input() -> None:
    body = {
        "usageMetadata": {
            "promptTokenCount": 100,
            "toolUsePromptTokenCount": 7,
            "candidatesTokenCount": 40,
            "thoughtsTokenCount": 300,
            "cachedContentTokenCount": 64,
            "totalTokenCount": 447,
        }
    }
    assert gemini_usage(body) == Usage(
        prompt_tokens=107,
        completion_tokens=340,
        total_tokens=447,
        cached_tokens=64,
        reasoning_tokens=300,
    )


def test_gpt_image_usage_splits_image_input_tokens() -> None:
    body = {
        "usage": {
            "input_tokens": 350,
            "input_tokens_details": {"text_tokens": 50, "image_tokens": 300},
            "output_tokens": 4160,
            "total_tokens": 4510,
        }
    }
    usage = parse_usage(body)
    assert (usage.prompt_tokens, usage.image_input_tokens, usage.completion_tokens) == (
        350,
        300,
        4160,
    )


@pytest.mark.parametrize("reader", [claude_usage, gemini_usage])
@pytest.mark.parametrize(
    "body", [None, [], {}, {"usage": "x", "usageMetadata": 3}, {"usage": {"input_tokens": "1"}}]
)
def test_native_usage_of_a_malformed_body_is_empty(reader: Any, body: Any) -> None:
    usage = reader(body)
    assert usage.prompt_tokens is None and usage.completion_tokens is None


@pytest.mark.parametrize(
    ("url", "body", "expected"),
    [
        (CHAT, {"max_tokens": 100, "n": 3}, 300),
        (CHAT, {"max_completion_tokens": 0}, 0),
        ("/v1/responses", {"max_output_tokens": 64}, 64),
        ("/v1/embeddings", {}, 0),  # embeddings produce no output tokens: a limit of 0
        (CHAT, {}, None),  # the server decides: no limit, whatever the TPM charge assumes
        (CHAT, {"n": 2}, None),
        (CHAT, {"max_tokens": "100"}, None),
        ("/v1/responses", {"max_output_tokens": -64}, None),
    ],
)
def test_output_limit_says_when_a_row_sets_none(
    url: str, body: dict[str, Any], expected: int | None
) -> None:
    assert output_limit(url, body) == expected
