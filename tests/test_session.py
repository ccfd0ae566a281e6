"""batchrun.runner.session: the first pass runs alongside sending, and what waits for it.

Against the real mock server on 127.0.0.1. The reader's in-memory horizon is made small
(`id_horizon_rows`) so that rows beyond it, judged by the first pass's list on disk, are few;
`first_pass_process_bytes=0` puts the first pass in its own process even for a small input.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx2
import pytest

import batchrun
from batchrun.mock import MockConfig, MockServer
from batchrun.store.checkpoint import Checkpoint
from batchrun.store.duplicates import DUPLICATES_NAME, DuplicateCursor
from tests.helpers import TEST_KEY, chat_rows, completion, read_results, write_jsonl
from tests.torture import ROOT, chat_requests, config

# row -> the earlier row whose custom_id it repeats: below the horizon (10), beyond it with the
# first use below, and both beyond.
REPEATS = {5: 2, 40: 3, 50: 45}
WAY = {"thread": 8 << 20, "process": 0}


def _rows_with_repeats(n: int = 60) -> list[dict[str, Any]]:
    rows = chat_rows(n)
    for row, first in REPEATS.items():
        rows[row]["custom_id"] = rows[first]["custom_id"]
    return rows


def _check_repeats(out: Path, rows: list[dict[str, Any]]) -> None:
    records = read_results(out)
    assert [r["row"] for r in records] == list(range(len(rows)))
    for r in records:
        if r["row"] in REPEATS:
            first = REPEATS[r["row"]]
            assert (r["status"], r["error_type"], r["attempts"]) == ("error", "bad_input", 0)
            assert r["error_message"] == (
                f"line {r['row'] + 1}: custom_id {rows[first]['custom_id']!r} is already used by "
                f"row {first} (custom_ids must be unique); not sent"
            )
        else:
            assert r["status"] == "ok", r


@pytest.mark.parametrize("way", sorted(WAY))
def test_repeats_below_and_beyond_the_horizon_are_bad_input_and_sent_never(
    tmp_path: Path, way: str, caplog: pytest.LogCaptureFixture
) -> None:
    rows = _rows_with_repeats()
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    caplog.set_level("INFO", logger="batchrun")
    with MockServer(MockConfig()) as server:
        summary = batchrun.run_sync(
            config(path, out, server.base_url, id_horizon_rows=10,
                   first_pass_process_bytes=WAY[way])
        )  # fmt: skip
        assert chat_requests(server) == len(rows) - len(REPEATS)
    assert summary.finished and summary.total_rows == len(rows)
    _check_repeats(out, rows)
    checkpoint = Checkpoint.load(out)
    assert checkpoint is not None and (checkpoint.total_rows, checkpoint.duplicates) == (60, 3)
    with DuplicateCursor(out / DUPLICATES_NAME) as listed:
        assert [listed.first_row_of(r) for r in range(60) if r in REPEATS] == [2, 3, 45]
    assert json.loads((out / "estimate.json").read_text())["totals"]["rows"] == 60
    assert "rows from 10 on wait for the first pass to check their custom_ids" in caplog.text
    assert "3 rows repeat a custom_id used on an earlier row" in caplog.text
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".batchrun")) == []


def test_a_resume_after_the_first_pass_uses_its_list_and_reads_nothing_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = _rows_with_repeats()
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    control = batchrun.RunControl()

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET":
            return httpx2.Response(404)
        body = json.loads(request.content)
        if body["messages"][0]["content"] == "question number 20":
            control.stop("test stop")  # past the horizon: the list is known by then
        return httpx2.Response(200, json=completion(body))

    first = batchrun.run_sync(
        config(path, out, "http://gw.test/v1", id_horizon_rows=10, concurrency=1),
        control,
        transport=httpx2.MockTransport(handler),
    )
    assert first.stopped == "test stop" and not first.finished
    checkpoint = Checkpoint.load(out)
    assert checkpoint is not None and (checkpoint.total_rows, checkpoint.duplicates) == (60, 3)
    pending = {r for r in range(60) if r not in checkpoint.done}
    assert pending

    caplog.clear()
    caplog.set_level("INFO", logger="batchrun")
    with MockServer(MockConfig()) as server:
        resumed = batchrun.run_sync(config(path, out, server.base_url, id_horizon_rows=10))
        sent = chat_requests(server)
    assert resumed.finished
    assert "alongside sending" not in caplog.text  # no first pass: its list is in OUT
    assert sent == len(pending - set(REPEATS))
    _check_repeats(out, rows)


def test_require_quota_waits_for_the_estimate_and_says_so(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(30))
    out = tmp_path / "out"
    env = {"OPENAI_API_KEY": TEST_KEY, "PATH": "/usr/bin:/bin"}
    with MockServer(MockConfig(quota_usd=5.0, used_usd=0.0)) as server:
        ran = subprocess.run(
            [sys.executable, "-m", "batchrun", "run", str(path), "--out", str(out),
             "--base-url", server.base_url, "--require-quota"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert chat_requests(server) == 30
    assert ran.returncode == 0, ran.stderr
    lines = ran.stderr.splitlines()
    waiting = lines.index("waiting for the first pass's estimate before sending (--require-quota)")
    estimate = next(i for i, line in enumerate(lines) if line.startswith("estimate: 30 rows"))
    quota = next(i for i, line in enumerate(lines) if line.startswith("quota: $5.00 remaining"))
    assert waiting < estimate < quota


def test_require_quota_sends_nothing_before_the_estimate(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(30))
    out = tmp_path / "out"
    estimated_before_sending: list[bool] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/subscription"):
            return httpx2.Response(200, json={"hard_limit_usd": 100})
        if request.method == "GET":
            return httpx2.Response(404)
        estimated_before_sending.append((out / "estimate.json").exists())
        return httpx2.Response(200, json=completion(json.loads(request.content)))

    summary = batchrun.run_sync(
        config(path, out, "http://gw.test/v1", require_quota=True, first_pass_process_bytes=0),
        transport=httpx2.MockTransport(handler),
    )
    assert summary.finished
    assert estimated_before_sending == [True] * 30


def test_models_the_server_does_not_list_are_named_with_the_closest_listed_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = chat_rows(9)
    for row, model in zip(rows, ["gpt-4o-mimi"] * 3 + ["zzz-unheard-of"] * 2, strict=False):
        row["body"]["model"] = model
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    caplog.set_level("INFO", logger="batchrun")
    with MockServer(MockConfig()) as server:
        summary = batchrun.run_sync(config(path, tmp_path / "out", server.base_url))
    assert summary.finished  # the mock answers any model: the warning does not stop anything
    warnings = [r.getMessage() for r in caplog.records if "does not list" in r.getMessage()]
    assert warnings == [
        "warning: the server does not list 'gpt-4o-mimi' (closest listed: 'gpt-4o-mini', "
        "'gpt-4.1-mini', 'gpt-5-mini'); 'zzz-unheard-of' (closest listed: none close); rows "
        "naming them "
        "may fail (gateways sometimes list less than they serve: `batchrun models` prints the "
        "list)"
    ]


def test_no_model_warning_when_every_model_is_listed_or_nothing_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(5))
    caplog.set_level("INFO", logger="batchrun")
    with MockServer(MockConfig()) as listing:
        batchrun.run_sync(config(path, tmp_path / "a", listing.base_url))
    rows = chat_rows(5)
    rows[0]["body"]["model"] = "gpt-4o-mimi"
    odd = write_jsonl(tmp_path / "odd.jsonl", rows)
    with MockServer(MockConfig(list_models=False)) as unlisted:
        batchrun.run_sync(config(odd, tmp_path / "b", unlisted.base_url))
    assert "does not list" not in caplog.text.replace("does not list its models", "")


def test_the_first_request_does_not_wait_for_the_price_book_and_costs_are_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchrun.cost.pricebook import PriceBook

    prices = tmp_path / "prices.toml"
    prices.write_text('[models."gpt-4o-mini"]\ninput = 1.0\ncached_input = 0.5\noutput = 2.0\n')
    first_request = threading.Event()
    loaded_after_the_first_request: list[bool] = []
    real_load = PriceBook.load

    def slow_load(prices_file: Path | None = None, **kwargs: Any) -> PriceBook:
        loaded_after_the_first_request.append(first_request.wait(timeout=20))
        return real_load(prices_file, **kwargs)

    monkeypatch.setattr(PriceBook, "load", staticmethod(slow_load))

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET":
            return httpx2.Response(404)
        first_request.set()
        return httpx2.Response(200, json=completion(json.loads(request.content)))

    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(4))
    summary = batchrun.run_sync(
        config(path, tmp_path / "out", "http://gw.test/v1", prices_file=prices),
        transport=httpx2.MockTransport(handler),
    )
    assert summary.finished
    assert loaded_after_the_first_request[0] is True  # the run's own load came second
    per_row = (8 * 1.0 + 2 * 0.5 + 3 * 2.0) / 1e6  # 10 prompt (2 cached), 3 completion tokens
    assert [r["cost_usd"] for r in read_results(tmp_path / "out")] == [pytest.approx(per_row)] * 4
    assert summary.session.cost_usd == pytest.approx(4 * per_row)
