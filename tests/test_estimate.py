"""Estimates before a run: figures by hand, unknown prices, price files, JSON, fallbacks."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchrun.cli import main
from batchrun.cost import tokenizer_files, tokens
from batchrun.cost.estimate import (
    ESTIMATE_NAME,
    Estimate,
    EstimateBuilder,
    EstimateError,
    estimate_file,
    load_estimate,
    save_estimate,
)
from batchrun.cost.pricebook import Price, PriceBook, PriceTier
from batchrun.cost.tokens import OutputRule, count_request_tokens, expected_output_tokens
from batchrun.inputs.reader import ParsedRow, iter_rows
from batchrun.runner.render import render_estimate
from tests.helpers import write_jsonl

ROOT = Path(__file__).resolve().parent.parent
CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"
# USD per 1M tokens, chosen so that every figure is easy to check by hand.
PRICES_TOML = """\
[models."gpt-4o-mini"]
input = 1.0
output = 4.0

[models."text-embedding-3-small"]
input = 0.5
"""


def _chat(model: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


BODIES: list[tuple[str, dict[str, Any]]] = [
    (CHAT, _chat("gpt-4o-mini", "Say hello to the world.", max_tokens=100)),
    (CHAT, _chat("gpt-4o-mini", "Two answers, please.", max_completion_tokens=30, n=2)),
    (CHAT, _chat("gpt-4o-mini", "No limit on this one.")),
    (EMBED, {"model": "text-embedding-3-small", "input": ["one text", "and another"]}),
    (CHAT, _chat("my-private-model", "Nobody knows my price.", max_tokens=10)),
]


def _lines() -> list[Any]:
    lines: list[Any] = [
        {"custom_id": f"r{i}", "method": "POST", "url": url, "body": body}
        for i, (url, body) in enumerate(BODIES)
    ]
    lines.insert(2, "{this is not json")
    return lines


@pytest.fixture
def small_input(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", _lines())


@pytest.fixture
def price_file(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(PRICES_TOML)
    return path


@pytest.fixture(scope="module")
def database() -> PriceBook:
    return PriceBook.load()


def _group(estimate: Estimate, model: str | None) -> Any:
    (group,) = [g for g in estimate.groups if g.model == model]
    return group


def test_figures_equal_hand_computed_ones(small_input: Path, price_file: Path) -> None:
    estimate = estimate_file(small_input, prices=PriceBook.load(price_file, use_database=False))
    prompt = [count_request_tokens(url, body).tokens for url, body in BODIES]

    chat = _group(estimate, "gpt-4o-mini")
    assert (chat.endpoint, chat.rows) == (CHAT, 3)
    assert chat.prompt_tokens == prompt[0] + prompt[1] + prompt[2]
    assert chat.max_output_tokens == 100 + 30 * 2 and chat.rows_without_max == 1
    # half of each max (rounded up), 256 per choice for the row without one
    assert chat.expected_output_tokens == 50 + 30 + 256
    assert chat.cost_low_usd == pytest.approx(chat.prompt_tokens * 1.0 / 1e6)
    assert chat.cost_expected_usd == pytest.approx((chat.prompt_tokens + 4 * 336) / 1e6)
    # high: every max, and the expected output of the row that sets none (so not a bound)
    assert chat.cost_high_usd == pytest.approx((chat.prompt_tokens + 4 * (160 + 256)) / 1e6)
    # ...which the table, the JSON and the notes say, instead of printing it as a bound
    assert not chat.cost_high_is_upper_bound
    text = render_estimate(estimate)
    assert "no upper bound" in text and ">= $" not in text
    assert (chat.output_ceiling, chat.output_ceiling_source) == (
        16_384,
        "gpt-4o-mini's maximum output",
    )
    assert "output: 1 rows set no limit: no upper bound; --max-cost reserves 16,384" in text
    assert chat.price_source == str(price_file)
    assert (chat.encoding, chat.exact) == (tokens.tokenizer_for("gpt-4o-mini").encoding, True)

    embed = _group(estimate, "text-embedding-3-small")
    assert (embed.endpoint, embed.rows, embed.prompt_tokens) == (EMBED, 1, prompt[3])
    assert (embed.max_output_tokens, embed.expected_output_tokens) == (0, 0)
    assert embed.cost_high_usd == pytest.approx(prompt[3] * 0.5 / 1e6)
    assert embed.cost_high_is_upper_bound and embed.output_ceiling is None

    assert estimate.bad_rows == 1
    assert estimate.bad_row_examples[0].line == 3
    totals = estimate.totals()
    assert totals["rows"] == 5 and totals["prompt_tokens"] == sum(prompt)


def test_unknown_model_costs_unknown_not_zero(small_input: Path, price_file: Path) -> None:
    estimate = estimate_file(small_input, prices=PriceBook.load(price_file, use_database=False))
    unknown = _group(estimate, "my-private-model")
    assert unknown.rows == 1 and unknown.prompt_tokens > 0
    assert (unknown.cost_low_usd, unknown.cost_expected_usd, unknown.cost_high_usd) == (None,) * 3
    assert unknown.price_source is None
    assert unknown.encoding is None and not unknown.exact  # chars/4 heuristic, marked
    assert "ceil(characters / 4)" in unknown.note
    totals = estimate.totals()
    known = sum(g.cost_expected_usd for g in estimate.groups if g.cost_expected_usd is not None)
    assert totals["rows_unpriced"] == 1 and totals["cost_expected_usd"] == pytest.approx(known)
    (doc,) = [g for g in json.loads(estimate.to_json())["groups"] if g["model"] == unknown.model]
    assert doc["cost_low_usd"] is None and doc["exact"] is False
    text = render_estimate(estimate)
    assert "unknown (no price for this model)" in text
    line = next(row for row in text.splitlines() if row.startswith("my-private-model"))
    assert "unknown" in line and "$0.0" not in line


def test_price_file_overrides_the_database(
    small_input: Path, price_file: Path, database: PriceBook
) -> None:
    default = _group(estimate_file(small_input, prices=database), "gpt-4o-mini")
    overridden = _group(
        estimate_file(small_input, prices=PriceBook.load(price_file)), "gpt-4o-mini"
    )
    price = database.price_for("gpt-4o-mini")
    assert price is not None and default.price_source == price.source
    assert default.cost_low_usd == pytest.approx(default.prompt_tokens * price.input_per_mtok / 1e6)
    assert overridden.cost_low_usd == pytest.approx(overridden.prompt_tokens * 1.0 / 1e6)
    assert overridden.cost_low_usd != default.cost_low_usd


def test_tiered_prices_are_applied_row_by_row() -> None:
    tier = PriceTier(
        above_prompt_tokens=20,
        input_per_mtok=10.0,
        output_per_mtok=20.0,
        cached_input_per_mtok=None,
    )
    prices = PriceBook(
        overrides={"tiered": Price(1.0, 2.0, None, source="test", tiers=(tier,))},
        use_database=False,
    )
    builder = EstimateBuilder(prices, rule=OutputRule(fraction_of_max=1.0))
    bodies = [_chat("tiered", "short", max_tokens=10), _chat("tiered", "long " * 40, max_tokens=10)]
    for row, body in enumerate(bodies):
        builder.add(_parsed(row, body))
    group = builder.result().groups[0]
    by_hand = sum(
        prices.cost_usd(
            "tiered", prompt_tokens=count_request_tokens(CHAT, b).tokens, completion_tokens=10
        )
        or math.nan
        for b in bodies
    )
    assert group.cost_high_usd == pytest.approx(by_hand)
    # the sums priced at one rate would be wrong: one row is above the tier, one below
    flat = prices.cost_usd("tiered", prompt_tokens=group.prompt_tokens, completion_tokens=20)
    assert flat is not None and not math.isclose(flat, by_hand)


def _parsed(row: int, body: dict[str, Any], url: str = CHAT) -> ParsedRow:
    raw = json.dumps(body).encode()
    return ParsedRow(row=row, custom_id=str(row), url=url, body=body, raw_body=raw, line=row + 1)


def test_model_override_counts_and_prices_every_row_as_that_model(
    small_input: Path, price_file: Path
) -> None:
    prices = PriceBook.load(price_file, use_database=False)
    estimate = estimate_file(small_input, prices=prices, model_override="gpt-4o-mini")
    assert {(g.model, g.endpoint) for g in estimate.groups} == {
        ("gpt-4o-mini", CHAT),
        ("gpt-4o-mini", EMBED),
    }
    assert estimate.model_override == "gpt-4o-mini"
    assert estimate.totals()["rows_unpriced"] == 0


def test_json_round_trips_and_is_saved_atomically(small_input: Path, tmp_path: Path) -> None:
    estimate = estimate_file(small_input, prices=PriceBook.load(use_database=False))
    assert Estimate.from_json(estimate.to_json()) == estimate
    out = tmp_path / "out"
    assert load_estimate(out) is None
    path = save_estimate(out, estimate)
    assert path == out / ESTIMATE_NAME and load_estimate(out) == estimate
    assert [p.name for p in out.iterdir()] == [ESTIMATE_NAME]  # no temporary file left
    path.write_text('{"format": "batchrun-estimate", "version": 1, "groups": [{"rows": 1}]}')
    with pytest.raises(EstimateError, match="damaged"):
        load_estimate(out)
    with pytest.raises(EstimateError, match="version"):
        Estimate.from_json('{"format": "batchrun-estimate", "version": 99}')


@pytest.fixture
def isolated_tokenizers() -> Iterator[None]:
    def reset() -> None:
        tokenizer_files._clear_cache()
        tokens._text_counter.cache_clear()
        tokens._counter_for.cache_clear()

    reset()
    yield
    reset()


def test_fallback_encoding_is_marked_inexact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_tokenizers: None
) -> None:
    # Hide every o200k_base: the user directory, tiktoken's cache, bpe-openai's and litellm's.
    monkeypatch.delenv(tokenizer_files.TIKTOKEN_DIR_ENV, raising=False)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    real = tokenizer_files._package_dirs
    monkeypatch.setattr(
        tokenizer_files,
        "_package_dirs",
        lambda pkg: [] if pkg in ("litellm", "bpe_openai") else real(pkg),
    )
    body = _chat("gpt-4o", "How many tokens is this?", max_tokens=5)
    builder = EstimateBuilder(PriceBook(use_database=False))
    builder.add(_parsed(0, body))
    builder.add(_parsed(1, _chat("gpt-4", "and this?")))
    estimate = builder.result()
    gpt4o, gpt4 = _group(estimate, "gpt-4o"), _group(estimate, "gpt-4")
    assert (gpt4o.encoding, gpt4o.exact, gpt4o.inexact_rows) == ("cl100k_base", False, 1)
    assert "fell back to cl100k_base" in gpt4o.note
    assert (gpt4.encoding, gpt4.exact) == ("cl100k_base", True)
    doc = json.loads(estimate.to_json())
    assert doc["exact"] is False and doc["totals"]["exact"] is False
    assert [g["exact"] for g in doc["groups"]] == [True, False]
    assert "NOT exact" in render_estimate(estimate)


def test_inexact_rows_say_why(isolated_tokenizers: None) -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": [image]}]}
    builder = EstimateBuilder(PriceBook(use_database=False))
    builder.add(_parsed(0, body))
    builder.add(_parsed(1, _chat("gpt-4", "plain")))
    group = builder.result().groups[0]
    assert (group.exact, group.inexact_rows) == (False, 1)
    assert group.inexact_reasons == ("image of unknown size assumed 1024x1024 high detail",)


def test_samples_estimate_without_error(database: PriceBook) -> None:
    estimate = estimate_file(ROOT / "samples" / "requests.jsonl", prices=database)
    totals = estimate.totals()
    assert estimate.bad_rows == 0 and totals["rows"] == 300
    rows = [r for r in iter_rows(ROOT / "samples" / "requests.jsonl") if isinstance(r, ParsedRow)]
    expected = sum(count_request_tokens(r.url, r.body).tokens for r in rows)
    assert totals["expected_output_tokens"] == sum(
        expected_output_tokens(r.body, url=r.url) for r in rows
    )
    assert totals["prompt_tokens"] == expected
    assert totals["cost_expected_usd"] > totals["cost_low_usd"] > 0
    assert {g.endpoint for g in estimate.groups} == {CHAT, EMBED}
    assert "total" in render_estimate(estimate)


# --- the command ------------------------------------------------------------------------------


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.run(
        [sys.executable, "-m", "batchrun", "estimate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


def test_cli_json_matches_the_library_and_saves_for_report(
    small_input: Path, price_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = _cli(
        small_input,
        "--prices",
        price_file,
        "--json",
        "--out",
        out,
        "--expected-output-fraction",
        "1",
    )
    assert done.returncode == 0, done.stderr
    printed = Estimate.from_json(done.stdout)
    by_library = estimate_file(
        small_input, prices=PriceBook.load(price_file), rule=OutputRule(fraction_of_max=1.0)
    )
    assert printed == by_library and load_estimate(out) == printed
    assert _group(printed, "gpt-4o-mini").expected_output_tokens == 100 + 60 + 256
    table = _cli(small_input, "--prices", price_file)
    assert (
        table.returncode == 0 and "gpt-4o-mini" in table.stdout and "cost expected" in table.stdout
    )


def test_cli_says_no_upper_bound_when_rows_set_no_limit(tmp_path: Path) -> None:
    rows = [
        {"custom_id": f"r{i}", "body": {"model": "gpt-4o", "messages": [
            {"role": "user", "content": "hello"}], **({"max_tokens": 50} if i == 0 else {})}}
        for i in range(3)
    ]  # fmt: skip
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    table = _cli(path)
    assert table.returncode == 0, table.stderr
    assert "no upper bound" in table.stdout and ">= $" not in table.stdout
    assert "output: 2 rows set no limit: no upper bound; --max-cost reserves 16,384" in table.stdout
    doc = json.loads(_cli(path, "--json", "--max-output-tokens", "1000").stdout)
    assert doc["totals"]["cost_high_is_upper_bound"] is False
    assert doc["totals"]["rows_without_max"] == 2
    (group,) = doc["groups"]
    assert group["cost_high_is_upper_bound"] is False
    assert (group["output_ceiling"], group["output_ceiling_source"]) == (
        1000,
        "--max-output-tokens",
    )
    bounded = write_jsonl(tmp_path / "bounded.jsonl", rows[:1])
    assert json.loads(_cli(bounded, "--json").stdout)["totals"]["cost_high_is_upper_bound"]


def test_an_estimate_saved_before_the_bound_fields_still_loads(
    small_input: Path, tmp_path: Path
) -> None:
    estimate = estimate_file(small_input, prices=PriceBook.load(use_database=False))
    doc = estimate.to_dict()
    for group in doc["groups"]:
        for key in ("cost_high_is_upper_bound", "output_ceiling", "output_ceiling_source"):
            del group[key]
    loaded = Estimate.from_dict(doc)
    assert [g.rows_without_max for g in loaded.groups] == [
        g.rows_without_max for g in estimate.groups
    ]
    assert {g.output_ceiling for g in loaded.groups} == {None}


def test_cli_bad_input_or_price_file_exits_2(small_input: Path, tmp_path: Path) -> None:
    missing = _cli(tmp_path / "nope.jsonl")
    assert missing.returncode == 2 and "input file not found" in missing.stderr
    bad_prices = tmp_path / "prices.toml"
    bad_prices.write_text('[models."gpt-4o-mini"]\noutput = 1.0\n')
    refused = _cli(small_input, "--prices", bad_prices)
    assert refused.returncode == 2 and "missing required key 'input'" in refused.stderr


def test_help_explains_units_and_exact(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("estimate", "report", "quota"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
        assert "units:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["estimate", "--help"])
    assert "exact:" in capsys.readouterr().out


def test_estimate_of_a_template_counts_what_run_will_send(tmp_path: Path, price_file: Path) -> None:
    questions = ["What is 2+2?", 'Say "hello"\nin French', "日本語で答えて", None, "Last one?"]
    path = tmp_path / "questions.csv"
    path.write_text(
        "qid,question\n"
        + "".join(
            f'q{i},"{q.replace(chr(34), chr(34) * 2)}"\n' if q else f"q{i},\n"
            for i, q in enumerate(questions)
        ),
        encoding="utf-8",
    )
    template = tmp_path / "ask.toml"
    template.write_text(
        'id = "qid"\n[body]\nmodel = "gpt-4o-mini"\nmax_tokens = 30\n'
        'messages = [{ role = "system", content = "Be brief." },\n'
        '            { role = "user", content = "{{ question }}" }]\n',
        encoding="utf-8",
    )
    # The same requests, rendered by hand as bare bodies.
    bare = write_jsonl(
        tmp_path / "bare.jsonl",
        [
            {
                "model": "gpt-4o-mini",
                "max_tokens": 30,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": q},
                ],
            }
            for q in questions
            if q is not None
        ],
    )
    done = _cli(path, "--template", template, "--prices", price_file, "--json")
    assert done.returncode == 0, done.stderr
    by_template = Estimate.from_json(done.stdout)
    by_hand = estimate_file(bare, prices=PriceBook.load(price_file))
    assert by_template.groups == by_hand.groups  # tokens and costs of exactly those bodies
    assert by_template.bad_rows == 1
    assert by_template.bad_row_examples[0].message == (  # question 1 spans lines 3 and 4
        "line 6: messages[1].content: column 'question' is null (empty)"
    )
    shortcut = _cli(
        path, "--model", "gpt-4o-mini", "--max-tokens", "30", "--system", "Be brief.",
        "--prompt", "{{ question }}", "--prices", price_file, "--json",
    )  # fmt: skip
    assert shortcut.returncode == 0, shortcut.stderr
    assert Estimate.from_json(shortcut.stdout).groups == by_hand.groups
    no_template = _cli(path, "--prices", price_file)
    assert no_template.returncode == 2 and "--template FILE" in no_template.stderr


# ---------------------------------------------------------------- batch prices, side by side


def test_batch_costs_are_the_same_tokens_at_the_batch_price(
    small_input: Path, tmp_path: Path
) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        '[models."gpt-4o-mini"]\ninput = 1.0\noutput = 4.0\nbatch_input = 0.25\n'
        'batch_output = 1.5\n[models."text-embedding-3-small"]\ninput = 0.5\n'
    )
    estimate = estimate_file(
        small_input,
        prices=PriceBook.load(path, use_database=False),
        batch_prices=PriceBook.load(path, use_database=False, batch=True),
        batch_backend="openai-batch",
    )
    chat = _group(estimate, "gpt-4o-mini")
    assert chat.cost_expected_usd == pytest.approx((chat.prompt_tokens + 4 * 336) / 1e6)
    assert chat.batch_cost_low_usd == pytest.approx(chat.prompt_tokens * 0.25 / 1e6)
    assert chat.batch_cost_expected_usd == pytest.approx(
        (chat.prompt_tokens * 0.25 + 336 * 1.5) / 1e6
    )
    assert chat.batch_price_source == f"{path} (batch_* prices)"
    embed = _group(estimate, "text-embedding-3-small")  # no batch_* keys: half its online price
    assert embed.batch_cost_high_usd == pytest.approx(embed.cost_high_usd / 2)
    assert "50% of its online prices" in (embed.batch_price_source or "")
    unknown = _group(estimate, "my-private-model")
    assert unknown.batch_cost_expected_usd is None  # unknown, never 0
    totals = estimate.totals()
    assert totals["batch_cost_expected_usd"] == pytest.approx(
        chat.batch_cost_expected_usd + embed.batch_cost_expected_usd
    )
    assert Estimate.from_json(estimate.to_json()) == estimate
    text = render_estimate(estimate)
    assert "online vs batch (openai-batch: done within 24 h, at the batch price):" in text
    assert f"batch price: {path} (batch_* prices)" in text


def test_cli_estimate_backend_shows_online_and_batch(small_input: Path, tmp_path: Path) -> None:
    plain = _cli(small_input)
    assert plain.returncode == 0 and "online vs batch" not in plain.stdout
    done = _cli(small_input, "--backend", "anthropic-batch", "--json")
    assert done.returncode == 0, done.stderr
    printed = Estimate.from_json(done.stdout)
    assert printed.batch_backend == "anthropic-batch"
    chat = _group(printed, "gpt-4o-mini")
    database = PriceBook.load(batch=True).price_for("gpt-4o-mini")
    assert database is not None and chat.batch_price_source == database.source
    assert chat.batch_cost_low_usd == pytest.approx(
        chat.prompt_tokens * database.input_per_mtok / 1e6
    )
    assert chat.batch_cost_expected_usd < chat.cost_expected_usd


def test_merged_estimates_of_parts_are_the_estimate_of_the_whole(
    tmp_path: Path, price_file: Path
) -> None:
    """A cluster's shards each estimate their rows; their sum is what one pass would say: the
    part where no row sets a maximum does not wipe out the other's, an unknown price stays
    unknown, groups come in the builder's order."""
    from dataclasses import fields

    from batchrun.cost.estimate import merge_estimates

    prices = PriceBook.load(price_file, use_database=False)
    lines = _lines()
    whole = estimate_file(write_jsonl(tmp_path / "all.jsonl", lines), prices=prices)
    parts = [
        estimate_file(write_jsonl(tmp_path / "a.jsonl", lines[:2]), prices=prices),
        estimate_file(write_jsonl(tmp_path / "b.jsonl", lines[2:]), prices=prices),
    ]
    assert parts[1].groups[0].max_output_tokens is None  # its one chat row sets no maximum
    merged = merge_estimates(parts)
    assert merged is not None and merge_estimates([]) is None
    assert [(g.model, g.endpoint) for g in merged.groups] == [
        (g.model, g.endpoint) for g in whole.groups
    ]
    for got, want in zip(merged.groups, whole.groups, strict=True):
        for f in fields(want):
            a, b = getattr(got, f.name), getattr(want, f.name)
            assert a == (pytest.approx(b) if isinstance(b, float) else b), f.name
    assert merged.totals()["rows"] == whole.totals()["rows"] == 5
    assert merged.bad_rows == whole.bad_rows == 1
    assert merged.totals()["cost_expected_usd"] == pytest.approx(
        whole.totals()["cost_expected_usd"]
    )
