"""batchrun on Ray (issue 13): against Ray Data LLM's HTTP processor, 1 vs 2 nodes, a shared RPM.

Each figure starts its own local cluster (`ray.cluster_utils.Cluster`, nodes of this machine)
in a temp dir of its own, and the mock server in its own process. Rows/s are over the job's
whole run (planning, actor start-up and commits included), for both engines alike.

- peer: the same 0.5 s latency mock, the same number of actors. Ray Data LLM's
  `HttpRequestProcessor` (ray[data] + aiohttp + pydantic, not ray[llm]) holds at most 4
  requests in flight per actor (scale-and-peers.md A.3); batchrun's workers hold --concurrency.
- nodes: a latency-bound mock, one worker on one node vs one on each of two nodes.
- shared limit: the mock enforces RPM with 429s; two nodes share batchrun's one budget.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.bench.context import Context
from tests.bench.procs import BenchError
from tests.bench.report import Row, met

_LATENCY_MS = 500
_ACTORS = 4
_PEER_ROWS = 640  # Ray Data: 4 actors x 4 in flight at 0.5 s is ~32 rows/s
_OURS_ROWS = 8_000
_OURS_CONCURRENCY = 200
_NODE_ROWS = 3_000
_NODE_CONCURRENCY = 50
_RPM = 1_200
_RPM_S = 40


@contextlib.contextmanager
def _cluster(nodes: int, cpus: int) -> Iterator[Any]:
    import ray
    from ray.cluster_utils import Cluster

    saved = os.sched_getaffinity(0)
    # The bench process sits on the mock's core; Ray's processes would inherit that.
    os.sched_setaffinity(0, range(os.cpu_count() or 1))
    tmp = tempfile.mkdtemp(prefix="brb-", dir="/tmp")
    os.environ.update(
        RAY_TMPDIR=tmp, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", RAY_DEDUP_LOGS="0"
    )
    node = {"num_cpus": cpus, "object_store_memory": 200 << 20}
    c = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    for _ in range(nodes - 1):
        c.add_node(**node)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
        os.sched_setaffinity(0, saved)


def _ours(
    ctx: Context, path: Path, base_url: str, *, workers: int, concurrency: int, **config: Any
) -> tuple[float, Any]:
    from batchrun.cluster.engine import ClusterSettings, run_on_ray
    from batchrun.config import RunConfig

    out = ctx.out_dir("ray")
    run_config = RunConfig(
        input_path=path,
        out_dir=out,
        base_url=base_url,
        api_key="sk-test",
        concurrency=concurrency,
        check_quota=False,
        estimate=False,
        **config,
    )
    settings = ClusterSettings(
        address="auto",
        input_uri=str(path),
        out_uri=str(out),
        workers=workers,
        worker_cpus=0.5,
        shard_bytes=max(1, path.stat().st_size // (workers * 4)),
    )
    started = time.monotonic()
    summary = run_on_ray(run_config, settings)
    elapsed = time.monotonic() - started
    if not summary.finished or summary.ok != summary.total_rows:
        raise BenchError(f"batchrun on Ray did not finish every row: {summary}")
    return summary.total_rows / elapsed, summary


def _peer(path: Path, base_url: str) -> float:
    import ray
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    config = HttpRequestProcessorConfig(
        url=f"{base_url}/chat/completions",
        headers={"Authorization": "Bearer sk-test"},
        concurrency=(_ACTORS, _ACTORS),  # a fixed pool (an int autoscales from 1)
        batch_size=_PEER_ROWS // (_ACTORS * 4 * 2),
    )
    processor = build_processor(
        config,
        preprocess=lambda row: {"payload": row["body"]},
        postprocess=lambda row: {"ok": row["http_response"].get("choices") is not None},
    )
    started = time.monotonic()
    # Blocks enough for every actor to run its 4 batches at once (one block would feed one).
    blocks = _ACTORS * 4 * 2
    data = ray.data.read_json(str(path), lines=True, override_num_blocks=blocks)
    rows = processor(data).take_all()
    elapsed = time.monotonic() - started
    if len(rows) != _PEER_ROWS or not all(r["ok"] for r in rows):
        raise BenchError(f"Ray Data LLM answered {len(rows)} of {_PEER_ROWS} rows")
    return len(rows) / elapsed


def _peer_row(ctx: Context) -> list[Row]:
    peer_path = ctx.chat_input(_PEER_ROWS)
    ours_path = ctx.chat_input(_OURS_ROWS)
    # Logical CPUs to spare: Ray Data's read and postprocess tasks need some besides the actors.
    with ctx.mock("--latency-ms", str(_LATENCY_MS)) as mock, _cluster(1, 2 * _ACTORS):
        ctx.log(f"[ray] Ray Data LLM HttpRequestProcessor, {_ACTORS} actors, {_PEER_ROWS} rows")
        theirs = _peer(peer_path, mock.base_url)
        ctx.log(f"[ray] batchrun, {_ACTORS} workers x {_OURS_CONCURRENCY}, {_OURS_ROWS:,} rows")
        ours, _ = _ours(
            ctx, ours_path, mock.base_url, workers=_ACTORS, concurrency=_OURS_CONCURRENCY
        )
    ratio = ours / theirs
    return [
        Row(
            bench="ray",
            measure=f"vs Ray Data LLM HttpRequestProcessor: {_ACTORS} actors each, mock at "
            f"{_LATENCY_MS} ms",
            value=f"batchrun {ours:,.0f} rows/s ({_ACTORS} x {_OURS_CONCURRENCY} in flight, "
            f"{_OURS_ROWS:,} rows); Ray Data LLM {theirs:,.1f} rows/s ({_PEER_ROWS} rows): "
            f"{ratio:,.1f}x",
            target=">= 20x",
            met=met(ratio >= 20),
            data={"ours_rows_per_s": ours, "theirs_rows_per_s": theirs},
        )
    ]


@contextlib.contextmanager
def _timeline(mock: Any) -> Iterator[list[tuple[float, int]]]:
    """(time, requests the mock has seen), every 0.25 s while the block runs."""
    import threading

    seen: list[tuple[float, int]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.25):
            seen.append((time.monotonic(), int(mock.stats()["requests"]["total"])))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join()


def _steady_per_s(seen: list[tuple[float, int]], start: int, total: int) -> float:
    """Requests/s while the 10th to the 90th percent of `total` (after `start`) came in."""
    t10 = next(t for t, n in seen if n - start >= 0.1 * total)
    t90 = next(t for t, n in seen if n - start >= 0.9 * total)
    return 0.8 * total / (t90 - t10)


def _nodes_row(ctx: Context) -> list[Row]:
    path = ctx.chat_input(_NODE_ROWS)
    rates, steady = [], []
    with ctx.mock("--latency-ms", str(_LATENCY_MS)) as mock, _cluster(2, 1):
        for workers in (1, 2):
            ctx.log(f"[ray] {workers} node(s), 1 worker each x {_NODE_CONCURRENCY}")
            start = int(mock.stats()["requests"]["total"])
            with _timeline(mock) as seen:
                rate, _ = _ours(
                    ctx, path, mock.base_url, workers=workers, concurrency=_NODE_CONCURRENCY
                )
            rates.append(rate)
            steady.append(_steady_per_s(seen, start, _NODE_ROWS))
    ideal = _NODE_CONCURRENCY * 1000 / _LATENCY_MS
    scale = steady[1] / steady[0]
    return [
        Row(
            bench="ray",
            measure=f"1 vs 2 nodes: one worker per node x {_NODE_CONCURRENCY} in flight, mock at "
            f"{_LATENCY_MS} ms, {_NODE_ROWS:,} rows",
            value=f"steady {steady[0]:,.0f} vs {steady[1]:,.0f} rows/s: {scale:.2f}x (ideal "
            f"{ideal:,.0f} per node); whole run {rates[0]:,.0f} vs {rates[1]:,.0f}: "
            f"{rates[1] / rates[0]:.2f}x",
            target=">= 1.6x",
            met=met(scale >= 1.6),
            data={"rows_per_s": rates, "steady_rows_per_s": steady},
        )
    ]


def _limit_row(ctx: Context) -> list[Row]:
    rows = _RPM * _RPM_S // 60
    path = ctx.chat_input(rows)
    with ctx.mock("--rpm", str(_RPM), "--latency-ms", "50") as mock, _cluster(2, 1):
        with _timeline(mock) as seen:
            _, summary = _ours(
                ctx, path, mock.base_url, workers=2, concurrency=50, max_requests_per_minute=_RPM
            )
        stats = mock.stats()
    total = int(stats["requests"]["total"])
    limited = int(stats["requests"]["by_status"].get("429", 0))
    steady = _steady_per_s(seen, 0, total) * 60
    return [
        Row(
            bench="ray",
            measure=f"shared limit: 2 nodes, --rpm {_RPM}, mock enforcing {_RPM} RPM with 429s, "
            f"{rows:,} rows",
            value=f"{steady / _RPM:.1%} of the limit (steady 10%->90%), {limited} 429s in "
            f"{total:,} requests ({limited / total:.1%}), {summary.ok:,} rows ok",
            target="95-105%, < 1% 429s",
            met=met(0.95 <= steady / _RPM <= 1.05 and limited < 0.01 * total),
            data={"steady_per_min": steady, "requests": total, "status_429": limited},
        )
    ]


def ray_cluster(ctx: Context) -> list[Row]:
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise BenchError(f"the ray benchmark needs batchrun[ray] and pydantic: {exc}") from None
    found: list[Row] = []
    for part in (_peer_row, _nodes_row, _limit_row):
        found += part(ctx)
        ctx.log(f"[ray] {json.dumps(found[-1].data)}")
    return found
