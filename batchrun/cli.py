"""Command-line interface: parses arguments and calls the library, nothing else.

Exit codes: 0 finished (rows that failed are recorded as errors), 2 bad usage or bad input found
before anything was sent, 3 stopped early and resumable (Ctrl-C, SIGTERM, refused key, no quota).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

EXIT_USAGE = 2

_RUN_EPILOG = """\
input formats:
  JSONL (.jsonl, .jsonl.gz, .jsonl.zst): one request per line, either an OpenAI Batch API line
  {"custom_id", "method", "url", "body"} or a bare request body {"model", "messages", ...}.
  Parquet: a 'body' column (JSON string or struct), optional 'custom_id' and 'url' columns.

resuming:
  Run the same command again with the same --out: finished rows are skipped, nothing is sent twice.

exit codes:
  0 finished (failed rows are recorded as errors)   2 bad usage or input, nothing sent
  3 stopped early (Ctrl-C, SIGTERM, refused key, no quota): run the same command to resume
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchrun",
        description="Run bulk requests against OpenAI-compatible APIs: rate-limited, resumable, "
        "results in Parquet.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="send every row of an input file and store the results",
        description="Send every row of INPUT to an OpenAI-compatible API; store one result "
        "record per row in OUT/results/ (Parquet). Safe to interrupt and run again.",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("input", type=Path, help="JSONL (.jsonl/.gz/.zst) or Parquet file")
    run.add_argument("--out", type=Path, required=True, help="output directory (resumable)")
    run.add_argument(
        "--base-url",
        default=None,
        help="API base URL (default: $OPENAI_BASE_URL or https://api.openai.com/v1)",
    )
    run.add_argument(
        "--endpoint",
        default="/v1/chat/completions",
        help="endpoint for rows that do not name one (default: %(default)s)",
    )
    run.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        metavar="NAME",
        help="environment variable holding the API key (default: %(default)s)",
    )
    run.add_argument("--api-key", help=argparse.SUPPRESS)
    run.add_argument(
        "--concurrency", type=_positive_int, default=50, help="requests in flight (default: 50)"
    )
    run.add_argument("--rpm", type=_positive_float, help="max requests per minute")
    run.add_argument(
        "--tpm",
        type=_positive_float,
        help="max tokens per minute (charged: estimated prompt + max output, then corrected)",
    )
    run.add_argument(
        "--max-retries",
        type=_non_negative_int,
        default=5,
        help="retries per row for retryable failures (default: 5)",
    )
    run.add_argument(
        "--timeout",
        type=_positive_float,
        default=300.0,
        metavar="SECONDS",
        help="per-request timeout (default: 300)",
    )
    run.add_argument(
        "--flush-rows",
        type=_positive_int,
        default=5000,
        help="rows per committed Parquet part (default: 5000)",
    )
    run.add_argument(
        "--flush-interval",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="commit at least this often (default: 10)",
    )
    run.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on Ctrl-C/SIGTERM, how long requests in flight may finish (default: 10)",
    )
    run.add_argument(
        "--max-outage",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long to wait out a server that is down before rows fail (default: 300)",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    mock = commands.add_parser(
        "mock-server",
        help="run the built-in OpenAI-compatible mock server (for demos, tests, benchmarks)",
        description="An OpenAI-compatible mock server on 127.0.0.1, with optional latency, rate "
        "limits and injected failures. No key, no network.",
    )
    from batchrun.mock.cli_args import add_arguments

    add_arguments(mock)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "mock-server":
        return _mock_server(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from batchrun.checkpoint import CheckpointError
    from batchrun.config import DEFAULT_BASE_URL, RunConfig
    from batchrun.pipeline import run_sync
    from batchrun.progress import render_summary
    from batchrun.reader import InputError

    if args.api_key:
        return _usage_error(
            "--api-key is refused: a key on the command line is visible to every user in `ps` "
            f"and in shell history. Put it in ${args.api_key_env} (or name another variable "
            "with --api-key-env)."
        )
    api_key = os.environ.get(args.api_key_env) or None
    if api_key is None:
        print(
            f"note: ${args.api_key_env} is not set; sending requests without an API key",
            file=sys.stderr,
        )
    try:
        config = RunConfig(
            input_path=args.input,
            out_dir=args.out,
            base_url=args.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
            api_key=api_key,
            endpoint=args.endpoint,
            concurrency=args.concurrency,
            max_requests_per_minute=args.rpm,
            max_tokens_per_minute=args.tpm,
            max_retries=args.max_retries,
            timeout_s=args.timeout,
            flush_rows=args.flush_rows,
            flush_interval_s=args.flush_interval,
            grace_s=args.grace,
            max_outage_s=args.max_outage,
            progress=not args.quiet,
            handle_signals=True,
        )
        summary = run_sync(config)
    except (ValueError, InputError, CheckpointError) as exc:
        return _usage_error(str(exc))
    print(render_summary(summary, command=_resume_command()))
    return summary.exit_code


def _resume_command() -> str:
    return "batchrun " + " ".join(sys.argv[1:]) if sys.argv[1:] else "the same command"


def _mock_server(args: argparse.Namespace) -> int:
    import anyio

    from batchrun.mock import serve
    from batchrun.mock.cli_args import config_from_args

    try:
        config = config_from_args(args)
    except ValueError as exc:
        return _usage_error(str(exc))

    def ready(url: str) -> None:
        print(f"mock server listening on {url}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(lambda: serve(config, ready=ready))
    return 0


def _usage_error(message: str) -> int:
    print(f"batchrun: error: {message}", file=sys.stderr)
    return EXIT_USAGE
