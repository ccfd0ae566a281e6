"""Benchmark 4: a rate limit used to the full, without 429s.

The mock enforces the same RPM (or TPM) as batchrun is given, the way OpenAI does: a continuously
refilled bucket holding one second's worth, `x-ratelimit-*` headers on every answer, and a 429
with `retry-after` when the budget is short. The run lasts at least 60 s (30 s with --quick).

A third run is issue 15's: a key that a co-tenant has just drained. The mock's bucket is the whole
minute (`--burst-s 60`, OpenAI's continuous bucket) and empty as the first request arrives, so
every answer says remaining 0 and reset ~1m0s while one request fits every 60 / RPM seconds.
300 rows at 300 RPM should take about 60 s from the first request, with no long gap.

Achieved rate: what the mock admitted (200s for RPM, its `tpm_charged` for TPM) per minute while
that count went from 10% to 90% of its final value, as a share of the limit. The overall figure,
from the first request to the exit, also counts the full bucket the mock starts with.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tests.bench.context import Context
from tests.bench.inputs import chat_body
from tests.bench.report import Row, met
from tests.bench.sampler import StatsSampler, counters

__all__ = ["limits"]

_RPM = 600
_TPM = 60_000
_CONCURRENCY = 50
# TPM rows: 400 characters of prompt and max_tokens 100, about 207 tokens charged each.
_TPM_CONTENT_CHARS = 400
_TPM_MAX_TOKENS = 100
_DRAINED_RPM = 300
_DRAINED_MAX_GAP_S = 3.0


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


def _drained(ctx: Context, rows: int) -> list[Row]:
    ideal_s = (rows - 1) * 60 / _DRAINED_RPM
    ctx.log(
        f"[limits] a drained key: --rpm {_DRAINED_RPM} on both sides, the mock's bucket a "
        f"minute and empty at the first request, {rows:,} requests (~{ideal_s:.0f} s)"
    )
    path = ctx.chat_input(rows)
    rpm = ["--rpm", str(_DRAINED_RPM)]
    with ctx.mock(*rpm, "--burst-s", "60", "--cotenant-drain") as mock:
        sampler = StatsSampler(mock, every_s=0.1)
        out = ctx.out_dir("limits")
        child = ctx.batchrun_run(path, out, mock.base_url, "--concurrency", str(_CONCURRENCY), *rpm)
        try:
            result = ctx.finish(child, ideal_s * 3 + 120, tick=sampler, interval_s=0.1)
            sampler.take()
            total, ok, limited, _ = counters(mock.stats())
            outcome = _outcome(out)
        finally:
            ctx.remove(out)
    first = sampler.first_arrival()
    busy = None if first is None else child.started_at + result.wall_s - first
    gap = sampler.longest_gap_s()
    failed = sum(outcome.values())
    share = limited / total if total else 0.0
    figures = {
        "rows": rows,
        "requests": total,
        "ok": ok,
        "status_429": limited,
        "busy_s": busy,
        "ideal_s": ideal_s,
        "longest_gap_s": gap,
        "rows_failed": failed,
        "errors_by_type": outcome,
    }
    ctx.log(
        f"  drained: {ok:,} ok, {limited:,} x 429 of {total:,} requests, {busy or 0:.1f} s from "
        f"the first request to the exit (ideal {ideal_s:.1f}), longest gap {gap or 0:.2f} s"
    )
    label = f"drained key, --rpm {_DRAINED_RPM}, {rows:,} req"
    return [
        Row(
            bench="limits",
            measure=f"{label}: first request to exit / longest gap",
            value=f"{busy or 0:.1f} s (ideal {ideal_s:.1f}) / {gap or 0:.2f} s",
            target=f"<= {ideal_s * 70 / 60:.0f} s / < {_DRAINED_MAX_GAP_S:g} s",
            met=met(
                busy is not None
                and gap is not None
                and busy <= ideal_s * 70 / 60
                and gap < _DRAINED_MAX_GAP_S
            ),
            data=figures,
        ),
        Row(
            bench="limits",
            measure=f"{label}: 429s / requests",
            value=f"{limited:,} of {total:,} ({share:.1%})"
            + (f"; {failed:,} rows FAILED" if failed else "; every row ok"),
            target="< 5%",
            met=met(share < 0.05 and not failed),
        ),
    ]


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
    found += _drained(ctx, _DRAINED_RPM * seconds // 70)
    return found
