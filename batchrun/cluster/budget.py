"""One RPM/TPM budget and one pause for every worker of a cluster, handed out in leases.

    SharedBudget (in the budget actor)  ◄── lease / give_back / pause ──  LeasedLimiter (per shard)
        └── pause epochs ─────────── watch (one long call per shard) ──────────►┘

Guarantees:
- The budget is the local limiter's: continuous-refill token buckets (`send.limiter.TokenBucket`)
  holding one `burst_s` window, so N workers together stay under the configured RPM/TPM as one
  process does. A worker takes a lease (a chunk of requests and tokens, about `lease_s` of the
  cluster's rate), not one call per request, spends it locally, and gives back what it did not
  use when its shard ends or a pause begins.
- A lease is granted whole or not at all for its minimum (one request; the tokens of the
  request waiting for it): no worker holds a fragment it cannot use while others wait. When
  nothing can be granted the answer says how long until it can, and the worker sleeps that long.
- `--max-cost` is one cap too: shards lease room in it (`LeasedCostBudget`) and give back what
  they did not spend; the leases never add up to more than the cap.
- A stop (a fatal error in one shard, such as a refused key) reaches every shard the same way.
- A pause (a 429, a `retry-after`, an outage seen by any worker) is in force for everyone: the
  budget refuses leases until it ends, and `watch` tells every worker at once, which then gives
  its unused lease back and pauses its own limiter. Durations, never clock readings, cross
  between processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import anyio

from batchrun.cost.budget import BudgetExhausted, CostBudget, WorstCase
from batchrun.cost.pricebook import PriceBook
from batchrun.models import Request
from batchrun.send.limiter import Limiter, TokenBucket

__all__ = ["BudgetLink", "Grant", "LeasedCostBudget", "LeasedLimiter", "PauseNews", "SharedBudget"]

DEFAULT_LEASE_S = 0.1


@dataclass(frozen=True, slots=True)
class Grant:
    requests: float
    tokens: float
    wait_s: float  # when nothing was granted: how long until something can be


@dataclass(frozen=True, slots=True)
class PauseNews:
    epoch: int
    pause_s: float
    reason: str
    stop: str | None = None  # the job stops (a fatal error in one shard): why


class SharedBudget:
    """The cluster's buckets and pause; plain state, so that it is tested without Ray."""

    def __init__(
        self,
        *,
        max_requests_per_minute: float | None,
        max_tokens_per_minute: float | None,
        burst_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        now = clock()
        rpm, tpm = max_requests_per_minute, max_tokens_per_minute
        self.requests = TokenBucket(per_minute=rpm, burst_s=burst_s, now=now) if rpm else None
        self.tokens = TokenBucket(per_minute=tpm, burst_s=burst_s, now=now) if tpm else None
        self.paused_until = -math.inf
        self.reason = ""
        self.stopped: str | None = None
        self.epoch = 0
        self.leases = 0
        self.granted_requests = 0.0
        self.max_usd: float | None = None  # --max-cost over the whole output
        self.leased_usd = 0.0  # spent before this run, plus what shards hold or have spent

    def set_cost_cap(self, max_usd: float, spent_usd: float) -> None:
        self.max_usd, self.leased_usd = max_usd, spent_usd

    def lease_usd(self, want_usd: float, need_usd: float) -> float:
        """Up to `want_usd` of the cost cap's room, at least `need_usd`, or nothing (0)."""
        if self.max_usd is None:
            return want_usd
        room = self.max_usd - self.leased_usd
        # Sums of dollars in floats: a need equal to the room may come out a hair above it.
        if room < need_usd - 1e-9 * self.max_usd:
            return 0.0
        got = max(need_usd, min(want_usd, room))
        self.leased_usd += got
        return got

    def give_back_usd(self, amount_usd: float) -> None:
        self.leased_usd -= max(0.0, amount_usd)

    def lease(self, requests: float, tokens: float, need_tokens: float) -> Grant:
        """Up to `requests` requests and `tokens` tokens; at least 1 and `need_tokens`, or none."""
        now = self._clock()
        wait = self.paused_until - now
        if self.requests is not None and requests > 0:
            wait = max(wait, self.requests.wait_s(1, now))
        if self.tokens is not None and tokens > 0:
            wait = max(wait, self.tokens.wait_s(max(need_tokens, 1), now))
        if wait > 0:
            return Grant(0, 0, wait)
        got_r = got_t = 0.0
        if self.requests is not None and requests > 0:
            got_r = max(1.0, min(requests, math.floor(self.requests.level)))
            self.requests.spend(got_r)
        if self.tokens is not None and tokens > 0:
            # A request larger than the bucket waited for a full one and overdraws it, as locally.
            got_t = max(need_tokens, min(tokens, self.tokens.level))
            self.tokens.spend(got_t)
        self.leases += 1
        self.granted_requests += got_r
        return Grant(got_r, got_t, 0.0)

    def give_back(self, requests: float, tokens: float) -> None:
        if self.requests is not None and requests > 0:
            self.requests.give_back(requests)
            self.granted_requests -= requests
        if self.tokens is not None and tokens != 0:
            if tokens > 0:
                self.tokens.give_back(tokens)
            else:
                self.tokens.spend(-tokens)  # a worker spent more than it leased (real usage)

    def pause(self, seconds: float, reason: str) -> PauseNews | None:
        """Everyone stops for `seconds`; None when a pause at least that long is in force."""
        until = self._clock() + seconds
        if until <= self.paused_until:
            return None
        self.paused_until, self.reason = until, reason
        self.epoch += 1
        return self.news()

    def stop(self, reason: str) -> PauseNews:
        """Every shard stops as a local run stops on a fatal error (a refused key, say)."""
        if self.stopped is None:
            self.stopped = reason
            self.epoch += 1
        return self.news()

    def news(self) -> PauseNews:
        pause_s = max(0.0, self.paused_until - self._clock())
        return PauseNews(self.epoch, pause_s, self.reason, self.stopped)

    def lease_size(self, lease_s: float) -> tuple[float, float]:
        """How much one lease asks for: `lease_s` of the cluster's rate (one request at least)."""
        r = max(1.0, self.requests.rate_per_s * lease_s) if self.requests else 0.0
        t = self.tokens.rate_per_s * lease_s if self.tokens else 0.0
        return math.ceil(r), t


class BudgetLink(Protocol):
    """How a worker reaches the shared budget (the Ray actor, or a `SharedBudget` in tests)."""

    async def lease(self, requests: float, tokens: float, need_tokens: float) -> Grant: ...
    async def give_back(self, requests: float, tokens: float) -> None: ...
    async def pause(self, seconds: float, reason: str) -> None: ...
    async def watch(self, epoch: int) -> PauseNews: ...
    async def lease_usd(self, want_usd: float, need_usd: float) -> float: ...
    async def give_back_usd(self, amount_usd: float) -> None: ...


class LeasedCostBudget(CostBudget):
    """A shard's `--max-cost` budget: the shard's own rules (worst case reserved, settled by the
    real cost), its room leased from the cluster's one cap. The sum of all leases never passes
    the cap, so neither does the whole output's spend. `close` gives back the unspent room."""

    def __init__(
        self,
        link: BudgetLink,
        *,
        cap_usd: float,
        spent_usd: float,
        prices: PriceBook,
        chunk_usd: float,
    ) -> None:
        # The shard's own earlier spend is in the cap's count already (the driver summed it).
        super().__init__(max_usd=spent_usd, spent_usd=spent_usd, prices=prices)
        self._link = link
        self._cap_usd = cap_usd
        self._chunk_usd = chunk_usd

    def _exhausted(self, request: Request, case: WorstCase) -> str:
        # Not the local message: its figures would be this shard's lease, not the cap.
        why = f"{case.prompt_tokens:,} prompt + {case.output_tokens:,} output tokens"
        fixes = "raise --max-cost"
        if case.output_source is not None:
            why += f" ({case.output_source}: the row sets no output limit)"
            fixes += (
                ", or set max_tokens / max_completion_tokens in the rows, or --max-output-tokens N"
            )
        return (
            f"the cost budget would be passed (--max-cost ${self._cap_usd:,.4f} over the whole "
            f"output, shared by every shard: spent, or held by rows in flight): row "
            f"{request.row} ({request.model or 'no model'}) may cost up to "
            f"${case.usd or 0.0:,.4f} at worst, {why}. To go on, {fixes}, and run the same "
            "command again"
        )

    async def reserve(self, request: Request) -> float:
        worst, case = self._worst_usd(request)
        while not self._fits(worst):
            short = self.spent_usd + self.reserved_usd + worst - self.max_usd
            got = await self._link.lease_usd(max(short, self._chunk_usd), short)
            if got > 0:
                self.max_usd += got
                continue
            if self.in_flight == 0:
                raise BudgetExhausted(self._exhausted(request, case))
            if self._settled is None:
                self._settled = anyio.Event()
            await self._settled.wait()
        return self._take(worst)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            unspent = self.max_usd - self.spent_usd - self.reserved_usd
            if unspent > 0:
                self.max_usd -= unspent
                await self._link.give_back_usd(unspent)


class LeasedLimiter(Limiter):
    """A shard's limiter: the local pause, probe and header rules, under the shared budget.

    The configured RPM/TPM are not local buckets here: each request also needs credit from a
    lease. Run `follow_pauses` in the task group that owns the shard's run, and `close` at its
    end (it gives back what is left).
    """

    def __init__(
        self,
        link: BudgetLink,
        *,
        lease_requests: float,
        lease_tokens: float,
        burst_s: float = 1.0,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        on_stop: Callable[[str], None] = lambda reason: None,
    ) -> None:
        super().__init__(burst_s=burst_s, clock=clock, sleep=sleep)
        self._link = link
        self._on_stop = on_stop
        self._lease_requests = lease_requests
        self._lease_tokens = lease_tokens
        self._credit_requests = 0.0
        self._credit_tokens = 0.0
        self._leasing = anyio.Lock()
        self._epoch = 0
        self._told: list[tuple[float, str]] = []  # this shard's pauses, not yet sent
        self._wake = anyio.Event()
        self.leases = 0

    async def acquire(self, tokens: int = 0) -> bool:
        probe = await super().acquire(tokens)
        try:
            await self._take_credit(tokens)
        except BaseException:
            if probe:
                self.probe_done(passed=True)
            raise
        return probe

    async def _take_credit(self, tokens: int) -> None:
        want_r = 1.0 if self._lease_requests else 0.0
        want_t = float(tokens) if self._lease_tokens else 0.0
        async with self._leasing:  # one lease call at a time; the others wait for its credit
            while self._credit_requests < want_r or (want_t and self._credit_tokens < want_t):
                need_t = max(0.0, want_t - self._credit_tokens)
                grant = await self._link.lease(
                    self._lease_requests if self._credit_requests < want_r else 0.0,
                    max(self._lease_tokens, need_t) if need_t else 0.0,
                    need_t,
                )
                self.leases += 1
                self._credit_requests += grant.requests
                self._credit_tokens += grant.tokens
                if grant.wait_s > 0:
                    await self._sleep(grant.wait_s)
            self._credit_requests -= want_r
            self._credit_tokens -= want_t

    def settle(self, charged: int, actual: int | None) -> None:
        # The correction is the shard's to carry: a request that used fewer tokens than charged
        # leaves credit for the next one, one that used more draws it below zero.
        if self._lease_tokens and actual is not None:
            self._credit_tokens += charged - actual

    def back_off(
        self, retry_after_s: float | None, reason: str, *, sent_at: float | None = None
    ) -> float:
        seconds = super().back_off(retry_after_s, reason, sent_at=sent_at)
        self._tell(seconds, reason)
        return seconds

    def pause(self, seconds: float, reason: str) -> None:
        super().pause(seconds, reason)
        self._tell(seconds, reason)

    def _tell(self, seconds: float, reason: str) -> None:
        if seconds > 0:
            self._told.append((seconds, reason))
            self._wake.set()

    async def follow_pauses(self) -> None:
        """Tell the budget about this shard's pauses, and apply everyone else's; runs until
        cancelled (the shard's task group does that when the run ends)."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._send_pauses)
            while True:
                news = await self._link.watch(self._epoch)
                self._epoch = news.epoch
                if news.stop is not None:
                    self._on_stop(news.stop)
                if news.pause_s > 0:
                    Limiter.pause(self, news.pause_s, news.reason)
                    await self._return_credit()

    async def _send_pauses(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            told, self._told = self._told, []
            for seconds, reason in told:
                await self._link.pause(seconds, reason)

    async def _return_credit(self) -> None:
        r, t = self._credit_requests, self._credit_tokens
        self._credit_requests = self._credit_tokens = 0.0
        if r > 0 or t != 0:
            await self._link.give_back(r, t)

    async def close(self) -> None:
        """Give back the unused lease (and any token overdraw) once the shard is done."""
        with anyio.CancelScope(shield=True):
            await self._return_credit()
