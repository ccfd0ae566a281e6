"""Requests-per-minute and tokens-per-minute limits, enforced the way OpenAI enforces them.

OpenAI does not let a full minute's budget go out in one burst: it quantises the per-minute
limit into shorter windows. Here that is a continuously refilled token bucket per limit whose
capacity is `limit * burst_s / 60` (at least one request), refilled at `limit / 60` per second.

A request whose token charge is larger than the bucket but within the per-minute limit is let
through when the bucket is full and leaves it in debt, so it waits its turn instead of never
fitting; one larger than the whole per-minute limit is refused for good ("Request too large").

The headers mean what OpenAI's mean: `remaining` is what is left, scaled to the per-minute
limit, and `reset` is the time until the bucket is FULL again (not until the next request fits).
With `burst_s = 60` the bucket is the whole minute, a continuous bucket as OpenAI describes it:
drained, it says remaining 0 and reset 1m0s while the next request fits one refill, 60 / limit
seconds, later.

A co-tenant (a second client on the same key) can be played: `cotenant_drain` empties the
buckets as the first request arrives (after start, and after a reset), as when another job has
just used the key to the full, and `cotenant_share` is the share of every refill that client
keeps taking. The headers do not foresee it, as a real server's cannot: `reset` counts the full
refill rate.

The clock is passed in (`now`, in seconds), so that every rule can be tested without sleeping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["RateLimiter", "TokenBucket", "Verdict", "format_go_duration", "rate_limit_message"]


def format_go_duration(seconds: float) -> str:
    """Go's `time.Duration.String()` of `seconds` rounded to the millisecond.

    `0s`, `12ms`, `1.5s`, `6m0s`, `1m30.5s`, `2h0m0s`: the format of `x-ratelimit-reset-*`.
    """
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"not a finite duration: {seconds!r}")
    nanos = round(seconds * 1000) * 1_000_000
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    if nanos < 1_000_000_000:
        whole, frac = divmod(nanos, 1_000_000)
        return f"{sign}{whole}{_fraction(frac, 6)}ms"
    whole_s, frac = divmod(nanos, 1_000_000_000)
    text = f"{whole_s % 60}{_fraction(frac, 9)}s"
    minutes = whole_s // 60
    if minutes:
        text = f"{minutes % 60}m{text}"
        hours = minutes // 60
        if hours:
            text = f"{hours}h{text}"
    return sign + text


def _fraction(value: int, digits: int) -> str:
    if not value:
        return ""
    return "." + f"{value:0{digits}d}".rstrip("0")


class TokenBucket:
    """One per-minute limit as a continuously refilled bucket (see the module docstring)."""

    __slots__ = ("capacity", "cotenant_share", "level", "limit_per_min", "rate_per_s", "updated")

    def __init__(
        self,
        limit_per_min: int,
        *,
        burst_s: float,
        now: float,
        cotenant_share: float = 0.0,
    ) -> None:
        self.limit_per_min = limit_per_min
        self.capacity = max(limit_per_min * burst_s / 60.0, 1.0)
        self.rate_per_s = limit_per_min / 60.0
        self.level = self.capacity
        self.updated = now
        self.cotenant_share = cotenant_share

    def __repr__(self) -> str:
        return (
            f"TokenBucket(limit_per_min={self.limit_per_min}, level={self.level:.3f}"
            f"/{self.capacity:.3f})"
        )

    def refill(self, now: float) -> None:
        if now > self.updated:
            inflow = (now - self.updated) * self.rate_per_s * (1.0 - self.cotenant_share)
            self.level = min(self.capacity, self.level + inflow)
            self.updated = now

    def wait_s(self, amount: float) -> float:
        """How long until `amount` may be taken (0 if now); call refill() first."""
        missing = min(amount, self.capacity) - self.level
        return missing / self.rate_per_s if missing > 0 else 0.0

    def take(self, amount: float) -> None:
        self.level -= amount

    def remaining(self) -> int:
        """What is left, scaled to the per-minute limit as OpenAI's header reports it."""
        return max(0, math.floor(self.level / self.capacity * self.limit_per_min))

    def reset_s(self) -> float:
        """Time until the bucket is full again if nobody takes from it meanwhile."""
        return max(0.0, (self.capacity - self.level) / self.rate_per_s)

    def headers(self, unit: bytes) -> bytes:
        return b"x-ratelimit-limit-%s: %d\r\nx-ratelimit-remaining-%s: %d\r\n" % (
            unit,
            self.limit_per_min,
            unit,
            self.remaining(),
        ) + b"x-ratelimit-reset-%s: %s\r\n" % (unit, format_go_duration(self.reset_s()).encode())


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one request: admitted, or refused with the reason and when to retry.

    `headers` are the `x-ratelimit-*` lines (plus `retry-after*` when refused) to send either way.
    """

    admitted: bool
    headers: bytes
    limit: Literal["requests", "tokens"] | None = None
    too_large: bool = False
    retry_after_s: float = 0.0
    used: int = 0
    limit_value: int = 0


class RateLimiter:
    """Optional RPM and TPM buckets checked together: a request takes from both or from neither."""

    requests: TokenBucket | None
    tokens: TokenBucket | None

    def __init__(
        self,
        *,
        rpm: int | None,
        tpm: int | None,
        burst_s: float,
        now: float,
        cotenant_drain: bool = False,
        cotenant_share: float = 0.0,
    ) -> None:
        self._rpm = rpm
        self._tpm = tpm
        self._burst_s = burst_s
        self._drain = cotenant_drain
        self._share = cotenant_share
        self.reset(now)

    def __repr__(self) -> str:
        return f"RateLimiter(requests={self.requests!r}, tokens={self.tokens!r})"

    def reset(self, now: float) -> None:
        """The buckets as right after start: full (a co-tenant that drains them does so as the
        first request arrives)."""
        self._drain_pending = self._drain
        self.requests = None if self._rpm is None else self._bucket(self._rpm, now)
        self.tokens = None if self._tpm is None else self._bucket(self._tpm, now)

    def _bucket(self, limit_per_min: int, now: float) -> TokenBucket:
        return TokenBucket(
            limit_per_min,
            burst_s=self._burst_s,
            now=now,
            cotenant_share=self._share,
        )

    def admit(self, charge: int, now: float) -> Verdict:
        requests, tokens = self.requests, self.tokens
        if self._drain_pending:
            self._drain_pending = False
            for bucket in (requests, tokens):
                if bucket is not None:
                    bucket.level, bucket.updated = 0.0, now
        if requests is not None:
            requests.refill(now)
        if tokens is not None:
            tokens.refill(now)
            if charge > tokens.limit_per_min:
                return Verdict(
                    False,
                    self._headers(),
                    "tokens",
                    too_large=True,
                    limit_value=tokens.limit_per_min,
                )
        wait_requests = requests.wait_s(1) if requests is not None else 0.0
        wait_tokens = tokens.wait_s(charge) if tokens is not None else 0.0
        if wait_requests > 0 or wait_tokens > 0:
            bucket = requests if wait_requests > 0 else tokens
            assert bucket is not None
            wait = max(wait_requests, wait_tokens)
            retry = b"retry-after: %d\r\nretry-after-ms: %d\r\n" % (
                max(1, math.ceil(wait)),
                max(1, math.ceil(wait * 1000)),
            )
            return Verdict(
                False,
                self._headers() + retry,
                "requests" if wait_requests > 0 else "tokens",
                retry_after_s=wait,
                used=bucket.limit_per_min - bucket.remaining(),
                limit_value=bucket.limit_per_min,
            )
        if requests is not None:
            requests.take(1)
        if tokens is not None:
            tokens.take(charge)
        return Verdict(True, self._headers())

    def _headers(self) -> bytes:
        lines = b""
        if self.requests is not None:
            lines += self.requests.headers(b"requests")
        if self.tokens is not None:
            lines += self.tokens.headers(b"tokens")
        return lines


def rate_limit_message(verdict: Verdict, *, model: str, charge: int) -> str:
    """OpenAI's wording for a refused request."""
    if verdict.too_large:
        return (
            f"Request too large for {model} in organization org-mock on tokens per min (TPM): "
            f"Limit {verdict.limit_value}, Requested {charge}. The input or output tokens must "
            "be reduced in order to run successfully. Visit "
            "https://platform.openai.com/account/rate-limits to learn more."
        )
    unit, short, requested = (
        ("requests", "RPM", 1) if verdict.limit == "requests" else ("tokens", "TPM", charge)
    )
    return (
        f"Rate limit reached for {model} in organization org-mock on {unit} per min ({short}): "
        f"Limit {verdict.limit_value}, Used {verdict.used}, Requested {requested}. Please try "
        f"again in {format_go_duration(verdict.retry_after_s)}. Visit "
        "https://platform.openai.com/account/rate-limits to learn more."
    )
