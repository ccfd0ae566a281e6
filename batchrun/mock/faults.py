"""Injected failures: which request fails, and what the failure looks like on the wire.

Two ways to pick a request, checked in this order:
1. the body asks for it: `"mock_fault": "<kind>"`, optionally with `"mock_fault_times": k` so that
   only the first k requests with exactly these body bytes fail and later ones succeed (a row that
   fails k times, then works);
2. chance: a table kind -> probability drawn from a seeded RNG, so a run is reproducible.

Each kind imitates something seen from OpenAI or a one-api/new-api gateway in front of it.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from batchrun.mock.http import Reply
from batchrun.mock.payloads import error_body
from batchrun.mock.ratelimit import format_go_duration

__all__ = [
    "EARLY_FAULTS",
    "FAULT_KINDS",
    "INVALID_API_KEY",
    "SUCCESS_FAULTS",
    "BodyFault",
    "FaultPicker",
    "body_fault",
    "fault_reply",
    "parse_fault_spec",
    "validate_fault_table",
]

FAULT_KINDS: Final[tuple[str, ...]] = (
    "429",
    "429_no_retry_after",
    "429_empty",
    "insufficient_quota",
    "user_quota",
    "401",
    "400",
    "500",
    "502",
    "503",
    "timeout",
    "reset",
    "malformed",
    "html",
    "error200",
    "no_usage",
    "truncated",
    "500_upload",
)
# Kinds the application builds from a real answer; fault_reply() never sees them.
SUCCESS_FAULTS: Final = frozenset({"no_usage", "truncated"})
# Kinds drawn when an upload's head arrives, before its body (`FaultPicker.early`): the
# protocol answers at once and closes on the rest of the upload. Asked for in a body (which is
# read only once it has arrived), such a kind is answered as its status alone.
EARLY_FAULTS: Final = frozenset({"500_upload"})

_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
INVALID_API_KEY: Final = error_body(
    "Incorrect API key provided. You can find your API key at "
    "https://platform.openai.com/account/api-keys.",
    "invalid_request_error",
    code="invalid_api_key",
)
_MALFORMED = b'{"id":"chatcmpl-mock","object":"chat.completion","choices":[{"index":0,"message":'


def validate_fault_table(faults: Mapping[str, float], *, field: str = "faults") -> dict[str, float]:
    """A copy of `faults` after checking kinds and probabilities; ValueError names `field`."""
    if not isinstance(faults, Mapping):
        raise ValueError(f"{field} must be a mapping of fault kind to probability")
    table: dict[str, float] = {}
    for kind, probability in faults.items():
        if kind not in FAULT_KINDS:
            raise ValueError(
                f"{field}: unknown fault kind {kind!r}; known kinds: {', '.join(FAULT_KINDS)}"
            )
        if (
            isinstance(probability, bool)
            or not isinstance(probability, int | float)
            or not 0.0 <= probability <= 1.0
        ):
            raise ValueError(
                f"{field}[{kind!r}] must be a probability in [0, 1], got {probability!r}"
            )
        table[kind] = float(probability)
    total = math.fsum(table.values())
    if total > 1.0 + 1e-9:
        raise ValueError(f"{field}: probabilities add up to {total:g}, more than 1")
    return table


def parse_fault_spec(text: str) -> dict[str, float]:
    """`"500=0.05,429=0.1"` -> `{"500": 0.05, "429": 0.1}` (validated)."""
    table: dict[str, float] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        kind, sep, value = item.partition("=")
        try:
            probability = float(value)
        except ValueError:
            probability = math.nan
        if not sep or math.isnan(probability):
            raise ValueError(f"--fail: expected KIND=PROBABILITY, got {item.strip()!r}")
        table[kind.strip()] = probability
    return validate_fault_table(table, field="--fail")


@dataclass(frozen=True, slots=True)
class BodyFault:
    """A fault requested by the request body itself; `times=None` means every time."""

    kind: str
    times: int | None


def body_fault(data: Mapping[str, object]) -> BodyFault | None:
    """The fault a body asks for, or None; ValueError (a 400 for the client) if it is invalid."""
    kind = data.get("mock_fault")
    if kind is None:
        return None
    if not isinstance(kind, str) or kind not in FAULT_KINDS:
        raise ValueError(f"mock_fault must be one of: {', '.join(FAULT_KINDS)}")
    times = data.get("mock_fault_times")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 0):
        raise ValueError("mock_fault_times must be an integer >= 0")
    return BodyFault(kind, times)


class FaultPicker:
    """Decides whether a request fails, and how."""

    def __init__(self, table: Mapping[str, float], seed: int) -> None:
        self._rng = random.Random(seed)
        self._early_rng = random.Random(f"{seed}/early")
        self._cumulative: list[tuple[float, str]] = []
        self._early: list[tuple[float, str]] = []
        self._served: dict[bytes, int] = {}
        self.set_table(table)

    def set_table(self, table: Mapping[str, float]) -> None:
        checked = validate_fault_table(table)
        self._early = [(p, k) for k, p in checked.items() if k in EARLY_FAULTS and p > 0]
        cumulative, total = [], 0.0
        for kind, probability in checked.items():
            if probability > 0 and kind not in EARLY_FAULTS:
                total += probability
                cumulative.append((total, kind))
        self._cumulative = cumulative

    def reset(self, seed: int) -> None:
        """Forget which bodies already failed and replay the same random sequence."""
        self._rng.seed(seed)
        self._early_rng.seed(f"{seed}/early")
        self._served.clear()

    def early(self) -> str | None:
        """An early kind for an upload whose body has not arrived yet, drawn on its own."""
        for probability, kind in self._early:
            if self._early_rng.random() < probability:
                return kind
        return None

    def pick(self, requested: BodyFault | None, body: bytes) -> str | None:
        if requested is not None:
            if requested.times is None:
                return requested.kind
            key = hashlib.blake2b(body, digest_size=16).digest()
            served = self._served.get(key, 0)
            if served >= requested.times:
                return None
            self._served[key] = served + 1
            return requested.kind
        if not self._cumulative:
            return None
        draw = self._rng.random()
        for threshold, kind in self._cumulative:
            if draw < threshold:
                return kind
        return None


_gateway_ids = itertools.count(1)


def _gateway_request_id() -> str:
    return time.strftime("%Y%m%d%H%M%S") + f"{next(_gateway_ids):012d}"


def fault_reply(
    kind: str, *, model: str, retry_after_ms: int, headers: bytes, midway: bool = False
) -> Reply:
    """The reply of a fault that replaces the answer entirely (every kind but SUCCESS_FAULTS).

    `headers` are the request id and rate-limit lines a real server would still send; `midway`
    makes a "reset" happen after part of the head was sent rather than before any byte.
    """
    gateway_id = f"(request id: {_gateway_request_id()})"
    if kind == "429":
        seconds = max(1, math.ceil(retry_after_ms / 1000))
        extra = b"retry-after: %d\r\nretry-after-ms: %d\r\n" % (seconds, retry_after_ms)
        body = error_body(
            f"Rate limit reached for {model} in organization org-mock on requests per min (RPM): "
            f"Limit 500, Used 500, Requested 1. "
            f"Please try again in {format_go_duration(retry_after_ms / 1000)}.",
            "requests",
            code="rate_limit_exceeded",
        )
        return Reply(429, body, headers=headers + extra)
    if kind == "429_no_retry_after":
        body = error_body(
            f"当前分组上游负载已饱和，请稍后再试 {gateway_id}", "new_api_error", param="", code=None
        )
        return Reply(429, body, headers=headers)
    if kind == "429_empty":
        return Reply(429, b"", content_type=None)
    if kind == "insufficient_quota":
        body = error_body(
            "You exceeded your current quota, please check your plan and billing details. For "
            "more information on this error, read the docs: "
            "https://platform.openai.com/docs/guides/error-codes/api-errors.",
            "insufficient_quota",
            code="insufficient_quota",
        )
        return Reply(429, body, headers=headers)
    if kind == "user_quota":
        body = error_body(
            f"用户额度不足, 剩余额度: ＄0.000000 {gateway_id}",
            "one_api_error",
            param="",
            code="insufficient_user_quota",
        )
        return Reply(403, body, headers=headers)
    if kind == "401":
        return Reply(401, INVALID_API_KEY, headers=headers)
    if kind == "400":
        body = error_body(
            "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in 131072 tokens. Please reduce the length of the messages.",
            "invalid_request_error",
            param="messages",
            code="context_length_exceeded",
        )
        return Reply(400, body, headers=headers)
    if kind in ("500", "500_upload"):
        body = error_body(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
        )
        return Reply(500, body, headers=headers)
    if kind == "502":
        body = error_body("Bad gateway.", "cf_bad_gateway", code=502)
        return Reply(502, body, headers=headers)
    if kind == "503":
        body = error_body(
            f"当前分组 default 下对于模型 {model} 无可用渠道 {gateway_id}",
            "new_api_error",
            param="",
            code="model_not_found",
        )
        return Reply(503, body, headers=headers)
    if kind == "timeout":
        return Reply(0, action="hang")
    if kind == "reset":
        return Reply(200, b"{}", action="reset_midway" if midway else "reset")
    if kind == "malformed":
        return Reply(200, _MALFORMED, headers=headers)
    if kind == "html":
        return Reply(502, _HTML_502, content_type=b"text/html")
    if kind == "error200":
        body = error_body(
            f"upstream error: do request failed {gateway_id}",
            "upstream_error",
            param="",
            code="do_request_failed",
        )
        return Reply(200, body, headers=headers)
    raise ValueError(f"fault {kind!r} is built from a successful answer, not here")
