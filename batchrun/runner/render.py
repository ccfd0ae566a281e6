"""Text for people: the estimate, the report and an export's summary as a terminal shows them.

`--json` output comes from the values' own `to_json`; this module only formats.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for the annotations only: `batchrun run` needs format_usd, not pyarrow.compute
    from batchrun.cost.estimate import Estimate
    from batchrun.cost.report import Report
    from batchrun.runner.export import ExportSummary

__all__ = ["format_table", "format_usd", "render_estimate", "render_export", "render_report"]


def format_usd(value: float | None) -> str:
    """`$1,234.57`, `$0.000420`, or `unknown` for None."""
    if value is None:
        return "unknown"
    return f"${value:,.2f}" if value >= 1 else f"${value:.6f}"


def format_table(header: list[str], rows: Iterable[list[str]], *, left: int = 1) -> list[str]:
    """Aligned columns: the first `left` columns left-aligned, the rest (figures) right-aligned."""
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return [
        "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in table
    ]


_HEADER = ["model", "endpoint", "rows", "prompt tok", "max output tok", "expected output tok"]
_HEADER += ["cost low", "cost expected", "cost high"]


def _cells(label: str, endpoint: str, f: Mapping[str, Any]) -> list[str]:
    max_out, no_max = f["max_output_tokens"], f["rows_without_max"]
    max_cell = "none set" if max_out is None else f"{max_out:,}"
    max_cell += f" (+{no_max:,} no max)" if max_out is not None and no_max else ""
    costs = [format_usd(f[k]) for k in ("cost_low_usd", "cost_expected_usd", "cost_high_usd")]
    if no_max and f["cost_high_usd"] is not None:
        costs[2] = "no upper bound"
    figures = [f"{f['rows']:,}", f"{f['prompt_tokens']:,}", max_cell]
    return [label, endpoint, *figures, f"{f['expected_output_tokens']:,}", *costs]


def render_estimate(estimate: Estimate) -> str:
    """A table per model and endpoint, totals, and how each figure was made."""
    totals = estimate.totals()
    bad = f", bad rows (not counted): {estimate.bad_rows:,}" if estimate.bad_rows else ""
    lines = [f"estimate for {estimate.input or 'input'}: {totals['rows']:,} rows{bad}"]
    if estimate.model_override:
        lines.append(f"every row counted and priced as model {estimate.model_override}")
    body = [_cells(g.model or "(no model)", g.endpoint, asdict(g)) for g in estimate.groups]
    body.append(_cells("total", "", totals))
    if totals["rows_unpriced"]:
        body[-1][-1] += f" (+unknown: {totals['rows_unpriced']:,} rows)"
    lines += ["", *format_table(_HEADER, body, left=2)]
    if estimate.batch_backend is not None:
        lines += ["", *_batch_table(estimate)]
    lines += ["", "how it was counted:"]
    for g in estimate.groups:
        how = "exact" if g.exact else f"NOT exact ({g.inexact_rows:,} of {g.rows:,} rows inexact)"
        lines.append(f"  {g.model or '(no model)'} {g.endpoint}: {how}")
        lines.append(f"      tokens: {g.note}")
        lines += [f"      {reason}" for reason in g.inexact_reasons]
        lines.append(f"      price: {g.price_source or 'unknown (no price for this model)'}")
        if estimate.batch_backend is not None:
            lines.append(
                f"      batch price: {g.batch_price_source or 'unknown (no price for this model)'}"
            )
        if g.rows_without_max and g.output_ceiling is not None:
            lines.append(
                f"      output: {g.rows_without_max:,} rows set no limit: no upper bound; "
                f"--max-cost reserves {g.output_ceiling:,} tokens per choice for each "
                f"({g.output_ceiling_source})"
            )
    rule = estimate.output_rule
    lines += [
        "",
        f"expected output: {rule.fraction_of_max:g} x the row's max output tokens, or "
        f"{rule.tokens_without_max:,} per choice when it sets none (embeddings: 0).",
        "cost low = prompt only; expected = prompt + expected output; high = prompt + max output "
        "(an upper bound only when every row sets a max: a row without one may go on as long "
        "as the model allows, so high then says no upper bound). "
        "Standard rates in USD; no cached-input discount assumed"
        + ("." if estimate.batch_backend is None else "; batch: the Batch API's rates."),
        "exact = counted with the model's own tokenizer by OpenAI's published rules.",
    ]
    lines += [f"bad row {b.row} ({b.custom_id}): {b.message}" for b in estimate.bad_row_examples]
    return "\n".join(lines)


_BATCH_HEADER = ["model", "endpoint", "online expected", "batch expected", "online high"]
_BATCH_HEADER += ["batch high", "saved (expected)"]


def _batch_table(estimate: Estimate) -> list[str]:
    """Online vs the Batch API, side by side: the same tokens at both prices."""

    def row(label: str, endpoint: str, f: Mapping[str, Any]) -> list[str]:
        online, batch = f["cost_expected_usd"], f["batch_cost_expected_usd"]
        saved = "unknown" if online is None or batch is None else format_usd(online - batch)
        highs = [format_usd(f["cost_high_usd"]), format_usd(f["batch_cost_high_usd"])]
        if f["rows_without_max"] and f["cost_high_usd"] is not None:
            highs = ["no upper bound", "no upper bound"]
        return [label, endpoint, format_usd(online), format_usd(batch), *highs, saved]

    body = [row(g.model or "(no model)", g.endpoint, asdict(g)) for g in estimate.groups]
    body.append(row("total", "", estimate.totals()))
    title = f"online vs batch ({estimate.batch_backend}: done within 24 h, at the batch price):"
    return [title, *format_table(_BATCH_HEADER, body, left=2)]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def render_report(report: Report) -> str:
    """The report as text: rows, errors, tokens, cost per model, latency, estimate vs actual."""
    lines = [
        f"report for {report.out_dir}: {report.rows:,} rows, {report.rows_ok:,} ok, "
        f"{report.rows_error:,} error",
        f"requests: {report.requests:,} HTTP attempts, {report.retries:,} retries",
    ]
    if report.errors_by_type:
        lines.append("errors: " + ", ".join(f"{k} {n:,}" for k, n in report.errors_by_type.items()))
    for p in report.passes:
        state = "" if p["finished"] else " (stopped part way)"
        lines.append(
            f"retry pass {p['number']} ({', '.join(p['error_types'])}): {p['resent']:,} of "
            f"{p['rows']:,} rows re-sent, {p['fixed']:,} fixed{state}"
        )
    lat = report.latency_ms
    lines.append(
        f"latency (ok rows, last attempt): p50 {_ms(lat['p50'])}, p90 {_ms(lat['p90'])}, "
        f"p99 {_ms(lat['p99'])} (within {report.latency_relative_error:.0%})"
    )
    header = ["model", "ok rows", "prompt", "cached", "completion", "reasoning", "cost"]
    body = [
        [m.model or "(no model)", f"{m.rows_ok:,}", f"{m.prompt_tokens:,}", f"{m.cached_tokens:,}",
         f"{m.completion_tokens:,}", f"{m.reasoning_tokens:,}",
         format_usd(m.cost_usd) + (f" (+{m.rows_without_cost:,} rows unpriced)"
                                   if m.cost_usd is not None and m.rows_without_cost else "")]
        for m in report.by_model
    ]  # fmt: skip
    t = report.tokens
    body.append(
        ["total", f"{report.rows_ok:,}", f"{t['prompt_tokens']:,}", f"{t['cached_tokens']:,}",
         f"{t['completion_tokens']:,}", f"{t['reasoning_tokens']:,}", format_usd(report.cost_usd)]
    )  # fmt: skip
    lines += ["", "tokens and cost of ok rows (USD):", *format_table(header, body)]
    if report.rows_without_cost:
        lines.append(
            f"{report.rows_without_cost:,} ok rows have no cost (price unknown): "
            "the cost shown leaves them out"
        )
    if report.rows_without_usage:
        lines.append(f"{report.rows_without_usage:,} ok rows reported no token usage")
    if report.comparison:
        header = ["endpoint", "rows est/ok/err", "prompt est", "prompt actual"]
        header += ["output expected", "output max", "output actual", "cost expected", "cost actual"]
        body = [
            [c.scope, f"{c.rows_estimated:,}/{c.rows_ok:,}/{c.rows_error:,}",
             f"{c.prompt_tokens_estimated:,}", f"{c.prompt_tokens_actual:,}",
             f"{c.completion_tokens_expected:,}",
             "none set" if c.completion_tokens_max is None else f"{c.completion_tokens_max:,}",
             f"{c.completion_tokens_actual:,}", format_usd(c.cost_expected_usd),
             format_usd(c.cost_actual_usd)]
            for c in report.comparison
        ]  # fmt: skip
        lines += ["", "estimate vs actual (actual: ok rows so far):", *format_table(header, body)]
    lines += list(report.notes)
    return "\n".join(lines)


def render_export(summary: ExportSummary) -> str:
    """What an export wrote, and what a user should know about it (pending rows, renames)."""
    took = f"in {summary.seconds:.1f} s"
    if summary.format == "openai-batch":
        output, errors = summary.files
        lines = [
            f"exported {summary.rows:,} rows as OpenAI Batch output {took}: "
            f"{summary.ok:,} lines to {output}, {summary.errors:,} to {errors}"
        ]
        where = "they are in neither file"
    else:
        joined = (
            f", joined to {summary.input_path}"
            if summary.input_path is not None
            else " (results only)"
        )
        lines = [
            f"exported {summary.rows:,} rows to {summary.files[0]}{joined} {took}: "
            f"{summary.ok:,} ok, {summary.errors:,} error, {summary.pending:,} pending"
        ]
        where = "their status is pending"
    if summary.pending:
        lines.append(
            f"  {summary.pending:,} rows have no committed result yet ({where}); run the same "
            "`batchrun run` to finish them, then export again"
        )
    if summary.renamed:
        shown = ", ".join(f"{a} -> {b}" for a, b in summary.renamed.items())
        lines.append(f"  input columns renamed, as results have these names: {shown}")
    if summary.duplicates:
        lines.append(
            f"  warning: {summary.duplicates:,} records were left out: their row had a later "
            "record, which was kept"
        )
    return "\n".join(lines)
