"""Benchmark 4: a rate limit used to the full, without 429s.

The mock enforces the same RPM (or TPM) as batchrun is given, the way OpenAI does: a continuously
refilled bucket holding one second's worth, `x-ratelimit-*` headers on every answer, and a 429
with `retry-after` when the budget is short. The run lasts at least 60 s (30 s with --quick).

Achieved rate: what the mock admitted (200s for RPM, its `tpm_charged` for TPM) per minute while
that count went from 10% to 90% of its final value, as a share of the limit. The overall figure,
from the first request to the exit, also counts the full bucket the mock starts with.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.context import Context
from bench.inputs import chat_body
from bench.report import Row, met
from bench.sampler import StatsSampler, counters

__all__ = ["limits"]

_RPM = 600
_TPM = 60_000
_CONCURRENCY = 50
# TPM rows: 400 characters of prompt and max_tokens 100, about 207 tokens charged each.
_TPM_CONTENT_CHARS = 400
_TPM_MAX_TOKENS = 100


def _run(
    ctx: Context,
    *,
    label: str,
    flags: list[str],
    path: Path,
    rows: int,
    field: str,
    limit_per_min: float,
    expected_s: float,
) -> dict[str, Any]:
    with ctx.mock(*flags) as mock:
        sampler = StatsSampler(mock, every_s=0.25)
        out = ctx.out_dir("limits")
        child = ctx.batchrun_run(
            path, out, mock.base_url, "--concurrency", str(_CONCURRENCY), *flags
        )
        try:
            timeout_s = expected_s * 3 + 120
            result = ctx.finish(child, timeout_s, tick=sampler, interval_s=0.25)
            sampler.take()
            total, ok, limited, charged = counters(mock.stats())
            outcome = _outcome(out)
        finally:
            ctx.remove(out)
    final = ok if field == "ok" else charged
    first = sampler.first_arrival()
    end = child.started_at + result.wall_s
    steady = sampler.rate_between(field, 0.1 * final, 0.9 * final)
    overall = final / (end - first) if first is not None and end > first else None
    figures = {
        "rows": rows,
        "requests": total,
        "ok": ok,
        "status_429": limited,
        "tpm_charged": charged,
        "busy_s": None if first is None else end - first,
        "steady_per_min": None if steady is None else steady * 60,
        "overall_per_min": None if overall is None else overall * 60,
        "limit_per_min": limit_per_min,
        "rows_failed": sum(outcome.values()),
        "errors_by_type": outcome,
    }
    busy = figures["busy_s"] or 0.0
    ctx.log(
        f"  {label}: {ok:,} ok, {limited:,} x 429 of {total:,} requests in {busy:.1f} s; "
        f"steady {figures['steady_per_min'] or 0:,.0f}/min, "
        f"overall {figures['overall_per_min'] or 0:,.0f}/min of {limit_per_min:,.0f}; "
        f"{figures['rows_failed']:,} rows failed {outcome or ''}"
    )
    return figures


def _outcome(out: Path) -> dict[str, int]:
    """Failed rows of the run's results by `error_type`."""
    import pyarrow.dataset as ds

    table = ds.dataset(out / "results").to_table(columns=["status", "error_type"])
    failed: dict[str, int] = {}
    for status, kind in zip(
        table.column("status").to_pylist(), table.column("error_type").to_pylist(), strict=True
    ):
        if status != "ok":
            failed[str(kind)] = failed.get(str(kind), 0) + 1
    return failed


def _rows(label: str, unit: str, figures: dict[str, Any]) -> list[Row]:
    limit = figures["limit_per_min"]
    steady, overall = figures["steady_per_min"], figures["overall_per_min"]
    share = steady / limit if steady else 0.0
    requests, limited = figures["requests"], figures["status_429"]
    failed = figures["rows_failed"]
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(figures["errors_by_type"].items()))
    limited_share = limited / requests if requests else 0.0
    return [
        Row(
            bench="limits",
            measure=f"{label}: {unit}/min admitted (steady 10%->90%) / limit",
            value=f"{share:.1%} of {limit:,.0f}"
            + (f" (overall {overall / limit:.1%})" if overall else "")
            + f", {figures['busy_s'] or 0:.0f} s",
            target=">= 95%",
            met=met(share >= 0.95),
            data=figures,
        ),
        Row(
            bench="limits",
            measure=f"{label}: 429s / requests",
            value=f"{limited:,} of {requests:,} ({limited_share:.1%})"
            + (f"; {failed:,} rows FAILED: {kinds}" if failed else "; every row ok"),
            target="< 1%",
            met=met(limited_share < 0.01 and not failed),
        ),
    ]


def limits(ctx: Context) -> list[Row]:
    seconds = 30 if ctx.settings.quick else 70
    rpm_rows = _RPM * seconds // 60
    ctx.log(f"[limits] --rpm {_RPM} on both sides, {rpm_rows:,} requests (~{seconds} s)")
    path = ctx.chat_input(rpm_rows)
    rpm = _run(
        ctx,
        label=f"rpm {_RPM}",
        flags=["--rpm", str(_RPM)],
        path=path,
        rows=rpm_rows,
        field="ok",
        limit_per_min=_RPM,
        expected_s=seconds,
    )
    found = _rows(f"--rpm {_RPM}, {rpm_rows:,} req", "requests", rpm)

    from batchrun.endpoints.usage import max_output_tokens, rough_prompt_tokens
    from batchrun.mock.payloads import estimate_chat_prompt_tokens

    body = chat_body(0, content_chars=_TPM_CONTENT_CHARS, max_tokens=_TPM_MAX_TOKENS)
    mock_charge = estimate_chat_prompt_tokens(body["messages"], None) + _TPM_MAX_TOKENS
    endpoint = "/v1/chat/completions"
    ours = rough_prompt_tokens(endpoint, body) + max_output_tokens(endpoint, body)
    tpm_rows = math.ceil(_TPM * seconds / 60 / mock_charge)
    ctx.log(
        f"[limits] --tpm {_TPM:,} on both sides, {tpm_rows:,} requests of {mock_charge} tokens "
        f"as the mock charges them ({ours} as batchrun estimates), ~{seconds} s"
    )
    path = ctx.chat_input(tpm_rows, content_chars=_TPM_CONTENT_CHARS, max_tokens=_TPM_MAX_TOKENS)
    tpm = _run(
        ctx,
        label=f"tpm {_TPM:,}",
        flags=["--tpm", str(_TPM)],
        path=path,
        rows=tpm_rows,
        field="tpm_charged",
        limit_per_min=_TPM,
        expected_s=seconds,
    )
    tpm["charge_mock"], tpm["charge_batchrun"] = mock_charge, ours
    found += _rows(f"--tpm {_TPM:,}, {tpm_rows:,} req x {mock_charge} tok", "tokens", tpm)
    return found
