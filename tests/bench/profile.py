"""Where batchrun's CPU goes per request, under the overhead benchmark's load.

    python -m tests.bench.profile [--target batchrun|bare] [--requests N] [--concurrency C]
                            [--latency-ms MS] [--client aiohttp|httpx2] [--clients K]
                            [--raw PATH]

Starts the mock (its own core), starts the client under test on the other core, attaches py-spy
to it from the mock's core (`py-spy record --pid --nonblocking`: pausing the client to sample it
slowed it 2.5x here and inflated its CPU time), and sorts every sampled stack into one stage: the
first rule of `RULES` whose pattern occurs in the stack. Non-blocking sampling catches a few
stacks only partly (reported as such).
A stage's share of the samples times the client's own CPU time (`wait4`) over the requests gives
microseconds of CPU per request. Samples of idle threads (waiting on a condition) are left out.

py-spy is a profiling tool, not a dependency: `.venv/bin/pip install py-spy`.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.bench.context import Context, Settings
from tests.bench.procs import BenchError, Child, stop_all

__all__ = ["RULES", "classify", "main"]

# (stage, patterns, within): a stack belongs to the first stage any of whose patterns it contains
# (and, when `within` is set, that also contains `within`).
Rule = tuple[str, tuple[str, ...], str | None]
_HTTP = "AsyncClient.send"
RULES: list[Rule] = [
    ("start-up: imports", ("_find_and_load",), None),
    (
        "start-up: checkpoint, fingerprint, server check",
        ("open_output", "fingerprint_file", "check_server", "check_everything_first"),
        None,
    ),
    (
        "first pass alongside (thread): ids, estimate",
        ("run_pass", "IdBuckets", "EstimateBuilder"),
        None,
    ),
    ("start-up: prices, quota, CLI", ("PriceBook.load", "fetch_quota", "build_parser"), None),
    (
        "reader: parse rows into Requests (thread)",
        ("_take (batchrun", "iter_requests", "iter_rows", "_produce (bench"),
        None,
    ),
    ("writer: Parquet part + checkpoint (thread)", ("ResultWriter.commit",), None),
    ("journal: one write per group of answers (event loop)", ("Journal.write",), None),
    ("journal: group syncs (thread)", ("Journal.sync", "GroupCommit."), None),
    ("limiter", ("Limiter.",), None),
    ("retry classification", ("classify_response",), None),
    ("response JSON parse", ("_json_or_none", "loads (json"), None),
    ("usage, cost, Record", ("_ok_record", "parse_usage", "_error_record"), None),
    (
        "httpx2 pool: scan of every connection per request (has_expired probes)",
        ("_assign_requests_to_connections", "has_expired"),
        None,
    ),
    (
        "httpx2: anyio timeouts/cancel scopes per socket op, backend lookups",
        ("fail_after", "fail_at", "CancelScope", "current_async_library", "ShieldCancellation"),
        _HTTP,
    ),
    ("httpx2: h11 encode/parse", ("h11/",), None),
    ("httpx2: socket write/read", ("AnyIOStream.write", "AnyIOStream.read"), None),
    (
        "httpx2: Request/Response/URL/headers objects",
        (
            "build_request",
            "Request.__init__",
            "Response.__init__",
            "Headers.__init__",
            "URL.__init__",
            "urlparse",
            "_merge_url",
            "_merge_headers",
            "encode_request",
        ),
        None,
    ),
    ("httpx2: other (request flow, locks, events)", ("httpx2/", "httpcore2/"), None),
    (
        "aiohttp: timeouts (timer handles per request)",
        ("TimeoutHandle", "TimerContext", "ceil_timeout"),
        None,
    ),
    (
        "aiohttp: connection pool",
        ("BaseConnector.", "TCPConnector.", "Connection.", "_release_connection"),
        None,
    ),
    (
        "aiohttp: request building, headers, payload",
        ("ClientRequest.__init__", "update_", "Payload", "_build_url", "_prepare_headers"),
        None,
    ),
    (
        "aiohttp: HTTP write and parse",
        ("http_writer", "http_parser", "ResponseHandler.data_received", "ClientResponse.start"),
        None,
    ),
    ("aiohttp: other (session flow, streams)", ("aiohttp/",), None),
    (
        "memory streams between stages",
        ("MemoryObjectSendStream", "MemoryObjectReceiveStream", "MemoryObjectItemReceiver"),
        None,
    ),
    ("writer loop: buffer, totals, progress", ("Stages._write", "_write (batchrun"), None),
    ("reader loop: hand-off to workers", ("Stages._read", "_read (batchrun"), None),
    ("worker: rest of Sender.send / _work", ("Sender.", "_work (b"), None),
    ("anyio worker threads (to_thread)", ("WorkerThread", "run_sync_in_worker_thread"), None),
    (
        "event loop: epoll, scheduling, callbacks (uvloop: native, Runner.run)",
        ("_run_once", "selector", "Runner.run (asyncio"),
        None,
    ),
]
_IDLE_LEAVES = ("Condition.wait", "Event.wait", "Queue.get", "Lock.acquire (threading")
OTHER = "other (stacks py-spy caught only partly)"
NATIVE = "no Python frame (native code: GC, syscalls)"
_LINE_NUMBER = re.compile(r":\d+\)$")


def classify(stack: str) -> str | None:
    """The stage of one sampled stack (py-spy raw format: frames joined by ';'), None if idle."""
    leaf = stack.rsplit(";", 1)[-1]
    if leaf.startswith(_IDLE_LEAVES):
        return None
    if not stack.strip():
        return NATIVE
    for stage, patterns, within in RULES:
        if any(p in stack for p in patterns) and (within is None or within in stack):
            return stage
    return OTHER


Leaves = dict[str, collections.Counter[str]]


def summarize(raw: Path) -> tuple[collections.Counter[str], Leaves]:
    """(samples per stage, samples per leaf function in each stage), idle threads left out."""
    stages: collections.Counter[str] = collections.Counter()
    leaves: Leaves = collections.defaultdict(collections.Counter)
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stage = classify(stack)
        if stage is None:
            continue
        stages[stage] += int(count)
        leaf = _LINE_NUMBER.sub(")", stack.rsplit(";", 1)[-1])
        leaves[stage][leaf] += int(count)
    return stages, leaves


def _profile(args: argparse.Namespace, ctx: Context, py_spy: str) -> str:
    path = ctx.chat_input(args.requests)
    flags = ["--latency-ms", str(args.latency_ms)] if args.latency_ms else []
    with ctx.mock(*flags) as mock:
        if args.target == "bare":
            child = ctx.bare_run(
                path, mock.base_url, args.concurrency, client=args.client, clients=args.clients
            )
        else:
            out = ctx.out_dir("profile")
            child = ctx.batchrun_run(
                path, out, mock.base_url, "--concurrency", str(args.concurrency)
            )
        raw = ctx.tmp / "profile.raw"
        spy_argv = [py_spy, "record", "--pid", str(child.pid), "--rate", str(args.rate)]
        spy_argv += ["--nonblocking", "--format", "raw", "-o", str(raw)]
        spy = Child(
            spy_argv,
            cpus=ctx.server_cpus,
            env=ctx.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            name="py-spy",
        )
        result = ctx.finish(child, args.requests / 20 + 120)
        spy.wait(30)
    if not raw.exists():
        raise BenchError("py-spy wrote no profile (is ptrace allowed here?)")
    if args.raw:
        shutil.copyfile(raw, args.raw)
    stages, leaves = summarize(raw)
    sampled = sum(stages.values()) or 1
    per_request_us = result.cpu_s / args.requests * 1e6
    lines = [
        f"profile: {args.target}, {args.requests:,} requests, concurrency {args.concurrency}"
        + (f", {args.clients} clients" if args.clients > 1 else "")
        + f", mock latency {args.latency_ms} ms; py-spy {args.rate} Hz, {sampled:,} samples",
        f"client: {result.wall_s:.1f} s = {args.requests / result.wall_s:,.0f} req/s, "
        f"CPU {result.cpu_s:.1f} s = {per_request_us:,.0f} us per request",
        "",
        f"{'stage':72s} {'share':>6s} {'us/req':>7s}",
    ]
    for stage, n in stages.most_common():
        share = n / sampled
        lines.append(f"{stage:72s} {share:6.1%} {share * per_request_us:7,.0f}")
        for leaf, m in leaves[stage].most_common(args.top):
            if m / sampled >= 0.002:
                lines.append(f"    {m / sampled * per_request_us:5,.0f} us  {leaf[:100]}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.profile", description=__doc__)
    parser.add_argument("--target", choices=("batchrun", "bare"), default="batchrun")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument(
        "--client", choices=("aiohttp", "httpx2"), default="aiohttp", help="bare only"
    )
    parser.add_argument("--clients", type=int, default=1, help="bare only: split the pool")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=3, help="leaf functions shown per stage")
    parser.add_argument("--raw", type=Path, help="also keep py-spy's raw stacks here")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2

    def log(message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="batchrun-profile-") as tmp:
        ctx = Context(Settings(), Path(tmp), log=log)
        ctx.pin_self()
        try:
            print(_profile(args, ctx, py_spy))
        except BenchError as exc:
            log(f"FAILED: {exc}")
            return 1
        finally:
            stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
