"""Benchmarks 1-3: overhead against the bare client, 2,000 in flight, and memory at two sizes.

Throughput is the whole process, start to exit (`end-to-end`), and also the steady rate while
the mock's count of answered requests went from 10% to 90% of the rows (start-up and tail left
out). CPU is the client process's own user + system time (`wait4`), never the mock's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from bench.context import Context
from bench.procs import BenchError, Child, MockServer
from bench.report import Row, median, met
from bench.sampler import StatsSampler, counters

__all__ = ["concurrency", "memory", "overhead"]

_MIN_RATE = 50.0  # req/s below which a run is considered stuck (sets the timeouts)


@dataclass(frozen=True, slots=True)
class Figures:
    rows: int
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    rate: float  # rows per second, end to end
    steady_rate: float | None  # rows per second while 10% -> 90% were answered
    cpu_us: float  # client CPU per row
    first_request_s: float | None  # from start to the first request seen by the mock

    def show(self) -> str:
        steady = f", steady {self.steady_rate:,.0f}" if self.steady_rate else ""
        return (
            f"{self.rows:,} rows in {self.wall_s:.1f} s = {self.rate:,.0f} req/s{steady}; "
            f"CPU {self.cpu_us:,.0f} us/req; peak RSS {self.max_rss_mb:,.0f} MB"
        )


def _measure(
    ctx: Context, mock: MockServer, child: Child, rows: int, *, every_s: float = 0.5
) -> Figures:
    sampler = StatsSampler(mock, every_s=every_s)
    result = ctx.finish(child, rows / _MIN_RATE + 120, tick=sampler, interval_s=every_s)
    sampler.take()
    _, ok, _, _ = counters(mock.stats())
    if ok != rows:
        raise BenchError(f"{child.name}: the mock answered {ok:,} requests with 200, not {rows:,}")
    first = sampler.first_arrival()
    return Figures(
        rows=rows,
        wall_s=result.wall_s,
        cpu_s=result.cpu_s,
        max_rss_mb=result.max_rss_kb / 1024,
        rate=rows / result.wall_s,
        steady_rate=sampler.rate_between("ok", 0.1 * rows, 0.9 * rows),
        cpu_us=result.cpu_s / rows * 1e6,
        first_request_s=None if first is None else first - child.started_at,
    )


def _run_pair(
    ctx: Context, mock: MockServer, input_rows: int, concurrency: int, every_s: float
) -> tuple[Figures, Figures]:
    """(bare, batchrun) figures for one interleaved pair of runs."""
    path = ctx.chat_input(input_rows)
    pair = []
    for kind in ("bare", "batchrun"):
        mock.reset()
        out: Path | None = None
        if kind == "bare":
            child = ctx.bare_run(path, mock.base_url, concurrency)
        else:
            out = ctx.out_dir("overhead")
            child = ctx.batchrun_run(path, out, mock.base_url, "--concurrency", str(concurrency))
        try:
            figures = _measure(ctx, mock, child, input_rows, every_s=every_s)
        finally:
            if out is not None:
                ctx.remove(out)
        ctx.log(f"  {kind:8s} {figures.show()}")
        pair.append(figures)
    return pair[0], pair[1]


def _pairs(
    ctx: Context, mock: MockServer, rows: int, concurrency: int, every_s: float
) -> tuple[list[Figures], list[Figures]]:
    bare: list[Figures] = []
    ours: list[Figures] = []
    for k in range(ctx.settings.repeat):
        ctx.log(f"  pair {k + 1}/{ctx.settings.repeat}: bare httpx2 loop, then batchrun")
        b, o = _run_pair(ctx, mock, rows, concurrency, every_s)
        bare.append(b)
        ours.append(o)
    return bare, ours


def _raw(runs: list[Figures]) -> list[dict[str, object]]:
    return [asdict(f) for f in runs]


def overhead(ctx: Context) -> list[Row]:
    """Benchmark 1: batchrun end to end vs a bare httpx2 loop, same server, same concurrency."""
    rows, c = ctx.settings.overhead_rows, ctx.settings.concurrency
    ctx.log(f"[overhead] {rows:,} chat requests, concurrency {c}, zero-latency mock")
    with ctx.mock() as mock:
        bare, ours = _pairs(ctx, mock, rows, c, every_s=0.5)
    rate_ratio = median([o.rate / b.rate for b, o in zip(bare, ours, strict=True)])
    cpu_ratio = median([o.cpu_us / b.cpu_us for b, o in zip(bare, ours, strict=True)])
    steady = [
        o.steady_rate / b.steady_rate
        for b, o in zip(bare, ours, strict=True)
        if o.steady_rate and b.steady_rate
    ]
    name = f"{rows:,} req, C={c}"
    return [
        Row(
            bench="overhead",
            measure=f"bare httpx2 loop, {name}: req/s",
            value=_rate(bare),
            data={"runs": _raw(bare)},
        ),
        Row(
            bench="overhead",
            measure=f"batchrun run, {name}: req/s",
            value=_rate(ours),
            data={"runs": _raw(ours)},
        ),
        Row(
            bench="overhead",
            measure="req/s ratio batchrun / bare (median of pairs)",
            value=f"{rate_ratio:.2f}x" + (f" (steady {median(steady):.2f}x)" if steady else ""),
            target=">= 0.85x",
            met=met(rate_ratio >= 0.85),
            data={"ratio": rate_ratio, "steady_ratio": median(steady) if steady else None},
        ),
        Row(
            bench="overhead",
            measure="client CPU per request: bare / batchrun",
            value=f"{median([b.cpu_us for b in bare]):,.0f} / "
            f"{median([o.cpu_us for o in ours]):,.0f} us",
        ),
        Row(
            bench="overhead",
            measure="CPU per request ratio batchrun / bare",
            value=f"{cpu_ratio:.2f}x",
            data={"ratio": cpu_ratio},
        ),
    ]


def _rate(runs: list[Figures]) -> str:
    text = f"{median([f.rate for f in runs]):,.0f}"
    steady = [f.steady_rate for f in runs if f.steady_rate]
    return text + (f" (steady {median(steady):,.0f})" if steady else "")


def concurrency(ctx: Context) -> list[Row]:
    """Benchmark 2: 2,000 requests in flight against 1 s latency; the ideal is 2,000 req/s."""
    in_flight, latency_s = 2000, 1.0
    rows = 6_000 if ctx.settings.quick else 10_000
    ideal = in_flight / latency_s
    ctx.log(f"[concurrency] {rows:,} requests, {in_flight:,} in flight, mock latency 1 s")
    with ctx.mock("--latency-ms", str(int(latency_s * 1000))) as mock:
        bare, ours = _pairs(ctx, mock, rows, in_flight, every_s=0.02)

    def busy_rate(f: Figures) -> float:
        # From the first request the mock saw to the exit: start-up (imports, id scan) left out.
        if f.first_request_s is None:
            return f.rate
        return f.rows / (f.wall_s - f.first_request_s)

    ours_rate = median([busy_rate(f) for f in ours])
    bare_rate = median([busy_rate(f) for f in bare])
    share = ours_rate / ideal
    return [
        Row(
            bench="concurrency",
            measure=f"batchrun, {in_flight:,} in flight, 1 s latency: req/s (first req -> exit)",
            value=f"{ours_rate:,.0f} = {share:.0%} of {ideal:,.0f}"
            f" (end-to-end {median([f.rate for f in ours]):,.0f})",
            target=">= 80%",
            met=met(share >= 0.8),
            data={"runs": _raw(ours), "ideal": ideal},
        ),
        Row(
            bench="concurrency",
            measure="bare httpx2 loop, same: req/s (first req -> exit)",
            value=f"{bare_rate:,.0f} = {bare_rate / ideal:.0%} of {ideal:,.0f}",
            data={"runs": _raw(bare)},
        ),
        Row(
            bench="concurrency",
            measure="client CPU per request: bare / batchrun",
            value=f"{median([b.cpu_us for b in bare]):,.0f} / "
            f"{median([o.cpu_us for o in ours]):,.0f} us",
        ),
    ]


def memory(ctx: Context) -> list[Row]:
    """Benchmark 3: peak RSS of the batchrun process at two input sizes, same settings."""
    sizes = (20_000, 200_000) if ctx.settings.quick else (100_000, 1_000_000)
    c = ctx.settings.concurrency
    ctx.log(f"[memory] peak RSS at {sizes[0]:,} and {sizes[1]:,} rows, concurrency {c}")
    found: list[Figures] = []
    with ctx.mock() as mock:
        for rows in sizes:
            mock.reset()
            path = ctx.chat_input(rows)
            out = ctx.out_dir("memory")
            child = ctx.batchrun_run(path, out, mock.base_url, "--concurrency", str(c))
            try:
                figures = _measure(ctx, mock, child, rows, every_s=1.0)
            finally:
                ctx.remove(out)
            ctx.log(f"  batchrun {figures.show()}")
            found.append(figures)
    small, large = found
    growth = large.max_rss_mb / small.max_rss_mb
    return [
        Row(
            bench="memory",
            measure=f"batchrun peak RSS, {f.rows:,} rows, C={c}",
            value=f"{f.max_rss_mb:,.1f} MB ({f.rate:,.0f} req/s)",
            data=asdict(f),
        )
        for f in found
    ] + [
        Row(
            bench="memory",
            measure=f"peak RSS ratio {large.rows:,} / {small.rows:,} rows",
            value=f"{growth:.3f}x",
            target="<= 1.10x",
            met=met(growth <= 1.10),
            data={"ratio": growth},
        )
    ]
