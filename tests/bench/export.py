"""Benchmark: `batchrun export` of 100k and 1M rows, peak RSS and rows/s at each size.

The output is written the way a run commits one (`ResultWriter.commit`, parts of 5,000 records),
not by sending a million requests: the export reads only OUT and the input. It looks like what a
run on a CSV of questions through a template leaves:
- answers are the mock's own chat completions (60 words, about 800 bytes of JSON each);
- records are in completion order: rows shuffled within blocks of 200, as 100 in flight leave
  them; 1 row in 97 is left out of the first pass and committed at the end, scattered over the
  whole range as a retry pass would commit it; 1 row in 50 is an error (an HTML 502 page);
- the checkpoint names the CSV (the template benchmark's questions) with its fingerprint, and a
  template, so the export joins the CSV's records.

Each size is exported twice, in its own process: the joined table (Parquet) and the OpenAI Batch
output. Memory must not grow with the rows: peak RSS at 1M within 10% of that at 100k.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.bench.context import Context
from tests.bench.inputs import MODEL, write_question_csv
from tests.bench.procs import BenchError
from tests.bench.report import Row, met

__all__ = ["export_memory"]

_PART_ROWS = 5_000
_IN_FLIGHT_BLOCK = 200
_RETRIED_EVERY = 97
_ERROR_EVERY = 50
_REPLY_WORDS = 60
_ENDPOINT = "/v1/chat/completions"
_HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


@dataclass(frozen=True, slots=True)
class ExportFigures:
    rows: int
    kind: str
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    rate: float  # rows per second, process start to exit

    def show(self) -> str:
        return (
            f"{self.kind}: {self.rows:,} rows in {self.wall_s:.1f} s = {self.rate:,.0f} rows/s; "
            f"CPU {self.cpu_s / self.rows * 1e6:,.1f} us/row; peak RSS {self.max_rss_mb:,.0f} MB"
        )


def _completion_order(rows: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    first = [r for r in range(rows) if r % _RETRIED_EVERY]
    order: list[int] = []
    for start in range(0, len(first), _IN_FLIGHT_BLOCK):
        block = first[start : start + _IN_FLIGHT_BLOCK]
        rng.shuffle(block)
        order += block
    return order + [r for r in range(rows) if not r % _RETRIED_EVERY]


def prepare_output(ctx: Context, csv_path: Path, rows: int) -> Path:
    """An output directory of `rows` records of `csv_path`, committed in completion order."""
    from batchrun.mock.payloads import chat_completion
    from batchrun.models import Record
    from batchrun.store.checkpoint import Checkpoint, fingerprint_file
    from batchrun.store.writer import ResultWriter

    out = ctx.out_dir("export")
    out.mkdir(parents=True)
    checkpoint = Checkpoint(
        input_path=str(csv_path),
        fingerprint=fingerprint_file(csv_path),
        settings={"endpoint": _ENDPOINT, "template": "0" * 64},
        total_rows=rows,
    )
    checkpoint.save(out)
    writer = ResultWriter(out, checkpoint)
    body, _ = chat_completion(
        {"model": MODEL},
        completion_id="chatcmpl-bench000000000000000",
        created=1_796_169_600,
        prompt_tokens=24,
        cached_tokens=0,
        reply_tokens=_REPLY_WORDS,
        reasoning_tokens=0,
        cap=None,
        n=1,
    )
    answer = body.decode()
    order = _completion_order(rows, seed=rows)
    for start in range(0, rows, _PART_ROWS):
        records = []
        for row in order[start : start + _PART_ROWS]:
            if row % _ERROR_EVERY == 0:
                records.append(
                    Record(custom_id=f"q-{row:09d}", row=row, status="error", endpoint=_ENDPOINT,
                           http_status=502, response=_HTML_502, error_type="server_error",
                           error_message="HTTP 502: 502 Bad Gateway (after 6 attempts)",
                           model=MODEL, attempts=6, latency_ms=12.5)
                )  # fmt: skip
                continue
            records.append(
                Record(custom_id=f"q-{row:09d}", row=row, status="ok", endpoint=_ENDPOINT,
                       http_status=200, response=answer, model=MODEL, finish_reason="stop",
                       prompt_tokens=24, completion_tokens=_REPLY_WORDS, total_tokens=84,
                       cached_tokens=0, reasoning_tokens=0, attempts=1, latency_ms=850.0,
                       cost_usd=0.0000396)
            )  # fmt: skip
        writer.commit(records)
    return out


def _export(ctx: Context, out: Path, rows: int, kind: str) -> ExportFigures:
    to = ctx.tmp / f"export-{rows}.{'parquet' if kind == 'joined' else 'jsonl'}"
    args = ["export", str(out), "--to", str(to), "--force"]
    if kind == "openai-batch":
        args += ["--format", "openai-batch"]
    child = ctx.batchrun(*args)
    result = ctx.finish(child, 60 + rows / 2_000)
    summary = ctx.output(child)
    expected = f"exported {rows:,} rows"
    if expected not in summary:
        raise BenchError(f"export of {rows:,} rows said: {summary.strip()[:300]}")
    to.unlink(missing_ok=True)
    to.with_name(f"{to.stem}_errors{to.suffix}").unlink(missing_ok=True)
    return ExportFigures(
        rows=rows,
        kind=kind,
        wall_s=result.wall_s,
        cpu_s=result.cpu_s,
        max_rss_mb=result.max_rss_kb / 1024,
        rate=rows / result.wall_s,
    )


def export_memory(ctx: Context) -> list[Row]:
    sizes = (20_000, 200_000) if ctx.settings.quick else (100_000, 1_000_000)
    ctx.log(f"[export] peak RSS of batchrun export, {sizes[0]:,} and {sizes[1]:,} rows")
    found: dict[str, list[ExportFigures]] = {"joined": [], "openai-batch": []}
    for rows in sizes:
        csv_path = ctx.tmp / f"export-questions-{rows}.csv"
        ctx.log(f"  writing {rows:,} CSV rows and an output of {rows:,} records")
        write_question_csv(csv_path, rows)
        out = prepare_output(ctx, csv_path, rows)
        try:
            for kind, figures in found.items():
                figure = _export(ctx, out, rows, kind)
                ctx.log(f"  {figure.show()}")
                figures.append(figure)
        finally:
            ctx.remove(out)
            csv_path.unlink(missing_ok=True)
    result = []
    for kind, (small, large) in found.items():
        growth = large.max_rss_mb / small.max_rss_mb
        what = "joined to the CSV, Parquet" if kind == "joined" else "OpenAI Batch output"
        result += [
            Row(
                bench="export",
                measure=f"{what}, peak RSS, {f.rows:,} rows",
                value=f"{f.max_rss_mb:,.1f} MB ({f.rate:,.0f} rows/s, "
                f"{f.cpu_s / f.rows * 1e6:,.1f} us CPU/row)",
                data=asdict(f),
            )
            for f in (small, large)
        ]
        result.append(
            Row(
                bench="export",
                measure=f"{what}, peak RSS ratio {large.rows:,} / {small.rows:,} rows",
                value=f"{growth:.3f}x",
                target="<= 1.10x",
                met=met(growth <= 1.10),
                data={"ratio": growth, "kind": kind},
            )
        )
    return result
