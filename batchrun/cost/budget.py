"""Money: the cost of each response, and the `--max-cost` budget that stops dispatching in time.

Guarantees:
- `cost_of` prices a response from its reported usage; unknown prices give None, never 0.
- `CostBudget.reserve` admits a request only if what is already spent, plus the worst case of
  every request in flight, plus this request's worst case (estimated prompt + max output tokens)
  stays within the budget. So the run stops *before* the budget would be passed, not after.
  Requests of a model with no known price cannot be counted; they are admitted and reported once.
"""

from __future__ import annotations

import logging

from batchrun.cost.pricebook import PriceBook
from batchrun.endpoints.usage import Usage
from batchrun.models import Record, Request

__all__ = ["CostBudget", "cost_of", "record_cost"]

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


def record_cost(prices: PriceBook, record: Record) -> float | None:
    """The cost of a record's answer from the usage it carries; None for an error or no price."""
    if not record.ok:
        return None
    usage = Usage(
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        cached_tokens=record.cached_tokens,
    )
    return cost_of(prices, record.model, usage)


class CostBudget:
    """Spent + reserved-for-in-flight never passes `max_usd`. Used from one event loop only."""

    def __init__(self, *, max_usd: float, spent_usd: float, prices: PriceBook) -> None:
        self.max_usd = max_usd
        self.spent_usd = spent_usd
        self.reserved_usd = 0.0
        self.prices = prices
        self._unpriced: set[str | None] = set()

    def reserve(self, request: Request) -> float | None:
        """The amount reserved for `request`, or None if sending it could pass the budget."""
        worst = self.prices.cost_usd(
            request.model,
            prompt_tokens=request.prompt_tokens_estimate,
            completion_tokens=request.max_output_tokens,
        )
        if worst is None:
            if request.model not in self._unpriced:
                self._unpriced.add(request.model)
                log.warning(
                    "no known price for model %r: --max-cost cannot count its requests",
                    request.model,
                )
            worst = 0.0
        if self.spent_usd + self.reserved_usd + worst > self.max_usd:
            return None
        self.reserved_usd += worst
        return worst

    def settle(self, reserved: float, actual: float | None) -> None:
        self.reserved_usd -= reserved
        self.spent_usd += actual or 0.0

    def describe(self) -> str:
        return (
            f"the cost budget would be passed (--max-cost ${self.max_usd:,.4f}: "
            f"${self.spent_usd:,.4f} spent, ${self.reserved_usd:,.4f} in flight)"
        )
