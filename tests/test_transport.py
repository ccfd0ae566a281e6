"""The sharded transport: connections split over small pools, requests spread over them."""

from __future__ import annotations

import anyio
import httpx2
import pytest

from batchrun.mock import MockConfig, MockServer
from batchrun.transport import ShardedTransport


def test_connections_are_split_into_small_pools() -> None:
    transport = ShardedTransport(connections=120, pool_size=50)
    assert len(transport._pools) == 3  # 40 connections each, not 50 + 50 + 20
    assert len(ShardedTransport(connections=7, pool_size=50)._pools) == 1


@pytest.mark.anyio
async def test_concurrent_requests_spread_over_every_pool_and_all_succeed() -> None:
    transport = ShardedTransport(connections=12, pool_size=4)
    used: list[int] = []
    for index, pool in enumerate(transport._pools):
        real = pool.handle_async_request

        async def counting(request: httpx2.Request, real=real, index=index) -> httpx2.Response:
            used.append(index)
            return await real(request)

        pool.handle_async_request = counting  # type: ignore[method-assign]
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with MockServer(MockConfig(latency_ms=100)) as server:
        async with httpx2.AsyncClient(transport=transport) as http:
            statuses: list[int] = []

            async def one() -> None:
                response = await http.post(f"{server.base_url}/chat/completions", json=body)
                statuses.append(response.status_code)

            async with anyio.create_task_group() as tg:
                for _ in range(12):
                    tg.start_soon(one)
    assert statuses == [200] * 12
    assert sorted(set(used)) == [0, 1, 2]  # the least busy pool takes each new request
    assert max(used.count(i) for i in range(3)) == 4
