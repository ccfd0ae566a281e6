"""The cluster's shared budget and the leased limiter, without Ray: a fake clock and a link that
calls a `SharedBudget` in the same process, as the budget actor does."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from batchrun.cluster.budget import (
    Grant,
    LeasedCostBudget,
    LeasedLimiter,
    PauseNews,
    SharedBudget,
)
from batchrun.cost.budget import BudgetExhausted
from batchrun.cost.pricebook import Price, PriceBook
from batchrun.models import Request


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await anyio.lowlevel.checkpoint()


class Hub:
    """The budget actor's part, in this process: the budget and the news of its pauses."""

    def __init__(self, budget: SharedBudget) -> None:
        self.budget = budget
        self.changed = anyio.Event()


class LocalLink:
    """What `cluster.actors` does over Ray, here direct; counts the calls."""

    def __init__(self, budget: SharedBudget, hub: Hub | None = None) -> None:
        self.budget = budget
        self.hub = hub or Hub(budget)
        self.calls = 0
        self.returned = anyio.Event()

    async def lease(self, requests: float, tokens: float, need_tokens: float) -> Grant:
        self.calls += 1
        return self.budget.lease(requests, tokens, need_tokens)

    async def give_back(self, requests: float, tokens: float) -> None:
        self.budget.give_back(requests, tokens)
        self.returned.set()

    async def pause(self, seconds: float, reason: str) -> None:
        if self.budget.pause(seconds, reason) is not None:
            self.hub.changed.set()
            self.hub.changed = anyio.Event()

    async def watch(self, epoch: int) -> PauseNews:
        while self.budget.epoch <= epoch:
            await self.hub.changed.wait()
        return self.budget.news()

    async def lease_usd(self, want_usd: float, need_usd: float) -> float:
        return self.budget.lease_usd(want_usd, need_usd)

    async def give_back_usd(self, amount_usd: float) -> None:
        self.budget.give_back_usd(amount_usd)


def test_leases_add_up_to_the_configured_rate_and_no_more() -> None:
    clock = Clock()
    budget = SharedBudget(max_requests_per_minute=6000, max_tokens_per_minute=None, clock=clock)
    granted = 0.0
    while clock.now < 60.0:
        for _ in range(3):  # three workers, each asking for 5 requests per lease
            granted += budget.lease(5, 0, 0).requests
        clock.now += 0.01
    # 100/s for 60 s, plus the one-second bucket it starts with
    assert 5900 <= granted <= 6000 + 100


def test_a_lease_is_whole_or_nothing_for_its_minimum() -> None:
    clock = Clock()
    budget = SharedBudget(max_requests_per_minute=None, max_tokens_per_minute=60_000, clock=clock)
    assert budget.lease(0, 800, 800).tokens == 800  # the bucket holds 1,000 (one second)
    refused = budget.lease(0, 500, 500)
    assert refused.tokens == 0 and refused.wait_s == pytest.approx(0.3)
    clock.now += 0.3
    assert budget.lease(0, 5000, 500).tokens == pytest.approx(500)
    budget.give_back(0, 400)
    assert budget.tokens is not None and budget.tokens.level == pytest.approx(400)


def test_a_pause_refuses_every_lease_until_it_ends() -> None:
    clock = Clock()
    budget = SharedBudget(max_requests_per_minute=600, max_tokens_per_minute=None, clock=clock)
    news = budget.pause(2.0, "HTTP 429")
    assert news is not None and news.epoch == 1
    assert budget.pause(1.0, "a shorter one") is None  # in force already: no news
    refused = budget.lease(1, 0, 0)
    assert refused.requests == 0 and refused.wait_s == pytest.approx(2.0)
    clock.now += 2.0
    assert budget.lease(1, 0, 0).requests == 1


@pytest.mark.anyio
async def test_workers_lease_in_chunks_not_one_call_per_request() -> None:
    clock = Clock()
    budget = SharedBudget(max_requests_per_minute=60_000, max_tokens_per_minute=None, clock=clock)
    link = LocalLink(budget)
    size = budget.lease_size(0.1)
    limiter = LeasedLimiter(
        link, lease_requests=size[0], lease_tokens=size[1], clock=clock, sleep=clock.sleep
    )
    for _ in range(500):
        await limiter.acquire(0)
    assert link.calls <= 500 / 100 + 5  # 100 requests a lease at 1,000/s
    await limiter.close()
    assert budget.granted_requests == 500  # the unused part of the last lease came back


@pytest.mark.anyio
async def test_two_workers_together_hold_the_limit() -> None:
    clock = Clock()
    budget = SharedBudget(max_requests_per_minute=1200, max_tokens_per_minute=None, clock=clock)
    limiters = [
        LeasedLimiter(LocalLink(budget), lease_requests=2, lease_tokens=0, sleep=clock.sleep)
        for _ in range(2)
    ]
    sent = [0, 0]

    async def worker(i: int) -> None:
        while clock.now < 30.0:
            await limiters[i].acquire(0)
            sent[i] += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker, 0)
        tg.start_soon(worker, 1)
    # 20/s for 30 s plus the first second's bucket, shared (the fake clock is one for both, so
    # how it is split between them says nothing)
    assert 590 <= sum(sent) <= 600 + 20 + 4


@pytest.mark.anyio
async def test_a_429_in_one_worker_pauses_the_other_and_its_lease_goes_back() -> None:
    budget = SharedBudget(max_requests_per_minute=600, max_tokens_per_minute=None)
    hub = Hub(budget)
    a = LeasedLimiter(LocalLink(budget, hub), lease_requests=5, lease_tokens=0)
    link_b = LocalLink(budget, hub)
    b = LeasedLimiter(link_b, lease_requests=5, lease_tokens=0)
    await b.acquire(0)  # b holds 4 more requests of credit
    assert budget.granted_requests == 5
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.follow_pauses)
            tg.start_soon(b.follow_pauses)
            await anyio.lowlevel.checkpoint()
            a.back_off(30.0, "HTTP 429 from the server")
            await link_b.returned.wait()
            tg.cancel_scope.cancel()
    assert b.paused_for_s() > 20  # the pause a saw, in force in b
    assert budget.granted_requests == 1  # b gave back its 4 unused requests
    assert budget.lease(1, 0, 0).requests == 0  # and nobody gets new ones during the pause


@pytest.mark.anyio
async def test_shards_lease_room_in_one_cost_cap_and_give_back_what_they_did_not_spend() -> None:
    budget = SharedBudget(max_requests_per_minute=None, max_tokens_per_minute=None)
    budget.set_cost_cap(5e-5, 1e-5)  # $0.00005, of which $0.00001 was spent by earlier runs
    book = PriceBook(overrides={"m": Price(1.0, 1.0, None, "test")}, use_database=False)
    request = Request(
        row=0,
        custom_id="0",
        url="/v1/chat/completions",
        body=b"{}",
        model="m",
        prompt_tokens_estimate=5,
        max_output_tokens=5,
    )  # fmt: skip  (each at worst $0.00001)
    hub = Hub(budget)
    a, b = (
        LeasedCostBudget(
            LocalLink(budget, hub), cap_usd=5e-5, spent_usd=0.0, prices=book, chunk_usd=1e-6
        )
        for _ in range(2)
    )
    held = [await a.reserve(request), await b.reserve(request), await a.reserve(request)]
    assert budget.leased_usd == pytest.approx(4e-5)
    await b.reserve(request)  # the last room in the cap
    with anyio.move_on_after(0.2) as waited:
        await a.reserve(request)  # a fifth would pass the cap: it waits for a settle
    assert waited.cancelled_caught
    a.settle(held[0], 2e-6)  # both of a's cost less than their worst case
    a.settle(held[2], 1e-6)
    await a.reserve(request)  # a goes on in the room it freed, not beyond the cap
    assert budget.leased_usd == pytest.approx(5e-5)
    b.settle(held[1], 1e-6)
    await a.close()  # a gives back 2e-5 - 3e-6 spent - 1e-5 in flight
    await b.close()  # b gives back 2e-5 - 1e-6 spent - 1e-5 in flight
    assert budget.leased_usd == pytest.approx(5e-5 - 7e-6 - 9e-6)


@pytest.mark.anyio
async def test_a_shard_that_cannot_lease_its_next_row_with_nothing_in_flight_stops() -> None:
    budget = SharedBudget(max_requests_per_minute=None, max_tokens_per_minute=None)
    budget.set_cost_cap(1.5e-5, 0.0)
    book = PriceBook(overrides={"m": Price(1.0, 1.0, None, "test")}, use_database=False)
    request = Request(
        row=3, custom_id="3", url="/v1/chat/completions", body=b"{}", model="m",
        prompt_tokens_estimate=5, max_output_tokens=5,
    )  # fmt: skip
    shard = LeasedCostBudget(
        LocalLink(budget), cap_usd=1.5e-5, spent_usd=0.0, prices=book, chunk_usd=1e-6
    )
    shard.settle(await shard.reserve(request), 1e-5)
    with pytest.raises(BudgetExhausted, match=r"--max-cost \$0\.0000 over the whole output.*row 3"):
        await shard.reserve(request)
