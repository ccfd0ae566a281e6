"""The key's balance on a one-api / new-api gateway (APICore and most resellers).

    fetch_quota(http, base_url, api_key) ──► Quota(granted_usd, used_usd, remaining_usd, unlimited)
                                        ├──► None: this server does not say
                                        └──► Unreachable(detail): no answer came at all

Two calls with the run's key (field notes, section 4):
- `GET {base}/dashboard/billing/subscription` -> `hard_limit_usd`: the total granted, in USD;
  100,000,000 or more means unlimited;
- `GET {base}/dashboard/billing/usage` -> `total_usage`: what was spent, in CENTS.
remaining = hard_limit_usd - total_usage / 100 (negative when the key is over its grant).

Guarantees:
- A server without these endpoints is normal (OpenAI itself, vLLM, llama.cpp): a 404 or any other
  refusal, or a body that is not the expected JSON, gives None, never an exception. A server that
  does not answer at all (refused, a timeout, a failed TLS handshake) gives `Unreachable`, so that
  nobody is told it "has no billing endpoints". When the subscription answers but the usage does
  not, used and remaining are None.
- Only 401 (the key is refused) raises `FatalRunError("auth", ...)`, the key scrubbed from it.
- At most two requests, sent one after the other (the second only if the first answered).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import anyio
import httpx2

from batchrun.common.errors import FatalRunError
from batchrun.common.secrets import redact
from batchrun.common.urls import join_url

__all__ = [
    "UNLIMITED_USD",
    "Quota",
    "Unreachable",
    "fetch_quota",
    "fetch_quota_sync",
    "render_quota",
]

UNLIMITED_USD = 100_000_000
SUBSCRIPTION_PATH = "/v1/dashboard/billing/subscription"
USAGE_PATH = "/v1/dashboard/billing/usage"
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Quota:
    """A key's balance in USD. `granted_usd` and `remaining_usd` are None when unlimited;
    `used_usd` and `remaining_usd` are None when the server did not say what was used."""

    granted_usd: float | None
    used_usd: float | None
    remaining_usd: float | None
    unlimited: bool

    def covers(self, cost_usd: float) -> bool | None:
        """Whether the remaining balance covers `cost_usd` (None: the balance is not known)."""
        if self.unlimited:
            return True
        return None if self.remaining_usd is None else cost_usd <= self.remaining_usd

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Unreachable:
    """No answer from the server: `detail` says what happened (refused, timed out, ...)."""

    detail: str


class _NoAnswer(Exception):
    pass


async def fetch_quota(
    http: httpx2.AsyncClient,
    base_url: str,
    api_key: str | None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Quota | Unreachable | None:
    """The key's quota from the one-api billing endpoints under `base_url` (normally `.../v1`),
    None when the server does not have them, `Unreachable` when it does not answer. Raises
    FatalRunError("auth") on a 401."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    subscription_url = join_url(base_url, SUBSCRIPTION_PATH)
    try:
        subscription = await _get_json(http, subscription_url, headers, api_key, timeout_s)
    except _NoAnswer as exc:
        return Unreachable(redact(str(exc), api_key))
    hard_limit = _number(subscription, "hard_limit_usd")
    if hard_limit is None:
        return None
    try:
        usage = await _get_json(http, join_url(base_url, USAGE_PATH), headers, api_key, timeout_s)
    except _NoAnswer:
        usage = None
    cents = _number(usage, "total_usage")
    used = None if cents is None else round(cents / 100, 6)
    if hard_limit >= UNLIMITED_USD:
        return Quota(granted_usd=None, used_usd=used, remaining_usd=None, unlimited=True)
    remaining = None if used is None else round(hard_limit - used, 6)
    return Quota(granted_usd=hard_limit, used_usd=used, remaining_usd=remaining, unlimited=False)


def fetch_quota_sync(
    base_url: str,
    api_key: str | None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> Quota | Unreachable | None:
    """`fetch_quota` with its own HTTP client, for callers without an event loop (the CLI)."""

    async def fetch() -> Quota | Unreachable | None:
        async with httpx2.AsyncClient(transport=transport, timeout=timeout_s) as http:
            return await fetch_quota(http, base_url, api_key, timeout_s=timeout_s)

    return anyio.run(fetch)


async def _get_json(
    http: httpx2.AsyncClient,
    url: str,
    headers: dict[str, str],
    api_key: str | None,
    timeout_s: float,
) -> Any:
    """The JSON body of a 2xx answer; None for anything else except 401, which raises
    FatalRunError, and no answer at all, which raises _NoAnswer."""
    try:
        response = await http.get(url, headers=headers, timeout=timeout_s)
    except httpx2.InvalidURL:
        return None
    except httpx2.TransportError as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise _NoAnswer(f"{type(exc).__name__}: {detail}") from exc
    if response.status_code == 401:
        detail = _error_message(response.content)
        if "session key" in detail:
            return None  # OpenAI itself: the endpoint exists for browser sessions only
        message = f"the server refused the API key (HTTP 401) at {url}" + (
            f": {detail}" if detail else ""
        )
        raise FatalRunError("auth", redact(message, api_key))
    if not 200 <= response.status_code < 300:
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _error_message(content: bytes) -> str:
    try:
        body = json.loads(content)
    except ValueError:
        return content[:200].decode("utf-8", errors="replace").strip()
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else ""


def _number(document: Any, key: str) -> float | None:
    value = document.get(key) if isinstance(document, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def render_quota(quota: Quota | Unreachable | None, base_url: str, *, as_json: bool = False) -> str:
    """One line for people, or a JSON document {base_url, known, granted_usd, used_usd,
    remaining_usd, unlimited} (the last four absent when the quota is unknown; `unreachable`
    holds what happened when the server did not answer)."""
    if as_json:
        document: dict[str, Any] = {"base_url": base_url, "known": isinstance(quota, Quota)}
        if isinstance(quota, Unreachable):
            document["unreachable"] = quota.detail
        return json.dumps(
            {**document, **(quota.to_dict() if isinstance(quota, Quota) else {})}, indent=2
        )
    if isinstance(quota, Unreachable):
        return f"quota: unknown: the server at {base_url} could not be reached ({quota.detail})"
    if quota is None:
        return f"quota: unknown for {base_url} (no one-api billing endpoints answered there)"

    def usd(value: float | None) -> str:
        return "unknown" if value is None else f"{'-' * (value < 0)}${abs(value):,.2f}"

    if quota.unlimited:
        return f"quota: unlimited; used {usd(quota.used_usd)} ({base_url})"
    return (
        f"quota: granted {usd(quota.granted_usd)}, used {usd(quota.used_usd)}, "
        f"remaining {usd(quota.remaining_usd)} ({base_url})"
    )
