"""Money: the cost of each response, and the `--max-cost` budget, a cap that holds.

Guarantees:
- `cost_of` prices a response from its reported usage; unknown prices give None, never 0.
- `CostBudget.reserve` lets a request go only when what is already spent, plus the worst case of
  every request in flight, plus this request's worst case stays within the budget; when it does
  not, it waits for requests in flight to settle (each may cost less than its worst case). So the
  spend, counted as the report counts it (the sum of `cost_usd`), never passes the budget as long
  as no answer costs more than its worst case.
- The worst case of a request (`worst_case`) is priced at the model's rates from two ceilings:
  prompt: the larger of the exact count (the model's tokenizer; an image of unknown size at the
  largest size the model bills) and the rate limiter's cheap count, since a server may count a
  little more than tiktoken; a row with audio or file parts, which cannot be counted offline, at
  the model's context window where the price data knows it. Output: the row's own limit, else
  the model's maximum output (`PriceBook.output_ceiling`: `--max-output-tokens`, the price file,
  `batchrun.cost.ceilings`), times the choices asked for. Never the rate limiter's 256-token guess.
- A request whose worst case does not fit in what is left even with nothing in flight raises
  `BudgetExhausted`, whose message says what it would cost, why, and what to set. Nothing of it
  was sent: the row stays pending for a resume.
- Speech, whisper and dall-e rows cost what they ask for (characters, the audio's duration the
  reader read from its header, images by size and quality: `batchrun.cost.units`), which is
  their worst case exactly.
- Requests of a model with no known price cannot be counted; they are admitted, reserving
  nothing, and reported once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import anyio

from batchrun.cost.pricebook import PriceBook
from batchrun.cost.tokens import count_request_tokens
from batchrun.cost.units import request_units
from batchrun.endpoints.usage import Usage
from batchrun.models import Record, Request

__all__ = ["BudgetExhausted", "CostBudget", "WorstCase", "cost_of", "record_cost", "worst_case"]

log = logging.getLogger("batchrun")


def cost_of(prices: PriceBook, model: str | None, usage: Usage) -> float | None:
    if usage.prompt_tokens is None:
        return None
    prompt = usage.prompt_tokens
    return prices.cost_usd(
        model,
        prompt_tokens=prompt,
        completion_tokens=usage.completion_tokens or 0,
        cached_tokens=min(usage.cached_tokens or 0, prompt),
    )


class BudgetExhausted(Exception):
    """The next request's worst case does not fit in what is left of `--max-cost`."""


@dataclass(frozen=True, slots=True)
class WorstCase:
    """The most one request can cost, and the token ceilings it was priced at."""

    usd: float | None  # None: the model has no known price
    prompt_tokens: int
    output_tokens: int
    output_source: str | None  # where the output ceiling comes from; None: the row's own limit
    prompt_unbounded: bool = False  # audio/file parts, and no context window to bound them


def worst_case(prices: PriceBook, request: Request) -> WorstCase:
    """The ceilings of `request` (see the module docstring), priced."""
    model = request.model
    try:
        body: Any = json.loads(request.body)
    except ValueError:  # the reader sent it as it stood; count what the limiter counted
        body = None
    units = request_units(request, body)
    if units is not None:  # speech, whisper, dall-e: they cost what they ask for, not tokens
        return WorstCase(prices.billed_cost(model, units), 0, 0, None)
    prompt = request.prompt_tokens_estimate
    unbounded = False
    if isinstance(body, dict):
        count = count_request_tokens(request.url, body, largest_images=True)
        prompt = max(prompt, count.tokens)
        if count.uncounted_parts:
            price = prices.price_for(model)
            window = price.context_window if price is not None else None
            if window:
                prompt = max(prompt, window)
            else:
                unbounded = True
    if request.output_limited:
        output, source = request.max_output_tokens, None
    else:
        ceiling = prices.output_ceiling(model)
        output = ceiling.tokens * _choices(body if isinstance(body, dict) else {})
        source = f"{ceiling.tokens:,} per choice, {ceiling.source}"
    usd = prices.cost_usd(model, prompt_tokens=prompt, completion_tokens=output)
    return WorstCase(usd, prompt, output, source, unbounded)


def _choices(body: dict[str, Any]) -> int:
    counts = [
        v
        for v in (body.get("n"), body.get("best_of"))
        if isinstance(v, int) and not isinstance(v, bool) and v > 0
    ]
    return max(counts, default=1)


def record_cost(prices: PriceBook, record: Record) -> float | None:
    """The cost of a record's answer from the usage it carries; None for an error or no price."""
    if not record.ok:
        return None
    units = dict(record.billed)
    image_tokens = int(units.pop("image_input_tokens", 0))
    if record.prompt_tokens is None:
        # Billed by characters, audio seconds or images (speech, whisper, dall-e), if at all.
        return prices.billed_cost(record.model, units) if units else None
    usage = Usage(
        prompt_tokens=record.prompt_tokens - min(image_tokens, record.prompt_tokens),
        completion_tokens=record.completion_tokens,
        cached_tokens=record.cached_tokens,
    )
    cost = cost_of(prices, record.model, usage)
    if cost is None or not image_tokens:
        return cost
    price = prices.price_for(record.model)
    rate = price.input_image_per_mtok if price is not None else None
    if rate is None and price is not None:
        rate = price.input_per_mtok  # no separate rate known: billed as text input
    return None if rate is None else cost + image_tokens * rate / 1_000_000


class CostBudget:
    """Spent + reserved-for-in-flight never passes `max_usd`. Used from one event loop only."""

    def __init__(self, *, max_usd: float, spent_usd: float, prices: PriceBook) -> None:
        self.max_usd = max_usd
        self.spent_usd = spent_usd
        self.reserved_usd = 0.0
        self.in_flight = 0
        self.prices = prices
        self._warned: set[tuple[str, str | None]] = set()
        self._settled: anyio.Event | None = None  # made on first use: it needs the event loop

    def try_reserve(self, request: Request) -> float | None:
        """Reserve `request`'s worst case if it fits now: the amount, or None."""
        worst = self._worst_usd(request)[0]
        if not self._fits(worst):
            return None
        return self._take(worst)

    async def reserve(self, request: Request) -> float:
        """Reserve `request`'s worst case, waiting for requests in flight to make room.

        Raises `BudgetExhausted` when it does not fit even with nothing in flight.
        """
        worst, case = self._worst_usd(request)
        while not self._fits(worst):
            if self.in_flight == 0:
                raise BudgetExhausted(self._exhausted(request, case))
            if self._settled is None:
                self._settled = anyio.Event()
            await self._settled.wait()
        return self._take(worst)

    def exhausted(self, request: Request) -> str:
        """What `BudgetExhausted` says when `request` does not fit (for callers that reserve
        with `try_reserve` and decide themselves when to stop)."""
        return self._exhausted(request, worst_case(self.prices, request))

    def settle(self, reserved: float, actual: float | None) -> None:
        """A reserved request is done: `actual` is its `cost_usd` (None: nothing to count)."""
        self.in_flight -= 1
        self.reserved_usd = self.reserved_usd - reserved if self.in_flight else 0.0
        self.spent_usd += actual or 0.0
        if self._settled is not None:
            self._settled.set()
            self._settled = None

    def _fits(self, worst: float) -> bool:
        return self.spent_usd + self.reserved_usd + worst <= self.max_usd

    def _take(self, worst: float) -> float:
        self.reserved_usd += worst
        self.in_flight += 1
        return worst

    def _worst_usd(self, request: Request) -> tuple[float, WorstCase]:
        case = worst_case(self.prices, request)
        if case.usd is None:
            self._warn_once(
                "unpriced",
                request.model,
                "no known price for model %r: --max-cost cannot count its requests",
            )
        if case.prompt_unbounded:
            self._warn_once(
                "unbounded",
                request.model,
                "rows of model %r have audio or file parts, which cannot be counted offline, "
                "and its context window is unknown: --max-cost counts those rows without them",
            )
        return case.usd or 0.0, case

    def _warn_once(self, kind: str, model: str | None, message: str) -> None:
        if (kind, model) not in self._warned:
            self._warned.add((kind, model))
            log.warning(message, model)

    def _exhausted(self, request: Request, case: WorstCase) -> str:
        left = max(0.0, self.max_usd - self.spent_usd)
        why = f"{case.prompt_tokens:,} prompt + {case.output_tokens:,} output tokens"
        fixes = "raise --max-cost"
        if case.output_source is not None:
            why += f" ({case.output_source}: the row sets no output limit)"
            fixes += (
                ", or set max_tokens / max_completion_tokens in the rows, or --max-output-tokens N"
            )
        return (
            f"the cost budget would be passed (--max-cost ${self.max_usd:,.4f}: "
            f"${self.spent_usd:,.4f} spent, ${left:,.4f} left): row {request.row} "
            f"({request.model or 'no model'}) may cost up to ${case.usd or 0.0:,.4f} at worst, "
            f"{why}. To go on, {fixes}, and run the same command again"
        )
