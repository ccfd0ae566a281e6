"""The Ray actors: the shared budget, and the shard workers that run the local pool.

Ray core, not Ray Data: a shard is sent by one long actor call that runs batchrun's own async
pool (hundreds of requests in flight) and commits its own parts and checkpoint, so there are
no blocks to hand between stages, and a lost worker costs only its shard's uncommitted rows.
Ray Data's map_batches would move rows through the object store to a write stage whose
checkpoint commits whole write tasks (scale-and-peers.md A.5), and its HTTP stage holds at most
4 requests in flight per actor.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import ray

from batchrun.cluster.budget import Grant, PauseNews, SharedBudget
from batchrun.cluster.progress import ShardProgress
from batchrun.cluster.shardrun import ShardResult, ShardTask, run_shard

__all__ = ["BudgetActor", "RayLink", "ShardWorker"]


class _Budget:
    """Holds the cluster's `SharedBudget`; every shard's `watch` waits here for news."""

    def __init__(
        self, max_requests_per_minute: float | None, max_tokens_per_minute: float | None,
        burst_s: float,
    ) -> None:  # fmt: skip
        self._budget = SharedBudget(
            max_requests_per_minute=max_requests_per_minute,
            max_tokens_per_minute=max_tokens_per_minute,
            burst_s=burst_s,
        )
        self._changed = asyncio.Event()
        self._reports: dict[str, ShardProgress] = {}  # the latest of each shard, not yet polled

    async def lease(self, requests: float, tokens: float, need_tokens: float) -> Grant:
        return self._budget.lease(requests, tokens, need_tokens)

    async def give_back(self, requests: float, tokens: float) -> None:
        self._budget.give_back(requests, tokens)

    async def pause(self, seconds: float, reason: str) -> None:
        if self._budget.pause(seconds, reason) is not None:
            self._announce()

    async def stop(self, reason: str) -> None:
        self._budget.stop(reason)
        self._announce()

    async def watch(self, epoch: int) -> PauseNews:
        while self._budget.epoch <= epoch:
            await self._changed.wait()
        return self._budget.news()

    async def set_cost_cap(self, max_usd: float, spent_usd: float) -> None:
        self._budget.set_cost_cap(max_usd, spent_usd)

    async def lease_usd(self, want_usd: float, need_usd: float) -> float:
        return self._budget.lease_usd(want_usd, need_usd)

    async def give_back_usd(self, amount_usd: float) -> None:
        self._budget.give_back_usd(amount_usd)

    async def report(self, progress: ShardProgress) -> None:
        self._reports[progress.shard_id] = progress

    async def reports(self) -> list[ShardProgress]:
        """The shards' reports since the last call (the driver's, about once a second)."""
        reports, self._reports = list(self._reports.values()), {}
        return reports

    async def stats(self) -> dict[str, Any]:
        b = self._budget
        return {"leases": b.leases, "granted_requests": b.granted_requests, "pauses": b.epoch}

    def _announce(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class RayLink:
    """`BudgetLink` over Ray: each call is one actor call, awaited on the shard's event loop."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    async def lease(self, requests: float, tokens: float, need_tokens: float) -> Grant:
        grant: Grant = await self._actor.lease.remote(requests, tokens, need_tokens)
        return grant

    async def give_back(self, requests: float, tokens: float) -> None:
        await self._actor.give_back.remote(requests, tokens)

    async def pause(self, seconds: float, reason: str) -> None:
        await self._actor.pause.remote(seconds, reason)

    async def watch(self, epoch: int) -> PauseNews:
        news: PauseNews = await self._actor.watch.remote(epoch)
        return news

    async def lease_usd(self, want_usd: float, need_usd: float) -> float:
        got: float = await self._actor.lease_usd.remote(want_usd, need_usd)
        return got

    async def give_back_usd(self, amount_usd: float) -> None:
        await self._actor.give_back_usd.remote(amount_usd)

    async def report(self, progress: ShardProgress) -> None:
        await self._actor.report.remote(progress)


class _Worker:
    """Runs shards one after another, each through the local pipeline (`run_shard`)."""

    def __init__(self, budget: Any, scratch: str | None = None) -> None:
        self._link = RayLink(budget)
        self._scratch = Path(scratch) if scratch else None

    def run(self, task: ShardTask) -> ShardResult:
        return run_shard(task, self._link, self._scratch, self._link.report)

    def node(self) -> str:
        return str(ray.get_runtime_context().get_node_id())


_remote = cast(Any, ray.remote)
# An async actor with room for every shard's long `watch` call at once.
BudgetActor: Any = _remote(num_cpus=0, max_concurrency=10_000)(_Budget)
# Never restarted, never retried by Ray: the driver decides what a lost shard means (run it
# again elsewhere; its committed parts stay).
ShardWorker: Any = _remote(max_restarts=0, max_task_retries=0)(_Worker)
