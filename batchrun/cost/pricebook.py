"""What a response cost in USD, from its usage and the model's price.

    PriceBook.load(prices_file) ──► price_for(model) ──► Price | None
                                └─► cost_usd(model, prompt_tokens=, completion_tokens=, ...)

Prices come from the user's price file first (it overrides the database per model, because gateways
bill their own rates), then from the genai-prices database as shipped (never updated over the
network); see `batchrun.cost.prices`. A model with no known price costs None, never 0.0.

Billing follows OpenAI's usage object: `cached_tokens` are part of `prompt_tokens` and are billed at
the cached-input rate when one is known, else at the input rate; reasoning tokens are part of
`completion_tokens`. Models with long-context tiers (the database's tiered prices) bill the whole
request at the tier its prompt exceeds. Standard (online) rates, unless the book is a batch book
(`PriceBook.load(..., batch=True)`, for `--backend openai-batch` / `anthropic-batch`): then every
price is the model's Batch API price: the price file's `batch_*` keys, else 50% of the file's
online rates, else the database's batch price, else 50% of the database's online price; each
price's `source` says which. Flex and priority rates, and separate audio or image token rates, are
not applied.

User file entries match the model name as written, then lowercased, then without a date suffix
(`gpt-4o-mini-2024-07-18` uses `gpt-4o-mini`), then without a `provider/` prefix. Lookups are cached
per model name, so `cost_usd` costs a dict lookup and a few multiplications per response.

`output_ceiling(model)` is the most output one choice of a row without an output limit can
produce, as `--max-cost` reserves it: `--max-output-tokens` when given, else the user file's
`max_output_tokens` for the model, else `batchrun.cost.ceilings`' table and default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from batchrun.cost.ceilings import Ceiling, model_max_output
from batchrun.cost.prices import (
    Price,
    PriceFileError,
    PriceTier,
    database_price,
    half_price,
    load_database,
    load_price_file,
)

__all__ = ["Price", "PriceBook", "PriceFileError", "PriceTier"]

_T = TypeVar("_T")
_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")


class PriceBook:
    """Prices for one run: user overrides, then the genai-prices database as of `at`."""

    __slots__ = (
        "_at",
        "_batch",
        "_batch_overrides",
        "_cache",
        "_ceilings",
        "_max_output_tokens",
        "_output_cache",
        "_overrides",
        "_use_database",
    )

    def __init__(
        self,
        *,
        overrides: Mapping[str, Price] | None = None,
        use_database: bool = True,
        at: datetime | None = None,
        ceilings: Mapping[str, int] | None = None,
        max_output_tokens: int | None = None,
        batch: bool = False,
        batch_overrides: Mapping[str, Price] | None = None,
    ) -> None:
        self._batch = batch
        self._batch_overrides = _with_lowercase(batch_overrides or {})
        self._overrides = _with_lowercase(overrides or {})
        self._ceilings = _with_lowercase(ceilings or {})
        if max_output_tokens is not None and max_output_tokens < 1:
            raise ValueError(f"max_output_tokens must be >= 1, got {max_output_tokens}")
        self._max_output_tokens = max_output_tokens
        self._use_database = use_database
        self._at = at or datetime.now(UTC)
        self._cache: dict[str | None, Price | None] = {}
        self._output_cache: dict[str | None, Ceiling] = {}

    @classmethod
    def load(
        cls,
        prices_file: Path | None = None,
        *,
        use_database: bool = True,
        max_output_tokens: int | None = None,
        batch: bool = False,
    ) -> PriceBook:
        """A price book with `prices_file`'s entries (if any) over the database;
        `max_output_tokens` is `--max-output-tokens` (see `output_ceiling`); `batch`: Batch API
        prices (see the module docstring).

        Raises PriceFileError when the file cannot be read or has a bad entry.
        """
        file = load_price_file(prices_file) if prices_file is not None else None
        if use_database:
            load_database()  # here, not in the first cost_usd call of the hot path
        return cls(
            overrides=file.prices if file else None,
            ceilings=file.max_output_tokens if file else None,
            use_database=use_database,
            max_output_tokens=max_output_tokens,
            batch=batch,
            batch_overrides=file.batch_prices if file else None,
        )

    def __repr__(self) -> str:
        return (
            f"PriceBook(overrides={len(self._overrides)}, database={self._use_database}, "
            f"batch={self._batch}, cached_models={len(self._cache)})"
        )

    @property
    def batch(self) -> bool:
        """Whether this book prices the Batch APIs rather than online requests."""
        return self._batch

    def price_for(self, model: str | None) -> Price | None:
        """The price of `model`, or None when neither the user file nor the database knows it."""
        try:
            return self._cache[model]
        except KeyError:
            price = self._cache[model] = self._lookup(model)
            return price

    def cost_usd(
        self,
        model: str | None,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
    ) -> float | None:
        """USD for one response's usage; None when the model's price (or a rate it needs) is
        unknown."""
        if prompt_tokens < 0 or completion_tokens < 0 or cached_tokens < 0:
            raise ValueError(
                f"token counts must be >= 0, got prompt={prompt_tokens} "
                f"completion={completion_tokens} cached={cached_tokens}"
            )
        price = self.price_for(model)
        if price is None:
            return None
        input_rate, output_rate, cached_rate = (
            price.input_per_mtok,
            price.output_per_mtok,
            price.cached_input_per_mtok,
        )
        for tier in reversed(price.tiers):
            if prompt_tokens > tier.above_prompt_tokens:
                input_rate, output_rate, cached_rate = (
                    tier.input_per_mtok,
                    tier.output_per_mtok,
                    tier.cached_input_per_mtok,
                )
                break
        if input_rate is None:
            return None  # a model billed by other units only
        cached = min(cached_tokens, prompt_tokens)
        if cached_rate is None:
            cached_rate = input_rate
        total = (prompt_tokens - cached) * input_rate + cached * cached_rate
        if completion_tokens:
            if output_rate is None:
                return None
            total += completion_tokens * output_rate
        return total / 1_000_000

    def billed_cost(self, model: str | None, units: Mapping[str, float]) -> float | None:
        """USD for what a row is billed by besides tokens (`batchrun.endpoints.billing`):
        characters, audio seconds, images; None when any unit's price is unknown."""
        price = self.price_for(model)
        if price is None:
            return None
        total = 0.0
        for unit, quantity in units.items():
            rate: float | None
            if unit == "characters":
                rate = price.per_million_characters
                rate = None if rate is None else rate / 1_000_000
            elif unit == "audio_seconds":
                rate = price.per_audio_hour
                rate = None if rate is None else rate / 3600
            elif unit.startswith("images@"):
                rate = _image_rate(price, unit.removeprefix("images@"))
            else:
                rate = None
            if rate is None:
                return None
            total += quantity * rate
        return total

    def output_ceiling(self, model: str | None) -> Ceiling:
        """The most output tokens one choice of a row that sets no output limit can produce."""
        try:
            return self._output_cache[model]
        except KeyError:
            ceiling = self._output_cache[model] = self._find_ceiling(model)
            return ceiling

    def _find_ceiling(self, model: str | None) -> Ceiling:
        if self._max_output_tokens is not None:
            return Ceiling(self._max_output_tokens, "--max-output-tokens")
        for name in _override_names(model) if model else ():
            tokens = self._ceilings.get(name)
            if tokens is not None:
                return Ceiling(tokens, "max_output_tokens in the price file")
        price = self.price_for(model)
        return model_max_output(model, context_window=price.context_window if price else None)

    def _lookup(self, model: str | None) -> Price | None:
        if not model:
            return None
        names = _override_names(model)
        if self._batch:
            for name in names:
                price = self._batch_overrides.get(name)
                if price is not None:
                    return replace(price, source=f"{price.source} (batch_* prices)")
        for name in names:
            price = self._overrides.get(name)
            if price is not None:
                if self._batch:
                    return half_price(price, "batch: 50% of its online prices, no batch_* set")
                return price
        if not self._use_database:
            return None
        return database_price(model, self._at, batch=self._batch)


def _image_rate(price: Price, key: str) -> float | None:
    """The price of one image of `key` ("quality size"): that, else the size alone, else the
    model's flat per-image price."""
    table = dict(price.per_image)
    quality, _, size = key.lower().partition(" ")
    for candidate in (f"{quality} {size}", size, ""):
        if candidate in table:
            return table[candidate]
    return None


def _with_lowercase(entries: Mapping[str, _T]) -> dict[str, _T]:
    found = dict(entries)
    for name, value in entries.items():
        found.setdefault(name.lower(), value)
    return found


def _override_names(model: str) -> list[str]:
    names = [model, model.lower()]
    for name in names[:2]:
        undated = _DATE_SUFFIX.sub("", name)
        if undated != name:
            names.append(undated)
    if "/" in model:
        names += _override_names(model.rsplit("/", 1)[-1])
    return names
