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
)


@dataclass(frozen=True, kw_only=True, slots=True)
class MockConfig:
    """How the mock behaves.

    host, port: where to listen (port 0 picks a free port).
    latency_ms, jitter_ms: each API answer waits latency_ms plus a uniform 0..jitter_ms.
    rpm, tpm, burst_s: optional OpenAI-style limits (see `batchrun.mock.ratelimit`).
    faults, seed: probability of each injected fault kind (see `batchrun.mock.faults`), and the
        seed of the random draws (faults and jitter) so a run can be replayed.
    api_key: if set, requests must carry `Authorization: Bearer <api_key>`; never shown in repr.
    billing, quota_usd, used_usd: the one-api quota endpoints; billing=False answers them 404.
    reply_tokens: visible completion tokens per choice (a body's `mock_reply_tokens` overrides).
    reasoning_tokens: hidden tokens per choice that o-series / gpt-5 models report.
    embedding_dim: length of the (fake) embedding vectors.
    fault_retry_after_ms: the `retry-after-ms` of the injected "429" fault.
    models: what `GET /v1/models` lists (any model name is accepted in requests).
    list_models: False answers `GET /v1/models` with 404, as a server that does not list them.
    """

    host: str = "127.0.0.1"
    port: int = 0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rpm: int | None = None
    tpm: int | None = None
    burst_s: float = 1.0
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
    list_models: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError("MockConfig.host must be a non-empty string")
        _check_int("port", self.port, 0, 65535)
        for name in ("latency_ms", "jitter_ms", "quota_usd", "used_usd"):
            _check_float(name, getattr(self, name), allow_zero=True)
        _check_float("burst_s", self.burst_s, allow_zero=False)
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
        if not isinstance(self.billing, bool):
            raise ValueError("MockConfig.billing must be a bool")
        if not isinstance(self.list_models, bool):
            raise ValueError("MockConfig.list_models must be a bool")
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
        table = validate_fault_table(self.faults, field="MockConfig.faults")
        # Frozen means frozen: nobody can change the faults through the caller's dict later.
        object.__setattr__(self, "faults", MappingProxyType(table))


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
