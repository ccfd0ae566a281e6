"""A bare loop of the HTTP client batchrun uses: the yardstick of the overhead benchmark.

    python -m tests.bench.bare INPUT BASE_URL --concurrency N
        [--client aiohttp|httpx2] [--clients K]

Reads the same JSONL input batchrun reads (Batch API lines or bare bodies), sends every body with
one aiohttp `ClientSession` (batchrun's default engine) or one `httpx2.AsyncClient`, on anyio and
the same event loop as `batchrun run` (uvloop where installed), N requests at a time with the
same pool limit and headers, parses each response's JSON and stores nothing. No limiter, no
retries, no Parquet, no checkpoint: the least any runner on this client has to do. Prints one
JSON line: `{"requests", "statuses", "elapsed_s"}`; exits 1 if any response was not a 200.

`--clients K` (httpx2 only) splits the N connections over K clients (worker i uses client
i mod K), to measure what a sharded pool gains: httpcore2's pool does work in proportion to its
size per request.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import anyio
import httpx2
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["main", "run"]

_DEFAULT_ENDPOINT = "/v1/chat/completions"
_HEADERS = {"content-type": "application/json"}

Item = tuple[str, bytes]


def _join(base_url: str, path: str) -> str:
    base = base_url.rstrip("/")
    if base.endswith("/v1") and path.startswith("/v1/"):
        path = path[3:]
    return base + path


async def _produce(path: Path, base_url: str, send: MemoryObjectSendStream[Item]) -> None:
    async with send:
        with path.open("rb") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                obj = json.loads(line)
                if "body" in obj:
                    url = _join(base_url, obj.get("url") or _DEFAULT_ENDPOINT)
                    body = json.dumps(obj["body"], ensure_ascii=False, separators=(",", ":"))
                    await send.send((url, body.encode()))
                else:
                    await send.send((_join(base_url, _DEFAULT_ENDPOINT), line))


async def _work(
    http: httpx2.AsyncClient, receive: MemoryObjectReceiveStream[Item], statuses: Counter[int]
) -> None:
    async with receive:
        async for url, body in receive:
            response = await http.post(url, content=body, headers=_HEADERS)
            json.loads(response.content)
            statuses[response.status_code] += 1


async def _work_aiohttp(
    session: aiohttp.ClientSession,
    receive: MemoryObjectReceiveStream[Item],
    statuses: Counter[int],
) -> None:
    async with receive:
        async for url, body in receive:
            async with session.post(
                url, data=body, headers=_HEADERS, allow_redirects=False
            ) as response:
                json.loads(await response.read())
                statuses[response.status] += 1


def _client(connections: int) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(300.0),
        limits=httpx2.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


async def run(
    path: Path, base_url: str, concurrency: int, client: str = "aiohttp", clients: int = 1
) -> dict[str, object]:
    statuses: Counter[int] = Counter()
    started = time.perf_counter()
    send, receive = anyio.create_memory_object_stream[Item](concurrency)
    async with contextlib.AsyncExitStack() as stack, anyio.create_task_group() as tg:
        tg.start_soon(_produce, path, base_url, send)
        if client == "aiohttp":
            connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
            timeout = aiohttp.ClientTimeout(total=300.0)
            session = aiohttp.ClientSession(connector=connector, timeout=timeout)
            await stack.enter_async_context(session)
            for _ in range(concurrency):
                tg.start_soon(_work_aiohttp, session, receive.clone(), statuses)
        else:
            pools = [_client(-(-concurrency // clients)) for _ in range(clients)]
            for http in pools:
                await stack.enter_async_context(http)
            for i in range(concurrency):
                tg.start_soon(_work, pools[i % clients], receive.clone(), statuses)
        receive.close()
    return {
        "requests": sum(statuses.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "elapsed_s": round(time.perf_counter() - started, 3),
    }


def _loop_options() -> dict[str, object]:
    """As `batchrun.runner.pipeline.run_sync` chooses (not imported: its imports cost CPU)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bare", description=__doc__)
    parser.add_argument("input", type=Path)
    parser.add_argument("base_url")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--client", choices=("aiohttp", "httpx2"), default="aiohttp")
    parser.add_argument("--clients", type=int, default=1)
    args = parser.parse_args(argv)
    result = anyio.run(
        run,
        args.input,
        args.base_url,
        args.concurrency,
        args.client,
        args.clients,
        backend_options=_loop_options(),
    )
    print(json.dumps(result), flush=True)
    statuses = result["statuses"]
    assert isinstance(statuses, dict)
    return 0 if set(statuses) <= {"200"} else 1


if __name__ == "__main__":
    sys.exit(main())
