"""Cost during a run: the cost_usd column, --prices, --max-cost, the quota check at start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx2
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

import batchrun
from batchrun.cost.budget import CostBudget
from batchrun.cost.pricebook import Price, PriceBook
from batchrun.mock import MockConfig, MockServer
from batchrun.models import Request
from tests.helpers import TEST_KEY, chat_rows, openai_handler, read_results, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
# USD per 1M tokens: round numbers so that the expected costs are easy to compute by hand.
PRICES_TOML = """
[models."gpt-4o-mini"]
input = 1.0
cached_input = 0.5
output = 2.0
"""


def _config(tmp_path: Path, path: Path, **overrides: object) -> batchrun.RunConfig:
    settings: dict[str, object] = {
        "input_path": path,
        "out_dir": tmp_path / "out",
        "base_url": "http://mock.test/v1",
        "api_key": TEST_KEY,
        "concurrency": 2,
        "flush_rows": 3,
    }
    settings.update(overrides)
    return batchrun.RunConfig(**settings)  # type: ignore[arg-type]


def test_cost_column_uses_the_price_file(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES_TOML)
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(4))
    handler, _ = openai_handler()  # 10 prompt tokens (2 cached), 3 completion tokens each
    summary = batchrun.run_sync(
        _config(tmp_path, path, prices_file=prices), transport=httpx2.MockTransport(handler)
    )
    per_row = (8 * 1.0 + 2 * 0.5 + 3 * 2.0) / 1e6
    for record in read_results(tmp_path / "out"):
        assert record["cost_usd"] == pytest.approx(per_row)
    assert summary.session.cost_usd == pytest.approx(4 * per_row)
    checkpoint = json.loads((tmp_path / "out" / "checkpoint.json").read_text())
    assert checkpoint["cost_usd"] == pytest.approx(4 * per_row)


def test_unknown_price_is_null_not_zero(tmp_path: Path) -> None:
    rows = chat_rows(2)
    for row in rows:
        row["body"]["model"] = "no-such-model-xyz"
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    handler, _ = openai_handler()
    summary = batchrun.run_sync(_config(tmp_path, path), transport=httpx2.MockTransport(handler))
    assert [r["cost_usd"] for r in read_results(tmp_path / "out")] == [None, None]
    assert summary.session.unpriced == 2


def test_max_cost_stops_before_the_budget_is_passed_and_resumes(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES_TOML)
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(30))
    handler, seen = openai_handler()
    # Worst case per request: ~10 prompt tokens + 20 max output = ~$0.00005; actual $0.000015.
    budget = 0.0003
    summary = batchrun.run_sync(
        _config(tmp_path, path, prices_file=prices, max_cost_usd=budget),
        transport=httpx2.MockTransport(handler),
    )
    assert summary.exit_code == 3
    assert "cost budget would be passed" in (summary.stopped or "")
    spent = pc.sum(ds.dataset(tmp_path / "out" / "results").to_table()["cost_usd"]).as_py()
    assert spent <= budget
    assert 0 < summary.done_rows < 30 and len(seen) == summary.done_rows

    resumed = batchrun.run_sync(
        _config(tmp_path, path, prices_file=prices, max_cost_usd=1.0),
        transport=httpx2.MockTransport(handler),
    )
    assert resumed.finished
    assert [r["row"] for r in read_results(tmp_path / "out")] == list(range(30))


def test_budget_counts_what_is_in_flight() -> None:
    book = PriceBook(overrides={"m": Price(1.0, 1.0, None, "test")}, use_database=False)
    budget = CostBudget(max_usd=2.5e-5, spent_usd=0.0, prices=book)
    request = Request(
        row=0, custom_id="0", url="/v1/chat/completions", body=b"{}", model="m",
        prompt_tokens_estimate=5, max_output_tokens=5,
    )  # fmt: skip
    first = budget.reserve(request)  # $0.00001 at worst
    second = budget.reserve(request)
    assert first == pytest.approx(1e-5) and second == pytest.approx(1e-5)
    assert budget.reserve(request) is None  # a third in flight could pass $0.000025
    budget.settle(first, 2e-6)  # it cost less than its worst case
    assert budget.reserve(request) is not None


def test_quota_is_checked_at_start_and_required_when_asked(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(20))
    env = {"OPENAI_API_KEY": TEST_KEY, "PATH": "/usr/bin:/bin"}
    with MockServer(MockConfig(port=0, quota_usd=5.0, used_usd=4.99999)) as server:
        base = ("run", path, "--out", tmp_path / "out", "--base-url", server.base_url)
        refused = subprocess.run(
            [sys.executable, "-m", "batchrun", *map(str, base), "--require-quota"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert refused.returncode == 3, refused.stderr
        assert "quota: $0.000010 remaining of $5.00 granted" in refused.stderr
        assert "exceeds the remaining balance" in refused.stderr
        assert server.stats()["requests"]["by_path"].get("/v1/chat/completions", 0) == 0

        warned = subprocess.run(
            [sys.executable, "-m", "batchrun", *map(str, base)],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert warned.returncode == 0, warned.stderr
        assert "warning: the estimated cost of the pending rows" in warned.stderr


def test_server_without_quota_endpoints_is_fine(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(3))
    env = {"OPENAI_API_KEY": TEST_KEY, "PATH": "/usr/bin:/bin"}
    with MockServer(MockConfig(port=0, billing=False)) as server:
        result = subprocess.run(
            [sys.executable, "-m", "batchrun", "run", str(path), "--out", str(tmp_path / "out"),
             "--base-url", server.base_url, "--require-quota"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "quota: unknown for this server" in result.stderr
