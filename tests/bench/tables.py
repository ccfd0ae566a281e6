"""Benchmark: a CSV of questions through a template, peak RSS at two sizes, same settings.

The same measure as the memory benchmark (`tests.bench.throughput.memory`), on the path that reads
records with Python's csv module and renders each row with Jinja2: the first pass (row count,
duplicate ids, estimate) renders every row once, the send renders it again. Memory must not
grow with the input: peak RSS at 1,000,000 rows within 10% of that at 100,000.
"""

from __future__ import annotations

from dataclasses import asdict

from tests.bench.context import Context
from tests.bench.inputs import QUESTION_TEMPLATE, write_question_csv
from tests.bench.report import Row, met
from tests.bench.throughput import Figures, measure

__all__ = ["template_memory"]


def template_memory(ctx: Context) -> list[Row]:
    sizes = (20_000, 200_000) if ctx.settings.quick else (100_000, 1_000_000)
    c = ctx.settings.concurrency
    ctx.log(f"[template] peak RSS of a CSV through a template, {sizes[0]:,} and {sizes[1]:,} rows")
    template = ctx.tmp / "ask.toml"
    template.write_text(QUESTION_TEMPLATE, encoding="utf-8")
    found: list[Figures] = []
    with ctx.mock() as mock:
        for rows in sizes:
            path = ctx.tmp / f"questions-{rows}.csv"
            ctx.log(f"  writing {rows:,} CSV rows to {path.name}")
            write_question_csv(path, rows)
            mock.reset()
            out = ctx.out_dir("template")
            flags = ("--concurrency", str(c), "--template", str(template))
            child = ctx.batchrun_run(path, out, mock.base_url, *flags)
            try:
                figures = measure(ctx, mock, child, rows, every_s=1.0)
            finally:
                ctx.remove(out)
                path.unlink(missing_ok=True)
            ctx.log(f"  batchrun {figures.show()}")
            found.append(figures)
    small, large = found
    growth = large.max_rss_mb / small.max_rss_mb
    return [
        Row(
            bench="template",
            measure=f"CSV + template, peak RSS, {f.rows:,} rows, C={c}",
            value=f"{f.max_rss_mb:,.1f} MB ({f.rate:,.0f} req/s, {f.cpu_us:,.0f} us CPU/req)",
            data=asdict(f),
        )
        for f in found
    ] + [
        Row(
            bench="template",
            measure=f"peak RSS ratio {large.rows:,} / {small.rows:,} rows",
            value=f"{growth:.3f}x",
            target="<= 1.10x",
            met=met(growth <= 1.10),
            data={"ratio": growth},
        )
    ]
