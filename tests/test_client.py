"""batchrun.send.client: Sender.send through httpx2.MockTransport, a real Limiter, a fake clock."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchrun.common.errors import FatalRunError
from batchrun.common.secrets import redact
from batchrun.common.urls import join_url
from batchrun.endpoints.usage import Usage
from batchrun.models import ErrorType, Record, Request
from batchrun.send import client as client_mod
from batchrun.send.client import Sender
from batchrun.send.http import Httpx2Engine
from batchrun.send.limiter import Limiter
from batchrun.store.writer import records_to_table

KEY = "sk-test-1234567890abcdef"
BASE = "https://api.example.test/v1"
BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":20}'

Handler = Callable[[httpx2.Request], httpx2.Response]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await anyio.lowlevel.checkpoint()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Per-row backoff sleeps become instant; the retry numbers they were asked for are kept."""
    asked: list[int] = []

    def fake_backoff(attempt: int) -> float:
        asked.append(attempt)
        return 0.0

    monkeypatch.setattr(client_mod, "backoff_s", fake_backoff)
    monkeypatch.setattr(random, "random", lambda: 0.0)  # no jitter in pauses
    return asked


def make_request(**overrides: Any) -> Request:
    fields: dict[str, Any] = {
        "row": 3,
        "custom_id": "c-3",
        "url": "/v1/chat/completions",
        "body": BODY,
        "model": "gpt-4o-mini",
        "prompt_tokens_estimate": 10,
        "max_output_tokens": 20,
    }
    fields.update(overrides)
    return Request(**fields)


def completion(**usage_extra: Any) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": 12,
        "completion_tokens": 5,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 8},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    usage.update(usage_extra)
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello"},
                "finish_reason": "length",
            }
        ],
        "usage": usage,
    }


def error_body(message: str, *, code: str | None = None, type_: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "code": code}}).encode()


def ok() -> httpx2.Response:
    return httpx2.Response(200, json=completion())


def script(*steps: httpx2.Response | Exception) -> tuple[Handler, list[httpx2.Request]]:
    """A handler that answers with `steps` in turn (the last one repeats); raises exceptions."""
    seen: list[httpx2.Request] = []
    it: Iterator[httpx2.Response | Exception] = iter(steps)
    last: list[httpx2.Response | Exception] = [steps[-1]]

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        step = next(it, last[0])
        if isinstance(step, Exception):
            raise step
        return step

    return handler, seen


def make_sender(
    handler: Handler,
    clock: FakeClock,
    *,
    limiter: Limiter | None = None,
    max_retries: int = 2,
    **kwargs: Any,
) -> tuple[Sender, Limiter]:
    limiter = limiter or Limiter(clock=clock, sleep=clock.sleep)
    http = Httpx2Engine(httpx2.AsyncClient(transport=httpx2.MockTransport(handler)))
    sender = Sender(
        http,
        limiter,
        base_url=BASE,
        api_key=KEY,
        max_retries=max_retries,
        clock=clock,
        **kwargs,
    )
    return sender, limiter


def no_key(record: Record) -> None:
    for value in (record.response, record.error_message):
        assert value is None or KEY not in value


# ------------------------------------------------------------------------------------ success


@pytest.mark.anyio
async def test_ok_record(clock: FakeClock, backoffs: list[int]) -> None:
    handler, seen = script(ok())
    costs: list[tuple[str | None, Usage]] = []

    def cost_fn(model: str | None, usage: Usage) -> float:
        costs.append((model, usage))
        return 0.25

    sender, _ = make_sender(handler, clock, cost_fn=cost_fn)
    record = await sender.send(make_request())

    assert record.status == "ok"
    assert record.ok
    assert (record.custom_id, record.row, record.endpoint) == ("c-3", 3, "/v1/chat/completions")
    assert record.http_status == 200
    assert record.model == "gpt-4o-mini-2024-07-18"  # what the server says it ran
    assert record.finish_reason == "length"
    assert (record.prompt_tokens, record.completion_tokens, record.total_tokens) == (12, 5, 17)
    assert (record.cached_tokens, record.reasoning_tokens) == (8, 2)
    assert record.attempts == 1
    assert record.latency_ms is not None
    assert record.latency_ms >= 0
    assert record.cost_usd == 0.25
    assert costs == [("gpt-4o-mini-2024-07-18", Usage(12, 5, 17, 8, 2))]
    assert record.response is not None
    assert json.loads(record.response) == completion()
    assert (record.error_type, record.error_message) == (None, None)
    # What went on the wire.
    (sent,) = seen
    assert str(sent.url) == "https://api.example.test/v1/chat/completions"
    assert sent.method == "POST"
    assert sent.content == BODY
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert backoffs == []


@pytest.mark.anyio
async def test_ok_record_of_other_shapes(clock: FakeClock, backoffs: list[int]) -> None:
    responses_api = {
        "object": "response",
        "status": "completed",
        "usage": {"input_tokens": 4, "output_tokens": 6, "total_tokens": 10},
    }
    handler, _ = script(httpx2.Response(200, json=responses_api))
    sender, _ = make_sender(handler, clock)
    record = await sender.send(make_request(url="/v1/responses"))
    assert record.finish_reason == "completed"
    assert record.model == "gpt-4o-mini"  # none in the response: the request's
    assert (record.prompt_tokens, record.completion_tokens, record.total_tokens) == (4, 6, 10)
    assert record.cost_usd is None


@pytest.mark.anyio
async def test_no_key_no_authorization_header(clock: FakeClock, backoffs: list[int]) -> None:
    handler, seen = script(ok())
    http = Httpx2Engine(httpx2.AsyncClient(transport=httpx2.MockTransport(handler)))
    sender = Sender(
        http, Limiter(clock=clock, sleep=clock.sleep), base_url=BASE, api_key=None, max_retries=0
    )
    assert (await sender.send(make_request())).ok
    assert "authorization" not in seen[0].headers


CHAT_TOOL_CALL = {
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
        }
    ],
}
CLAUDE = {
    "type": "message",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "Bonjour"}],
    "stop_reason": "end_turn",
    "usage": {
        "input_tokens": 10,
        "output_tokens": 3,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 20,
    },
}
GEMINI = {
    "candidates": [{"content": {"parts": [{"text": "Hola"}]}, "finishReason": "STOP"}],
    "usageMetadata": {
        "promptTokenCount": 7,
        "candidatesTokenCount": 2,
        "thoughtsTokenCount": 30,
        "totalTokenCount": 39,
    },
}
EMBEDDINGS = {
    "object": "list",
    "data": [
        {"object": "embedding", "index": 1, "embedding": [0.5, 0.25]},
        {"object": "embedding", "index": 0, "embedding": [-1.0, 0.0]},
    ],
    "usage": {"prompt_tokens": 4, "total_tokens": 4},
}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("url", "answer", "expected"),
    [
        (
            "/v1/chat/completions",
            CHAT_TOOL_CALL,
            {
                "text": None,
                "tool_calls": [
                    {"id": "call_1", "name": "weather", "arguments": '{"city":"Paris"}'}
                ],
                "finish_reason": "tool_calls",
                "tokens": (None, None),
            },
        ),
        (
            "/v1/completions",
            {"choices": [{"text": " world", "finish_reason": "stop"}]},
            {"text": " world", "finish_reason": "stop"},
        ),
        (
            "/v1/responses",
            {
                "status": "completed",
                "output": [
                    {"type": "message", "content": [{"type": "output_text", "text": "Hi"}]},
                    {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                ],
            },
            {
                "text": "Hi",
                "tool_calls": [{"id": "c1", "name": "f", "arguments": "{}"}],
                "finish_reason": "completed",
            },
        ),
        (
            "/v1/messages",
            CLAUDE,
            {"text": "Bonjour", "finish_reason": "end_turn", "tokens": (35, 3), "cached": 20},
        ),
        (
            "/v1beta/models/gemini-2.5-flash:generateContent",
            GEMINI,
            {
                "text": "Hola",
                "finish_reason": "STOP",
                "tokens": (7, 32),
                "model": "gemini-2.5-flash",
            },
        ),
        (
            "/v1/embeddings",
            EMBEDDINGS,
            {"embedding": [[-1.0, 0.0], [0.5, 0.25]], "tokens": (4, None)},
        ),
        ("/v1/unknown/thing", {"text": "not read"}, {"text": None, "finish_reason": None}),
    ],
    ids=["chat-tools", "completions", "responses", "claude", "gemini", "embeddings", "generic"],
)
async def test_the_answer_is_read_into_columns_by_the_endpoints_profile(
    clock: FakeClock,
    backoffs: list[int],
    url: str,
    answer: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    handler, _ = script(httpx2.Response(200, json=answer))
    sender, _ = make_sender(handler, clock)
    record = await sender.send(make_request(url=url, model=None))
    assert record.ok
    assert record.text == expected.get("text")
    calls = expected.get("tool_calls")
    assert (json.loads(record.tool_calls) if record.tool_calls else None) == calls
    assert record.embedding == expected.get("embedding")
    if "finish_reason" in expected:
        assert record.finish_reason == expected["finish_reason"]
    if "tokens" in expected:
        assert (record.prompt_tokens, record.completion_tokens) == expected["tokens"]
    if "cached" in expected:
        assert record.cached_tokens == expected["cached"]
    if "model" in expected:
        assert record.model == expected["model"]
    assert record.content_type == "application/json"
    assert record.media is None
    assert json.loads(record.response or "") == answer  # the full body is kept too


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("base", "url", "header", "value"),
    [
        ("https://api.anthropic.com/v1", "/v1/messages", "x-api-key", KEY),
        (
            "https://generativelanguage.googleapis.com",
            "/v1beta/models/gemini-2.5-flash:generateContent",
            "x-goog-api-key",
            KEY,
        ),
        ("https://api.apicore.ai/v1", "/v1/messages", "authorization", f"Bearer {KEY}"),
        ("https://api.apicore.ai/v1", "/v1/chat/completions", "authorization", f"Bearer {KEY}"),
    ],
)
async def test_the_key_goes_in_the_header_the_provider_wants(
    clock: FakeClock, backoffs: list[int], base: str, url: str, header: str, value: str
) -> None:
    handler, seen = script(httpx2.Response(200, json=CLAUDE))
    http = Httpx2Engine(httpx2.AsyncClient(transport=httpx2.MockTransport(handler)))
    sender = Sender(
        http, Limiter(clock=clock, sleep=clock.sleep), base_url=base, api_key=KEY, max_retries=0
    )
    assert (await sender.send(make_request(url=url))).ok
    (sent,) = seen
    assert sent.headers[header] == value
    others = {"authorization", "x-api-key", "x-goog-api-key"} - {header}
    assert not others & set(sent.headers.keys())  # the key travels once
    if url == "/v1/messages":
        assert sent.headers["anthropic-version"] == "2023-06-01"


# ------------------------------------------------------------------------------------ retries


@pytest.mark.anyio
async def test_retry_then_success(clock: FakeClock, backoffs: list[int]) -> None:
    handler, seen = script(
        httpx2.Response(500, content=error_body("The server had an error")),
        httpx2.Response(502, content=b"<html>bad gateway</html>"),
        ok(),
    )
    sender, _ = make_sender(handler, clock, max_retries=2, max_outage_s=0)
    record = await sender.send(make_request())
    assert record.ok
    assert record.attempts == 3
    assert len(seen) == 3
    assert sender.retries == 2


@pytest.mark.anyio
async def test_retries_exhausted(clock: FakeClock, backoffs: list[int]) -> None:
    handler, seen = script(httpx2.Response(500, content=error_body("The server had an error")))
    sender, _ = make_sender(handler, clock, max_retries=2)
    record = await sender.send(make_request())
    assert record.status == "error"
    assert not record.ok
    assert record.error_type == ErrorType.SERVER_ERROR
    assert record.error_message == "HTTP 500: The server had an error (after 3 attempts)"
    assert record.http_status == 500
    assert record.attempts == 3
    assert record.response is not None
    assert "The server had an error" in record.response
    assert record.model == "gpt-4o-mini"
    assert (record.custom_id, record.row) == ("c-3", 3)
    assert len(seen) == 3
    assert backoffs == [1, 2]  # a growing per-row backoff between tries


@pytest.mark.anyio
async def test_no_retries_configured(clock: FakeClock, backoffs: list[int]) -> None:
    handler, seen = script(httpx2.Response(500))
    sender, _ = make_sender(handler, clock, max_retries=0)
    record = await sender.send(make_request())
    assert (record.status, record.attempts, len(seen)) == ("error", 1, 1)
    assert record.error_message == "HTTP 500: empty body"


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 404, 422])
async def test_invalid_request_is_not_retried(
    clock: FakeClock, backoffs: list[int], status: int
) -> None:
    handler, seen = script(
        httpx2.Response(status, content=error_body("bad 'messages'", type_="invalid_request_error"))
    )
    sender, _ = make_sender(handler, clock)
    record = await sender.send(make_request())
    assert record.error_type == ErrorType.INVALID_REQUEST
    assert record.error_message == f"HTTP {status} invalid_request_error: bad 'messages'"
    assert record.attempts == 1
    assert len(seen) == 1
    assert sender.retries == 0


@pytest.mark.anyio
async def test_bad_json_on_200_is_retried_then_recorded(
    clock: FakeClock, backoffs: list[int]
) -> None:
    handler, seen = script(httpx2.Response(200, content=b"<html>proxy page</html>"))
    sender, _ = make_sender(handler, clock, max_retries=1)
    record = await sender.send(make_request())
    assert record.error_type == ErrorType.BAD_RESPONSE
    assert record.attempts == 2
    assert record.http_status == 200
    assert len(seen) == 2


@pytest.mark.anyio
async def test_retry_after_on_5xx_pauses_instead_of_backoff(
    clock: FakeClock, backoffs: list[int]
) -> None:
    handler, _ = script(httpx2.Response(500, headers={"retry-after": "3"}), ok())
    sender, limiter = make_sender(handler, clock, max_outage_s=0)
    record = await sender.send(make_request())
    assert record.ok
    assert clock.now == pytest.approx(3.0)
    assert limiter.pauses == 1
    assert backoffs == []


@pytest.mark.anyio
async def test_retry_after_zero_on_5xx_still_backs_off(
    clock: FakeClock, backoffs: list[int]
) -> None:
    handler, _ = script(httpx2.Response(500, headers={"retry-after": "0"}), ok())
    sender, _ = make_sender(handler, clock)
    assert (await sender.send(make_request())).ok
    assert backoffs == [1]


@pytest.mark.anyio
async def test_programming_errors_are_not_retried(clock: FakeClock, backoffs: list[int]) -> None:
    handler, seen = script(RuntimeError("a bug"))
    sender, _ = make_sender(handler, clock)
    with pytest.raises(RuntimeError, match="a bug"):
        await sender.send(make_request())
    assert len(seen) == 1


# ---------------------------------------------------------------------------- transport errors


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("exc", "error_type", "message"),
    [
        (
            httpx2.ConnectError("connection refused"),
            ErrorType.CONNECTION_ERROR,
            "cannot connect to the server: connection refused",
        ),
        (httpx2.ReadTimeout("timed out"), ErrorType.TIMEOUT, "no response in time (read timeout)"),
        (httpx2.ConnectTimeout("slow"), ErrorType.TIMEOUT, "no response in time (connect timeout)"),
        (
            httpx2.RemoteProtocolError("peer closed connection"),
            ErrorType.CONNECTION_ERROR,
            "HTTP protocol error: peer closed connection",
        ),
        (
            httpx2.ReadError(""),
            ErrorType.CONNECTION_ERROR,
            "the connection was reset or closed before the answer arrived",
        ),
        (
            httpx2.WriteError("broken pipe"),
            ErrorType.CONNECTION_ERROR,
            "the connection was reset or closed while the request was sent: broken pipe",
        ),
        (
            httpx2.ConnectError(""),
            ErrorType.CONNECTION_ERROR,
            "cannot connect to the server: no detail",
        ),
        (
            httpx2.RemoteProtocolError(""),
            ErrorType.CONNECTION_ERROR,
            "HTTP protocol error: no detail",
        ),
    ],
)
async def test_transport_errors_retried_then_recorded(
    clock: FakeClock, backoffs: list[int], exc: Exception, error_type: str, message: str
) -> None:
    handler, seen = script(exc)
    sender, _ = make_sender(handler, clock, max_retries=2, max_outage_s=0)
    record = await sender.send(make_request())
    assert record.status == "error"
    assert record.error_type == error_type
    assert record.error_message == f"{message} (after 3 attempts)"
    assert record.http_status is None
    assert record.response is None
    assert record.attempts == 3
    assert len(seen) == 3


@pytest.mark.anyio
@pytest.mark.parametrize(
    "exc",
    [httpx2.ReadTimeout("t"), httpx2.RemoteProtocolError("closed"), httpx2.ConnectError("no")],
)
async def test_transport_error_then_success(
    clock: FakeClock, backoffs: list[int], exc: Exception
) -> None:
    handler, _ = script(exc, ok())
    sender, _ = make_sender(handler, clock)
    record = await sender.send(make_request())
    assert record.ok
    assert record.attempts == 2


@pytest.mark.anyio
async def test_unsupported_protocol_is_fatal(clock: FakeClock, backoffs: list[int]) -> None:
    handler, seen = script(httpx2.UnsupportedProtocol("Request URL has an unsupported protocol"))
    sender, _ = make_sender(handler, clock)
    with pytest.raises(FatalRunError) as info:
        await sender.send(make_request())
    assert info.value.kind == "config"
    assert len(seen) == 1


# ------------------------------------------------------------------------------- fatal and keys


@pytest.mark.anyio
async def test_401_is_fatal_and_the_key_is_never_shown(
    clock: FakeClock, backoffs: list[int]
) -> None:
    echo = (
        f"Incorrect API key provided: {KEY}. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )
    handler, seen = script(httpx2.Response(401, content=error_body(echo, code="invalid_api_key")))
    sender, _ = make_sender(handler, clock)
    with pytest.raises(FatalRunError) as info:
        await sender.send(make_request())
    exc = info.value
    assert exc.kind == "auth"
    assert exc.message.startswith("the API key was refused (HTTP 401 invalid_api_key: ")
    assert "Incorrect API key provided: [redacted]" in exc.message
    for text in (str(exc), repr(exc), exc.message, *map(str, exc.args)):
        assert KEY not in text
        assert "1234567890abcdef" not in text
    assert exc.__cause__ is None
    assert len(seen) == 1  # not retried


@pytest.mark.anyio
async def test_masked_key_in_body_is_redacted(clock: FakeClock, backoffs: list[int]) -> None:
    echo = "Incorrect API key provided: sk-test-123***********cdef."
    handler, _ = script(httpx2.Response(401, content=error_body(echo)))
    sender, _ = make_sender(handler, clock)
    with pytest.raises(FatalRunError) as info:
        await sender.send(make_request())
    assert "sk-test-123" not in info.value.message
    assert "Incorrect API key provided: sk-[redacted]" in info.value.message


@pytest.mark.anyio
async def test_key_echoed_in_an_error_record_is_redacted(
    clock: FakeClock, backoffs: list[int]
) -> None:
    handler, _ = script(
        httpx2.Response(400, content=error_body(f"cannot use key {KEY} for this model"))
    )
    sender, _ = make_sender(handler, clock)
    record = await sender.send(make_request())
    assert record.status == "error"
    no_key(record)
    assert record.error_message == "HTTP 400: cannot use key [redacted] for this model"
    assert record.response is not None
    assert "[redacted]" in record.response


@pytest.mark.anyio
async def test_key_echoed_in_an_ok_answer_is_redacted_and_nothing_else_is_changed(
    clock: FakeClock, backoffs: list[int]
) -> None:
    answer = completion()
    answer["debug"] = {"authorization": f"Bearer {KEY}", "note": "sk-not-the-key-but-looks-like-it"}
    handler, _ = script(httpx2.Response(200, json=answer))
    sender, _ = make_sender(handler, clock)
    record = await sender.send(make_request())
    assert record.ok
    no_key(record)
    assert record.response is not None
    stored = json.loads(record.response)
    assert stored["debug"] == {
        "authorization": "Bearer [redacted]",
        "note": "sk-not-the-key-but-looks-like-it",  # an answer's text is not rewritten
    }
    assert stored["choices"] == answer["choices"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "body"),
    [
        (429, error_body("You exceeded your current quota", code="insufficient_quota")),
        (403, error_body("用户额度不足", code="insufficient_user_quota")),
        (200, error_body("quota", type_="insufficient_quota")),
    ],
)
async def test_out_of_quota_is_fatal(
    clock: FakeClock, backoffs: list[int], status: int, body: bytes
) -> None:
    handler, seen = script(httpx2.Response(status, content=body))
    sender, limiter = make_sender(handler, clock)
    with pytest.raises(FatalRunError) as info:
        await sender.send(make_request())
    assert info.value.kind == "quota"
    assert len(seen) == 1
    assert limiter.pauses == 0


def test_redact() -> None:
    assert redact(f"a {KEY} b", KEY) == "a [redacted] b"
    assert redact("key sk-abcd1234 here", None) == "key sk-[redacted] here"
    assert redact("sk-", None) == "sk-"
    assert redact("nothing secret", KEY) == "nothing secret"


# ---------------------------------------------------------------------------------- rate limits


@pytest.mark.anyio
async def test_429_with_retry_after_pauses_the_limiter(
    clock: FakeClock, backoffs: list[int]
) -> None:
    sent_at: list[float] = []
    answers = iter(
        [
            httpx2.Response(429, headers={"retry-after": "5"}, content=error_body("slow down")),
            ok(),
        ]
    )

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent_at.append(clock.now)
        return next(answers)

    sender, limiter = make_sender(handler, clock)
    record = await sender.send(make_request())
    assert record.ok
    assert record.attempts == 2
    assert sent_at == [0.0, pytest.approx(5.0)]
    assert limiter.pauses == 1
    assert backoffs == []  # the shared pause replaced the per-row backoff


@pytest.mark.anyio
async def test_429_pause_holds_back_other_workers() -> None:
    # Real time, two workers sharing one limiter: the second starts once the first's 429 has
    # paused everyone, and must wait the pause out although it never saw a 429 itself.
    limiter = Limiter()
    sent: dict[str, list[float]] = {"a": [], "b": []}
    start = anyio.current_time()

    def handler(request: httpx2.Request) -> httpx2.Response:
        who = json.loads(request.content)["who"]
        sent[who].append(anyio.current_time() - start)
        if who == "a" and len(sent["a"]) == 1:
            return httpx2.Response(429, headers={"retry-after-ms": "200"})
        return ok()

    paused = anyio.Event()
    back_off = limiter.back_off

    def observed_back_off(retry_after_s: float | None, reason: str, **kwargs: Any) -> float:
        seconds = back_off(retry_after_s, reason, **kwargs)
        paused.set()
        return seconds

    limiter.back_off = observed_back_off  # type: ignore[method-assign]
    http = Httpx2Engine(httpx2.AsyncClient(transport=httpx2.MockTransport(handler)))
    sender = Sender(http, limiter, base_url=BASE, api_key=KEY, max_retries=2)

    async def worker_b() -> None:
        await paused.wait()
        assert (await sender.send(make_request(body=b'{"who": "b"}'))).ok

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker_b)
        assert (await sender.send(make_request(body=b'{"who": "a"}'))).ok
    assert len(sent["a"]) == 2
    assert sent["a"][1] >= 0.19
    assert len(sent["b"]) == 1
    assert sent["b"][0] >= 0.19
    assert limiter.pauses == 1


@pytest.mark.anyio
async def test_429_without_retry_after_backs_off_everyone(
    clock: FakeClock, backoffs: list[int]
) -> None:
    handler, _ = script(
        httpx2.Response(429, content=error_body("Rate limit reached", code="rate_limit_exceeded")),
        httpx2.Response(429, content=b""),
        ok(),
    )
    sender, limiter = make_sender(handler, clock)
    record = await sender.send(make_request())
    assert record.ok
    assert record.attempts == 3
    assert clock.now == pytest.approx(1.0 + 2.0)  # 1 s, then 2 s: escalated after a pause ended
    assert limiter.pauses == 2


@pytest.mark.anyio
async def test_429_exhausted_is_rate_limited(clock: FakeClock, backoffs: list[int]) -> None:
    handler, seen = script(httpx2.Response(429, content=error_body("Rate limit reached")))
    sender, _ = make_sender(handler, clock, max_retries=1)
    record = await sender.send(make_request())
    assert record.error_type == ErrorType.RATE_LIMITED
    assert record.attempts == 2
    assert len(seen) == 2


@pytest.mark.anyio
async def test_request_too_large_is_not_retried(clock: FakeClock, backoffs: list[int]) -> None:
    handler, seen = script(
        httpx2.Response(
            429, content=error_body("Request too large for gpt-4o on tokens per min (TPM)")
        )
    )
    sender, limiter = make_sender(handler, clock)
    record = await sender.send(make_request())
    assert record.error_type == ErrorType.RATE_LIMITED
    assert record.attempts == 1
    assert len(seen) == 1
    assert limiter.pauses == 0


@pytest.mark.anyio
async def test_rate_limit_headers_reach_the_limiter(clock: FakeClock, backoffs: list[int]) -> None:
    headers = {
        "x-ratelimit-limit-requests": "120",
        "x-ratelimit-limit-tokens": "6000",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s",
    }
    handler, _ = script(httpx2.Response(200, json=completion(), headers=headers))
    sender, limiter = make_sender(handler, clock)
    assert (await sender.send(make_request())).ok
    assert limiter.requests_per_minute == pytest.approx(120)
    assert limiter.tokens_per_minute == pytest.approx(6000)
    # Remaining 0 drained the budget as of when the request left: the next one waits one
    # refill at 120 RPM (0.5 s), not the 2 s until the server's bucket is full.
    assert limiter.paused_for_s() == 0.0
    await limiter.acquire()
    assert clock.now == pytest.approx(0.5)


@pytest.mark.anyio
async def test_failed_attempts_give_their_tokens_back(
    clock: FakeClock, backoffs: list[int]
) -> None:
    # A bucket of 100 tokens; each request is charged 10 + 20 = 30.
    limiter = Limiter(max_tokens_per_minute=6000, clock=clock, sleep=clock.sleep)
    handler, _ = script(httpx2.Response(400, content=error_body("bad")))
    sender, _ = make_sender(handler, clock, limiter=limiter)
    for _ in range(10):  # 300 tokens charged, none used
        await sender.send(make_request())
    assert clock.now == 0.0
    await limiter.acquire(100)  # the bucket is still full
    assert clock.now == 0.0


@pytest.mark.anyio
async def test_a_429_keeps_its_tokens_spent(clock: FakeClock, backoffs: list[int]) -> None:
    """Giving a 429's charge back sent the next request straight into the full window: at --tpm
    60000 against the mock, one 429 set off a chain (47.7% of requests, 6 rows failed)."""
    limiter = Limiter(max_tokens_per_minute=6000, clock=clock, sleep=clock.sleep)  # 100 at once
    limited = httpx2.Response(
        429, headers={"retry-after-ms": "1"}, content=error_body("Rate limit reached")
    )
    handler, _ = script(limited, httpx2.Response(200, json=completion(prompt_tokens=10)))
    sender, _ = make_sender(handler, clock, limiter=limiter)
    await sender.send(make_request())  # 30 charged for the 429, 30 for the success
    started = clock.now
    await limiter.acquire(41)  # 40 left (+ refill), not 70: the 429's 30 stay spent
    assert clock.now - started == pytest.approx(0.01, abs=1e-3)


@pytest.mark.anyio
async def test_success_settles_the_real_usage(clock: FakeClock, backoffs: list[int]) -> None:
    limiter = Limiter(max_tokens_per_minute=6000, clock=clock, sleep=clock.sleep)
    handler, _ = script(httpx2.Response(200, json=completion(prompt_tokens=80)))
    sender, _ = make_sender(handler, clock, limiter=limiter)
    # charged 10 estimated + 20 max output; the prompt was really 80: 70 more are taken
    await sender.send(make_request())
    await limiter.acquire(1)
    assert clock.now == pytest.approx(0.01)


@pytest.mark.anyio
async def test_unused_output_is_not_given_back(clock: FakeClock, backoffs: list[int]) -> None:
    """The server charged max output up front and keeps it: so must the budget (else 429s)."""
    limiter = Limiter(max_tokens_per_minute=6000, clock=clock, sleep=clock.sleep)  # 100 at once
    short = completion(prompt_tokens=10, completion_tokens=1, total_tokens=11)
    handler, _ = script(httpx2.Response(200, json=short))
    sender, _ = make_sender(handler, clock, limiter=limiter)
    await sender.send(make_request())  # charged 10 + 20; the prompt estimate was right
    await limiter.acquire(71)  # 70 left, not 89: the 19 unused output tokens stay spent
    assert clock.now == pytest.approx(0.01)


# -------------------------------------------------------------------------------------- outages


@pytest.mark.anyio
async def test_outage_does_not_use_up_retries_until_max_outage(
    clock: FakeClock, backoffs: list[int]
) -> None:
    handler, seen = script(httpx2.ConnectError("connection refused"))
    sender, limiter = make_sender(handler, clock, max_retries=2, max_outage_s=100)
    record = await sender.send(make_request())
    assert record.error_type == ErrorType.CONNECTION_ERROR
    # Far more than 1 + max_retries attempts: the first 100 s of outage did not count.
    assert len(seen) > 3
    assert record.attempts == len(seen)
    assert clock.now >= 100
    # While the outage was waited out, everyone was paused (escalating, capped at 60 s), not
    # hammered. Past max_outage_s the row failed as usual: 1 + max_retries attempts on its own
    # backoff, pausing nobody (else a long outage would cost every row a 60 s pause per attempt).
    assert limiter.pauses == len(seen) - 3
    assert backoffs == [1, 2]
    assert clock.now < 100 + 60 + 1


@pytest.mark.anyio
async def test_an_outage_is_named_while_it_lasts_and_forgotten_once_the_server_answers(
    clock: FakeClock, backoffs: list[int]
) -> None:
    notes: list[str | None] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        notes.append(sender.outage_note())
        if clock.now < 30:
            raise httpx2.ConnectError("[Errno 111] Connect call failed")
        return ok()

    sender, _ = make_sender(handler, clock, max_retries=1, max_outage_s=300)
    assert sender.outage_note() is None
    record = await sender.send(make_request())
    assert record.ok
    waiting = "cannot connect to api.example.test, waiting up to 300 s (--max-outage)"
    assert notes[0] is None and set(notes[1:]) == {waiting}
    assert sender.outage_note() is None  # an answer came: the outage is over
    clock.now = 0.0
    failing, _ = script(httpx2.ConnectError("[Errno 111] Connect call failed"))
    sender, _ = make_sender(failing, clock, max_retries=1, max_outage_s=10)
    await sender.send(make_request())
    assert sender.outage_note(detail=True) == (
        "cannot connect to api.example.test ([Errno 111] Connect call failed) for over 10 s "
        "(--max-outage): rows now fail as their retries run out"
    )


@pytest.mark.anyio
async def test_outage_that_ends_in_time_costs_the_row_nothing(
    clock: FakeClock, backoffs: list[int]
) -> None:
    down: list[httpx2.Response | Exception] = [httpx2.ConnectError("refused")] * 4
    handler, _ = script(*down, httpx2.Response(503, content=b"upstream down"), ok())
    sender, _ = make_sender(handler, clock, max_retries=1, max_outage_s=300)
    record = await sender.send(make_request())
    assert record.ok
    assert record.attempts == 6


@pytest.mark.anyio
async def test_model_not_found_503_does_not_start_the_outage_clock(
    clock: FakeClock, backoffs: list[int]
) -> None:
    no_channel = httpx2.Response(503, content=error_body("无可用渠道", code="model_not_found"))
    down: list[httpx2.Response | Exception] = [httpx2.ConnectError("refused")] * 3
    handler, _ = script(no_channel, *down, ok())
    sender, _ = make_sender(handler, clock, max_retries=1, max_outage_s=100)
    first = await sender.send(make_request(custom_id="a"))
    assert first.error_type == ErrorType.INVALID_REQUEST
    assert first.attempts == 1
    clock.now += 1000  # long after: a real outage begins now
    second = await sender.send(make_request(custom_id="b"))
    assert second.ok
    assert second.attempts == 4


@pytest.mark.anyio
async def test_non_outage_failure_resets_the_outage_clock(
    clock: FakeClock, backoffs: list[int]
) -> None:
    # A timeout means the server took the connection: the outage, if any, is over, and the next
    # connection failure begins a new one.
    steps = iter(["refused", "timeout", "refused", "refused", "ok"])

    def handler(request: httpx2.Request) -> httpx2.Response:
        step = next(steps)
        if step == "refused":
            raise httpx2.ConnectError("refused")
        if step == "timeout":
            clock.now += 50  # it took 50 s to time out
            raise httpx2.ReadTimeout("slow")
        return ok()

    sender, _ = make_sender(handler, clock, max_retries=1, max_outage_s=10)
    record = await sender.send(make_request())
    assert record.ok
    assert record.attempts == 5  # only the timeout counted against the row


# ------------------------------------------------------------------------------------ join_url


@pytest.mark.parametrize(
    ("base", "path", "url"),
    [
        (
            "https://api.openai.com/v1",
            "/v1/chat/completions",
            "https://api.openai.com/v1/chat/completions",
        ),
        (
            "https://api.openai.com/v1/",
            "/v1/chat/completions",
            "https://api.openai.com/v1/chat/completions",
        ),
        (
            "https://api.openai.com",
            "/v1/chat/completions",
            "https://api.openai.com/v1/chat/completions",
        ),
        ("https://api.openai.com/", "/v1/embeddings", "https://api.openai.com/v1/embeddings"),
        ("http://127.0.0.1:8000/v1", "/v1/responses", "http://127.0.0.1:8000/v1/responses"),
        (
            "https://gw.example/openai/v1",
            "/v1/chat/completions",
            "https://gw.example/openai/v1/chat/completions",
        ),
        (
            "https://gw.example/api",
            "/v1/chat/completions",
            "https://gw.example/api/v1/chat/completions",
        ),
        (
            "https://api.openai.com/v1",
            "/chat/completions",
            "https://api.openai.com/v1/chat/completions",
        ),
        ("https://api.openai.com/v1", "/v10/x", "https://api.openai.com/v1/v10/x"),
        ("https://api.openai.com/v1", "/v1", "https://api.openai.com/v1"),
        (
            "https://api.apicore.ai/v1",
            "/v1beta/models/gemini-2.5-flash:generateContent",
            "https://api.apicore.ai/v1beta/models/gemini-2.5-flash:generateContent",
        ),
        (
            "https://generativelanguage.googleapis.com",
            "/v1beta/models/g:generateContent",
            "https://generativelanguage.googleapis.com/v1beta/models/g:generateContent",
        ),
        ("https://gw.example/v1", "/v2alpha/x", "https://gw.example/v2alpha/x"),
        # The task families at the gateway's root (issue 11): /v1 of the base is dropped.
        (
            "https://api.apicore.ai/v1",
            "/mj/submit/imagine",
            "https://api.apicore.ai/mj/submit/imagine",
        ),
        (
            "https://api.apicore.ai/v1/",
            "/mj/task/list-by-condition",
            "https://api.apicore.ai/mj/task/list-by-condition",
        ),
        (
            "https://api.apicore.ai/v1",
            "/mj-fast/mj/submit/imagine",
            "https://api.apicore.ai/mj-fast/mj/submit/imagine",
        ),
        (
            "https://api.apicore.ai/v1",
            "/suno/submit/music",
            "https://api.apicore.ai/suno/submit/music",
        ),
        (
            "https://api.apicore.ai/v1",
            "/kling/v1/videos/text2video",
            "https://api.apicore.ai/kling/v1/videos/text2video",
        ),
        ("https://api.apicore.ai/v1", "/jimeng/", "https://api.apicore.ai/jimeng/"),
        (
            "https://api.apicore.ai",
            "/mj/submit/imagine",
            "https://api.apicore.ai/mj/submit/imagine",
        ),
        ("https://gw.example/openai/v1", "/suno/fetch", "https://gw.example/openai/suno/fetch"),
        # Only whole segments: these are /v1 paths of their own.
        ("https://gw.example/v1", "/mjx/submit", "https://gw.example/v1/mjx/submit"),
        ("https://gw.example/v1", "/sunoapi", "https://gw.example/v1/sunoapi"),
        ("https://gw.example/v1", "/v1/videos", "https://gw.example/v1/videos"),
    ],
)
def test_join_url(base: str, path: str, url: str) -> None:
    assert join_url(base, path) == url


@pytest.mark.anyio
async def test_undecodable_body_is_retried_then_recorded_not_a_crash(
    clock: FakeClock, backoffs: list[int]
) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        # A stream, so that decoding happens where it does on the wire: while the body is read.
        stream = httpx2.ByteStream(b"not gzip")
        return httpx2.Response(200, stream=stream, headers={"content-encoding": "gzip"})

    sender, _ = make_sender(handler, clock, max_retries=1)
    record = await sender.send(make_request())
    assert record.status == "error" and record.error_type == ErrorType.BAD_RESPONSE
    assert record.attempts == 2 and "undecodable" in (record.error_message or "")


@pytest.mark.anyio
async def test_lone_surrogate_in_the_response_model_is_made_storable(
    clock: FakeClock, backoffs: list[int]
) -> None:
    body = b'{"model":"gpt\\ud800x","choices":[{"finish_reason":"stop"}],"usage":{}}'
    sender, _ = make_sender(lambda request: httpx2.Response(200, content=body), clock)
    record = await sender.send(make_request())
    assert record.status == "ok" and record.model is not None
    record.model.encode("utf-8")  # raises if the lone surrogate were kept


# ---------------------------------------------------- one row's bad luck, stickiness, probing


@pytest.mark.anyio
async def test_a_row_that_alone_keeps_getting_502_uses_up_its_own_retries(
    clock: FakeClock, backoffs: list[int]
) -> None:
    # Row "a" always gets a 502, but row "b", sent after a's first attempt, succeeds meanwhile:
    # the server is up, so a's 502s are a's own. They must count against a's retries (a row that
    # alone gets 502 used to retry for as long as any other row succeeded), and must not pause
    # everyone as an outage would.
    a_inside = anyio.Event()
    b_answered = anyio.Event()
    seen_a: list[float] = []

    async def handler(request: httpx2.Request) -> httpx2.Response:
        if json.loads(request.content)["who"] == "a":
            seen_a.append(clock.now)
            a_inside.set()
            await b_answered.wait()
            return httpx2.Response(502, content=error_body("Bad gateway.", code="502"))
        return ok()

    sender, limiter = make_sender(handler, clock, max_retries=2, max_outage_s=300)

    async def row_b() -> None:
        await a_inside.wait()
        clock.now += 1.0
        assert (await sender.send(make_request(body=b'{"who": "b"}', custom_id="b"))).ok
        b_answered.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(row_b)
        record = await sender.send(make_request(body=b'{"who": "a"}', custom_id="a"))
    assert record.error_type == ErrorType.SERVER_ERROR
    assert record.attempts == 3 == len(seen_a)
    assert record.error_message == "HTTP 502 502: Bad gateway. (after 3 attempts)"
    assert limiter.pauses == 0
    assert backoffs == [1, 2]


@pytest.mark.anyio
async def test_after_a_fatal_error_no_other_request_is_sent(
    clock: FakeClock, backoffs: list[int]
) -> None:
    handler, seen = script(httpx2.Response(401, content=error_body("bad key")), ok())
    sender, _ = make_sender(handler, clock)
    with pytest.raises(FatalRunError) as first:
        await sender.send(make_request(custom_id="a"))
    for cid in ("b", "c"):
        with pytest.raises(FatalRunError) as later:
            await sender.send(make_request(custom_id=cid))
        assert (later.value.kind, later.value.message) == (first.value.kind, first.value.message)
    assert len(seen) == 1


@pytest.mark.anyio
async def test_a_429_storm_sees_one_probe_per_pause_not_one_request_per_worker() -> None:
    # Real time: 6 workers, a server that answers 429 (retry-after 50 ms) to everything for
    # 0.4 s. Without a probe, every pause ends with all 6 workers firing at once: ~6 x 8 = 48
    # 429s. With one, the pause ends with a single request until the storm is over.
    limiter = Limiter()
    start = anyio.current_time()
    statuses: list[int] = []

    async def handler(request: httpx2.Request) -> httpx2.Response:
        await anyio.sleep(0.005)
        if anyio.current_time() - start < 0.4:
            statuses.append(429)
            return httpx2.Response(
                429, headers={"retry-after-ms": "50"}, content=error_body("Rate limit reached")
            )
        statuses.append(200)
        return ok()

    http = Httpx2Engine(httpx2.AsyncClient(transport=httpx2.MockTransport(handler)))
    sender = Sender(http, limiter, base_url=BASE, api_key=KEY, max_retries=20)
    records: list[Record] = []

    async def worker(i: int) -> None:
        records.append(await sender.send(make_request(row=i, custom_id=str(i))))

    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(worker, i)
    assert all(r.ok for r in records) and len(records) == 6
    assert statuses.count(200) == 6
    # 6 at the start, then about one per 50 ms pause (plus the probe's round trips).
    assert statuses.count(429) <= 6 + 0.4 / 0.05 + 2
    assert limiter.probes >= 3


# -------------------------------------------------------------------------------------- fuzzing

_raw_bodies = (
    st.binary(max_size=200)
    | st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b'{"error": null}',
            b'{"error": {"type": ["x"], "code": {"a": 1}}}',
            b'{"choices": "x", "usage": {"prompt_tokens": "12"}, "model": 5}',
            b'{"model": "\\ud800", "choices": [{"finish_reason": "\\udfff"}]}',
            b"<html>502 Bad Gateway</html>",
        ]
    )
    | st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(st.text(max_size=8), st.none()))
)
_fuzz_headers = st.dictionaries(
    st.sampled_from(
        [
            "retry-after",
            "retry-after-ms",
            "x-should-retry",
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
            "content-encoding",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
    | st.sampled_from(["0", "1e400", "nan", "-5", "gzip", "br", "6m0s"]),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    status=st.integers(min_value=200, max_value=599),
    headers=_fuzz_headers,
    content=_raw_bodies,
)
def test_fuzz_any_answer_becomes_a_storable_record_or_a_fatal_stop(
    status: int, headers: dict[str, str], content: bytes
) -> None:
    # Whatever a server sends back, the row ends as a record that Parquet can store (or, for a
    # whole-run failure, FatalRunError): never another exception, which would end the run.
    clock = FakeClock()

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, headers=headers, content=content)

    async def main() -> Record | None:
        sender, _ = make_sender(handler, clock, max_retries=0, max_outage_s=0)
        try:
            return await sender.send(make_request())
        except FatalRunError as exc:
            assert KEY not in exc.message
            return None

    record = anyio.run(main)
    if record is not None:
        assert record.status in ("ok", "error")
        assert record.attempts == 1
        records_to_table([record])
        no_key(record)
