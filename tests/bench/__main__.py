"""`python -m tests.bench [--quick] [--only NAME,...] [--repeat K] [--json PATH]`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from tests.bench import (
    cluster,
    contention,
    export,
    limits,
    media,
    reruns,
    startup,
    tables,
    tasks,
    throughput,
)
from tests.bench.context import Context, Settings
from tests.bench.procs import BenchError, stop_all
from tests.bench.report import Row, commit, machine, render, to_json

BENCHMARKS: dict[str, Callable[[Context], list[Row]]] = {
    "overhead": throughput.overhead,
    "journal": throughput.journal,
    "smalljob": throughput.small_job,
    "concurrency": throughput.concurrency,
    "memory": throughput.memory,
    "template": tables.template_memory,
    "limits": limits.limits,
    "resume": startup.resume,
    "firstreq": startup.first_request,
    "estimate": startup.estimate,
    "export": export.export_memory,
    "media": media.media_memory,
    "retry": reruns.retry_memory,
    "contention": contention.contention,
    "ray": cluster.ray_cluster,
    "tasks": tasks.tasks,
}


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown benchmark {', '.join(unknown) or '(none)'}; choose from "
            + ", ".join(BENCHMARKS)
        )
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="batchrun's benchmarks against the built-in mock server on 127.0.0.1.",
        epilog="benchmarks: " + ", ".join(BENCHMARKS),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller counts (overhead 5,000 requests, small job 5,000, concurrency 6,000, "
        "memory, template, export and retry 20k vs 200k rows, first request 1M rows, limits 30 s)",
    )
    parser.add_argument(
        "--only", type=_names, metavar="NAME[,NAME]", help="run only these benchmarks"
    )
    parser.add_argument(
        "--repeat",
        type=_positive,
        default=3,
        metavar="K",
        help="runs per measurement where medians are taken (default: 3)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the table as JSON")
    parser.add_argument(
        "--requests",
        type=_positive,
        metavar="N",
        help="requests of the overhead benchmark (default: 50,000; 5,000 with --quick)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive,
        default=100,
        metavar="C",
        help="concurrency of the overhead, memory and resume runs (default: 100)",
    )
    return parser


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings(
        quick=args.quick,
        repeat=args.repeat,
        concurrency=args.concurrency,
        overhead_rows=args.requests or (5_000 if args.quick else 50_000),
    )
    names = args.only or list(BENCHMARKS)
    # Explicitly: a shell starting us in the background would have SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    info = machine()
    info.update(quick=settings.quick, repeat=settings.repeat, benchmarks=names)
    _log(f"load average at start: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows: list[Row] = []
    status = 0
    with tempfile.TemporaryDirectory(prefix="batchrun-bench-") as tmp:
        ctx = Context(settings, Path(tmp), log=_log)
        info["layout"] = ctx.layout()
        ctx.pin_self()
        try:
            for name in names:
                started = time.monotonic()
                try:
                    rows += BENCHMARKS[name](ctx)
                except BenchError as exc:
                    _log(f"[{name}] FAILED: {exc}")
                    rows.append(Row(bench=name, measure="failed", value=str(exc)[:300], met="NO"))
                    status = 1
                _log(f"[{name}] done in {time.monotonic() - started:.0f} s")
        except KeyboardInterrupt:
            _log("interrupted: stopping the children and removing the temp files")
            rows.append(Row(bench="(all)", measure="interrupted", value="partial results"))
            status = 130
        finally:
            stop_all()
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    info["commit_end"] = commit()
    print(render(info, rows), flush=True)
    if args.json is not None:
        args.json.write_text(to_json(info, rows))
        _log(f"JSON written to {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
