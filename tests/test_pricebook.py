"""Prices: the genai-prices database offline, user price files, unknown models."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price, data_snapshot
from genai_prices.types import ModelPrice, Tier, TieredPrices

from batchrun.cost.budget import record_cost
from batchrun.cost.pricebook import Price, PriceBook, PriceFileError
from batchrun.cost.prices import _database_rates
from batchrun.models import Record


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.load()


def _database_model_price(model: str) -> ModelPrice:
    snapshot = data_snapshot.DataSnapshot(
        providers=data_snapshot._bundled_snapshot().providers, from_auto_update=False
    )
    _, info = snapshot.find_provider_model(model, None, "openai", None)
    return info.get_prices(datetime.now(UTC))


def test_database_cost_equals_hand_computed_figure(book: PriceBook) -> None:
    rates = _database_model_price("gpt-4o-mini")
    assert isinstance(rates.input_mtok, Decimal) and isinstance(rates.cache_read_mtok, Decimal)
    assert isinstance(rates.output_mtok, Decimal)
    # 10,000 prompt tokens of which 4,000 cached, 2,000 completion tokens
    by_hand = (
        6_000 * float(rates.input_mtok)
        + 4_000 * float(rates.cache_read_mtok)
        + 2_000 * float(rates.output_mtok)
    ) / 1_000_000
    cost = book.cost_usd(
        "gpt-4o-mini", prompt_tokens=10_000, completion_tokens=2_000, cached_tokens=4_000
    )
    assert cost == pytest.approx(by_hand, rel=1e-12)
    assert by_hand > 0
    # and genai-prices' own calculator agrees
    usage = Usage(input_tokens=10_000, cache_read_tokens=4_000, output_tokens=2_000)
    reference = calc_price(usage, "gpt-4o-mini", provider_id="openai").total_price
    assert cost == pytest.approx(float(reference), rel=1e-12)


def test_price_carries_its_source(book: PriceBook) -> None:
    price = book.price_for("gpt-4o-mini")
    assert price is not None
    assert price.source.startswith("genai-prices ") and "openai gpt-4o-mini" in price.source


@pytest.mark.parametrize(
    "name", ["gpt-4o-mini-2024-07-18", "GPT-4o-mini", "openai/gpt-4o-mini", "gpt-4o-mini-20240718"]
)
def test_snapshots_and_gateway_names_resolve(book: PriceBook, name: str) -> None:
    assert book.price_for(name) == book.price_for("gpt-4o-mini")


def test_other_providers_models_resolve_by_name(book: PriceBook) -> None:
    price = book.price_for("deepseek-chat")
    assert price is not None and "deepseek" in price.source


@pytest.mark.parametrize("model", ["my-finetune-xyz", "llama-3.1-8b", "", None])
def test_unknown_model_costs_none_not_zero(book: PriceBook, model: str | None) -> None:
    assert book.price_for(model) is None
    assert book.cost_usd(model, prompt_tokens=100, completion_tokens=10) is None


def test_model_without_token_prices_is_unknown(book: PriceBook) -> None:
    # Priced per character, not per token: a token count of it is unknown, never 0.
    assert book.cost_usd("tts-1", prompt_tokens=100, completion_tokens=0) is None
    price = book.price_for("tts-1")
    assert price is not None and price.input_per_mtok is None


def test_embeddings_have_no_output_price(book: PriceBook) -> None:
    price = book.price_for("text-embedding-3-small")
    assert price is not None and price.output_per_mtok is None
    cost = book.cost_usd("text-embedding-3-small", prompt_tokens=1_000_000, completion_tokens=0)
    assert cost == pytest.approx(price.input_per_mtok)
    # output tokens at an unknown rate make the whole cost unknown, not silently cheaper
    assert book.cost_usd("text-embedding-3-small", prompt_tokens=10, completion_tokens=5) is None


def test_database_ignores_prices_fetched_by_other_libraries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # genai-prices' UpdatePrices replaces its process-wide snapshot; ours must stay the shipped one
    empty = data_snapshot.DataSnapshot(providers=[], from_auto_update=True)
    monkeypatch.setattr(data_snapshot, "_custom_snapshot", empty)
    assert PriceBook.load().price_for("gpt-4o") is not None


# --- arithmetic -------------------------------------------------------------------------------


def test_cached_tokens_use_input_rate_when_no_cached_rate() -> None:
    book = PriceBook(overrides={"m": Price(2.0, 8.0, None, "test")}, use_database=False)
    assert book.cost_usd("m", prompt_tokens=1000, completion_tokens=0, cached_tokens=400) == (
        pytest.approx(1000 * 2.0 / 1e6)
    )
    assert book.cost_usd("m", prompt_tokens=0, completion_tokens=1000) == pytest.approx(8.0 / 1e3)


def test_cached_tokens_never_exceed_prompt_tokens() -> None:
    book = PriceBook(overrides={"m": Price(2.0, 8.0, 1.0, "test")}, use_database=False)
    assert book.cost_usd("m", prompt_tokens=100, completion_tokens=0, cached_tokens=500) == (
        pytest.approx(100 * 1.0 / 1e6)
    )


def test_negative_token_counts_are_rejected() -> None:
    book = PriceBook(overrides={"m": Price(2.0, 8.0, 1.0, "test")}, use_database=False)
    with pytest.raises(ValueError, match="must be >= 0"):
        book.cost_usd("m", prompt_tokens=-1, completion_tokens=0)


def test_tiered_prices_bill_the_whole_request_at_the_tier_passed() -> None:
    rates = ModelPrice(
        input_mtok=TieredPrices(base=Decimal(2), tiers=[Tier(start=1000, price=Decimal(4))]),
        output_mtok=Decimal(8),
        cache_read_mtok=TieredPrices(base=Decimal(1), tiers=[Tier(start=1000, price=Decimal(3))]),
    )
    price = _database_rates(rates, "test")
    assert price is not None
    book = PriceBook(overrides={"m": price}, use_database=False)
    at_threshold = book.cost_usd("m", prompt_tokens=1000, completion_tokens=10, cached_tokens=100)
    above = book.cost_usd("m", prompt_tokens=1001, completion_tokens=10, cached_tokens=100)
    assert at_threshold == pytest.approx((900 * 2 + 100 * 1 + 10 * 8) / 1e6)
    assert above == pytest.approx((901 * 4 + 100 * 3 + 10 * 8) / 1e6)
    # same figures as genai-prices' own calculation
    usage = Usage(input_tokens=1001, cache_read_tokens=100, output_tokens=10)
    assert above == pytest.approx(float(rates.calc_price(usage)["total_price"]))


# --- user price files -------------------------------------------------------------------------

GATEWAY_TOML = """
[models."gpt-4o-mini"]
input = 0.3
cached_input = 0.1
output = 1.2

[models."my-finetune"]
input = 1
"""


@pytest.fixture
def price_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "prices.toml"
    path.write_text(GATEWAY_TOML)
    yield path


def test_price_file_overrides_the_database(price_file: Path) -> None:
    book = PriceBook.load(price_file)
    price = book.price_for("gpt-4o-mini")
    assert price == Price(0.3, 1.2, 0.1, str(price_file))
    assert book.cost_usd("gpt-4o-mini", prompt_tokens=1000, completion_tokens=1000) == (
        pytest.approx((1000 * 0.3 + 1000 * 1.2) / 1e6)
    )
    # dated snapshot and gateway-style names reported by the response use the user's entry too
    assert book.price_for("gpt-4o-mini-2024-07-18") == price
    assert book.price_for("openai/gpt-4o-mini") == price
    # models the file does not name still come from the database
    other = book.price_for("gpt-4o")
    assert other is not None and other.source.startswith("genai-prices")


def test_price_file_prices_models_the_database_does_not_know(price_file: Path) -> None:
    book = PriceBook.load(price_file)
    assert book.cost_usd("my-finetune", prompt_tokens=2_000_000, completion_tokens=0) == 2.0
    assert book.cost_usd("my-finetune", prompt_tokens=1, completion_tokens=1) is None


def test_json_price_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"models": {"gpt-4o": {"input": 1.5, "output": 6}}}')
    assert PriceBook.load(path).price_for("gpt-4o") == Price(1.5, 6.0, None, str(path))


def test_database_can_be_left_out(price_file: Path) -> None:
    book = PriceBook.load(price_file, use_database=False)
    assert book.price_for("gpt-4o") is None
    assert book.price_for("gpt-4o-mini") is not None


def test_output_ceiling_flag_then_price_file_then_table(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[models."gpt-4o"]\nmax_output_tokens = 2048\n'  # the ceiling alone: database prices
        '[models."my-model"]\ninput = 1\noutput = 2\nmax_output_tokens = 500\n'
    )
    book = PriceBook.load(path)
    assert book.output_ceiling("gpt-4o").tokens == 2048
    assert book.output_ceiling("gpt-4o-2024-08-06").source == "max_output_tokens in the price file"
    price = book.price_for("gpt-4o")
    assert price is not None and price.source.startswith("genai-prices")  # prices kept
    assert book.output_ceiling("my-model").tokens == 500
    assert book.price_for("my-model") == Price(1.0, 2.0, None, str(path))
    assert book.output_ceiling("gpt-4.1").tokens == 32_768  # not in the file: the table
    flagged = PriceBook.load(path, max_output_tokens=100)
    assert flagged.output_ceiling("gpt-4o").tokens == flagged.output_ceiling("o3").tokens == 100
    with pytest.raises(ValueError, match="max_output_tokens must be >= 1"):
        PriceBook(max_output_tokens=0)


def test_database_prices_carry_the_context_window() -> None:
    price = PriceBook.load().price_for("gpt-4o")
    assert price is not None and price.context_window == 128_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[models."m"]\noutput = 1\n', r"models\.\"m\": missing required key 'input'"),
        ('[models."m"]\nmax_output_tokens = 0\n', r"max_output_tokens: must be a whole number"),
        ('[models."m"]\nmax_output_tokens = 1.5\n', r"max_output_tokens: must be a whole number"),
        ('[models."m"]\noutput = 1\nmax_output_tokens = 9\n', r"missing required key 'input'"),
        ('[models."m"]\ninput = 1\nouput = 2\n', r"models\.\"m\": unknown key 'ouput'"),
        ('[models."m"]\ninput = -1\n', r"models\.\"m\"\.input: must be a finite number >= 0"),
        ('[models."m"]\ninput = nan\n', r"models\.\"m\"\.input: must be a finite number >= 0"),
        ('[models."m"]\ninput = "0.15"\n', r"models\.\"m\"\.input: must be a number"),
        ('[models."m"]\ninput = true\n', r"models\.\"m\"\.input: must be a number"),
        ('[models."m"]\ninput = 1\ncached_input = [1]\n', r"models\.\"m\"\.cached_input"),
        ("[models]\nm = 1\n", r"models\.\"m\": expected a table of prices"),
        ('[model."m"]\ninput = 1\n', r"unknown top-level key 'model'"),
        ("", r"no models"),
        ('[models."m"\ninput = 1\n', r"is not valid TOML"),
        ('[models."m"]\nbatch_output = 1\n', r"missing required key 'batch_input'"),
        ('[models."m"]\nbatch_input = -2\n', r"\.batch_input: must be a finite number >= 0"),
    ],
)
def test_bad_price_files_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "gateway-prices.toml"
    path.write_text(text)
    with pytest.raises(PriceFileError, match=message) as caught:
        PriceBook.load(path)
    assert str(path) in str(caught.value)


def test_bad_json_price_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"models": {"m": {"input": 1,}}}')
    with pytest.raises(PriceFileError, match="is not valid JSON"):
        PriceBook.load(path)


def test_missing_price_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(PriceFileError, match="cannot read price file") as caught:
        PriceBook.load(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, ValueError)


# --- batch prices (--backend openai-batch / anthropic-batch) -------------------------------


def _database_batch_price(model: str, provider: str) -> ModelPrice:
    snapshot = data_snapshot.DataSnapshot(
        providers=data_snapshot._bundled_snapshot().providers, from_auto_update=False
    )
    _, info = snapshot.find_provider_model(model, None, provider, None)
    return info.get_prices(datetime.now(UTC), {"processing": "batch"})


@pytest.mark.parametrize(("model", "provider"), [("gpt-4o-mini", "openai"),
                                                 ("claude-haiku-4-5", "anthropic")])  # fmt: skip
def test_batch_book_uses_the_database_batch_price(model: str, provider: str) -> None:
    online = PriceBook.load().price_for(model)
    batch = PriceBook.load(batch=True).price_for(model)
    rates = _database_batch_price(model, provider)
    assert online is not None and batch is not None
    assert batch.input_per_mtok == float(rates.input_mtok) < online.input_per_mtok
    assert batch.output_per_mtok == float(rates.output_mtok)  # type: ignore[arg-type]
    assert batch.source.endswith("(batch price)")
    assert PriceBook.load(batch=True).batch and not PriceBook.load().batch


def test_batch_without_a_batch_price_is_half_the_online_price() -> None:
    online = PriceBook.load().price_for("deepseek-chat")
    batch = PriceBook.load(batch=True).price_for("deepseek-chat")
    assert online is not None and batch is not None
    assert batch.input_per_mtok == pytest.approx(online.input_per_mtok / 2)
    assert batch.output_per_mtok == pytest.approx(online.output_per_mtok / 2)  # type: ignore[operator]
    assert "50% of online, no batch price in the database" in batch.source


def test_price_file_batch_keys_then_half_of_its_online_prices(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[models."gpt-4o-mini"]\ninput = 0.3\noutput = 1.2\n'
        "batch_input = 0.1\nbatch_cached_input = 0.05\nbatch_output = 0.4\n"
        '[models."my-model"]\ninput = 2\noutput = 8\n'
        '[models."gpt-4o"]\nbatch_input = 1\nbatch_output = 3\n'  # batch alone: online stays
    )
    batch = PriceBook.load(path, batch=True)
    assert batch.price_for("gpt-4o-mini") == Price(0.1, 0.4, 0.05, f"{path} (batch_* prices)")
    assert batch.cost_usd("gpt-4o-mini", prompt_tokens=1000, completion_tokens=1000) == (
        pytest.approx((1000 * 0.1 + 1000 * 0.4) / 1e6)
    )
    mine = batch.price_for("my-model")
    assert mine is not None and (mine.input_per_mtok, mine.output_per_mtok) == (1.0, 4.0)
    assert "50% of its online prices" in mine.source
    online = PriceBook.load(path)
    assert online.price_for("gpt-4o-mini") == Price(0.3, 1.2, None, str(path))
    gpt4o = online.price_for("gpt-4o")
    assert gpt4o is not None and gpt4o.source.startswith("genai-prices")
    assert batch.price_for("gpt-4o") == Price(1.0, 3.0, None, f"{path} (batch_* prices)")


def test_units_besides_tokens_are_priced_from_the_database_and_a_price_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[models."dall-e-2"]\nper_image = 0.02\n'
        '[models."gpt-image-1"]\ninput = 5.0\ninput_image = 10.0\noutput = 40.0\n'
    )
    book = PriceBook.load(path)
    assert book.billed_cost("tts-1", {"characters": 1_000_000}) == pytest.approx(15.0)
    assert book.billed_cost("whisper-1", {"audio_seconds": 3600}) == pytest.approx(0.36)
    assert book.billed_cost("dall-e-2", {"images@standard 256x256": 3}) == pytest.approx(0.06)
    assert book.billed_cost("tts-1", {"audio_seconds": 60}) is None  # tts-1 has no such rate
    assert book.billed_cost("no-such-model", {"characters": 10}) is None
    # A model billed by units only has no token price: a token answer of it is unknown.
    assert book.cost_usd("tts-1", prompt_tokens=10, completion_tokens=0) is None
    image = Record(
        custom_id="i", row=0, status="ok", model="gpt-image-1", prompt_tokens=110,
        completion_tokens=272, billed=(("image_input_tokens", 100.0),),
    )  # fmt: skip
    assert record_cost(book, image) == pytest.approx((10 * 5 + 100 * 10 + 272 * 40) / 1e6)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("per_image = -1", "per_image..: must be a number >= 0"),
        ('per_image = "cheap"', "per_image: must be a number or a table of sizes"),
        ("per_audio_hour = true", "per_audio_hour: must be a number"),
    ],
)
def test_a_bad_unit_price_names_its_key(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(f'[models."m"]\n{entry}\n')
    with pytest.raises(PriceFileError, match=message.replace("(", r"\(").replace("..", r"\..*")):
        PriceBook.load(path)
