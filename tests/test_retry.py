"""batchrun.send.retry: durations, retry-after, backoff, and the classify_response ladder."""

from __future__ import annotations

import email.utils
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrun.models import ErrorType
from batchrun.send.retry import (
    FATAL,
    MAX_RETRY_AFTER_S,
    RETRY,
    STOP,
    backoff_s,
    classify_response,
    error_summary,
    parse_duration_s,
    parse_retry_after_s,
)

# ------------------------------------------------------------------------------- parse_duration_s


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("12ms", 0.012),
        ("1m30.5s", 90.5),
        ("1h2m", 3720.0),
        ("2h", 7200.0),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("100ns", 1e-7),
        ("0s", 0.0),
        ("1.5", 1.5),  # plain seconds
        ("20", 20.0),
        (" 3s ", 3.0),
        ("-5", 0.0),  # never negative
    ],
)
def test_parse_duration(value: str, seconds: float) -> None:
    assert parse_duration_s(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [None, "", "abc", "5x", "s", "1s garbage", "garbage 1s", "1.5.5s", "1m-3s", "inf", "nan"],
)
def test_parse_duration_garbage(value: str | None) -> None:
    assert parse_duration_s(value) is None


# ---------------------------------------------------------------------------- parse_retry_after_s

_NOW = 1_700_000_000.0


def _http_date(offset_s: float) -> str:
    return email.utils.formatdate(_NOW + offset_s, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, None),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "7"}, 0.25),  # ms wins
        ({"retry-after-ms": "soon", "retry-after": "7"}, 7.0),  # bad ms: fall back
        ({"retry-after": _http_date(30)}, 30.0),
        ({"retry-after": _http_date(-30)}, 0.0),  # a date in the past: now
        ({"retry-after": _http_date(3600)}, MAX_RETRY_AFTER_S),
        ({"retry-after": "600"}, MAX_RETRY_AFTER_S),  # capped
        ({"retry-after-ms": "600000"}, MAX_RETRY_AFTER_S),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "whenever"}, None),
        ({"retry-after": ""}, None),
        ({"retry-after-ms": ""}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    got = parse_retry_after_s(headers, now=_NOW)
    if seconds is None:
        assert got is None
    else:
        assert got == pytest.approx(seconds)


def test_retry_after_cap_is_120s() -> None:
    assert MAX_RETRY_AFTER_S == 120.0


# -------------------------------------------------------------------------------------- backoff


@pytest.mark.parametrize(
    ("attempt", "full"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0), (20, 8.0)],
)
def test_backoff_bounds(monkeypatch: pytest.MonkeyPatch, attempt: int, full: float) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.0)
    assert backoff_s(attempt) == full
    monkeypatch.setattr(random, "random", lambda: 0.999999)
    assert backoff_s(attempt) == pytest.approx(full * 0.75, rel=1e-5)


def test_backoff_is_jittered_within_bounds() -> None:
    delays = [backoff_s(3) for _ in range(200)]
    assert all(1.5 <= d <= 2.0 for d in delays)
    assert len(set(delays)) > 1


def test_backoff_custom_base_and_cap() -> None:
    assert 0.75 * 0.1 <= backoff_s(1, base_s=0.1, cap_s=1.0) <= 0.1
    assert 0.75 <= backoff_s(10, base_s=0.1, cap_s=1.0) <= 1.0


# ---------------------------------------------------------------------------------- error_summary


def test_error_summary_shapes() -> None:
    body = {"error": {"message": "bad thing", "type": "invalid_request_error", "code": None}}
    assert error_summary(body, json.dumps(body)) == ("invalid_request_error", "bad thing")
    assert error_summary({"error": {"code": "x"}}, None) == ("x", '{"code": "x"}')
    assert error_summary({"error": "plain"}, None) == (None, "plain")
    assert error_summary(None, "") == (None, "empty body")
    assert error_summary(None, "  \n") == (None, "empty body")
    long = "word " * 100
    code, message = error_summary(None, long)
    assert code is None
    assert len(message) == 203
    assert message.endswith("...")


# ---------------------------------------------------------------------------------- the ladder


def _err(message: str, *, type_: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _case(
    status: int,
    body: Any,
    *,
    headers: dict[str, str] | None = None,
    text: str | None = None,
) -> tuple[int, dict[str, str], Any, str]:
    if text is None:
        text = "" if body is None else json.dumps(body)
    return status, headers or {}, body, text


_QUOTA = _err(
    "You exceeded your current quota, please check your plan and billing details.",
    type_="insufficient_quota",
    code="insufficient_quota",
)
_GATEWAY_QUOTA = _err(
    "用户额度不足, 剩余额度: $0.01 (request id: 20240101)",
    type_="new_api_error",
    code="insufficient_user_quota",
)
_TOO_LARGE = _err(
    "Request too large for gpt-4o in organization org-x on tokens per min (TPM): "
    "Limit 30000, Requested 50000.",
    type_="tokens",
    code="rate_limit_exceeded",
)
_RATE = _err("Rate limit reached for requests", type_="requests", code="rate_limit_exceeded")

# (name, (status, headers, body, text), action, error_type, rate_limited)
LADDER: list[tuple[str, tuple[int, dict[str, str], Any, str], str, str, bool]] = [
    (
        "401 bad key",
        _case(401, _err("Incorrect API key", code="invalid_api_key")),
        FATAL,
        "auth",
        False,
    ),
    ("429 insufficient_quota", _case(429, _QUOTA), FATAL, "quota", False),
    ("403 insufficient_user_quota", _case(403, _GATEWAY_QUOTA), FATAL, "quota", False),
    ("200 insufficient_quota body", _case(200, _QUOTA), FATAL, "quota", False),
    (
        "quota by type only",
        _case(429, _err("out", type_="insufficient_quota", code="something")),
        FATAL,
        "quota",
        False,
    ),
    (
        "200 error body",
        _case(200, _err("upstream error", code="bad_gateway")),
        RETRY,
        ErrorType.API_ERROR,
        False,
    ),
    (
        "200 invalid JSON",
        _case(200, None, text="<html>oops</html>"),
        RETRY,
        ErrorType.BAD_RESPONSE,
        False,
    ),
    ("200 JSON array", _case(200, [1, 2]), RETRY, ErrorType.BAD_RESPONSE, False),
    ("200 JSON string", _case(200, "hi"), RETRY, ErrorType.BAD_RESPONSE, False),
    ("200 empty body", _case(200, None, text=""), RETRY, ErrorType.BAD_RESPONSE, False),
    ("429 plain", _case(429, _RATE), RETRY, ErrorType.RATE_LIMITED, True),
    ("429 empty body", _case(429, None, text=""), RETRY, ErrorType.RATE_LIMITED, True),
    ("429 request too large", _case(429, _TOO_LARGE), STOP, ErrorType.RATE_LIMITED, False),
    ("408", _case(408, None, text="timeout"), RETRY, ErrorType.TIMEOUT, False),
    ("409", _case(409, _err("conflict")), RETRY, ErrorType.INVALID_REQUEST, False),
    ("500", _case(500, _err("The server had an error")), RETRY, ErrorType.SERVER_ERROR, False),
    (
        "502",
        _case(502, None, text="<html>Bad Gateway</html>"),
        RETRY,
        ErrorType.SERVER_ERROR,
        False,
    ),
    ("503", _case(503, _err("overloaded")), RETRY, ErrorType.SERVER_ERROR, False),
    ("504", _case(504, None, text=""), RETRY, ErrorType.SERVER_ERROR, False),
    (
        "503 model_not_found",
        _case(503, _err("当前分组 default 下对于模型 x 无可用渠道", code="model_not_found")),
        STOP,
        ErrorType.INVALID_REQUEST,
        False,
    ),
    (
        "400",
        _case(400, _err("bad param", type_="invalid_request_error")),
        STOP,
        ErrorType.INVALID_REQUEST,
        False,
    ),
    (
        "404",
        _case(404, _err("model does not exist", code="model_not_found")),
        STOP,
        ErrorType.INVALID_REQUEST,
        False,
    ),
    ("422", _case(422, None, text="unprocessable"), STOP, ErrorType.INVALID_REQUEST, False),
    ("403 forbidden", _case(403, _err("not allowed")), STOP, ErrorType.INVALID_REQUEST, False),
    # x-should-retry overrides the status where it applies.
    (
        "400 x-should-retry true",
        _case(400, _err("bad"), headers={"x-should-retry": "true"}),
        RETRY,
        ErrorType.INVALID_REQUEST,
        False,
    ),
    (
        "500 x-should-retry false",
        _case(500, _err("boom"), headers={"x-should-retry": "false"}),
        STOP,
        ErrorType.SERVER_ERROR,
        False,
    ),
    (
        "408 x-should-retry false",
        _case(408, None, headers={"x-should-retry": "false"}),
        STOP,
        ErrorType.TIMEOUT,
        False,
    ),
    (
        "429 x-should-retry false",
        _case(429, _RATE, headers={"x-should-retry": "false"}),
        STOP,
        ErrorType.RATE_LIMITED,
        True,
    ),
    (
        "200 error x-should-retry false",
        _case(200, _err("no"), headers={"x-should-retry": "false"}),
        STOP,
        ErrorType.API_ERROR,
        False,
    ),
    # ...but never turns a whole-run failure into retries.
    (
        "401 x-should-retry true",
        _case(401, _err("Incorrect API key"), headers={"x-should-retry": "true"}),
        FATAL,
        "auth",
        False,
    ),
]


@pytest.mark.parametrize(
    ("case", "action", "error_type", "rate_limited"),
    [row[1:] for row in LADDER],
    ids=[row[0] for row in LADDER],
)
def test_classify_ladder(
    case: tuple[int, dict[str, str], Any, str], action: str, error_type: str, rate_limited: bool
) -> None:
    verdict = classify_response(*case)
    assert verdict is not None
    assert (verdict.action, verdict.error_type, verdict.rate_limited) == (
        action,
        error_type,
        rate_limited,
    )


@pytest.mark.parametrize("status", [200, 201, 299])
def test_classify_ok(status: int) -> None:
    body = {"id": "x", "choices": []}
    assert classify_response(status, {}, body, json.dumps(body)) is None
    assert classify_response(status, {}, {"error": None, "id": "x"}, "{}") is None


def test_classify_messages_say_what_happened() -> None:
    verdict = classify_response(*_case(429, _QUOTA))
    assert verdict is not None
    assert verdict.message.startswith("out of quota or balance (HTTP 429 insufficient_quota: ")
    verdict = classify_response(*_case(401, _err("Incorrect API key", code="invalid_api_key")))
    assert verdict is not None
    assert verdict.message == (
        "the API key was refused (HTTP 401 invalid_api_key: Incorrect API key)"
    )
    verdict = classify_response(*_case(200, None, text="<html>oops</html>"))
    assert verdict is not None
    assert verdict.message == "HTTP 200 but the body is not valid JSON: <html>oops</html>"
    verdict = classify_response(*_case(200, [1]))
    assert verdict is not None
    assert verdict.message == "HTTP 200 but the body is not a JSON object: [1]"
    verdict = classify_response(*_case(429, None, text=""))
    assert verdict is not None
    assert verdict.message == "HTTP 429: empty body"
    verdict = classify_response(*_case(400, _err("bad param", type_="invalid_request_error")))
    assert verdict is not None
    assert verdict.message == "HTTP 400 invalid_request_error: bad param"


# -------------------------------------------------------------------------------------- fuzzing

_header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=24)
_header_values = _header_text | st.sampled_from(
    ["0", "-1", "1e400", "nan", "inf", "true", "false", "1.5", "Wed, 21 Oct 2015 07:28:00 GMT"]
)
_headers = st.dictionaries(
    st.sampled_from(
        ["retry-after", "retry-after-ms", "x-should-retry", "x-ratelimit-remaining-requests"]
    ),
    _header_values,
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["error", "message", "code", "type", "choices", "usage"])
            | st.text(max_size=5),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    status=st.integers(min_value=100, max_value=599) | st.sampled_from([200, 401, 403, 429, 503]),
    headers=_headers,
    body=_json,
    text=st.none() | st.text(max_size=300),
)
def test_fuzz_classify_response_never_raises(
    status: int, headers: dict[str, str], body: Any, text: str | None
) -> None:
    verdict = classify_response(status, headers, body, text)
    if verdict is None:
        # Only a 2xx JSON object without an error is good.
        assert 200 <= status < 300 and isinstance(body, dict) and body.get("error") is None
        return
    assert verdict.action in (RETRY, STOP, FATAL)
    assert verdict.error_type in {
        *vars(ErrorType).values(),
        "auth",
        "quota",
    }
    assert f"HTTP {status}" in verdict.message
    if status == 401:
        assert verdict.action == FATAL  # no header turns a refused key into retries


@settings(max_examples=300, deadline=None)
@given(headers=_headers, now=st.floats(min_value=0, max_value=4e9))
def test_fuzz_retry_after_is_none_or_a_bounded_wait(headers: dict[str, str], now: float) -> None:
    seconds = parse_retry_after_s(headers, now=now)
    assert seconds is None or 0.0 <= seconds <= MAX_RETRY_AFTER_S


@settings(max_examples=300, deadline=None)
@given(value=st.none() | st.text(max_size=20))
def test_fuzz_parse_duration_is_none_or_finite(value: str | None) -> None:
    seconds = parse_duration_s(value)
    assert seconds is None or (seconds >= 0 and seconds == seconds and seconds != float("inf"))


def test_an_error_body_with_odd_types_is_classified_not_a_crash() -> None:
    # Found by the fuzz test: {"type": [...]} made a set lookup raise TypeError, which would have
    # ended the whole run on one odd gateway answer.
    for error in ({"type": []}, {"type": {"a": 1}}, {"code": ["x"], "type": ["y"]}):
        verdict = classify_response(500, {}, {"error": error}, json.dumps({"error": error}))
        assert verdict is not None and verdict.action == RETRY
    quota = classify_response(200, {}, {"error": {"type": "insufficient_quota"}}, None)
    assert quota is not None and quota.action == FATAL
