"""Command-line interface: parses arguments and calls the library, nothing else.

Exit codes: 0 finished (rows that failed are recorded as errors), 2 bad usage or bad input found
before anything was sent, 3 stopped early and resumable (Ctrl-C, SIGTERM, refused key, no quota),
4 finished with rows in error under --fail-on-errors.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from batchrun.common.argparsing import (
    Parser,
    command_as_typed,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from batchrun.common.version import __version__
from batchrun.config import BACKENDS, HTTP_CLIENTS

if TYPE_CHECKING:
    from batchrun.config import RunConfig
    from batchrun.inputs.template import Template
    from batchrun.runner.summary import RunSummary

__all__ = ["main"]

EXIT_USAGE = 2

_INPUT_HELP = """\
input formats:
  JSONL (.jsonl, .jsonl.gz, .jsonl.zst): one request per line, either an OpenAI Batch API line
  {"custom_id", "method", "url", "body"} or a bare request body {"model", "messages", ...}.
  Parquet: a 'body' column (JSON string or struct), optional 'custom_id' and 'url' columns.
  With --template FILE or --prompt, rows are records and the template builds each request from
  their columns: CSV / TSV (.csv, .tsv, also .gz / .zst; every value text, an empty cell null),
  JSONL of objects, Parquet of any columns. A template file (TOML or JSON):
    id = "question_id"                      # optional: the id column (else the row number)
    endpoint = "/v1/chat/completions"       # optional: else --endpoint
    [body]
    model = "gpt-4o-mini"
    messages = [{ role = "user", content = "Answer briefly: {{ question }}" }]
  Placeholders are Jinja2; values go in as JSON string values, never as JSON source. A string
  that is exactly "{{ column }}" keeps the value's type (number, list). A row that cannot fill
  the template (missing column, null, bad type) is a bad_input record naming the line.
"""

_RUN_EPILOG = (
    _INPUT_HELP
    + """

resuming:
  Run the same command again with the same --out: finished rows are skipped, nothing is sent twice.

provider batch APIs (--backend openai-batch | anthropic-batch):
  The same rows through OpenAI's Batch API (/v1/files + /v1/batches; also LiteLLM's proxy) or
  Anthropic's Message Batches, at the batch price (half the online one), done within 24 h. The
  run packs the rows into batches (OpenAI 50,000 requests / 200 MB each, one endpoint per batch;
  Anthropic 100,000 / 256 MB), submits them and returns (exit 3, "submitted"); running the same
  command again collects what has ended into the same results (or --wait stays to the end).
  Every file and batch id is in OUT/batches/journal.jsonl before the next step, so a run
  killed at any moment never creates a second batch for the same rows.
  batchrun status OUT shows each batch; batchrun cancel OUT stops what is still running.

--retry-errors[=TYPES]:
  Once every row has a record, re-send only the rows whose record is an error: by default
  rate_limited, server_error, timeout, connection_error, bad_response; or the comma-separated
  TYPES (any error_type; 'all' for every one; a bad_input row of an unchanged input fails
  again). Each new record supersedes the row's old one (attempts add up); readers through the
  checkpoint (report, export) see one record per row at every instant, and when the pass
  finishes the results are compacted so that plain Parquet readers do too (--no-compact: later,
  with `batchrun compact OUT`). Killed part way, the same command resumes the pass; run again
  after it finished, it retries the errors that remain.

--update:
  After editing, adding or removing rows (or changing the template): rows are matched to the
  records by custom_id (the id column; rows without one by row number). A row whose request
  (url and body as it would be sent) is unchanged keeps its record and is not sent; changed and
  new rows are sent; records of rows no longer in the input leave the results. Without it a
  changed input is refused.

--max-cost:
  A cap on the output's total spend (the sum of cost_usd, as `batchrun report` counts it). Each
  row reserves its worst case before it is sent: its prompt, counted offline (images of unknown
  size at the largest size the model bills), plus its max_tokens / max_completion_tokens x n, or,
  for a row that sets no limit, the model's maximum output (see --max-output-tokens). A row goes
  only if the spend so far plus every reservation in flight stays within USD, else it waits for
  answers to free room; when it cannot fit even alone, the run stops saying what it would cost
  and what to set. A model with no known price cannot be counted: its rows go, with a warning.

exit codes:
  0 finished (failed rows are recorded as errors)   2 bad usage or input, nothing sent
  3 stopped early (Ctrl-C, SIGTERM, refused key, no quota, --max-cost reached), or provider
    batches submitted and not finished yet: run the same command to resume or collect
  4 finished, but rows ended in error (only with --fail-on-errors)
"""
)


_MAX_OUTPUT_HELP = (
    "the most output tokens per choice to assume for a row that sets no output limit "
    "(max_tokens, max_completion_tokens), for --max-cost and the estimate; default: the price "
    "file's max_output_tokens for the model, else its maximum output from batchrun's table of "
    "OpenAI models (gpt-4o 16,384, gpt-4.1 32,768, o-series 100,000, gpt-5 128,000...), "
    "else 32,768"
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="batchrun",
        description="Run bulk requests against OpenAI-compatible APIs: rate-limited, resumable, "
        "results in Parquet.",
    )
    parser.add_argument("--version", action="version", version=f"batchrun {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="send every row of an input file and store the results",
        description="Send every row of INPUT to an OpenAI-compatible API; store one result "
        "record per row in OUT/results/ (Parquet). Safe to interrupt and run again.",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Strings, not Paths: with --ray they may be object-store URIs (s3://bucket/key), which a
    # Path would turn into s3:/bucket/key. RunConfig makes them Paths for a local run.
    run.add_argument("input", help="JSONL, Parquet, or with a template CSV / TSV")
    run.add_argument("--out", required=True, help="output directory (resumable)")
    run.add_argument(
        "--base-url",
        default=None,
        help="API base URL (default: $OPENAI_BASE_URL or https://api.openai.com/v1)",
    )
    run.add_argument(
        "--endpoint",
        default=None,
        help="endpoint for rows that do not name one (default: /v1/chat/completions; "
        "/v1/messages with --backend anthropic-batch)",
    )
    run.add_argument(
        "--api-key-env",
        default=None,
        metavar="NAME",
        help="environment variable holding the API key (default: OPENAI_API_KEY; "
        "ANTHROPIC_API_KEY with --backend anthropic-batch)",
    )
    run.add_argument("--api-key", help=argparse.SUPPRESS)
    run.add_argument(
        "--concurrency", type=positive_int, default=50, help="requests in flight (default: 50)"
    )
    run.add_argument("--rpm", type=positive_float, help="max requests per minute")
    run.add_argument(
        "--tpm",
        type=positive_float,
        help="max tokens per minute (charged: estimated prompt + max output, then corrected)",
    )
    run.add_argument(
        "--max-retries",
        type=non_negative_int,
        default=5,
        help="retries per row for retryable failures (default: 5)",
    )
    run.add_argument(
        "--timeout",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="per-request timeout, from connecting to the last byte of the answer (default: 300)",
    )
    run.add_argument(
        "--http-client",
        choices=HTTP_CLIENTS,
        default="aiohttp",
        help="HTTP engine: aiohttp (default; far less CPU per request at high concurrency) or "
        "httpx2",
    )
    run.add_argument(
        "--flush-rows",
        type=positive_int,
        default=5000,
        help="rows per committed Parquet part (default: 5000)",
    )
    run.add_argument(
        "--flush-interval",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="commit at least this often (default: 10)",
    )
    run.add_argument(
        "--grace",
        type=non_negative_float,
        default=10.0,
        metavar="SECONDS",
        help="on Ctrl-C/SIGTERM, how long requests in flight may finish (default: 10)",
    )
    # Hidden: only for measuring what the journal costs (`bench --only journal`). Without it, a
    # kill -9 or a second Ctrl-C loses the answers that arrived since the last part.
    run.add_argument("--no-journal", action="store_true", help=argparse.SUPPRESS)
    run.add_argument(
        "--max-outage",
        type=non_negative_float,
        default=300.0,
        metavar="SECONDS",
        help="how long to wait out a server that is down before rows fail (default: 300)",
    )
    run.add_argument(
        "--prices",
        type=Path,
        metavar="FILE",
        help="TOML or JSON prices per model (USD per 1M tokens) overriding the database",
    )
    run.add_argument(
        "--max-cost",
        type=positive_float,
        metavar="USD",
        help="a cap on this output's total spend: a row goes only if spent + the worst case "
        "of what is in flight and of the row stays within USD; exit 3, resumable",
    )
    run.add_argument(
        "--max-output-tokens",
        type=positive_int,
        metavar="N",
        help=_MAX_OUTPUT_HELP,
    )
    run.add_argument(
        "--require-quota",
        action="store_true",
        help="refuse to start when the gateway's remaining balance is below the estimate",
    )
    run.add_argument(
        "--no-estimate",
        action="store_true",
        help="skip the token/cost estimate made on a new output's first pass over the input",
    )
    run.add_argument(
        "--max-row-bytes",
        type=positive_int,
        default=16 * 1024 * 1024,
        metavar="BYTES",
        help="a row larger than this is recorded as bad input, not sent (default: 16 MiB)",
    )
    _add_files_root(run)
    run.add_argument(
        "--no-download",
        action="store_true",
        help="keep the media URLs of answers (images) instead of downloading the files; "
        "`batchrun media OUT` can fetch them later, while they last",
    )
    run.add_argument(
        "--fail-on-errors",
        action="store_true",
        help="exit 4 (not 0) when the run finishes with rows recorded as errors, for pipelines",
    )
    run.add_argument(
        "--check-ids-first",
        action="store_true",
        help="read the whole input before sending anything (count rows, check every custom_id, "
        "estimate) and refuse it (exit 2, nothing sent) if a custom_id repeats; by default "
        "that pass runs alongside sending and a repeated id is a bad_input record",
    )
    run.add_argument(
        "--retry-errors",
        nargs="?",
        const="default",
        default=None,
        metavar="TYPES",
        help="once every row has a record, re-send the rows whose record is an error "
        "(default types: rate_limited, server_error, timeout, connection_error, bad_response; "
        "or --retry-errors=TYPE,TYPE or =all); see below",
    )
    run.add_argument(
        "--update",
        action="store_true",
        help="the input (or template) changed since OUT was made: send only the changed and new "
        "rows (matched by custom_id, or by row number where rows have none); records of rows "
        "no longer in the input leave the results",
    )
    run.add_argument(
        "--no-compact",
        action="store_true",
        help="after --retry-errors, leave the superseded records in OUT/results until "
        "`batchrun compact OUT`",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notes")
    batch = run.add_argument_group("provider batch APIs", "see 'provider batch APIs' below")
    batch.add_argument(
        "--backend",
        choices=BACKENDS,
        default="online",
        help="online: send the rows now (default); openai-batch / anthropic-batch: through the "
        "provider's Batch API, at the batch price, done within 24 h",
    )
    batch.add_argument(
        "--wait",
        action="store_true",
        help="with a batch backend: stay until every batch has ended and is collected",
    )
    batch.add_argument(
        "--poll-interval",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="with --wait: how often to ask about the batches (default: 60); for task rows: "
        "the least time between two polls of one task (default: how often the gateway "
        "refreshes task states, 15 s)",
    )
    batch.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        help="at most N rows per batch (default: the provider's limit, 50,000 or 100,000)",
    )
    batch.add_argument("--batch-max-bytes", type=positive_int, help=argparse.SUPPRESS)
    tasks = run.add_argument_group(
        "submit-then-poll tasks",
        "Midjourney, Suno, video and background Responses rows: submitted once, then polled",
    )
    tasks.add_argument(
        "--max-tasks",
        type=positive_int,
        default=100,
        metavar="N",
        help="at most N tasks submitted and not yet finished; a row waits for room before its "
        "submit (default: 100)",
    )
    tasks.add_argument(
        "--task-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="a task not finished this long after its submit ends task_failed (default: 3600 "
        "for Midjourney, 86400 for the others)",
    )
    tasks.add_argument(
        "--resubmit-unknown",
        action="store_true",
        help="send again the rows whose submit may have been accepted (a crash or a timeout "
        "while it was in flight; error submit_unknown): each may be paid twice",
    )
    _add_template_arguments(run, model=True)
    _add_ray_arguments(run)

    mock = commands.add_parser(
        "mock-server",
        help="run the built-in OpenAI-compatible mock server (for demos, tests, benchmarks)",
        description="An OpenAI-compatible mock server on 127.0.0.1, with optional latency, rate "
        "limits and injected failures. No key, no network.",
    )
    from batchrun.mock.cli_args import add_arguments

    add_arguments(mock)
    _add_bill_commands(commands)
    _add_export_command(commands)
    _add_batch_commands(commands)

    compact = commands.add_parser(
        "compact",
        help="rewrite OUT/results as fewer, larger parts holding one record per row",
        description="Rewrite the committed records of OUT as parts of up to --part-rows rows, in "
        "row order, without the records a --retry-errors pass superseded. Atomic: a kill at any "
        "instant leaves a correct, resumable output. Exit 0 done, 2 not an output or locked by "
        "a run.",
    )
    compact.add_argument("out", type=Path, metavar="OUT", help="a run's output directory")
    compact.add_argument(
        "--part-rows",
        type=positive_int,
        default=1_000_000,
        metavar="N",
        help="rows per part (default: 1,000,000)",
    )

    media = commands.add_parser(
        "media",
        help="download the media files a run left as URLs (images), without calling the API",
        description="Fetch every media URL in OUT's answers that has no file yet (a run with "
        "--no-download, or a download that failed) into OUT/media, and record the files in "
        "the results. Only the URLs are fetched (no key is sent); the API is not called.",
    )
    media.add_argument("out", type=Path, metavar="OUT", help="a run's output directory")
    media.add_argument("--timeout", type=float, default=300.0, metavar="S", help="per download")
    return parser


def _add_template_arguments(parser: argparse.ArgumentParser, *, model: bool) -> None:
    group = parser.add_argument_group(
        "templates", "build each request from the columns of a table (see input formats)"
    )
    group.add_argument(
        "--template", type=Path, metavar="FILE", help="TOML or JSON template: endpoint, id, body"
    )
    if model:
        group.add_argument("--model", metavar="M", help="with --prompt: the model of every request")
    group.add_argument(
        "--prompt",
        metavar="TEXT",
        help="instead of a file: the user message, e.g. '{{ question }}' (needs --model)",
    )
    group.add_argument("--system", metavar="TEXT", help="with --prompt: a system message")
    group.add_argument(
        "--max-tokens", type=positive_int, metavar="N", help="with --prompt: max_tokens"
    )
    group.add_argument(
        "--id-column", metavar="NAME", help="the column holding each row's id (custom_id)"
    )


def _add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    ray = parser.add_argument_group("on a Ray cluster (pip install 'batchrun[ray]')")
    ray.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the job on Ray: auto, ray://HOST:PORT, HOST:PORT, or local (a cluster of "
        "this machine's cores); INPUT and --out may then be s3://... or gs://... URIs",
    )
    ray.add_argument(
        "--ray-workers",
        type=positive_int,
        metavar="N",
        help="shard workers, each with --concurrency requests in flight (default: one per CPU)",
    )
    ray.add_argument(
        "--shard-mb",
        type=positive_int,
        default=64,
        metavar="MB",
        help="cut a JSONL input into shards of about MB (Parquet: whole row groups; default: 64)",
    )


def _template(args: argparse.Namespace) -> Template | None:
    """The template the flags give (a file, or the --prompt shortcuts), or None."""
    from batchrun.inputs.template import load_template, shortcut_template

    if args.template is not None and args.prompt is not None:
        raise ValueError("--template and --prompt both say how to build each request; give one")
    extras = [f for f, v in (("--system", args.system), ("--max-tokens", args.max_tokens)) if v]
    if args.template is not None:
        if extras:
            raise ValueError(f"{' and '.join(extras)} {_go(extras)} with --prompt; with "
                             "--template, put them in the template's body")  # fmt: skip
        return load_template(args.template, id_column=args.id_column)
    if args.prompt is not None:
        return shortcut_template(
            model=args.model or "",
            prompt=args.prompt,
            system=args.system,
            max_tokens=args.max_tokens,
            endpoint=args.endpoint,
            id_column=args.id_column,
        )
    if args.id_column is not None:
        extras.append("--id-column")
    if extras:
        raise ValueError(f"{' and '.join(extras)} {_go(extras)} with --prompt or --template")
    return None


def _go(flags: list[str]) -> str:
    return "goes" if len(flags) == 1 else "go"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "mock-server":
        return _mock_server(args)
    if args.command in _BILL_COMMANDS:
        return _BILL_COMMANDS[args.command](args)
    if args.command == "export":
        return _export(args)
    if args.command == "compact":
        return _compact(args)
    if args.command == "media":
        return _media(args)
    return _run(args)


def _backend_defaults(args: argparse.Namespace) -> None:
    """The key, base URL and endpoint a backend's provider has, where the flags give none."""
    import os

    anthropic = getattr(args, "backend", "online") == "anthropic-batch"
    if args.api_key_env is None:
        args.api_key_env = "ANTHROPIC_API_KEY" if anthropic else "OPENAI_API_KEY"
    if anthropic and args.base_url is None:
        args.base_url = os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com/v1"
    if getattr(args, "endpoint", "") is None:
        args.endpoint = "/v1/messages" if anthropic else "/v1/chat/completions"


def _compact(args: argparse.Namespace) -> int:
    from batchrun.runner.export import use_returning_allocator
    from batchrun.store.checkpoint import CheckpointError
    from batchrun.store.compact import compact_output
    from batchrun.store.ordered import ResultsError

    use_returning_allocator()  # 300 MB at 100k records with mimalloc, 206 MB with jemalloc
    try:
        done = compact_output(args.out, part_rows=args.part_rows)
    except (CheckpointError, ResultsError) as exc:
        return _usage_error(str(exc))
    print(
        f"compacted {args.out / 'results'}: {done.parts_before:,} parts into "
        f"{done.parts_after:,}, {done.records:,} records ({done.dropped:,} superseded left out), "
        f"{done.seconds:.1f} s"
    )
    return 0


def _media(args: argparse.Namespace) -> int:
    from batchrun.runner.media import fetch_media_sync
    from batchrun.store.checkpoint import CheckpointError

    try:
        summary = fetch_media_sync(args.out, timeout_s=args.timeout)
    except CheckpointError as exc:
        return _usage_error(str(exc))
    print(f"fetched {summary.files} media files for {summary.rows} rows")
    for failure in summary.failed[:20]:
        print(f"  not fetched: {failure}")
    if len(summary.failed) > 20:
        print(f"  ... and {len(summary.failed) - 20} more")
    return 0


def _run(args: argparse.Namespace) -> int:
    from batchrun.config import RunConfig, default_api_key, default_base_url
    from batchrun.inputs.reader import InputError
    from batchrun.runner.pipeline import run_sync
    from batchrun.runner.preflight import QuotaError
    from batchrun.runner.summary import EXIT_STOPPED, render_summary
    from batchrun.store.checkpoint import CheckpointError
    from batchrun.store.writer import skip_pandas_import

    _log_to_stderr(quiet=args.quiet)
    _backend_defaults(args)

    if args.api_key:
        return _usage_error(
            "--api-key is refused: a key on the command line is visible to every user in `ps` "
            f"and in shell history. Put it in ${args.api_key_env} (or name another variable "
            "with --api-key-env)."
        )
    api_key = default_api_key(args.api_key_env)
    if api_key is None:
        print(
            f"note: ${args.api_key_env} is not set; sending requests without an API key",
            file=sys.stderr,
        )
    if args.model is not None and args.prompt is None:
        return _usage_error(
            "--model goes with --prompt (it is the model of the requests --prompt builds); "
            "with --template, the model is in the template's body"
        )
    try:
        config = RunConfig(
            input_path=args.input,
            template=_template(args),
            out_dir=args.out,
            base_url=args.base_url or default_base_url(),
            api_key=api_key,
            endpoint=args.endpoint,
            concurrency=args.concurrency,
            max_requests_per_minute=args.rpm,
            max_tokens_per_minute=args.tpm,
            max_retries=args.max_retries,
            timeout_s=args.timeout,
            http_client=args.http_client,
            flush_rows=args.flush_rows,
            flush_interval_s=args.flush_interval,
            grace_s=args.grace,
            journal=not args.no_journal,
            max_outage_s=args.max_outage,
            prices_file=args.prices,
            max_cost_usd=args.max_cost,
            max_output_tokens=args.max_output_tokens,
            require_quota=args.require_quota,
            estimate=not args.no_estimate,
            check_ids_first=args.check_ids_first,
            progress=not args.quiet,
            handle_signals=True,
            fail_on_errors=args.fail_on_errors,
            max_row_bytes=args.max_row_bytes,
            backend=args.backend,
            wait=args.wait,
            poll_interval_s=args.poll_interval or 60.0,
            max_tasks=args.max_tasks,
            task_timeout_s=args.task_timeout,
            task_poll_interval_s=args.poll_interval,
            resubmit_unknown=args.resubmit_unknown,
            batch_max_requests=args.batch_size,
            batch_max_bytes=args.batch_max_bytes,
            retry_errors=_retry_types(args.retry_errors),
            compact=not args.no_compact,
            update=args.update,
            files_root=args.files_root,
            download_media=not args.no_download,
        )
        # This process is ours: collect garbage less often. Each request leaves hundreds of
        # short-lived objects; at Python's default gen-0 threshold (700) the collector ran ~850
        # times in a 20,000-request run at 2,000 in flight, 1.7 s of its ~10 s of CPU; at 10,000,
        # ~210 times and 0.45 s.
        gc.set_threshold(10_000, 10, 10)
        skip_pandas_import()
        summary = run_sync(config) if args.ray is None else _run_on_ray(config, args)
    except (ValueError, InputError, CheckpointError) as exc:
        return _usage_error(str(exc))
    except QuotaError as exc:
        print(f"batchrun: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    except KeyboardInterrupt:
        # Only before sending (the run itself turns Ctrl-C into a graceful stop).
        print("\ninterrupted before anything was sent", file=sys.stderr)
        return EXIT_STOPPED
    print(render_summary(summary, command=command_as_typed()))
    return summary.exit_code


def _retry_types(value: str | None) -> tuple[str, ...] | None:
    """`--retry-errors[=TYPES]` as the types to retry (RunConfig checks the names)."""
    from batchrun.models import ERROR_TYPES
    from batchrun.store.rerun import DEFAULT_RETRY_TYPES

    if value is None:
        return None
    if value == "default":
        return DEFAULT_RETRY_TYPES
    if value == "all":
        return ERROR_TYPES
    return tuple(t.strip() for t in value.split(",") if t.strip())


def _run_on_ray(config: RunConfig, args: argparse.Namespace) -> RunSummary:
    try:
        from batchrun.cluster.engine import ClusterSettings, run_on_ray
    except ImportError as exc:
        raise ValueError(f"--ray needs Ray ({exc}): pip install 'batchrun[ray]'") from None
    settings = ClusterSettings(
        address=args.ray,
        input_uri=args.input,
        out_uri=args.out,
        workers=args.ray_workers,
        shard_bytes=args.shard_mb << 20,
    )
    return run_on_ray(config, settings)


def _log_to_stderr(*, quiet: bool) -> None:
    """The library logs notes (estimate, quota, warnings) to the "batchrun" logger; show them."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("batchrun")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def _mock_server(args: argparse.Namespace) -> int:
    from batchrun.mock.cli_args import config_from_args, run

    try:
        config = config_from_args(args)
    except ValueError as exc:
        return _usage_error(str(exc))
    return run(config)


def _usage_error(message: str) -> int:
    print(f"batchrun: error: {message}", file=sys.stderr)
    return EXIT_USAGE


# --- estimate, report, quota ----------------------------------------------------------------

EXIT_KEY_REFUSED = 3

_EXACT_HELP = """\
exact:
  A count is exact when the model's own tiktoken encoding was available offline (o200k_base for
  gpt-4o / 4.1 / 5 / o-series, cl100k_base for gpt-4 / gpt-3.5 / embeddings) and every part of
  the request was counted by OpenAI's published rules (the cookbook's message and tool overheads,
  the vision tile rules); it then matches the prompt_tokens the API reports. Otherwise the
  estimate says "NOT exact" ("exact": false in --json) and why: a fallback encoding, the
  ceil(characters / 4) heuristic for unknown models, images of unknown size (counted as 1024x1024
  high detail), assistant tool calls or nested tool schemas (counted from their JSON text).
"""

_ESTIMATE_EPILOG = (
    _INPUT_HELP
    + """
units:
  tokens: prompt tokens as the API counts them; max output = max_completion_tokens (else
  max_tokens) x n, summed over the rows that set one ("+N no max": rows that set none);
  expected output = F x the row's max, or --output-without-max tokens per choice (embeddings: 0).
  cost: USD at standard rates (no cached-input discount); with --backend openai-batch or
  anthropic-batch, also at that Batch API's rates, side by side (the price database's batch
  price, the price file's batch_input / batch_cached_input / batch_output, else 50% of the
  online price). low = prompt only, expected =
  prompt + expected output, high = prompt + max output. A row with no max may go on as long as
  the model allows: high is then "no upper bound" ("cost_high_is_upper_bound": false in --json),
  and the notes say what --max-cost reserves for such a row (the model's maximum output).
  "unknown" when the model has no price (never shown as $0): add it with --prices.
  price file (TOML, or JSON with the same shape), USD per 1M tokens:
    [models."gpt-4o-mini"]
    input = 0.15
    cached_input = 0.075
    output = 0.60
    max_output_tokens = 16384   # optional; may stand alone to keep the database's prices
    batch_input = 0.075         # optional: Batch API rates (batch_cached_input, batch_output)

"""
    + _EXACT_HELP
    + """
exit codes:
  0 estimated (rows that cannot be sent are counted as bad rows)
  2 the input file or the price file cannot be read, or bad usage
"""
)

_REPORT_EPILOG = """\
units:
  tokens as the server reported them for ok rows (cached is part of prompt, reasoning is part of
  completion); cost in USD, the sum of the cost_usd column ("unknown" when no row had a price);
  latency in milliseconds, the last attempt of ok rows, p50/p90/p99 within 1%; retries = HTTP
  attempts beyond the first. When OUT/estimate.json exists (batchrun estimate --out OUT), the
  estimate is shown next to the actual figures.

exit codes:
  0 reported   2 OUT is missing or holds no results
"""

_QUOTA_EPILOG = """\
units:
  USD. From the one-api / new-api endpoints /v1/dashboard/billing/subscription (hard_limit_usd,
  the total granted; 100000000 or more means unlimited) and /v1/dashboard/billing/usage
  (total_usage, in cents); remaining = granted - used. A server without them (OpenAI itself,
  vLLM, llama.cpp) gives one line saying the quota is unknown.

exit codes:
  0 shown, or unknown for this server   2 bad usage
  3 the server refused the key (HTTP 401), or could not be reached
"""


_MODELS_EPILOG = """\
what it asks:
  GET {base}/models with the key, the same request `batchrun run` makes first to check the key
  and the server. A server that does not list its models (404) is said so; gateways sometimes
  list less than they serve, so a model missing here may still work.

exit codes:
  0 listed, or this server does not list its models   2 bad usage, or the server cannot be
  reached   3 the server refused the key (HTTP 401) or the balance
"""


def _add_files_root(parser: Parser) -> None:
    parser.add_argument(
        "--files-root",
        type=Path,
        metavar="DIR",
        help="where the files that rows upload are read from (transcriptions, image edits); a "
        "path outside it is a bad_input row (default: the input file's folder)",
    )


def _add_bill_commands(commands: argparse._SubParsersAction[Parser]) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    estimate = commands.add_parser(
        "estimate",
        help="count tokens and cost of an input file, offline, before running it",
        description="Count the prompt tokens of every row of INPUT with the model's tokenizer "
        "and estimate output tokens and cost in USD, per model and endpoint. Offline: nothing "
        "is sent.",
        epilog=_ESTIMATE_EPILOG,
        formatter_class=raw,
    )
    estimate.add_argument("input", type=Path, help="JSONL, Parquet, or with a template CSV / TSV")
    estimate.add_argument(
        "--model", metavar="M", help="count and price every row as model M (a what-if)"
    )
    estimate.add_argument(
        "--endpoint",
        default="/v1/chat/completions",
        help="endpoint for rows that do not name one (default: %(default)s)",
    )
    estimate.add_argument(
        "--prices",
        type=Path,
        metavar="FILE",
        help="TOML or JSON price file (USD per 1M tokens) overriding the database per model",
    )
    estimate.add_argument("--json", action="store_true", help="print one JSON document")
    estimate.add_argument(
        "--backend",
        choices=BACKENDS,
        default="online",
        help="also price the rows at this provider Batch API's rates, beside the online ones "
        "(default: online only)",
    )
    estimate.add_argument(
        "--expected-output-fraction",
        type=fraction,
        default=0.5,
        metavar="F",
        help="expected output tokens as a share of each row's max (default: %(default)s)",
    )
    estimate.add_argument(
        "--output-without-max",
        type=non_negative_int,
        default=256,
        metavar="N",
        help="expected output tokens per choice of a row that sets no max (default: 256)",
    )
    estimate.add_argument(
        "--max-output-tokens", type=positive_int, metavar="N", help=_MAX_OUTPUT_HELP
    )
    estimate.add_argument(
        "--out", type=Path, help="also save OUT/estimate.json, for `batchrun report OUT`"
    )
    _add_files_root(estimate)
    # --model is already the what-if above; with --prompt it is also the body's model, which
    # counts and prices the same.
    _add_template_arguments(estimate, model=False)

    report = commands.add_parser(
        "report",
        help="rows, errors, tokens, cost and latency of a run's results",
        description="Sum up OUT/results: rows ok and in error, tokens by kind, cost by model, "
        "latency percentiles, retries, and estimate vs actual when OUT/estimate.json exists.",
        epilog=_REPORT_EPILOG,
        formatter_class=raw,
    )
    report.add_argument(
        "out", type=_out_arg, metavar="OUT", help="a run's output directory (or --ray's s3://...)"
    )
    report.add_argument("--json", action="store_true", help="print one JSON document")

    quota = commands.add_parser(
        "quota",
        help="the API key's granted, used and remaining balance on a one-api gateway",
        description="Ask a one-api / new-api gateway (APICore and most resellers) for the "
        "key's granted, used and remaining balance in USD.",
        epilog=_QUOTA_EPILOG,
        formatter_class=raw,
    )
    quota.add_argument(
        "--base-url",
        default=None,
        help="API base URL (default: $OPENAI_BASE_URL or https://api.openai.com/v1)",
    )
    quota.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        metavar="NAME",
        help="environment variable holding the API key (default: %(default)s)",
    )
    quota.add_argument("--json", action="store_true", help="print one JSON document")

    models = commands.add_parser(
        "models",
        help="the models the server lists for the API key (GET /v1/models)",
        description="Ask the server which models it lists for the key: one name per line.",
        epilog=_MODELS_EPILOG,
        formatter_class=raw,
    )
    models.add_argument(
        "--base-url",
        default=None,
        help="API base URL (default: $OPENAI_BASE_URL or https://api.openai.com/v1)",
    )
    models.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        metavar="NAME",
        help="environment variable holding the API key (default: %(default)s)",
    )
    models.add_argument("--json", action="store_true", help="print one JSON document")


def _estimate(args: argparse.Namespace) -> int:
    from batchrun.cost.estimate import estimate_file, save_estimate
    from batchrun.cost.pricebook import PriceBook
    from batchrun.cost.tokens import OutputRule
    from batchrun.inputs.reader import InputError
    from batchrun.runner.render import render_estimate

    try:
        rule = OutputRule(
            fraction_of_max=args.expected_output_fraction,
            tokens_without_max=args.output_without_max,
        )
        # PriceFileError is a ValueError
        prices = PriceBook.load(args.prices, max_output_tokens=args.max_output_tokens)
        batch = args.backend != "online"
        estimate = estimate_file(
            args.input,
            endpoint=args.endpoint,
            prices=prices,
            model_override=args.model,
            rule=rule,
            template=_template(args),
            batch_prices=PriceBook.load(
                args.prices, max_output_tokens=args.max_output_tokens, batch=True
            )
            if batch
            else None,
            batch_backend=args.backend if batch else None,
            files_root=_files_root(args.files_root),
        )
    except (InputError, ValueError) as exc:
        return _usage_error(str(exc))
    if args.out is not None:
        try:
            saved = save_estimate(args.out, estimate)
        except OSError as exc:
            return _usage_error(f"cannot save the estimate in {args.out}: {exc}")
        print(f"estimate saved to {saved}", file=sys.stderr)
    print((estimate.to_json() if args.json else render_estimate(estimate)).rstrip("\n"))
    return 0


def _files_root(path: Path | None) -> Path | None:
    if path is not None and not path.is_dir():
        raise ValueError(f"--files-root is not a folder: {path}")
    return path


def _out_arg(value: str) -> Path | str:
    """OUT of `report` / `export`: a directory, or a cluster output's object-store URI (kept a
    string: a Path would turn s3://bucket/key into s3:/bucket/key)."""
    from batchrun.store.remote import is_remote

    return value if is_remote(value) else Path(value)


def _report(args: argparse.Namespace) -> int:
    from batchrun.cost.report import ReportError, build_report
    from batchrun.runner.render import render_report

    try:
        report = build_report(args.out)
    except ReportError as exc:
        return _usage_error(str(exc))
    print((report.to_json() if args.json else render_report(report)).rstrip("\n"))
    return 0


def _server_and_key(args: argparse.Namespace) -> tuple[str, str | None]:
    """`quota` and `models`: the base URL (ValueError for a full endpoint) and the key, with a
    note when the key's variable is not set."""
    from batchrun.config import check_base_url, default_api_key, default_base_url

    base_url = args.base_url or default_base_url()
    check_base_url(base_url)
    api_key = default_api_key(args.api_key_env)
    if api_key is None:
        print(f"note: ${args.api_key_env} is not set; asking without an API key", file=sys.stderr)
    return base_url, api_key


def _quota(args: argparse.Namespace) -> int:
    from batchrun.common.errors import FatalRunError
    from batchrun.cost.quota import Unreachable, fetch_quota_sync, render_quota

    try:
        base_url, api_key = _server_and_key(args)
    except ValueError as exc:
        return _usage_error(str(exc))
    try:
        quota = fetch_quota_sync(base_url, api_key)
    except FatalRunError as exc:
        print(f"batchrun: error: {exc.message}", file=sys.stderr)
        return EXIT_KEY_REFUSED
    print(render_quota(quota, base_url, as_json=args.json))
    return EXIT_KEY_REFUSED if isinstance(quota, Unreachable) else 0


def _models(args: argparse.Namespace) -> int:
    import json

    from batchrun.common.errors import FatalRunError
    from batchrun.common.urls import join_url
    from batchrun.send.http import TransportError
    from batchrun.send.models import MODELS_PATH, list_models_sync

    try:
        base_url, api_key = _server_and_key(args)
    except ValueError as exc:
        return _usage_error(str(exc))
    try:
        found = list_models_sync(base_url, api_key)
    except FatalRunError as exc:
        print(f"batchrun: error: {exc.message}", file=sys.stderr)
        return EXIT_KEY_REFUSED
    except TransportError as exc:
        return _usage_error(f"{exc.message} (GET {join_url(base_url, MODELS_PATH)})")
    models = sorted(found.models) if found.models is not None else None
    if args.json:
        print(json.dumps({"base_url": base_url, "listed": models is not None, "models": models}))
    elif models is None:
        print(f"models: {found.url} does not list its models (HTTP {found.status})")
    else:
        print("\n".join(models) if models else f"models: {found.url} lists none")
    return 0


# --- export -----------------------------------------------------------------------------------

_EXPORT_EPILOG = """\
formats (--format, else from the suffix of --to):
  parquet, csv, jsonl  one row per input row, in input order: row, custom_id, the input's
      columns, then status (ok, error, or pending: no result yet), text, tool_calls (JSON),
      finish_reason, model, the token counts, cost_usd, error_type, error_message,
      http_status, attempts, latency_ms, endpoint. An input column whose name a result column
      has is renamed input.NAME. The input's columns: a CSV / TSV / Parquet / JSONL of records
      (a run with a template) gives all its own; a file of requests gives model (the body's)
      and prompt (the text of the last user message, or the body's input / prompt).
  openai-batch  the lines OpenAI's Batch API writes: ok rows to --to, the others to the error
      file (--errors-to, default: --to with _errors before the suffix), each
      {"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}.
      request_id is null (batchrun does not keep response headers); error is
      {"code": error_type, "message": error_message} on every error line.

The input joined (--join, default: the path the run was given) must be the same file, checked
by its fingerprint: another file would pair rows with the wrong results.

An export reads only the results a run has committed, so it may run while `batchrun run` is
still writing to OUT. It writes --to under a temporary name beside it and renames it when done.

exit codes:
  0 exported   2 bad usage, OUT has no results, the input changed or is missing, --to exists
  3 interrupted (Ctrl-C): nothing was written
"""


def _add_export_command(commands: argparse._SubParsersAction[Parser]) -> None:
    from batchrun.runner.export import EXPORT_FORMATS

    export = commands.add_parser(
        "export",
        help="write the results joined to the input (Parquet, CSV, JSONL) or as OpenAI Batch "
        "output",
        description="Write OUT's results next to the input's columns, one row per input row "
        "in input order, or in the OpenAI Batch API's output format.",
        epilog=_EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument(
        "out", type=_out_arg, metavar="OUT", help="a run's output directory (or --ray's s3://...)"
    )
    export.add_argument("--to", type=Path, required=True, metavar="FILE", help="the file to write")
    export.add_argument("--format", choices=EXPORT_FORMATS, help="default: from the suffix of --to")
    export.add_argument(
        "--join",
        type=Path,
        metavar="INPUT",
        help="the run's input file (default: the path the run was given)",
    )
    export.add_argument(
        "--no-join", action="store_true", help="the result columns alone, without the input's"
    )
    export.add_argument(
        "--errors-to",
        type=Path,
        metavar="FILE",
        help="openai-batch: the error file (default: --to with _errors before the suffix)",
    )
    export.add_argument("--force", action="store_true", help="replace --to if it exists")
    export.add_argument("-q", "--quiet", action="store_true", help="no summary line")


def _export(args: argparse.Namespace) -> int:
    from batchrun.runner.export import ExportConfig, ExportError, export, use_returning_allocator
    from batchrun.runner.render import render_export
    from batchrun.runner.summary import EXIT_STOPPED

    try:
        config = ExportConfig(
            out_dir=args.out,
            to=args.to,
            format=args.format,
            join=args.join,
            no_join=args.no_join,
            errors_to=args.errors_to,
            force=args.force,
        )
        use_returning_allocator()  # this process is ours
        summary = export(config)
    except (ValueError, ExportError) as exc:
        return _usage_error(str(exc))
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was written", file=sys.stderr)
        return EXIT_STOPPED
    if not args.quiet:
        print(render_export(summary))
    return 0


# --- status, cancel (provider batch APIs) ----------------------------------------------------

_STATUS_EPILOG = """\
stages (from OUT/batches/journal.jsonl): packed (written, not sent), uploading / uploaded,
creating, submitted (the batch exists), ended, collected (its records are in OUT/results),
abandoned (its rows went back to pending: a batch that failed validation, a lost chunk file).
provider status and requests: as the provider says now (without --offline, for the batches in
flight), else as the last run saw them.

exit codes:
  0 shown   2 OUT has no provider batches, or bad usage   3 a provider could not be asked
"""

_CANCEL_EPILOG = """\
Asks the provider to cancel every batch of OUT that has not ended. What completed is kept: run
the same `batchrun run` command again to collect it; rows that never ran become batch_cancelled
records. OpenAI takes up to 10 minutes to cancel (status cancelling). If a run is still
submitting batches, stop it first (Ctrl-C), or it may submit more.

exit codes:
  0 asked   2 OUT has no provider batches, or bad usage   3 a provider refused or could not be
  asked
"""


def _add_batch_commands(commands: argparse._SubParsersAction[Parser]) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    status = commands.add_parser(
        "status",
        help="the provider batches of a run's output: each one's state and request counts",
        description="Show each provider batch of OUT (--backend openai-batch / "
        "anthropic-batch): its stage, the provider's status and request counts.",
        epilog=_STATUS_EPILOG,
        formatter_class=raw,
    )
    cancel = commands.add_parser(
        "cancel",
        help="cancel the provider batches of a run's output that have not ended",
        description="Cancel every provider batch of OUT that is still running; keep what "
        "completed.",
        epilog=_CANCEL_EPILOG,
        formatter_class=raw,
    )
    for parser in (status, cancel):
        parser.add_argument("out", type=Path, metavar="OUT", help="a run's output directory")
        parser.add_argument(
            "--base-url", default=None, help="API base URL (default: the one the run used)"
        )
        parser.add_argument(
            "--api-key-env",
            default=None,
            metavar="NAME",
            help="environment variable holding the API key (default: OPENAI_API_KEY; "
            "ANTHROPIC_API_KEY for anthropic-batch)",
        )
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.add_argument(
        "--offline", action="store_true", help="ask no provider: what the last run saw"
    )


def _key_for(args: argparse.Namespace) -> Callable[[str], str | None]:
    from batchrun.config import default_api_key

    def key_for(backend: str) -> str | None:
        name = args.api_key_env or (
            "ANTHROPIC_API_KEY" if backend == "anthropic-batch" else "OPENAI_API_KEY"
        )
        return default_api_key(name)

    return key_for


def _status(args: argparse.Namespace) -> int:
    import functools

    import anyio

    from batchrun.runner.batch_commands import render_status, status_of
    from batchrun.store.checkpoint import CheckpointError

    try:
        report = anyio.run(
            functools.partial(
                status_of,
                args.out,
                key_for=_key_for(args),
                base_url=args.base_url,
                refresh=not args.offline,
            )
        )
    except (FileNotFoundError, CheckpointError) as exc:
        return _usage_error(str(exc))
    print((report.to_json() if args.json else render_status(report)).rstrip("\n"))
    return EXIT_KEY_REFUSED if any(v.error for v in report.batches) else 0


def _cancel(args: argparse.Namespace) -> int:
    import functools

    import anyio

    from batchrun.runner.batch_commands import cancel_batches
    from batchrun.store.checkpoint import Checkpoint, CheckpointError

    try:
        views = anyio.run(
            functools.partial(
                cancel_batches, args.out, key_for=_key_for(args), base_url=args.base_url
            )
        )
    except (FileNotFoundError, CheckpointError) as exc:
        return _usage_error(str(exc))
    if not views:
        print(f"{args.out}: no batch is running; nothing to cancel")
        return 0
    for view in views:
        state = f"error: {view.error}" if view.error else view.status
        print(f"batch {view.batch_id} (chunk {view.chunk}, {view.rows:,} rows): {state}")
    checkpoint = Checkpoint.load(args.out)
    source = checkpoint.input_path if checkpoint else "INPUT"
    print(
        f"what completed is kept: run `batchrun run {source} --out {args.out} --backend "
        f"{views[0].backend}` (as before) to collect it"
    )
    return EXIT_KEY_REFUSED if any(v.error for v in views) else 0


_BILL_COMMANDS = {
    "estimate": _estimate,
    "report": _report,
    "quota": _quota,
    "models": _models,
    "status": _status,
    "cancel": _cancel,
}
