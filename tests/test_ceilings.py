"""batchrun.cost.ceilings: the most output a model can produce for one request."""

from __future__ import annotations

import pytest

from batchrun.cost.ceilings import UNKNOWN_MODEL_MAX_OUTPUT_TOKENS, Ceiling, model_max_output


@pytest.mark.parametrize(
    ("model", "tokens"),
    [
        ("gpt-4o", 16_384),
        ("gpt-4o-2024-08-06", 16_384),
        ("gpt-4o-2024-05-13", 4_096),  # the first gpt-4o snapshot had a smaller maximum
        ("openai/gpt-4o-mini", 16_384),
        ("chatgpt-4o-latest", 16_384),
        ("gpt-4.1-nano", 32_768),
        ("gpt-5-mini", 128_000),
        ("gpt-5-chat-latest", 16_384),
        ("o1-mini", 65_536),
        ("o3", 100_000),
        ("o4-mini-2025-04-16", 100_000),
        ("gpt-4-turbo", 4_096),
        ("gpt-4", 8_192),
        ("gpt-3.5-turbo-0125", 4_096),
        ("GPT-4o", 16_384),
    ],
)
def test_known_models(model: str, tokens: int) -> None:
    assert model_max_output(model) == Ceiling(tokens, f"{model}'s maximum output")


def test_unknown_models_get_the_conservative_default_or_their_context_window() -> None:
    default = model_max_output("deepseek-chat")
    assert default.tokens == UNKNOWN_MODEL_MAX_OUTPUT_TOKENS == 32_768
    assert "not known" in default.source
    assert model_max_output(None).tokens == UNKNOWN_MODEL_MAX_OUTPUT_TOKENS
    # The output of a request never exceeds the model's context window.
    small = model_max_output("tiny-model", context_window=8_000)
    assert small == Ceiling(8_000, "tiny-model's context window")
    assert model_max_output("big-model", context_window=1_000_000).tokens == 32_768
