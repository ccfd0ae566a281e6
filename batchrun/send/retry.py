"""Which failures are worth retrying, how long to wait, and which ones end the whole run.

Pure functions of a status, headers and a body: no I/O, so every rule has a table-driven test.

The ladder, top to bottom (the first rule that matches decides):
1. Whole-run failures (`FATAL`): 401; 403 `insufficient_user_quota`; `insufficient_quota` in any
   status (OpenAI sends it as a 429, gateways sometimes as a 200 with an error body). No header
   turns these into retries.
2. `x-should-retry: true|false` from the server (for 2xx and 429 only `false` counts).
3. 429: retried after a pause for everyone, except "Request too large" (it can never pass).
4. 408, 409 and 5xx: retried, except 503 `model_not_found` (a gateway with no channel for it).
5. Other 4xx: recorded as an error, not retried.
6. 2xx whose body is not JSON, or is `{"error": ...}`: retried (proxies and gateways produce both
   transiently), then recorded.
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batchrun.models import ErrorType

__all__ = [
    "FATAL",
    "RETRY",
    "STOP",
    "Verdict",
    "backoff_s",
    "classify_response",
    "error_summary",
    "parse_duration_s",
    "parse_retry_after_s",
]

RETRY = "retry"  # try again (after backoff)
STOP = "stop"  # record an error for this row, do not retry
FATAL = "fatal"  # stop the whole run; the row stays pending

MAX_RETRY_AFTER_S = 120.0
_QUOTA_CODES = {"insufficient_quota", "insufficient_user_quota"}
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_GO_UNITS_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str  # RETRY, STOP or FATAL
    error_type: str
    message: str
    rate_limited: bool = False


def parse_duration_s(value: str | None) -> float | None:
    """A Go-style duration (`1s`, `6m0s`, `12ms`, `1m30.5s`) or plain seconds, in seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None  # "inf" would pause forever
    pos = 0
    total = 0.0
    for match in _GO_DURATION.finditer(value):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _GO_UNITS_S[match.group(2)]
        pos = match.end()
    return total if pos == len(value) and pos > 0 else None


def parse_retry_after_s(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """`retry-after-ms` first, then `retry-after` in seconds or as an HTTP date; capped at 120 s."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return min(max(0.0, float(raw_ms) / 1000), MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return min(max(0.0, float(raw)), MAX_RETRY_AFTER_S)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return float(min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER_S))


def backoff_s(attempt: int, *, base_s: float = 0.5, cap_s: float = 8.0) -> float:
    """Exponential backoff with jitter before retry number `attempt` (1 for the first retry)."""
    delay: float = min(base_s * 2.0 ** (attempt - 1), cap_s)
    return delay * (1 - 0.25 * random.random())


def error_summary(body: Any, text: str | None) -> tuple[str | None, str]:
    """(code or type, message) from an OpenAI-style error body, else a short text excerpt."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        message = error.get("message")
        return (
            str(code) if code else None,
            str(message) if message else json.dumps(error, ensure_ascii=False)[:300],
        )
    if isinstance(error, str):
        return None, error
    if not text or not text.strip():
        return None, "empty body"
    excerpt = " ".join(text.split())
    return None, excerpt[:200] + ("..." if len(excerpt) > 200 else "")


def classify_response(
    status: int, headers: Mapping[str, str], body: Any, text: str | None
) -> Verdict | None:
    """None for a good response; otherwise what to do about it.

    `body` is the parsed JSON or None when the body was not JSON; `text` the body as text.
    """
    is_error_body = isinstance(body, dict) and "error" in body and body["error"] is not None
    if 200 <= status < 300 and isinstance(body, dict) and not is_error_body:
        return None
    code, message = error_summary(body, text)
    described = f"HTTP {status}" + (f" {code}" if code else "") + f": {message}"

    error_type = (
        body["error"].get("type") if is_error_body and isinstance(body["error"], dict) else None
    )
    # Membership only for a string: a gateway's {"type": [...]} must not crash the run.
    if code in _QUOTA_CODES or (isinstance(error_type, str) and error_type in _QUOTA_CODES):
        return Verdict(FATAL, "quota", f"out of quota or balance ({described})")
    if status == 401:
        return Verdict(FATAL, "auth", f"the API key was refused ({described})")
    if status == 403 and code in _QUOTA_CODES:
        return Verdict(FATAL, "quota", f"out of quota or balance ({described})")

    should_retry = headers.get("x-should-retry")
    if status == 429:
        if "request too large" in message.lower():
            return Verdict(STOP, ErrorType.RATE_LIMITED, described)
        action = STOP if should_retry == "false" else RETRY
        return Verdict(action, ErrorType.RATE_LIMITED, described, rate_limited=True)
    if 200 <= status < 300:
        kind = ErrorType.API_ERROR if is_error_body else ErrorType.BAD_RESPONSE
        if body is None:
            described = f"HTTP {status} but the body is not valid JSON: {message}"
        elif not is_error_body:
            described = f"HTTP {status} but the body is not a JSON object: {message}"
        action = STOP if should_retry == "false" else RETRY
        return Verdict(action, kind, described)
    if should_retry == "true":
        return Verdict(RETRY, _kind_for(status), described)
    if should_retry == "false":
        return Verdict(STOP, _kind_for(status), described)
    if status >= 500:
        if code == "model_not_found":
            return Verdict(STOP, ErrorType.INVALID_REQUEST, described)
        return Verdict(RETRY, ErrorType.SERVER_ERROR, described)
    if status in (408, 409):
        return Verdict(RETRY, _kind_for(status), described)
    return Verdict(STOP, ErrorType.INVALID_REQUEST, described)


def _kind_for(status: int) -> str:
    if status >= 500:
        return ErrorType.SERVER_ERROR
    if status == 408:
        return ErrorType.TIMEOUT
    if status == 429:
        return ErrorType.RATE_LIMITED
    return ErrorType.INVALID_REQUEST
