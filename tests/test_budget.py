"""Cost during a run: the cost_usd column, --prices, --max-cost, the quota check at start."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx2
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

import batchrun
from batchrun.cost.budget import BudgetExhausted, CostBudget, worst_case
from batchrun.cost.pricebook import Price, PriceBook
from batchrun.cost.report import build_report
from batchrun.endpoints.usage import max_output_tokens, output_limit, rough_prompt_tokens
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


def _request(body: dict[str, object], *, row: int = 0) -> Request:
    """A request as the reader makes it."""
    url = "/v1/chat/completions"
    limit = output_limit(url, body)  # type: ignore[arg-type]
    return Request(
        row=row, custom_id=str(row), url=url, body=json.dumps(body).encode(),
        model=body.get("model"),  # type: ignore[arg-type]
        prompt_tokens_estimate=rough_prompt_tokens(url, body),  # type: ignore[arg-type]
        max_output_tokens=max_output_tokens(url, body),  # type: ignore[arg-type]
        output_limited=limit is not None,
    )  # fmt: skip


def test_budget_counts_what_is_in_flight() -> None:
    book = PriceBook(overrides={"m": Price(1.0, 1.0, None, "test")}, use_database=False)
    budget = CostBudget(max_usd=2.5e-5, spent_usd=0.0, prices=book)
    request = Request(
        row=0, custom_id="0", url="/v1/chat/completions", body=b"{}", model="m",
        prompt_tokens_estimate=5, max_output_tokens=5,
    )  # fmt: skip
    first = budget.try_reserve(request)  # $0.00001 at worst
    second = budget.try_reserve(request)
    assert first == pytest.approx(1e-5) and second == pytest.approx(1e-5)
    assert budget.try_reserve(request) is None  # a third in flight could pass $0.000025
    assert first is not None
    budget.settle(first, 2e-6)  # it cost less than its worst case
    assert budget.try_reserve(request) is not None


def test_a_row_without_an_output_limit_reserves_the_model_maximum() -> None:
    # Issue 15: the worst case of a row with no max_tokens was prompt + the limiter's 256.
    book = PriceBook(overrides={"gpt-4o": Price(2.5, 10.0, None, "test")}, use_database=False)
    messages = [{"role": "user", "content": "write an essay"}]
    unlimited = worst_case(book, _request({"model": "gpt-4o", "messages": messages}))
    assert unlimited.output_tokens == 16_384
    assert unlimited.output_source == "16,384 per choice, gpt-4o's maximum output"
    assert unlimited.usd == pytest.approx((unlimited.prompt_tokens * 2.5 + 16_384 * 10) / 1e6)
    two = worst_case(book, _request({"model": "gpt-4o", "messages": messages, "n": 2}))
    assert two.output_tokens == 2 * 16_384
    capped = worst_case(book, _request({"model": "gpt-4o", "messages": messages, "max_tokens": 50}))
    assert (capped.output_tokens, capped.output_source) == (50, None)
    flag = PriceBook(
        overrides={"gpt-4o": Price(2.5, 10.0, None, "test")},
        use_database=False,
        max_output_tokens=4000,
    )
    lowered = worst_case(flag, _request({"model": "gpt-4o", "messages": messages}))
    assert (lowered.output_tokens, lowered.output_source) == (
        4000,
        "4,000 per choice, --max-output-tokens",
    )


def test_images_reserve_what_the_model_bills_for_them() -> None:
    # gpt-4o-mini bills an image at 33 times gpt-4o's tokens (2,833 + 5,667 per tile); the
    # limiter's cheap count says 765 for any image. One of unknown size is reserved at the largest.
    book = PriceBook.load()
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    request = _request({**body, "max_tokens": 10})
    assert request.prompt_tokens_estimate < 800
    assert worst_case(book, request).prompt_tokens >= 2833 + 8 * 5667
    low = [{**content[1], "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}]
    small = _request({**body, "messages": [{"role": "user", "content": low}], "max_tokens": 10})
    assert 2833 <= worst_case(book, small).prompt_tokens < 2833 + 100


def test_audio_parts_are_bounded_by_the_context_window() -> None:
    book = PriceBook.load()
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    body = {"model": "gpt-4o-audio-preview", "max_tokens": 10,
            "messages": [{"role": "user", "content": [audio]}]}  # fmt: skip
    case = worst_case(book, _request(body))
    price = book.price_for("gpt-4o-audio-preview")
    assert price is not None and price.context_window == 128_000
    assert case.prompt_tokens == 128_000 and not case.prompt_unbounded


@pytest.mark.anyio
async def test_reserve_waits_for_room_and_refuses_only_what_can_never_fit() -> None:
    book = PriceBook(overrides={"m": Price(1.0, 1.0, None, "test")}, use_database=False)
    budget = CostBudget(max_usd=2e-5, spent_usd=0.0, prices=book)
    request = _request({"model": "m", "messages": [], "max_tokens": 5})  # 3 + 5 tokens: $8e-6
    worst = await budget.reserve(request)
    await budget.reserve(request)
    order: list[str] = []

    async def third() -> None:
        await budget.reserve(request)  # no room while two are in flight
        order.append("third went")

    async with anyio.create_task_group() as tg:
        tg.start_soon(third)
        await anyio.wait_all_tasks_blocked()
        assert order == []
        order.append("one settled")
        budget.settle(worst, 1e-6)  # it cost little: room for the third
    assert order == ["one settled", "third went"]
    big = _request({"model": "m", "messages": [], "max_tokens": 100})
    budget.settle(worst, 1e-6)
    budget.settle(worst, 1e-6)
    with pytest.raises(BudgetExhausted, match=r"row 0 \(m\) may cost up to \$0\.0001"):
        await budget.reserve(big)  # nothing in flight, and it still does not fit


# ------------------------------------------------------------- --max-cost against the mock


def _gpt4o_rows(n: int, **body: object) -> list[dict[str, object]]:
    return [
        {"custom_id": f"r{i}", "body": {"model": "gpt-4o", "messages": [
            {"role": "user", "content": f"write a long essay about topic {i}"}], **body}}
        for i in range(n)
    ]  # fmt: skip


def _spent(out: Path) -> float:
    """The spend as `batchrun report` counts it."""
    cost = build_report(out).cost_usd
    assert cost is not None
    return cost


def _run_cli(path: Path, out: Path, base_url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {"OPENAI_API_KEY": TEST_KEY, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "batchrun", "run", str(path), "--out", str(out),
         "--base-url", base_url, *flags],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )  # fmt: skip


def test_max_cost_holds_when_rows_set_no_output_limit(tmp_path: Path) -> None:
    # Issue 15: 50 gpt-4o rows without max_tokens, 4,000 tokens each from the server (about
    # $0.04 a row): --max-cost 0.5 spent $2.00 and exited 0.
    rows = _gpt4o_rows(50)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(reply_tokens=4000)) as server:
        stopped = _run_cli(path, out, server.base_url, "--max-cost", "0.5")
        assert stopped.returncode == 3, stopped.stderr
        assert "(no upper bound: 50 rows set no output limit)" in stopped.stderr
        assert "at most" not in stopped.stderr
        said = " ".join(stopped.stdout.split())
        assert "the cost budget would be passed (--max-cost $0.5000" in said
        assert "16,384 per choice, gpt-4o's maximum output: the row sets no output limit" in said
        assert "set max_tokens / max_completion_tokens in the rows, or --max-output-tokens" in said
        spent = _spent(out)
        done = len(read_results(out))
        assert spent <= 0.5 and 0 < done < 50
        # Resumable: a larger budget finishes the rest, each row once, and holds too.
        finished = _run_cli(path, out, server.base_url, "--max-cost", "5")
        assert finished.returncode == 0, finished.stderr
        assert server.stats()["requests"]["by_path"]["/v1/chat/completions"] == 50
    records = read_results(out)
    assert [r["row"] for r in records] == list(range(50))
    assert {r["completion_tokens"] for r in records} == {4000}
    assert spent < _spent(out) <= 5


def test_max_cost_uses_the_budget_when_rows_set_max_tokens(tmp_path: Path) -> None:
    # Each row may cost 1,000 output tokens, $0.01: about nine fit in $0.10, whatever the server
    # would have said without the limit.
    path = write_jsonl(tmp_path / "in.jsonl", _gpt4o_rows(30, max_tokens=1000))
    with MockServer(MockConfig(reply_tokens=4000)) as server:
        summary = batchrun.run_sync(
            _config(tmp_path, path, base_url=server.base_url, max_cost_usd=0.1, concurrency=8)
        )
    assert summary.exit_code == 3 and "cost budget would be passed" in (summary.stopped or "")
    spent = _spent(tmp_path / "out")
    assert 0.1 - 2 * 0.0101 < spent <= 0.1  # used up to the last row that fits, never past
    assert {r["completion_tokens"] for r in read_results(tmp_path / "out")} == {1000}


def test_max_cost_lets_a_flag_lower_the_ceiling(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", _gpt4o_rows(30))
    with MockServer(MockConfig(reply_tokens=4000)) as server:
        summary = batchrun.run_sync(
            _config(
                tmp_path, path, base_url=server.base_url, max_cost_usd=0.5, max_output_tokens=4000
            )
        )
    assert summary.exit_code == 3
    spent = _spent(tmp_path / "out")
    assert 0.5 - 2 * 0.0402 < spent <= 0.5  # 12 rows of $0.04: more than at gpt-4o's 16,384


def test_max_cost_reserves_images_at_the_price_of_the_model(tmp_path: Path) -> None:
    # gpt-4o-mini rows with a remote image: the mock bills the largest the model bills, 48,169
    # tokens ($0.0072); the limiter's cheap count (765 per image) let all five go for $0.036.
    content = [
        {"type": "text", "text": "what is in the picture?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    rows = [
        {"custom_id": f"i{i}", "body": {"model": "gpt-4o-mini", "max_tokens": 10,
                                          "messages": [{"role": "user", "content": content}]}}
        for i in range(5)
    ]  # fmt: skip
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    with MockServer(MockConfig()) as server:
        summary = batchrun.run_sync(
            _config(tmp_path, path, base_url=server.base_url, max_cost_usd=0.02, concurrency=5)
        )
    records = read_results(tmp_path / "out")
    assert summary.exit_code == 3 and records
    assert {r["prompt_tokens"] for r in records} == {2833 + 8 * 5667 + 14}
    assert _spent(tmp_path / "out") <= 0.02


def test_a_row_that_cannot_fit_in_the_whole_budget_stops_at_once(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", _gpt4o_rows(3))
    with MockServer(MockConfig()) as server:
        stopped = _run_cli(path, tmp_path / "out", server.base_url, "--max-cost", "0.1")
        sent = server.stats()["requests"]["by_path"].get("/v1/chat/completions", 0)
    assert stopped.returncode == 3 and sent == 0
    said = " ".join(stopped.stdout.split())
    assert "$0.0000 spent, $0.1000 left): row 0 (gpt-4o) may cost up to $0.16" in said
    assert "To go on, raise --max-cost, or set max_tokens" in said
    assert "run the same command again" in said


def test_max_cost_with_a_model_of_unknown_price_warns_and_runs(tmp_path: Path) -> None:
    rows = _gpt4o_rows(4)
    for row in rows:
        row["body"]["model"] = "no-such-model-xyz"  # type: ignore[index]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    with MockServer(MockConfig()) as server:
        done = _run_cli(path, tmp_path / "out", server.base_url, "--max-cost", "0.01", "-q")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("no known price for model 'no-such-model-xyz'") == 1
    assert "--max-cost cannot count its requests" in done.stderr
    assert [r["cost_usd"] for r in read_results(tmp_path / "out")] == [None] * 4


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


def test_a_fatal_stop_does_not_leave_workers_waiting_for_room(tmp_path: Path) -> None:
    # One gpt-4o row fits the budget at a time, so three of the four workers wait for room when
    # the first answer is a refused key. They must stop with it, not wait out --grace (30 s).
    # (The key passes the check at start, GET /v1/models; the rows ask the mock for a 401.)
    path = write_jsonl(tmp_path / "in.jsonl", _gpt4o_rows(8, max_tokens=1000, mock_fault="401"))
    with MockServer(MockConfig()) as server:
        started = time.monotonic()
        summary = batchrun.run_sync(
            _config(
                tmp_path, path, base_url=server.base_url, max_cost_usd=0.015,
                concurrency=4, grace_s=30.0, check_quota=False,
            )
        )  # fmt: skip
        elapsed = time.monotonic() - started
        sent = server.stats()["requests"]["by_path"].get("/v1/chat/completions", 0)
    assert summary.exit_code == 3 and "the API key was refused" in (summary.stopped or "")
    assert sent == 1 and summary.done_rows == 0
    assert elapsed < 20  # far below the 30 s grace the waiting workers would have taken
