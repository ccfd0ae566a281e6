"""Reports after a run: counts, tokens, cost, percentiles, estimate vs actual, missing output."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import httpx2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batchrun
from batchrun.cost.estimate import ESTIMATE_NAME, estimate_file, save_estimate
from batchrun.cost.pricebook import PriceBook
from batchrun.cost.report import LogHistogram, ReportError, build_report
from batchrun.models import Record
from batchrun.runner.render import render_report
from batchrun.store.checkpoint import Checkpoint, Fingerprint
from batchrun.store.writer import ResultWriter
from tests.helpers import TEST_KEY, chat_rows, openai_handler, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
CHAT = "/v1/chat/completions"


def _nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def _records(n: int, seed: int = 7) -> list[Record]:
    """ok rows of two models (one without a price), and errors of two kinds."""
    rng = random.Random(seed)
    records = []
    for row in range(n):
        latency = rng.lognormvariate(5, 1.2)  # ~150 ms median, long tail
        if row % 10 == 9:
            kind = "server_error" if row % 20 == 9 else "timeout"
            records.append(
                Record(
                    custom_id=f"r{row}",
                    row=row,
                    status="error",
                    endpoint=CHAT,
                    error_type=kind,
                    attempts=3,
                    latency_ms=latency,
                )
            )
            continue
        priced = row % 3 != 0
        records.append(
            Record(
                custom_id=f"r{row}",
                row=row,
                status="ok",
                endpoint=CHAT,
                model="gpt-4o-mini" if priced else "house-model",
                prompt_tokens=100 + row % 7,
                completion_tokens=20 + row % 5,
                cached_tokens=row % 4,
                reasoning_tokens=row % 2,
                attempts=1 + (row % 4 == 0),
                latency_ms=latency,
                cost_usd=0.001 * (1 + row % 3) if priced else None,
            )
        )
    return records


def _write(out: Path, records: list[Record], part_rows: int = 97) -> None:
    checkpoint = Checkpoint(
        input_path="in.jsonl",
        fingerprint=Fingerprint(size=0, digest="x", method="sha256"),
        settings={},
    )
    writer = ResultWriter(out, checkpoint)
    for start in range(0, len(records), part_rows):
        writer.commit(records[start : start + part_rows])


def test_counts_tokens_cost_and_percentiles(tmp_path: Path) -> None:
    records = _records(2000)
    _write(tmp_path, records)
    report = build_report(tmp_path, batch_rows=64)  # many batches across many part files
    ok = [r for r in records if r.ok]
    errors = [r for r in records if not r.ok]
    assert (report.rows, report.rows_ok, report.rows_error) == (2000, len(ok), len(errors))
    assert report.errors_by_type == {"server_error": 100, "timeout": 100}
    assert report.tokens == {
        kind: sum(getattr(r, kind) for r in ok)
        for kind in ("prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens")
    }
    assert report.requests == sum(r.attempts for r in records)
    assert report.retries == sum(r.attempts - 1 for r in records)
    by_model = {m.model: m for m in report.by_model}
    priced = [r for r in ok if r.model == "gpt-4o-mini"]
    assert by_model["gpt-4o-mini"].rows_ok == len(priced)
    assert by_model["gpt-4o-mini"].cost_usd == pytest.approx(sum(r.cost_usd or 0 for r in priced))
    house = by_model["house-model"]
    assert house.cost_usd is None and house.rows_without_cost == house.rows_ok > 0
    assert report.rows_without_cost == house.rows_ok
    assert report.cost_usd == by_model["gpt-4o-mini"].cost_usd
    latencies = [r.latency_ms for r in ok if r.latency_ms is not None]
    for p in (50, 90, 99):
        exact = _nearest_rank(latencies, p)
        assert report.latency_ms[f"p{p}"] == pytest.approx(exact, rel=0.01)
    assert report.comparison is None
    text = render_report(report)
    assert "server_error 100" in text and "p99" in text and "house-model" in text
    assert json.loads(report.to_json())["rows_ok"] == len(ok)


def test_batch_size_does_not_change_the_figures(tmp_path: Path) -> None:
    _write(tmp_path, _records(500))
    small, large = build_report(tmp_path, batch_rows=7), build_report(tmp_path, batch_rows=100_000)
    assert _rounded(small.to_dict()) == _rounded(large.to_dict())
    assert small.by_model[0].cost_usd == pytest.approx(0.75)  # 150 rows at 2 mUSD, 150 at 3


def _rounded(value: object) -> object:
    """Floats to 12 significant digits: sums of costs differ in the last bits by batch order."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def test_histogram_is_fixed_size_and_within_one_percent() -> None:
    rng = random.Random(1)
    values = [rng.lognormvariate(3, 3) for _ in range(50_000)] + [0.0, 1e-9]
    histogram = LogHistogram()
    size = len(histogram._counts)
    for start in range(0, len(values), 4096):
        histogram.add_array(pa.array([*values[start : start + 4096], None]))
    assert len(histogram._counts) == size and histogram.count == len(values)
    for p in (1, 10, 50, 90, 99, 99.9):
        assert histogram.percentile(p) == pytest.approx(_nearest_rank(values, p), rel=0.01)
    assert histogram.percentile(0.001) == 0.0  # at or below 1 microsecond
    assert LogHistogram().percentile(50) is None


def test_estimate_next_to_actual(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [*chat_rows(12), "{broken"])
    out = tmp_path / "out"
    estimate = estimate_file(path, prices=PriceBook.load())
    save_estimate(out, estimate)
    handler, _ = openai_handler()
    config = batchrun.RunConfig(
        input_path=path, out_dir=out, base_url="http://mock.test/v1", api_key=TEST_KEY
    )
    summary = batchrun.run_sync(config, transport=httpx2.MockTransport(handler))
    assert summary.finished

    report = build_report(out)
    assert (report.rows_ok, report.errors_by_type) == (12, {"bad_input": 1})
    assert report.comparison is not None
    chat, total = report.comparison
    group = estimate.groups[0]
    assert chat.scope == CHAT and total.scope == "total"
    assert (chat.rows_estimated, chat.rows_ok, chat.rows_error) == (12, 12, 0)
    assert total.rows_error == 1  # the bad row has no endpoint: counted in the total only
    assert chat.prompt_tokens_estimated == group.prompt_tokens
    assert chat.prompt_tokens_actual == 12 * 10  # what the fake server reported
    assert chat.completion_tokens_expected == group.expected_output_tokens
    assert chat.completion_tokens_max == 12 * 20 and chat.completion_tokens_actual == 12 * 3
    assert chat.cost_expected_usd == pytest.approx(group.cost_expected_usd)
    assert "estimate vs actual" in render_report(report)


def test_a_part_without_newer_columns_reads_them_as_null(tmp_path: Path) -> None:
    _write(tmp_path, _records(30))
    old = pa.table({"custom_id": ["x"], "row": [30], "status": ["ok"], "attempts": [2]})
    pq.write_table(old, tmp_path / "results" / "part-000001.parquet")
    checkpoint = Checkpoint.load(tmp_path)
    assert checkpoint is not None
    checkpoint.parts = 2  # committed, as a run that adopted it would have counted it
    checkpoint.save(tmp_path)
    report = build_report(tmp_path)
    assert (report.rows, report.requests) == (31, sum(r.attempts for r in _records(30)) + 2)
    assert report.rows_without_usage == 1 and report.by_model[0].model is None


def test_a_part_the_checkpoint_does_not_count_is_left_out(tmp_path: Path) -> None:
    _write(tmp_path, _records(30))
    stray = pa.table({"custom_id": ["x"], "row": [3], "status": ["error"], "attempts": [1]})
    pq.write_table(stray, tmp_path / "results" / "part-000001.parquet")
    assert build_report(tmp_path).rows == 30


def test_damaged_estimate_is_noted_not_fatal(tmp_path: Path) -> None:
    _write(tmp_path, _records(20))
    (tmp_path / ESTIMATE_NAME).write_text("{not json")
    report = build_report(tmp_path)
    assert report.comparison is None and report.rows == 20
    assert any("estimate not compared" in note for note in report.notes)


def test_missing_or_empty_output_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no output directory"):
        build_report(tmp_path / "nowhere")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / ".part-000000.parquet.tmp").write_bytes(b"half a part")
    with pytest.raises(ReportError, match="holds no results"):
        build_report(tmp_path)
    (tmp_path / "results" / "part-000000.parquet").write_bytes(b"not parquet")
    with pytest.raises(ReportError, match="cannot read the results"):
        build_report(tmp_path)


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchrun", "report", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
        cwd=ROOT,
    )


def test_cli_report(tmp_path: Path) -> None:
    _write(tmp_path / "out", _records(100))
    done = _cli(tmp_path / "out", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == 100
    missing = _cli(tmp_path / "nowhere")
    assert missing.returncode == 2 and "no output directory" in missing.stderr
