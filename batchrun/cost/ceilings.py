"""The most output a model can produce for one request: the ceiling `--max-cost` reserves for a
row that sets no output limit (`max_tokens`, `max_completion_tokens`, `max_output_tokens`).

    model_max_output(model) ──► Ceiling(tokens, source)

genai-prices, the price database, records each model's context window but not its maximum
output, so the figures are this table's: the "max output tokens" of OpenAI's model pages, matched
by model family (dated snapshots, `-mini` / `-nano` and a `provider/` prefix included; first
match wins). A model not in the table gets `UNKNOWN_MODEL_MAX_OUTPUT_TOKENS`, a conservative
figure (it is above the maximum of most chat models outside the o-series and gpt-5), lowered to
the model's context window where the database knows that. A price file's `max_output_tokens` and
`--max-output-tokens` override the table (see `batchrun.cost.pricebook.PriceBook.output_ceiling`).

A reasoning model's hidden reasoning tokens are part of its output and of these maxima.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["UNKNOWN_MODEL_MAX_OUTPUT_TOKENS", "Ceiling", "model_max_output"]

UNKNOWN_MODEL_MAX_OUTPUT_TOKENS = 32_768

# OpenAI's model pages, "Max output tokens". Order matters: specific names before families.
_MAX_OUTPUT: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (re.compile(pattern), tokens)
    for pattern, tokens in [
        (r"gpt-4o-2024-05-13$", 4_096),
        (r"(gpt-4o|chatgpt-4o)", 16_384),  # mini, audio and search previews included
        (r"gpt-4\.1", 32_768),
        (r"gpt-4\.5", 16_384),
        (r"gpt-5(\.\d+)?-chat", 16_384),
        (r"gpt-5", 128_000),
        (r"o1-mini", 65_536),
        (r"o1-preview", 32_768),
        (r"o[134](-|$)", 100_000),
        (r"gpt-4-32k", 32_768),
        (r"gpt-4-(turbo|vision|1106|0125)", 4_096),
        (r"gpt-4(-|$)", 8_192),
        (r"gpt-3\.5-turbo", 4_096),
        (r"text-embedding-", 0),
    ]
)


@dataclass(frozen=True, slots=True)
class Ceiling:
    """At most `tokens` output tokens per choice; `source` says where the figure comes from."""

    tokens: int
    source: str


def model_max_output(model: str | None, *, context_window: int | None = None) -> Ceiling:
    """The table's maximum output for `model`, else the conservative default (at most the
    model's `context_window`, when known)."""
    if model:
        name = model.lower().rsplit("/", 1)[-1]
        for pattern, tokens in _MAX_OUTPUT:
            if pattern.match(name):
                return Ceiling(tokens, f"{model}'s maximum output")
    if context_window is not None and 0 < context_window < UNKNOWN_MODEL_MAX_OUTPUT_TOKENS:
        return Ceiling(context_window, f"{model}'s context window")
    return Ceiling(
        UNKNOWN_MODEL_MAX_OUTPUT_TOKENS,
        "the default for a model whose maximum output is not known",
    )
