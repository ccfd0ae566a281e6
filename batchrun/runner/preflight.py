"""Everything a run does before it sends a request: the checkpoint, one pass over the input, the
estimate, the quota.

Guarantees:
- A new output gets one pass over the input that counts the rows, finds duplicate custom_ids
  (nothing is sent if there are any) and, unless turned off, estimates tokens and cost; the
  estimate is stored in `OUT/estimate.json` for `batchrun report`. A resumed output skips the pass:
  its checkpoint already holds the row count and the input's fingerprint.
- A resumed output is checked against its checkpoint: a changed input, endpoint or template is
  refused.
- The gateway quota is asked once per run; a server without the quota endpoints is fine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2

from batchrun.config import RunConfig
from batchrun.cost.estimate import Estimate, EstimateBuilder, load_estimate, save_estimate
from batchrun.cost.pricebook import PriceBook
from batchrun.cost.quota import Unreachable, fetch_quota
from batchrun.inputs.idcheck import scan_ids, sweep_scan_dirs
from batchrun.inputs.reader import InputError, iter_ids, iter_rows
from batchrun.runner.render import format_usd
from batchrun.store.checkpoint import Checkpoint, CheckpointError, fingerprint_file
from batchrun.store.writer import RESULTS_DIR

__all__ = ["Interrupted", "Prepared", "QuotaError", "check_quota", "prepare_output"]

log = logging.getLogger("batchrun")


class Interrupted(Exception):
    """A stop was asked for during the first pass: nothing was sent or saved."""


class QuotaError(Exception):
    """`--require-quota`: the estimated cost of the pending rows exceeds the remaining balance."""


@dataclass(frozen=True, slots=True)
class Prepared:
    checkpoint: Checkpoint
    estimate: Estimate | None


def prepare_output(
    config: RunConfig, prices: PriceBook, *, should_stop: Callable[[], bool] = lambda: False
) -> Prepared:
    """Open (resume) or create the output's checkpoint. Blocking: call it from a worker thread.

    The first pass over a new output checks `should_stop` as it goes and raises `Interrupted`.
    """
    fingerprint = fingerprint_file(config.input_path)
    template = config.template
    settings = {
        "endpoint": config.effective_endpoint,
        "template": template.digest if template is not None else None,
    }
    checkpoint = Checkpoint.load(config.out_dir)
    if checkpoint is not None:
        checkpoint.check_resumable(fingerprint, settings)
        return Prepared(checkpoint, load_estimate(config.out_dir))
    results = config.out_dir / RESULTS_DIR
    if results.exists() and any(results.glob("part-*.parquet")):
        raise CheckpointError(
            f"{config.out_dir} holds results but no checkpoint.json; it was not written by "
            "batchrun or is damaged. Use a new --out directory."
        )
    builder = EstimateBuilder(prices, input=str(config.input_path)) if config.estimate else None
    passes = 0

    def ids() -> Iterator[tuple[int, str]]:
        nonlocal passes
        passes += 1
        if builder is None or passes > 1:
            ids = iter_ids(
                config.input_path,
                template=template,
                max_row_bytes=config.max_row_bytes,
                span=config.rows,
            )
            return _stoppable(ids, should_stop)
        return _stoppable(_estimating_pass(config, builder), should_stop)

    # The scan's bucket files live in OUT (locked by this run), so one killed mid-scan leaves
    # nothing in /tmp, and the next run on OUT sweeps up after it.
    sweep_scan_dirs(config.out_dir)
    log.info(
        "reading %s once: counting rows, checking custom_ids%s",
        config.input_path,
        ", estimating tokens and cost" if builder is not None else "",
    )
    scan = scan_ids(ids, tmp_dir=config.out_dir)
    if scan.total_rows == 0:
        raise InputError(f"{config.input_path} has no rows; nothing to send")
    if scan.duplicates:
        shown = "; ".join(
            f"{cid!r} on rows {', '.join(map(str, rows[:5]))}"
            for cid, rows in list(scan.duplicates.items())[:5]
        )
        raise InputError(
            f"{scan.duplicate_rows} rows repeat a custom_id used on an earlier row, so their "
            f"results could not be told apart: {shown}. Make the custom_ids unique."
        )
    estimate = builder.result() if builder is not None else None
    if estimate is not None:
        _log_estimate(estimate, save_estimate(config.out_dir, estimate))
    checkpoint = Checkpoint(
        input_path=str(config.input_path),
        fingerprint=fingerprint,
        settings=settings,
        total_rows=scan.total_rows,
    )
    checkpoint.save(config.out_dir)
    return Prepared(checkpoint, estimate)


def _stoppable(
    ids: Iterator[tuple[int, str]], should_stop: Callable[[], bool]
) -> Iterator[tuple[int, str]]:
    for row, custom_id in ids:
        if row % 4096 == 0 and should_stop():
            raise Interrupted
        yield row, custom_id


def _estimating_pass(config: RunConfig, builder: EstimateBuilder) -> Iterator[tuple[int, str]]:
    for item in iter_rows(
        config.input_path,
        endpoint=config.endpoint,
        max_row_bytes=config.max_row_bytes,
        raw=False,
        template=config.template,
        span=config.rows,
    ):
        builder.add(item)
        yield item.row, item.custom_id


def _log_estimate(estimate: Estimate, saved: Path) -> None:
    totals = estimate.totals()
    exact = "" if estimate.exact else f" (approximate: see {saved})"
    no_max = totals["rows_without_max"]
    # A row that sets no output limit may go on as long as the model allows: "at most" would
    # print a lower bound as an upper one.
    high = (
        f"no upper bound: {no_max:,} rows set no output limit"
        if no_max
        else f"at most {format_usd(totals['cost_high_usd'])}"
    )
    log.info(
        "estimate: %s rows, %s prompt tokens, expected cost %s (%s)%s",
        f"{totals['rows']:,}",
        f"{totals['prompt_tokens']:,}",
        format_usd(totals["cost_expected_usd"]),
        high,
        exact,
    )


async def check_quota(http: httpx2.AsyncClient, config: RunConfig, prepared: Prepared) -> None:
    """Ask the gateway's balance once; warn, or refuse with `--require-quota`, if it is short.

    Raises `FatalRunError` for a refused key, `QuotaError` for a short balance when required.
    """
    quota = await fetch_quota(http, config.base_url, config.api_key)
    if isinstance(quota, Unreachable):
        log.info("quota: unknown: the server could not be reached (%s)", quota.detail)
        return
    if quota is None:
        log.info("quota: unknown for this server (no one-api/new-api billing endpoints)")
        return
    if quota.unlimited:
        log.info("quota: unlimited")
        return
    log.info(
        "quota: %s remaining of %s granted", format_usd(quota.remaining_usd),
        format_usd(quota.granted_usd),
    )  # fmt: skip
    needed = _pending_cost(prepared)
    if needed is None or quota.covers(needed) is not False:
        return
    message = (
        f"the estimated cost of the pending rows ({format_usd(needed)}) exceeds the remaining "
        f"balance ({format_usd(quota.remaining_usd)})"
    )
    if config.require_quota:
        raise QuotaError(message + "; not starting because of --require-quota")
    log.warning("warning: %s; the run may stop when the balance runs out", message)


def _pending_cost(prepared: Prepared) -> float | None:
    """The expected cost of the rows not yet done, from the stored estimate."""
    if prepared.estimate is None:
        return None
    totals = prepared.estimate.totals()
    expected = totals["cost_expected_usd"]
    rows = totals["rows"] or 0
    if expected is None or rows == 0:
        return None
    pending = max(0, (prepared.checkpoint.total_rows or 0) - len(prepared.checkpoint.done))
    return float(expected) * pending / rows
