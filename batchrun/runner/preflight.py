"""What a run checks and sets up around sending: the server, the output, the models, the quota.

Guarantees:
- The key and the server are checked first, with one cheap request (`GET /v1/models`, through
  the engine the run sends with): a refused key or no balance stops the run at once, a server
  that cannot be reached too, each with one line saying what to fix. A server that does not list
  its models, or answers the check slowly, is fine.
- A resumed output is checked against its checkpoint: a changed input, endpoint or
  template is refused. A
  new output is refused if OUT holds results without a checkpoint (not batchrun's, or damaged).
- `check_everything_first` (`--check-ids-first`) is the pass a run made before it sent anything
  in earlier versions: rows counted, custom_ids checked (an input with a repeated id is refused,
  nothing sent), tokens and cost estimated.
- Models the rows name that the server's list lacks get one warning each time new ones are found,
  with the closest listed names; the quota is asked once per run, and compared with the estimate
  of the rows pending when the run started.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2

from batchrun.common.errors import FatalRunError
from batchrun.common.urls import join_url
from batchrun.config import RunConfig
from batchrun.cost.estimate import Estimate, EstimateBuilder
from batchrun.cost.pricebook import PriceBook
from batchrun.cost.quota import Quota, Unreachable, fetch_quota
from batchrun.inputs.idcheck import scan_ids, sweep_scan_dirs
from batchrun.inputs.reader import InputError, iter_ids, iter_rows
from batchrun.inputs.rows import ParsedRow
from batchrun.runner.render import format_usd
from batchrun.runner.update import PendingUpdate
from batchrun.send.http import HttpEngine, TransportError
from batchrun.send.models import (
    MODELS_PATH,
    ModelList,
    describe_missing,
    list_models,
    missing_models,
)
from batchrun.store.checkpoint import Checkpoint, CheckpointError, Fingerprint
from batchrun.store.duplicates import sweep_scratch_dirs
from batchrun.store.writer import RESULTS_DIR

__all__ = [
    "FullPass",
    "Interrupted",
    "ModelCheck",
    "QuotaCheck",
    "QuotaError",
    "check_everything_first",
    "check_server",
    "log_estimate",
    "open_output",
]

log = logging.getLogger("batchrun")

# The check is one small answer: it must not wait --timeout (300 s by default, for generations).
_CHECK_TIMEOUT_S = 30.0
_KEY_FIX = (
    "check the API key (batchrun reads it from $OPENAI_API_KEY, or from the variable "
    "--api-key-env names), then run the same command again"
)


class Interrupted(Exception):
    """A stop was asked for during a pass that runs before sending: nothing was sent or saved."""


class QuotaError(Exception):
    """`--require-quota`: the estimated cost of the pending rows exceeds the remaining balance."""


async def check_server(engine: HttpEngine, config: RunConfig) -> ModelList | None:
    """`GET {base_url}/models` with the run's key; the list, or None when the check was not
    answered in time (the run goes on: the requests themselves will tell).

    Raises `FatalRunError` when the key is refused or the balance is out, when the server
    cannot be reached, and when requests cannot be sent at all (a TLS certificate not trusted).
    """
    url = join_url(config.base_url, MODELS_PATH)
    try:
        found = await list_models(
            engine,
            config.base_url,
            config.api_key,
            timeout_s=min(config.timeout_s, _CHECK_TIMEOUT_S),
        )
    except FatalRunError as exc:
        fix = f"; {_KEY_FIX}" if exc.kind == "auth" else ""
        raise FatalRunError(exc.kind, exc.message + fix) from None
    except TransportError as exc:
        if exc.kind == "config":  # its message says what to fix
            raise FatalRunError("config", f"{exc.message} (GET {url})") from None
        if exc.looks_down:
            raise FatalRunError(
                "connection",
                f"{exc.message} (GET {url}); check --base-url, or run the same command again "
                "once the server is up",
            ) from None
        log.warning("warning: no answer to GET %s (%s); going on without it", url, exc.message)
        return None
    if not found.listed:
        log.info("the server does not list its models (GET %s: HTTP %d)", url, found.status)
    return found


def open_output(
    config: RunConfig, fingerprint: Fingerprint
) -> tuple[Checkpoint, bool, PendingUpdate | None]:
    """The output's checkpoint, whether it was resumed, and (with `--update`, when the input or
    its settings changed) the update to make: loaded and checked, or a new one, not yet saved.
    Blocking (reads OUT): call it from a worker thread. Sweeps what a killed run left."""
    out = config.out_dir
    template = config.template
    settings = {
        "endpoint": config.effective_endpoint,
        "template": template.digest if template is not None else None,
    }
    sweep_scan_dirs(out)
    sweep_scratch_dirs(out)
    checkpoint = Checkpoint.load(out)
    if checkpoint is not None:
        if config.update and checkpoint.differs(fingerprint, settings):
            return checkpoint, True, PendingUpdate(fingerprint=fingerprint, settings=settings)
        checkpoint.check_resumable(fingerprint, settings)
        return checkpoint, True, None
    results = out / RESULTS_DIR
    if results.exists() and any(results.glob("part-*.parquet")):
        raise CheckpointError(
            f"{out} holds results but no checkpoint.json; it was not written by batchrun or is "
            "damaged. Use a new --out directory."
        )
    new = Checkpoint(input_path=str(config.input_path), fingerprint=fingerprint, settings=settings)
    return new, False, None


@dataclass(frozen=True, slots=True)
class FullPass:
    total_rows: int
    estimate: Estimate | None
    models: list[str]


def check_everything_first(
    config: RunConfig, prices: PriceBook, *, should_stop: Callable[[], bool] = lambda: False
) -> FullPass:
    """Count the rows, check every custom_id and estimate, before anything is sent. Blocking.

    Raises `InputError` for an input without rows or with a repeated custom_id (naming them),
    `Interrupted` when `should_stop` turns true on the way.
    """
    builder = None
    if config.estimate:
        builder = EstimateBuilder(
            prices, input=str(config.input_path), files_root=config.files_root
        )
    models: dict[str, None] = {}
    passes = 0

    def ids() -> Iterator[tuple[int, str]]:
        nonlocal passes
        passes += 1
        if passes > 1:
            ids = iter_ids(
                config.input_path,
                template=config.template,
                max_row_bytes=config.max_row_bytes,
                span=config.rows,
            )
            return _stoppable(ids, should_stop)
        return _stoppable(_looking_pass(config, builder, models), should_stop)

    log.info(
        "reading %s once before sending (--check-ids-first): counting rows, checking custom_ids%s",
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
    return FullPass(total_rows=scan.total_rows, estimate=estimate, models=list(models))


def _stoppable(
    ids: Iterator[tuple[int, str]], should_stop: Callable[[], bool]
) -> Iterator[tuple[int, str]]:
    for row, custom_id in ids:
        if row % 4096 == 0 and should_stop():
            raise Interrupted
        yield row, custom_id


def _looking_pass(
    config: RunConfig, builder: EstimateBuilder | None, models: dict[str, None]
) -> Iterator[tuple[int, str]]:
    for item in iter_rows(
        config.input_path,
        endpoint=config.endpoint,
        max_row_bytes=config.max_row_bytes,
        raw=False,
        template=config.template,
        span=config.rows,
    ):
        if builder is not None:
            builder.add(item)
        if isinstance(item, ParsedRow) and isinstance(model := item.body.get("model"), str):
            models.setdefault(model, None)
        yield item.row, item.custom_id


def log_estimate(estimate: Estimate, saved: Path | str) -> None:
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


class ModelCheck:
    """Warns about models the rows name and the server's list lacks, each model once."""

    def __init__(self, found: ModelList | None) -> None:
        self._listed = found.models if found is not None and found.models else None
        self._warned: set[str] = set()

    def warn(self, models: Iterable[str]) -> None:
        if self._listed is None:
            return  # not listed (or listed empty): nothing to compare with
        missing = missing_models(set(models) - self._warned, self._listed)
        if not missing:
            return
        self._warned.update(missing)
        log.warning(
            "warning: the server does not list %s; rows naming %s may fail (gateways sometimes "
            "list less than they serve: `batchrun models` prints the list)",
            describe_missing(missing),
            "it" if len(missing) == 1 else "them",
        )


class QuotaCheck:
    """The gateway's balance, asked once, compared with the estimate of the pending rows."""

    def __init__(self, config: RunConfig, *, pending_rows: int | None) -> None:
        self._config = config
        self.pending_rows = pending_rows  # None until the row count is known
        self.quota: Quota | None = None
        self.asked = False

    async def ask(self, transport: httpx2.AsyncBaseTransport | None) -> None:
        """Raises `FatalRunError` for a refused key (the server check normally finds it first)."""
        config = self._config
        async with httpx2.AsyncClient(
            timeout=httpx2.Timeout(config.timeout_s), transport=transport
        ) as http:
            quota = await fetch_quota(http, config.base_url, config.api_key)
        self.asked = True
        if isinstance(quota, Unreachable):
            self.quota = None
            log.info("quota: unknown: the server could not be reached (%s)", quota.detail)
            return
        self.quota = quota
        if quota is None:
            log.info("quota: unknown for this server (no one-api/new-api billing endpoints)")
        elif quota.unlimited:
            log.info("quota: unlimited")
        else:
            log.info(
                "quota: %s remaining of %s granted", format_usd(quota.remaining_usd),
                format_usd(quota.granted_usd),
            )  # fmt: skip

    def compare(self, estimate: Estimate | None) -> None:
        """Warn, or with `--require-quota` raise `QuotaError`, when the balance is short."""
        quota = self.quota
        if quota is None or quota.unlimited or estimate is None or self.pending_rows is None:
            return
        needed = _pending_cost(estimate, self.pending_rows)
        if needed is None or quota.covers(needed) is not False:
            return
        message = (
            f"the estimated cost of the pending rows ({format_usd(needed)}) exceeds the "
            f"remaining balance ({format_usd(quota.remaining_usd)})"
        )
        if self._config.require_quota:
            raise QuotaError(message + "; not starting because of --require-quota")
        log.warning("warning: %s; the run may stop when the balance runs out", message)


def _pending_cost(estimate: Estimate, pending_rows: int) -> float | None:
    """The expected cost of `pending_rows` rows, at the estimate's average per row."""
    totals = estimate.totals()
    expected = totals["cost_expected_usd"]
    rows = totals["rows"] or 0
    if expected is None or rows == 0:
        return None
    return float(expected) * pending_rows / rows
