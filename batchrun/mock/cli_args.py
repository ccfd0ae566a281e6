"""Command line of the mock server: `python -m batchrun.mock` or `batchrun mock-server`.

`add_arguments()` and `config_from_args()` let the main CLI mount the same flags as a
subcommand; `run()` serves a config until SIGINT or SIGTERM and returns the exit status.

On start exactly one line goes to stdout, `mock server listening on http://HOST:PORT/v1`, flushed,
so that a parent process can read the port when it asked for `--port 0`. Nothing else is printed
on success, and the API key is read from an environment variable, never from the command line
(where `ps` would show it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from batchrun.mock.config import MockConfig
from batchrun.mock.faults import FAULT_KINDS, parse_fault_spec
from batchrun.mock.server import serve

__all__ = ["add_arguments", "config_from_args", "main", "run"]


def _fault_spec(text: str) -> dict[str, float]:
    try:
        return parse_fault_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the mock server's flags to `parser`."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=8000, help="port to listen on; 0 picks a free one (%(default)s)"
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="fixed delay of every API answer"
    )
    parser.add_argument(
        "--jitter-ms", type=float, default=0.0, help="extra random delay, uniform in 0..JITTER"
    )
    parser.add_argument("--rpm", type=int, default=None, help="requests-per-minute limit")
    parser.add_argument("--tpm", type=int, default=None, help="tokens-per-minute limit")
    parser.add_argument(
        "--burst-s",
        type=float,
        default=1.0,
        help="window the per-minute limits are quantised into (%(default)s s)",
    )
    parser.add_argument(
        "--cotenant-drain",
        action="store_true",
        help="play a second client on the same key that has used up the limits at start",
    )
    parser.add_argument(
        "--cotenant-share",
        type=float,
        default=0.0,
        metavar="F",
        help="share of every refill of the limits that second client keeps taking (0 <= F < 1)",
    )
    parser.add_argument(
        "--fail",
        type=_fault_spec,
        default={},
        metavar="KIND=P,...",
        help=f"inject faults at random; kinds: {', '.join(FAULT_KINDS)}",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random faults and jitter")
    parser.add_argument(
        "--api-key-env",
        metavar="NAME",
        default=None,
        help="require the API key held in this environment variable",
    )
    parser.add_argument(
        "--quota-usd", type=float, default=100.0, help="billing: total granted (%(default)s)"
    )
    parser.add_argument(
        "--used-usd", type=float, default=0.0, help="billing: already spent (%(default)s)"
    )
    parser.add_argument(
        "--no-billing",
        action="store_true",
        help="answer the billing endpoints with 404, as a gateway without them does",
    )
    parser.add_argument(
        "--no-models",
        action="store_true",
        help="answer GET /v1/models with 404, as a server that does not list its models",
    )
    _add_answer_arguments(parser)
    _add_task_arguments(parser)


def _add_answer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exact-tokens",
        action="store_true",
        help="count prompt tokens as OpenAI does (the tokenizers `batchrun estimate` uses); "
        "costs CPU per request",
    )
    parser.add_argument(
        "--echo", action="store_true", help="every chat reply repeats the last user message"
    )
    parser.add_argument(
        "--batch-phase-s",
        type=float,
        default=1.0,
        metavar="S",
        help="provider batches (/v1/batches, /v1/messages/batches): how long each state "
        "lasts, validating, in_progress, finalizing (%(default)s)",
    )
    parser.add_argument(
        "--batch-latency-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="delay of every Batch API answer (files, batches, message batches)",
    )


def _duration_spec(text: str) -> tuple[float, float]:
    """`"30,120"` -> (30.0, 120.0); `"45"` -> (45.0, 45.0)."""
    try:
        low, _, high = text.partition(",")
        return float(low), float(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SECONDS or MIN,MAX, got {text!r}") from None


def _add_task_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task-refresh-s",
        type=float,
        default=15.0,
        metavar="S",
        help="task families (/mj, /suno, video, background responses): a task's state changes "
        "only at refresh ticks this far apart, as new-api's (%(default)s)",
    )
    parser.add_argument(
        "--task-duration-s",
        type=_duration_spec,
        default=(30.0, 120.0),
        metavar="MIN,MAX",
        help="how long a task runs, drawn uniformly from MIN..MAX seconds, or one number "
        '(30,120); a body\'s "mock_task" asks for "fail", "banned", "never" or '
        '"timeout_after_submit"',
    )


def config_from_args(args: argparse.Namespace) -> MockConfig:
    """The MockConfig the parsed flags describe; ValueError for a bad value or a missing key."""
    api_key = None
    if args.api_key_env is not None:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ValueError(f"--api-key-env: environment variable {args.api_key_env} is not set")
    return MockConfig(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        rpm=args.rpm,
        tpm=args.tpm,
        burst_s=args.burst_s,
        cotenant_drain=args.cotenant_drain,
        cotenant_share=args.cotenant_share,
        faults=args.fail,
        seed=args.seed,
        api_key=api_key,
        billing=not args.no_billing,
        list_models=not args.no_models,
        quota_usd=args.quota_usd,
        used_usd=args.used_usd,
        exact_tokens=args.exact_tokens,
        echo=args.echo,
        batch_phase_s=args.batch_phase_s,
        batch_latency_ms=args.batch_latency_ms,
        task_refresh_s=args.task_refresh_s,
        task_duration_s=args.task_duration_s,
    )


def _announce(base_url: str) -> None:
    print(f"mock server listening on {base_url}", flush=True)


async def _serve_until_signal(config: MockConfig) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = asyncio.create_task(serve(config, ready=_announce))
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({server, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        server.cancel()
        # A startup error (port taken) surfaces here; a cancellation is the normal end.
        with contextlib.suppress(asyncio.CancelledError):
            await server


def run(config: MockConfig) -> int:
    """Serve until SIGINT/SIGTERM; 0 on a clean stop, 1 if the port cannot be opened."""
    try:
        asyncio.run(_serve_until_signal(config))
    except OSError as exc:
        print(
            f"mock server: cannot listen on {config.host}:{config.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m batchrun.mock [flags]`."""
    parser = argparse.ArgumentParser(
        prog="python -m batchrun.mock",
        description="An OpenAI-compatible mock server for demos, tests and benchmarks.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    return run(config)
