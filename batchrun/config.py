"""The settings of one run, validated when they are made.

`base_url` and `api_key` default to `$OPENAI_BASE_URL` and `$OPENAI_API_KEY`, read when the
config is made, as the CLI and the OpenAI SDK read them; a value given explicitly (even
`api_key=None`: no key) wins. With `backend="anthropic-batch"` give both (the CLI defaults them to
`$ANTHROPIC_BASE_URL` or https://api.anthropic.com/v1, and `$ANTHROPIC_API_KEY`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from batchrun.common.urls import endpoint_in_base_url
from batchrun.endpoints.batch_wire import BACKEND_LIMITS
from batchrun.inputs.idtable import MAX_TABLE_ROWS
from batchrun.inputs.reader import DEFAULT_ENDPOINT, DEFAULT_MAX_ROW_BYTES
from batchrun.inputs.shards import RowSpan
from batchrun.inputs.template import Template
from batchrun.models import ERROR_TYPES

__all__ = [
    "API_KEY_ENV",
    "BACKENDS",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "HTTP_CLIENTS",
    "RunConfig",
    "check_base_url",
    "default_api_key",
    "default_base_url",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
BASE_URL_ENV = "OPENAI_BASE_URL"
API_KEY_ENV = "OPENAI_API_KEY"
HTTP_CLIENTS = ("aiohttp", "httpx2")
# The online pool, or a provider's Batch API (batchrun.runner.batches): the same rows and results.
BACKENDS = ("online", "openai-batch", "anthropic-batch")


def default_base_url() -> str:
    """`$OPENAI_BASE_URL`, else OpenAI's: the one rule the CLI and `RunConfig` share."""
    return os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL


def default_api_key(variable: str = API_KEY_ENV) -> str | None:
    """The key in `$variable` (`$OPENAI_API_KEY`), None when unset or empty."""
    return os.environ.get(variable) or None


@dataclass(frozen=True, kw_only=True, slots=True)
class RunConfig:
    input_path: Path
    out_dir: Path
    base_url: str = field(default_factory=default_base_url)
    api_key: str | None = field(default_factory=default_api_key, repr=False)
    endpoint: str = DEFAULT_ENDPOINT
    template: Template | None = None  # rows are records that fill it (inputs.template)
    concurrency: int = 50
    max_requests_per_minute: float | None = None
    max_tokens_per_minute: float | None = None
    burst_s: float = 1.0
    max_retries: int = 5
    timeout_s: float = 300.0
    http_client: str = "aiohttp"  # or "httpx2" (see batchrun.send.http)
    max_outage_s: float = 300.0
    flush_rows: int = 5000
    flush_interval_s: float = 10.0
    grace_s: float = 10.0
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES
    # Files rows upload are read only from inside it; None: the input file's folder.
    files_root: Path | None = None
    # Fetch the media URLs in answers (images) as they arrive; False keeps only the URLs.
    download_media: bool = True
    prices_file: Path | None = None
    max_cost_usd: float | None = None
    # The output ceiling --max-cost assumes for a row that sets no output limit; None: the
    # model's maximum output (batchrun.cost.ceilings, or the price file's max_output_tokens).
    max_output_tokens: int | None = None
    estimate: bool = True
    check_quota: bool = True
    require_quota: bool = False
    # Read the whole input before sending (count, check every custom_id, estimate), refusing an
    # input with a repeated custom_id; otherwise that pass runs alongside sending.
    check_ids_first: bool = False
    # Rows whose custom_ids the reader checks itself, in memory (~25 bytes each: ~10 MB here);
    # rows past it wait for the first pass's check on disk if they get there before it ends.
    # 786,432 (~20 MB) made peak RSS 1.14x at 1M rows against 100k in `make bench`; this is
    # still more rows than a sender at 2,500 req/s sends while the pass reads 6M rows.
    id_horizon_rows: int = 393_216
    # Inputs of at least this size (compressed ones: an eighth of it) get their first pass in a
    # process of its own at low priority; smaller ones in a thread, over in well under a second.
    first_pass_process_bytes: int = 8 << 20
    progress: bool = False
    handle_signals: bool = False
    fail_on_errors: bool = False  # exit code 4 when the finished output holds error records
    backend: str = "online"  # or a provider's Batch API: BACKENDS
    wait: bool = False  # batch backends: stay until every batch has ended and is collected
    poll_interval_s: float = 60.0  # batch backends: how often --wait asks about the batches
    # Batch backends: at most this many requests / bytes per batch (None: the provider's limit).
    batch_max_requests: int | None = None
    batch_max_bytes: int | None = None
    # Submit-then-poll task rows (batchrun.runner.tasks): at most max_tasks submitted and not
    # yet finished; a task fails past task_timeout_s, is polled at most every
    # task_poll_interval_s (None: the family's own figures); rows whose submit may have been
    # accepted are sent again only with resubmit_unknown.
    max_tasks: int = 100
    task_timeout_s: float | None = None
    task_poll_interval_s: float | None = None
    resubmit_unknown: bool = False
    # The write-ahead journal (batchrun.store.journal). Off only to measure what it costs (the
    # hidden --no-journal): then a kill -9 or a second Ctrl-C loses the answers that arrived
    # since the last part.
    journal: bool = True
    # Once the output is finished, re-send the rows whose record is an error of these types
    # (batchrun.runner.rerun); None: do not.
    retry_errors: tuple[str, ...] | None = None
    # After a retry pass, rewrite the parts without the superseded records (batchrun compact).
    compact: bool = True
    # A changed input (or template, endpoint) is matched to the output's records by custom_id
    # and only its changed and new rows are sent (batchrun.runner.update), instead of refused.
    update: bool = False
    # Only these rows of the input: one shard of a cluster run (batchrun.cluster), which gives
    # each shard an out_dir of its own.
    rows: RowSpan | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_path", Path(self.input_path))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        _positive("concurrency", self.concurrency)
        if self.http_client not in HTTP_CLIENTS:
            raise ValueError(
                f"http_client must be one of {', '.join(HTTP_CLIENTS)}, not {self.http_client!r}"
            )
        _positive("flush_rows", self.flush_rows)
        _positive("timeout_s", self.timeout_s)
        _positive("flush_interval_s", self.flush_interval_s)
        _positive("burst_s", self.burst_s)
        _positive("max_row_bytes", self.max_row_bytes)
        _positive("id_horizon_rows", self.id_horizon_rows)
        _non_negative("first_pass_process_bytes", self.first_pass_process_bytes)
        if self.id_horizon_rows > MAX_TABLE_ROWS:
            raise ValueError(f"id_horizon_rows must be at most {MAX_TABLE_ROWS:,}")
        _non_negative("max_retries", self.max_retries)
        _non_negative("grace_s", self.grace_s)
        _non_negative("max_outage_s", self.max_outage_s)
        if self.max_requests_per_minute is not None:
            _positive("max_requests_per_minute", self.max_requests_per_minute)
        if self.max_cost_usd is not None:
            _positive("max_cost_usd", self.max_cost_usd)
        _positive("max_tasks", self.max_tasks)
        for name in ("task_timeout_s", "task_poll_interval_s"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if self.max_output_tokens is not None:
            if isinstance(self.max_output_tokens, bool) or not isinstance(
                self.max_output_tokens, int
            ):
                raise ValueError(
                    f"max_output_tokens must be a whole number, got {self.max_output_tokens!r}"
                )
            _positive("max_output_tokens", self.max_output_tokens)
        if self.files_root is not None:
            object.__setattr__(self, "files_root", Path(self.files_root))
            if not self.files_root.is_dir():
                raise ValueError(f"files_root (--files-root) is not a folder: {self.files_root}")
        if self.prices_file is not None:
            object.__setattr__(self, "prices_file", Path(self.prices_file))
        if self.max_tokens_per_minute is not None:
            _positive("max_tokens_per_minute", self.max_tokens_per_minute)
        if self.template is not None and not isinstance(self.template, Template):
            raise ValueError(
                "template must be a Template (batchrun.load_template or shortcut_template), "
                f"got {type(self.template).__name__}"
            )
        if self.retry_errors is not None:
            object.__setattr__(self, "retry_errors", tuple(self.retry_errors))
            unknown = [t for t in self.retry_errors if t not in ERROR_TYPES]
            if unknown or not self.retry_errors:
                raise ValueError(
                    f"retry_errors (--retry-errors) names no error type batchrun records: "
                    f"{', '.join(map(repr, unknown)) or 'none given'}; the types are "
                    f"{', '.join(ERROR_TYPES)}"
                )
        if self.rows is not None and not isinstance(self.rows, RowSpan):
            raise ValueError(f"rows must be a RowSpan, got {type(self.rows).__name__}")
        if not self.endpoint.startswith("/"):
            raise ValueError(
                f"endpoint must be a path such as /v1/chat/completions: {self.endpoint!r}"
            )
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://: {self.base_url!r}")
        check_base_url(self.base_url)
        self._check_backend()

    def _check_backend(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        _positive("poll_interval_s", self.poll_interval_s)
        limits = BACKEND_LIMITS.get(self.backend)
        for name, most in (
            ("batch_max_requests", limits.max_requests if limits else None),
            ("batch_max_bytes", limits.max_bytes if limits else None),
        ):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
            _positive(name, value)
            if most is not None and value > most:
                raise ValueError(
                    f"{name} must be at most {most:,}, the {self.backend} limit, got {value:,}"
                )

    @property
    def effective_endpoint(self) -> str:
        """Where rows without a url of their own go: the template's endpoint, else `endpoint`."""
        if self.template is not None and self.template.endpoint is not None:
            return self.template.endpoint
        return self.endpoint


def check_base_url(base_url: str) -> None:
    """Refuse a full endpoint given as the base URL: every row would be a 404 "Invalid URL"."""
    found = endpoint_in_base_url(base_url)
    if found is not None:
        endpoint, base = found
        raise ValueError(
            f"base_url (--base-url) {base_url} ends with the endpoint {endpoint}: give the API's "
            f"base URL, {base}; batchrun adds the endpoint (--endpoint, or each row's url)"
        )


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be zero or more, got {value!r}")
