"""The mock server's settings: one frozen value, checked when it is made.

A bad value raises ValueError naming the field, so a typo fails at construction, not as a
puzzling behaviour halfway through a test run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from batchrun.mock.faults import validate_fault_table

__all__ = ["DEFAULT_MODELS", "MockConfig"]

DEFAULT_MODELS: tuple[str, ...] = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-mini",
    "gpt-5-mini",
    "o3-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    # The other families it serves, as a gateway lists them.
    "gpt-3.5-turbo-instruct",
    "o3-pro",
    "tts-1",
    "tts-1-hd",
    "whisper-1",
    "dall-e-2",
    "dall-e-3",
    "gpt-image-1",
    "claude-sonnet-4-5",
    "gemini-2.5-flash",
)


@dataclass(frozen=True, kw_only=True, slots=True)
class MockConfig:
    """How the mock behaves.

    host, port: where to listen (port 0 picks a free port).
    latency_ms, jitter_ms: each API answer waits latency_ms plus a uniform 0..jitter_ms.
    rpm, tpm, burst_s: optional OpenAI-style limits (see `batchrun.mock.ratelimit`).
    cotenant_drain, cotenant_share: a second client on the same key that has left the limits'
        buckets empty at start, and keeps taking this share (0 <= share < 1) of every refill.
    faults, seed: probability of each injected fault kind (see `batchrun.mock.faults`), and the
        seed of the random draws (faults and jitter) so a run can be replayed.
    api_key: if set, requests must carry `Authorization: Bearer <api_key>`; never shown in repr.
    billing, quota_usd, used_usd: the one-api quota endpoints; billing=False answers them 404.
    reply_tokens: visible completion tokens per choice (a body's `mock_reply_tokens` overrides).
    reasoning_tokens: hidden tokens per choice that o-series / gpt-5 models report.
    embedding_dim: length of the (fake) embedding vectors.
    fault_retry_after_ms: the `retry-after-ms` of the injected "429" fault.
    models: what `GET /v1/models` lists (any model name is accepted in requests).
    record_bodies: keep the raw bytes of every API request body, for `MockServer.bodies()`
        (tests that check what arrived byte for byte); memory grows with the requests, so off
        by default.
    exact_tokens: count prompt tokens as OpenAI does, with the tokenizers `batchrun estimate`
        uses (batchrun.cost.tokens: tiktoken, the cookbook's overheads, image tiles); off, the
        cheap ~4-characters-a-token rule (a few us per request instead of 5-60).
    echo: every chat reply repeats the last user message, so a join of input and results is
        visibly right (a body's `"mock_echo": true` asks for it per request).
    list_models: False answers `GET /v1/models` with 404, as a server that does not list them.
    batch_phase_s: how long each state of a provider batch lasts (OpenAI: validating,
        in_progress, finalizing; Anthropic: in_progress twice as long), see `batchrun.mock.batches`.
    batch_latency_ms: the delay of every Batch API answer (files, batches, message batches).
    batch_faults: operation -> N: the first N calls of that Batch API operation (upload,
        create, get, list, content, cancel, results) are carried out, then their connection is
        dropped before the answer (`batchrun.mock.batch_api`).
    media_url_ttl_s: how long the image URLs the mock hands out stay valid (DALL-E's: 60 min).
    media_redirect_base: if set (`http://host:port`), the mock's media route redirects every
        download there (a CDN on another host), where another mock serves the same names.
    task_refresh_s: the task families (Midjourney, Suno, video, Responses background) show a
        task's state as of the last refresh tick, every this many seconds, as new-api does (15).
    task_duration_s: how long a task runs once submitted, drawn uniformly from (min, max); a
        single number means exactly that long (see `batchrun.mock.tasks`).
    """

    host: str = "127.0.0.1"
    port: int = 0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rpm: int | None = None
    tpm: int | None = None
    burst_s: float = 1.0
    cotenant_drain: bool = False
    cotenant_share: float = 0.0
    faults: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    api_key: str | None = field(default=None, repr=False)
    billing: bool = True
    quota_usd: float = 100.0
    used_usd: float = 0.0
    reply_tokens: int = 16
    reasoning_tokens: int = 64
    embedding_dim: int = 8
    fault_retry_after_ms: int = 1000
    models: tuple[str, ...] = DEFAULT_MODELS
    record_bodies: bool = False
    exact_tokens: bool = False
    echo: bool = False
    list_models: bool = True
    batch_phase_s: float = 1.0
    batch_latency_ms: float = 0.0
    batch_faults: Mapping[str, int] = field(default_factory=dict)
    media_url_ttl_s: float = 3600.0
    media_redirect_base: str | None = None
    task_refresh_s: float = 15.0
    task_duration_s: float | tuple[float, float] = (30.0, 120.0)

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError("MockConfig.host must be a non-empty string")
        _check_int("port", self.port, 0, 65535)
        for name in ("latency_ms", "jitter_ms", "quota_usd", "used_usd", "batch_latency_ms"):
            _check_float(name, getattr(self, name), allow_zero=True)
        _check_float("burst_s", self.burst_s, allow_zero=False)
        _check_float("batch_phase_s", self.batch_phase_s, allow_zero=False)
        _check_batch_faults(self.batch_faults)
        object.__setattr__(self, "batch_faults", MappingProxyType(dict(self.batch_faults)))
        if not isinstance(self.cotenant_drain, bool):
            raise ValueError("MockConfig.cotenant_drain must be a bool")
        _check_float("cotenant_share", self.cotenant_share, allow_zero=True)
        if self.cotenant_share >= 1:
            raise ValueError(
                f"MockConfig.cotenant_share must be below 1 (a share of the refill), "
                f"got {self.cotenant_share}"
            )
        for name in ("rpm", "tpm"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1, None)
        _check_int("seed", self.seed, None, None)
        if self.api_key is not None and (
            not isinstance(self.api_key, str)
            or not self.api_key
            or any(c.isspace() or not c.isprintable() for c in self.api_key)
        ):
            raise ValueError("MockConfig.api_key must be a non-empty string without spaces")
        for name in ("billing", "list_models", "record_bodies", "exact_tokens", "echo"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"MockConfig.{name} must be a bool")
        _check_int("reply_tokens", self.reply_tokens, 0, None)
        _check_int("reasoning_tokens", self.reasoning_tokens, 0, None)
        _check_int("embedding_dim", self.embedding_dim, 1, 4096)
        _check_int("fault_retry_after_ms", self.fault_retry_after_ms, 0, None)
        if (
            not isinstance(self.models, tuple)
            or not self.models
            or not all(isinstance(m, str) and m for m in self.models)
        ):
            raise ValueError("MockConfig.models must be a non-empty tuple of model names")
        _check_float("task_refresh_s", self.task_refresh_s, allow_zero=False)
        object.__setattr__(self, "task_duration_s", _duration_range(self.task_duration_s))
        table = validate_fault_table(self.faults, field="MockConfig.faults")
        # Frozen means frozen: nobody can change the faults through the caller's dict later.
        object.__setattr__(self, "faults", MappingProxyType(table))


def _duration_range(value: object) -> tuple[float, float]:
    """`30` -> (30.0, 30.0); `(30, 120)` as given, checked."""
    pair = value if isinstance(value, tuple | list) else (value, value)
    if len(pair) != 2:
        raise ValueError(
            f"MockConfig.task_duration_s must be a number or (min, max), got {value!r}"
        )
    for bound in pair:
        _check_float("task_duration_s", bound, allow_zero=True)
    low, high = float(pair[0]), float(pair[1])
    if low > high:
        raise ValueError(f"MockConfig.task_duration_s: min {low:g} is above max {high:g}")
    return low, high


def _check_batch_faults(faults: object) -> None:
    from batchrun.mock.batch_api import BATCH_FAULT_OPERATIONS

    if not isinstance(faults, Mapping):
        raise ValueError("MockConfig.batch_faults must be a mapping of operation -> count")
    for operation, count in faults.items():
        if operation not in BATCH_FAULT_OPERATIONS:
            raise ValueError(
                f"MockConfig.batch_faults: unknown operation {operation!r}; known: "
                f"{', '.join(BATCH_FAULT_OPERATIONS)}"
            )
        _check_int(f"batch_faults[{operation!r}]", count, 0, None)


def _check_int(name: str, value: object, low: int | None, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"MockConfig.{name} must be an integer, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"MockConfig.{name} must be {bounds}, got {value}")


def _check_float(name: str, value: object, *, allow_zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"MockConfig.{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"MockConfig.{name} must be {'>=' if allow_zero else '>'} 0, got {value}")
