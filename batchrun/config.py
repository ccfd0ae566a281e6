"""The settings of one run, validated when they are made.

`base_url` and `api_key` default to `$OPENAI_BASE_URL` and `$OPENAI_API_KEY`, read when the
config is made, as the CLI and the OpenAI SDK read them; a value given explicitly (even
`api_key=None`: no key) wins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from batchrun.common.urls import endpoint_in_base_url
from batchrun.inputs.reader import DEFAULT_ENDPOINT, DEFAULT_MAX_ROW_BYTES
from batchrun.inputs.shards import RowSpan
from batchrun.inputs.template import Template

__all__ = [
    "API_KEY_ENV",
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
    prices_file: Path | None = None
    max_cost_usd: float | None = None
    # The output ceiling --max-cost assumes for a row that sets no output limit; None: the
    # model's maximum output (batchrun.cost.ceilings, or the price file's max_output_tokens).
    max_output_tokens: int | None = None
    estimate: bool = True
    check_quota: bool = True
    require_quota: bool = False
    progress: bool = False
    handle_signals: bool = False
    fail_on_errors: bool = False  # exit code 4 when the finished output holds error records
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
        _non_negative("max_retries", self.max_retries)
        _non_negative("grace_s", self.grace_s)
        _non_negative("max_outage_s", self.max_outage_s)
        if self.max_requests_per_minute is not None:
            _positive("max_requests_per_minute", self.max_requests_per_minute)
        if self.max_cost_usd is not None:
            _positive("max_cost_usd", self.max_cost_usd)
        if self.max_output_tokens is not None:
            if isinstance(self.max_output_tokens, bool) or not isinstance(
                self.max_output_tokens, int
            ):
                raise ValueError(
                    f"max_output_tokens must be a whole number, got {self.max_output_tokens!r}"
                )
            _positive("max_output_tokens", self.max_output_tokens)
        if self.prices_file is not None:
            object.__setattr__(self, "prices_file", Path(self.prices_file))
        if self.max_tokens_per_minute is not None:
            _positive("max_tokens_per_minute", self.max_tokens_per_minute)
        if self.template is not None and not isinstance(self.template, Template):
            raise ValueError(
                "template must be a Template (batchrun.load_template or shortcut_template), "
                f"got {type(self.template).__name__}"
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
