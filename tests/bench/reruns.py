"""Benchmark: a `--retry-errors` pass over a finished output with 10% errors, at 100k and 1M rows.

The finished output is written the way a run commits one (`ResultWriter.commit`, parts of 5,000
records, rows shuffled within blocks of 200 as 100 in flight leave them), not by sending every
row: one row in ten is a server_error record, scattered over the whole input. Then
`batchrun run INPUT --out OUT --retry-errors` against the mock: the pass lists the error rows
(a sort of the records on disk), reads the input skipping every other row, sends the 10%, and
compacts the output (every record rewritten in row order). Peak RSS of that process, at 1M rows
within 10% of that at 100k; checked: exactly one request per error row, and afterwards every
row ok, one record each, no superseded record left.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.bench.context import Context
from tests.bench.inputs import MODEL
from tests.bench.procs import BenchError
from tests.bench.report import Row, met
from tests.bench.startup import _RESPONSE

__all__ = ["retry_memory"]

_PART_ROWS = 5_000
_IN_FLIGHT_BLOCK = 200
_ERROR_EVERY = 10
_ENDPOINT = "/v1/chat/completions"


@dataclass(frozen=True, slots=True)
class RetryFigures:
    rows: int
    retried: int
    wall_s: float
    cpu_s: float
    max_rss_mb: float

    def show(self) -> str:
        return (
            f"{self.rows:,} rows, {self.retried:,} retried in {self.wall_s:.1f} s (listing, "
            f"sending, compacting); CPU {self.cpu_s:.1f} s; peak RSS {self.max_rss_mb:,.0f} MB"
        )


def _prepare(ctx: Context, input_path: Path, rows: int) -> Path:
    from batchrun.models import Record
    from batchrun.store.checkpoint import Checkpoint, fingerprint_file
    from batchrun.store.writer import ResultWriter

    out = ctx.out_dir("retry")
    out.mkdir(parents=True)
    checkpoint = Checkpoint(
        input_path=str(input_path),
        fingerprint=fingerprint_file(input_path),
        settings={"endpoint": _ENDPOINT, "template": None},
        total_rows=rows,
        duplicates=0,
    )
    checkpoint.save(out)
    writer = ResultWriter(out, checkpoint)
    rng = random.Random(rows)
    order: list[int] = []
    for start in range(0, rows, _IN_FLIGHT_BLOCK):
        block = list(range(start, min(rows, start + _IN_FLIGHT_BLOCK)))
        rng.shuffle(block)
        order += block
    for start in range(0, rows, _PART_ROWS):
        records = []
        for row in order[start : start + _PART_ROWS]:
            if row % _ERROR_EVERY == 3:
                records.append(
                    Record(custom_id=f"row-{row:09d}", row=row, status="error",
                           endpoint=_ENDPOINT, http_status=500, error_type="server_error",
                           error_message="HTTP 500: server error (after 6 attempts)",
                           model=MODEL, attempts=6, latency_ms=3.0)
                )  # fmt: skip
            else:
                records.append(
                    Record(custom_id=f"row-{row:09d}", row=row, status="ok", endpoint=_ENDPOINT,
                           http_status=200, response=_RESPONSE, model=MODEL,
                           finish_reason="stop", prompt_tokens=22, completion_tokens=16,
                           total_tokens=38, attempts=1, latency_ms=1.0)
                )  # fmt: skip
        writer.commit(records)
    return out


def _check(out: Path, rows: int, retried: int, sent: int) -> None:
    from batchrun.store.checkpoint import Checkpoint

    checkpoint = Checkpoint.load(out)
    if checkpoint is None:
        raise BenchError(f"{out} lost its checkpoint")
    if sent != retried:
        raise BenchError(f"the retry pass sent {sent:,} requests for {retried:,} error rows")
    if checkpoint.counts != {"ok": rows, "error": 0} or checkpoint.stale_records:
        raise BenchError(
            f"after the pass: counts {checkpoint.counts}, {checkpoint.stale_records} stale"
        )
    import pyarrow.dataset as ds

    seen = ds.dataset(out / "results").count_rows()
    if seen != rows:
        raise BenchError(f"plain readers see {seen:,} records, not {rows:,}")


def retry_memory(ctx: Context) -> list[Row]:
    sizes = (20_000, 200_000) if ctx.settings.quick else (100_000, 1_000_000)
    c = str(ctx.settings.concurrency)
    ctx.log(f"[retry] peak RSS of a --retry-errors pass, {sizes[0]:,} and {sizes[1]:,} rows")
    found: list[RetryFigures] = []
    with ctx.mock() as mock:
        for rows in sizes:
            path = ctx.chat_input(rows)
            ctx.log(f"  writing a finished output of {rows:,} rows, 10% errors")
            out = _prepare(ctx, path, rows)
            retried = len(range(3, rows, _ERROR_EVERY))
            try:
                mock.reset()
                child = ctx.batchrun_run(path, out, mock.base_url, "--concurrency", c,
                                         "--retry-errors")  # fmt: skip
                result = ctx.finish(child, 120 + rows / 500)
                sent = int(mock.stats()["requests"]["by_path"].get(_ENDPOINT, 0))
                _check(out, rows, retried, sent)
            finally:
                ctx.remove(out)
            figures = RetryFigures(
                rows=rows,
                retried=retried,
                wall_s=result.wall_s,
                cpu_s=result.cpu_s,
                max_rss_mb=result.max_rss_kb / 1024,
            )
            ctx.log(f"  {figures.show()}")
            found.append(figures)
    small, large = found
    growth = large.max_rss_mb / small.max_rss_mb
    return [
        Row(
            bench="retry",
            measure=f"--retry-errors, 10% errors, peak RSS, {f.rows:,} rows, C={c}",
            value=f"{f.max_rss_mb:,.1f} MB ({f.retried:,} re-sent, {f.wall_s:,.1f} s with "
            "listing and compaction)",
            data=asdict(f),
        )
        for f in found
    ] + [
        Row(
            bench="retry",
            measure=f"peak RSS ratio {large.rows:,} / {small.rows:,} rows",
            value=f"{growth:.3f}x",
            target="<= 1.10x",
            met=met(growth <= 1.10),
            data={"ratio": growth},
        )
    ]
