"""Where prices come from: a user's price file, or the genai-prices database shipped in its package.

    --prices FILE (TOML or JSON) ──► load_price_file() ──► {model name: Price}
    genai-prices (offline data)   ──► database_price()  ──► Price | None

A user's file exists because gateways (APICore and other resellers) bill their own rates: it
overrides the database for the models it names. Its format, prices in USD per million tokens:

    [models."gpt-4o-mini"]
    input = 0.15          # required, unless the entry only sets max_output_tokens
    cached_input = 0.075  # optional: cached prompt tokens, else billed at `input`
    output = 0.60         # optional for embedding models: else output is billed as unknown
    max_output_tokens = 16384  # optional: the most a row with no output limit can produce
    batch_input = 0.075   # optional: the provider's Batch API rates (--backend *-batch);
    batch_cached_input = 0.0375  # batch_input is required once any batch_* key is set
    batch_output = 0.30

    [models."tts-1"]
    per_million_characters = 15.0   # speech: USD per 1M characters of `input`
    [models."whisper-1"]
    per_audio_hour = 0.36           # transcriptions: USD per hour of audio
    [models."gpt-image-1"]
    input = 5.0
    input_image = 10.0              # USD per 1M image input tokens (else billed at `input`)
    output = 40.0
    [models."dall-e-3".per_image]   # USD per image: "quality size", or size alone
    "standard 1024x1024" = 0.04
    "hd 1024x1024" = 0.08
    "1792x1024" = 0.08

A model needs `input` for token-billed answers; the unit prices stand alone.

`max_output_tokens` is what `--max-cost` reserves for a row that sets no output limit (see
`batchrun.cost.ceilings`); an entry may set it alone and keep the database's prices. So may
the `batch_*` keys: the online prices then stay the database's.

Batch prices (`database_price(..., batch=True)`): genai-prices carries the Batch API rates of
some models as a price variant (`processing = "batch"`, OpenAI's and Anthropic's, each from the
date the database says); for a model without one, batch is 50% of the online price, which is
what OpenAI and Anthropic charge, and the source says so.

A `.json` file holds the same shape: `{"models": {"gpt-4o-mini": {"input": 0.15, ...}}}`; any other
suffix is read as TOML. A bad file raises `PriceFileError` naming the file and the bad key.

The database is read from the data genai-prices ships, never from the network: this module builds
its own snapshot of that data instead of using genai-prices' process-wide one, which its opt-in
`UpdatePrices` (started by any other library in the process) would replace with downloaded prices.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelInfo, ModelPrice

__all__ = [
    "Price",
    "PriceFile",
    "PriceFileError",
    "PriceTier",
    "database_price",
    "half_price",
    "load_database",
    "load_price_file",
]


class PriceFileError(ValueError):
    """A user price file that cannot be read or has a bad entry; the message names file and key."""


@dataclass(frozen=True, slots=True)
class PriceTier:
    """Rates that replace the base rates for a whole request whose prompt exceeds a threshold."""

    above_prompt_tokens: int
    input_per_mtok: float
    output_per_mtok: float | None
    cached_input_per_mtok: float | None


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens for one model. None: that rate is unknown (never taken as zero).

    `context_window`: the most prompt tokens the model accepts, where the database says.
    """

    input_per_mtok: float | None  # None: a model billed by other units only (tts-1)
    output_per_mtok: float | None
    cached_input_per_mtok: float | None
    source: str
    tiers: tuple[PriceTier, ...] = ()
    context_window: int | None = None
    # Units besides tokens (batchrun.endpoints.billing); None or empty: unknown.
    input_image_per_mtok: float | None = None
    per_million_characters: float | None = None
    per_audio_hour: float | None = None
    per_image: tuple[tuple[str, float], ...] = ()  # ("hd 1024x1024", 0.08), ("1024x1024", ...)


@dataclass(frozen=True, slots=True)
class PriceFile:
    """A user price file: prices, batch prices and output ceilings by model name as written."""

    prices: dict[str, Price]
    max_output_tokens: dict[str, int]
    batch_prices: dict[str, Price] = field(default_factory=dict)


_PRICE_KEYS = ("input", "cached_input", "output")
_BATCH_KEYS = ("batch_input", "batch_cached_input", "batch_output")
_UNIT_KEYS = ("input_image", "per_million_characters", "per_audio_hour")
_FILE_KEYS = (*_PRICE_KEYS, *_UNIT_KEYS, "per_image", "max_output_tokens", *_BATCH_KEYS)
# What the Batch APIs of OpenAI and Anthropic charge against their online rates.
BATCH_DISCOUNT = 0.5


def half_price(price: Price, why: str) -> Price:
    """`price` at the batch discount, its source saying `why` (no batch rate was known)."""

    def half(rate: float | None) -> float | None:
        return None if rate is None else rate * BATCH_DISCOUNT

    tiers = tuple(
        PriceTier(
            t.above_prompt_tokens,
            t.input_per_mtok * BATCH_DISCOUNT,
            half(t.output_per_mtok),
            half(t.cached_input_per_mtok),
        )
        for t in price.tiers
    )
    return replace(
        price,
        input_per_mtok=half(price.input_per_mtok),
        output_per_mtok=half(price.output_per_mtok),
        cached_input_per_mtok=half(price.cached_input_per_mtok),
        source=f"{price.source} ({why})",
        tiers=tiers,
    )


def load_price_file(path: Path) -> PriceFile:
    """Read and validate a user price file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PriceFileError(f"cannot read price file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise PriceFileError(f"price file {path} is not UTF-8 text: {exc}") from exc
    try:
        document: object = (
            json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
        )
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PriceFileError(f"price file {path} is not valid {_format(path)}: {exc}") from exc
    if not isinstance(document, dict):
        raise PriceFileError(f"price file {path}: expected a table with a 'models' key")
    unknown = sorted(set(document) - {"models"})
    if unknown:
        raise PriceFileError(f"price file {path}: unknown top-level key {unknown[0]!r}")
    models = document.get("models")
    if not isinstance(models, dict) or not models:
        raise PriceFileError(f'price file {path}: no models; expected [models."NAME"] tables')
    prices: dict[str, Price] = {}
    ceilings: dict[str, int] = {}
    batch: dict[str, Price] = {}
    for name, entry in models.items():
        price, batch_price, ceiling = _file_entry(path, name, entry)
        if price is not None:
            prices[name] = price
        if batch_price is not None:
            batch[name] = batch_price
        if ceiling is not None:
            ceilings[name] = ceiling
    return PriceFile(prices, ceilings, batch)


def _format(path: Path) -> str:
    return "JSON" if path.suffix.lower() == ".json" else "TOML"


def _file_entry(
    path: Path, model: str, entry: object
) -> tuple[Price | None, Price | None, int | None]:
    """(online price, batch price, output ceiling) of one entry; each None where not set."""
    where = f"price file {path}: models.{json.dumps(model)}"
    if not isinstance(entry, dict):
        raise PriceFileError(f"{where}: expected a table of prices, got {type(entry).__name__}")
    for key in entry:
        if key not in _FILE_KEYS:
            raise PriceFileError(f"{where}: unknown key {key!r} (expected one of {_FILE_KEYS})")
    ceiling = entry.get("max_output_tokens")
    if ceiling is not None and (
        not isinstance(ceiling, int) or isinstance(ceiling, bool) or ceiling < 1
    ):
        raise PriceFileError(
            f"{where}.max_output_tokens: must be a whole number of tokens >= 1, got {ceiling!r}"
        )
    priced = (*_PRICE_KEYS, *_UNIT_KEYS, "per_image")
    online = None
    if any(entry.get(key) is not None for key in priced):
        online = _online_price(path, where, entry)
    batch = _rates(path, where, entry, _BATCH_KEYS)
    if online is None and batch is None and ceiling is None:
        raise PriceFileError(f"{where}: missing required key 'input' (USD per 1M input tokens)")
    return online, batch, ceiling


def _online_price(path: Path, where: str, entry: dict[str, object]) -> Price:
    """The online rates of an entry: tokens, and the units besides tokens."""
    values: dict[str, float | None] = {}
    for key in (*_PRICE_KEYS, *_UNIT_KEYS):
        value = entry.get(key)
        if value is None:
            values[key] = None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value) or value < 0:
                raise PriceFileError(f"{where}.{key}: must be a finite number >= 0, got {value}")
            values[key] = float(value)
        else:
            raise PriceFileError(
                f"{where}.{key}: must be a number (USD per 1M tokens), got {value!r}"
            )
    per_image = _per_image(where, entry.get("per_image"))
    input_price = values["input"]
    if input_price is None and not per_image and all(values[k] is None for k in _UNIT_KEYS):
        raise PriceFileError(f"{where}: missing required key 'input' (USD per 1M input tokens)")
    price = Price(
        input_price,
        values["output"],
        values["cached_input"],
        source=str(path),
        input_image_per_mtok=values["input_image"],
        per_million_characters=values["per_million_characters"],
        per_audio_hour=values["per_audio_hour"],
        per_image=per_image,
    )
    return price


def _per_image(where: str, table: object) -> tuple[tuple[str, float], ...]:
    """`per_image = 0.04`, or a table by "quality size" / "size"."""
    if table is None:
        return ()
    if isinstance(table, int | float) and not isinstance(table, bool):
        table = {"": table}
    if not isinstance(table, dict):
        raise PriceFileError(f"{where}.per_image: must be a number or a table of sizes")
    found = []
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise PriceFileError(f"{where}.per_image.{key}: must be a number >= 0 (USD per image)")
        found.append((str(key).strip().lower(), float(value)))
    return tuple(found)


def _rates(
    path: Path, where: str, entry: dict[str, object], keys: tuple[str, str, str]
) -> Price | None:
    """The Price that `keys` (input, cached input, output) of an entry give; None if none set."""
    if all(entry.get(key) is None for key in keys):
        return None
    values: dict[str, float | None] = {}
    for key in keys:
        value = entry.get(key)
        if value is None:
            values[key] = None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value) or value < 0:
                raise PriceFileError(f"{where}.{key}: must be a finite number >= 0, got {value}")
            values[key] = float(value)
        else:
            raise PriceFileError(
                f"{where}.{key}: must be a number (USD per 1M tokens), got {value!r}"
            )
    input_key, cached_key, output_key = keys
    input_price = values[input_key]
    if input_price is None:
        raise PriceFileError(
            f"{where}: missing required key {input_key!r} (USD per 1M input tokens)"
        )
    return Price(input_price, values[output_key], values[cached_key], source=str(path))


def database_price(model: str, at: datetime | None = None, *, batch: bool = False) -> Price | None:
    """The genai-prices price of `model` at time `at` (default now), or None if it has none.

    `batch`: the Batch API price: the database's batch variant where it has one active at `at`,
    else 50% of the online price (the source says which).

    Tried in order: the model at provider "openai"; a `provider/model` name at the provider its
    prefix names; the provider genai-prices recognises from the name (deepseek-chat, claude-...);
    and for a `prefix/model` name, the part after the last slash.
    """
    at = at or datetime.now(UTC)
    snapshot = _bundled_snapshot()
    tail = model.rsplit("/", 1)[-1]
    attempts: list[tuple[str, str | None]] = [(model, "openai")]
    if "/" in model:
        attempts.append((model, "litellm"))  # genai-prices reads "provider/" prefixes for litellm
    attempts.append((model, None))
    if tail != model:
        attempts += [(tail, "openai"), (tail, None)]
    for ref, provider_id in attempts:
        try:
            provider, info = snapshot.find_provider_model(ref, None, provider_id, None)
        except LookupError:
            continue
        source = f"genai-prices {_version()}: {provider.id} {info.id}"
        if batch and _has_batch_variant(info, at):
            rates = info.get_prices(at, {"processing": "batch"})
            price = _database_rates(rates, source + " (batch price)")
        else:
            price = _database_rates(info.get_prices(at), source)
            if batch and price is not None:
                price = half_price(price, "batch: 50% of online, no batch price in the database")
        if price is not None:
            return replace(price, context_window=info.context_window)
    return None


def _has_batch_variant(info: ModelInfo, at: datetime) -> bool:
    return any(
        variant.when == {"processing": "batch"}
        and (variant.constraint is None or variant.constraint.active(at))
        for variant in info.price_variants or ()
    )


def load_database() -> None:
    """Load the bundled database now (~0.3 s) rather than on the first price lookup."""
    _bundled_snapshot()


@cache
def _version() -> str:
    return version("genai-prices")


@cache
def _bundled_snapshot() -> DataSnapshot:
    # Deferred import: loading the database takes ~0.4 s, paid only by runs that price something.
    from genai_prices.data import providers
    from genai_prices.data_snapshot import DataSnapshot

    return DataSnapshot(providers=providers, from_auto_update=False)


def _database_rates(rates: ModelPrice, source: str) -> Price | None:
    """Turn genai-prices' per-key (possibly tiered) Decimals into a Price; None without input."""
    from genai_prices.types import TieredPrices

    Rate = Decimal | TieredPrices | None
    raw: dict[str, Rate] = {
        "input": rates.input_mtok,
        "output": rates.output_mtok,
        "cached_input": rates.cache_read_mtok,
    }
    units = {
        "input_image_per_mtok": getattr(rates, "input_image_mtok", None),
        "per_million_characters": getattr(rates, "input_mchars", None),
        "per_audio_hour": getattr(rates, "input_audio_hours", None)
        or getattr(rates, "audio_hours", None),
    }
    flat = {k: float(v) for k, v in units.items() if isinstance(v, Decimal)}

    def with_units(price: Price) -> Price:
        return replace(
            price,
            input_image_per_mtok=flat.get("input_image_per_mtok"),
            per_million_characters=flat.get("per_million_characters"),
            per_audio_hour=flat.get("per_audio_hour"),
        )

    def rate_at(value: Rate, prompt_tokens: int) -> float | None:
        if value is None:
            return None
        if not isinstance(value, TieredPrices):
            return float(value)
        chosen = value.base
        for tier in value.tiers:  # sorted by start; genai-prices applies the highest one passed
            if prompt_tokens > tier.start:
                chosen = tier.price
        return float(chosen)

    def price_at(prompt_tokens: int) -> tuple[float, float | None, float | None]:
        input_rate = rate_at(raw["input"], prompt_tokens)
        assert input_rate is not None
        return (
            input_rate,
            rate_at(raw["output"], prompt_tokens),
            rate_at(raw["cached_input"], prompt_tokens),
        )

    if raw["input"] is None:
        if not flat:
            return None
        return with_units(Price(None, None, None, source=source))  # tts-1, whisper-1
    starts = sorted({t.start for v in raw.values() if isinstance(v, TieredPrices) for t in v.tiers})
    tiers = tuple(PriceTier(start, *price_at(start + 1)) for start in starts)
    return with_units(Price(*price_at(0), source=source, tiers=tiers))
