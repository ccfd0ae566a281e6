"""Benchmarks 1-3: overhead against a bare loop, 2,000 in flight, and memory at two sizes; and
what the write-ahead journal costs at the overhead benchmark's load.

Throughput is the whole process, start to exit (`end-to-end`), and also the steady rate while
the mock's count of answered requests went from 10% to 90% of the rows (start-up and tail left
out). CPU is the client process's own user + system time (`wait4`), never the mock's.
The bare loops (`tests.bench.bare`) use aiohttp, batchrun's default engine, unless named httpx2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from tests.bench.context import Context
from tests.bench.procs import BenchError, Child, MockServer
from tests.bench.report import Row, median, met
from tests.bench.sampler import StatsSampler, counters

__all__ = ["Figures", "concurrency", "journal", "measure", "memory", "overhead", "small_job"]

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


def measure(
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


def _run_one(
    ctx: Context,
    mock: MockServer,
    input_rows: int,
    concurrency: int,
    every_s: float,
    kind: str,
    *flags: str,
) -> Figures:
    """Figures of one run on a freshly reset mock: `kind` is "batchrun" (with `flags`) or a bare
    loop's client."""
    path = ctx.chat_input(input_rows)
    mock.reset()
    out: Path | None = None
    if kind == "batchrun":
        out = ctx.out_dir("overhead")
        child = ctx.batchrun_run(
            path, out, mock.base_url, "--concurrency", str(concurrency), *flags
        )
    else:
        child = ctx.bare_run(path, mock.base_url, concurrency, client=kind)
    try:
        figures = measure(ctx, mock, child, input_rows, every_s=every_s)
    finally:
        if out is not None:
            ctx.remove(out)
    label = " ".join([kind, *flags]) if kind == "batchrun" else f"bare {kind}"
    ctx.log(f"  {label:12s} {figures.show()}")
    return figures


def _pairs(
    ctx: Context, mock: MockServer, rows: int, concurrency: int, every_s: float
) -> tuple[list[Figures], list[Figures]]:
    """(bare aiohttp, batchrun) figures of `repeat` interleaved pairs of runs."""
    bare: list[Figures] = []
    ours: list[Figures] = []
    for k in range(ctx.settings.repeat):
        ctx.log(f"  pair {k + 1}/{ctx.settings.repeat}: bare aiohttp loop, then batchrun")
        bare.append(_run_one(ctx, mock, rows, concurrency, every_s, "aiohttp"))
        ours.append(_run_one(ctx, mock, rows, concurrency, every_s, "batchrun"))
    return bare, ours


def _raw(runs: list[Figures]) -> list[dict[str, object]]:
    return [asdict(f) for f in runs]


def overhead(ctx: Context) -> list[Row]:
    """Benchmark 1: batchrun end to end vs a bare aiohttp loop, same server, same concurrency.

    The target compares pairs with the same HTTP client (aiohttp); one bare httpx2 run after the
    pairs is a reference for what the previous engine's client does on the same load.
    """
    rows, c = ctx.settings.overhead_rows, ctx.settings.concurrency
    ctx.log(f"[overhead] {rows:,} chat requests, concurrency {c}, zero-latency mock")
    with ctx.mock() as mock:
        bare, ours = _pairs(ctx, mock, rows, c, every_s=0.5)
        ctx.log("  reference: bare httpx2 loop, 1 run")
        reference = _run_one(ctx, mock, rows, c, 0.5, "httpx2")
    return _overhead_rows(f"{rows:,} req, C={c}", bare, ours) + _reference_rows(reference, ours)


def journal(ctx: Context) -> list[Row]:
    """What the write-ahead journal costs at full speed: batchrun with and without it
    (the hidden `--no-journal`), the overhead benchmark's load, in interleaved pairs whose
    order alternates, so that a drift in the machine's load favours neither."""
    rows, c = ctx.settings.overhead_rows, ctx.settings.concurrency
    ctx.log(f"[journal] {rows:,} chat requests, concurrency {c}, zero-latency mock")
    off: list[Figures] = []
    on: list[Figures] = []
    with ctx.mock() as mock:
        for k in range(ctx.settings.repeat):
            ctx.log(f"  pair {k + 1}/{ctx.settings.repeat}")
            for journaled in (True, False) if k % 2 else (False, True):
                flags = () if journaled else ("--no-journal",)
                figures = _run_one(ctx, mock, rows, c, 0.5, "batchrun", *flags)
                (on if journaled else off).append(figures)
    rate_ratio = median([j.rate / n.rate for n, j in zip(off, on, strict=True)])
    cpu_ratio = median([j.cpu_us / n.cpu_us for n, j in zip(off, on, strict=True)])
    steady = [
        j.steady_rate / n.steady_rate
        for n, j in zip(off, on, strict=True)
        if j.steady_rate and n.steady_rate
    ]
    name = f"{rows:,} req, C={c}"
    return [
        Row(
            bench="journal",
            measure=f"batchrun --no-journal, {name}: req/s",
            value=_rate(off),
            data={"runs": _raw(off)},
        ),
        Row(
            bench="journal",
            measure=f"batchrun (journal on), {name}: req/s",
            value=_rate(on),
            data={"runs": _raw(on)},
        ),
        Row(
            bench="journal",
            measure="req/s ratio with / without the journal (median of pairs)",
            value=f"{rate_ratio:.3f}x" + (f" (steady {median(steady):.3f}x)" if steady else ""),
            target=">= 0.95x",
            met=met(rate_ratio >= 0.95),
            data={"ratio": rate_ratio, "steady_ratio": median(steady) if steady else None},
        ),
        Row(
            bench="journal",
            measure="client CPU per request: without / with the journal",
            value=f"{median([n.cpu_us for n in off]):,.0f} / "
            f"{median([j.cpu_us for j in on]):,.0f} us ({cpu_ratio:.3f}x)",
            data={"ratio": cpu_ratio},
        ),
    ]


def _overhead_rows(name: str, bare: list[Figures], ours: list[Figures]) -> list[Row]:
    """Rates, CPU per request and their ratios over the pairs (batchrun vs bare aiohttp)."""
    rate_ratio = median([o.rate / b.rate for b, o in zip(bare, ours, strict=True)])
    cpu_ratio = median([o.cpu_us / b.cpu_us for b, o in zip(bare, ours, strict=True)])
    steady = [
        o.steady_rate / b.steady_rate
        for b, o in zip(bare, ours, strict=True)
        if o.steady_rate and b.steady_rate
    ]
    return [
        Row(
            bench="overhead",
            measure=f"bare aiohttp loop, {name}: req/s",
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
            measure="req/s ratio batchrun / bare aiohttp (median of pairs)",
            value=f"{rate_ratio:.2f}x" + (f" (steady {median(steady):.2f}x)" if steady else ""),
            target=">= 0.85x",
            met=met(rate_ratio >= 0.85),
            data={"ratio": rate_ratio, "steady_ratio": median(steady) if steady else None},
        ),
        Row(
            bench="overhead",
            measure="client CPU per request: bare aiohttp / batchrun",
            value=f"{median([b.cpu_us for b in bare]):,.0f} / "
            f"{median([o.cpu_us for o in ours]):,.0f} us",
        ),
        Row(
            bench="overhead",
            measure="CPU per request ratio batchrun / bare aiohttp",
            value=f"{cpu_ratio:.2f}x",
            data={"ratio": cpu_ratio},
        ),
    ]


def small_job(ctx: Context) -> list[Row]:
    """Benchmark 1b: a small job end to end, where start-up weighs most: 20,000 chat rows,
    C=64, zero-latency mock, process start to exit, interleaved pairs with the bare loop."""
    rows, c = (5_000 if ctx.settings.quick else 20_000), 64
    ctx.log(f"[smalljob] {rows:,} chat requests, concurrency {c}, start to exit")
    with ctx.mock() as mock:
        bare, ours = _pairs(ctx, mock, rows, c, every_s=0.05)
    ratio = median([o.rate / b.rate for b, o in zip(bare, ours, strict=True)])
    firsts = [f.first_request_s for f in ours if f.first_request_s is not None]
    bare_firsts = [f.first_request_s for f in bare if f.first_request_s is not None]
    walls = f"{median([b.wall_s for b in bare]):.2f} / {median([o.wall_s for o in ours]):.2f} s"
    return [
        Row(
            bench="smalljob",
            measure=f"{rows:,} req, C={c}: wall, bare aiohttp loop / batchrun (medians)",
            value=f"{walls}; first request {median(bare_firsts):.2f} / {median(firsts):.2f} s",
            data={"bare": _raw(bare), "batchrun": _raw(ours)},
        ),
        Row(
            bench="smalljob",
            measure="end-to-end ratio batchrun / bare aiohttp (median of pairs)",
            value=f"{ratio:.2f}x",
            target=">= 0.8x",
            met=met(ratio >= 0.8),
            data={"ratio": ratio},
        ),
    ]


def _reference_rows(reference: Figures, ours: list[Figures]) -> list[Row]:
    """The one bare httpx2 run, and the median batchrun rate over its rate."""
    ratio = median([o.rate for o in ours]) / reference.rate
    ours_steady = [o.steady_rate for o in ours if o.steady_rate]
    steady = (
        median(ours_steady) / reference.steady_rate
        if ours_steady and reference.steady_rate
        else None
    )
    return [
        Row(
            bench="overhead",
            measure="bare httpx2 loop (reference, 1 run)",
            value=f"{reference.rate:,.0f} req/s"
            + (f" (steady {reference.steady_rate:,.0f})" if reference.steady_rate else "")
            + f"; CPU {reference.cpu_us:,.0f} us/req",
            data=asdict(reference),
        ),
        Row(
            bench="overhead",
            measure="req/s ratio batchrun / bare httpx2",
            value=f"{ratio:.2f}x" + (f" (steady {steady:.2f}x)" if steady else ""),
            data={"ratio": ratio, "steady_ratio": steady},
        ),
    ]


def _rate(runs: list[Figures]) -> str:
    text = f"{median([f.rate for f in runs]):,.0f}"
    steady = [f.steady_rate for f in runs if f.steady_rate]
    return text + (f" (steady {median(steady):,.0f})" if steady else "")


def _busy_rate(f: Figures) -> float:
    """Rows per second from the first request the mock saw to the exit (start-up left out)."""
    if f.first_request_s is None:
        return f.rate
    return f.rows / (f.wall_s - f.first_request_s)


def _in_flight(runs: list[Figures], ideal: float) -> tuple[float, str]:
    """Median steady rate of `runs` and the table's text for it, with the wider rates after it.

    A run without a steady rate (too few samples between 10% and 90%) counts with its rate from
    the first request to the exit instead, and the text says how many did.
    """
    rates = [_busy_rate(f) if f.steady_rate is None else f.steady_rate for f in runs]
    fallbacks = sum(1 for f in runs if f.steady_rate is None)
    rate = median(rates)
    text = f"{rate:,.0f} req/s = {rate / ideal:.0%} of {ideal:,.0f}"
    if fallbacks:
        text += f" ({fallbacks}/{len(runs)} runs: no steady rate, first req -> exit used)"
    text += (
        f"; first req -> exit {median([_busy_rate(f) for f in runs]):,.0f}"
        f", end-to-end {median([f.rate for f in runs]):,.0f}"
    )
    return rate, text


def concurrency(ctx: Context) -> list[Row]:
    """Benchmark 2: 2,000 requests in flight against 1 s latency; the ideal is 2,000 req/s.

    The headline is the steady rate, while the mock answered 10% to 90% of the rows: all 2,000
    in flight, without the first second's ramp-up and the last wave's tail.
    """
    in_flight, latency_s = 2000, 1.0
    rows = 6_000 if ctx.settings.quick else 20_000
    ideal = in_flight / latency_s
    ctx.log(f"[concurrency] {rows:,} requests, {in_flight:,} in flight, mock latency 1 s")
    with ctx.mock("--latency-ms", str(int(latency_s * 1000))) as mock:
        bare, ours = _pairs(ctx, mock, rows, in_flight, every_s=0.02)
    ours_rate, ours_text = _in_flight(ours, ideal)
    bare_rate, bare_text = _in_flight(bare, ideal)
    return [
        Row(
            bench="concurrency",
            measure=f"batchrun, {in_flight:,} in flight, 1 s latency: steady req/s (10%-90%)",
            value=ours_text,
            target=">= 80%",
            met=met(ours_rate / ideal >= 0.8),
            data={"runs": _raw(ours), "ideal": ideal, "rate": ours_rate},
        ),
        Row(
            bench="concurrency",
            measure="bare aiohttp loop, same: steady req/s (10%-90%)",
            value=bare_text,
            data={"runs": _raw(bare), "ideal": ideal, "rate": bare_rate},
        ),
        Row(
            bench="concurrency",
            measure="client CPU per request: bare aiohttp / batchrun",
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
                figures = measure(ctx, mock, child, rows, every_s=1.0)
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
