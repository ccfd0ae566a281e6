"""The mock server, as its users see it: through httpx2, raw sockets, and its command line."""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import hashlib
import json
import os
import select
import shlex
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from batchrun.mock import FAULT_KINDS, MockConfig, MockServer, format_go_duration, serve
from batchrun.mock.audio import speech_stream
from batchrun.mock.cli_args import add_arguments, config_from_args
from batchrun.mock.ratelimit import RateLimiter, TokenBucket

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def shared_server() -> Iterator[MockServer]:
    with MockServer(MockConfig(fault_retry_after_ms=20)) as server:
        yield server


@pytest.fixture
def server(shared_server: MockServer) -> MockServer:
    shared_server.reset()
    shared_server.set_faults({})
    return shared_server


@pytest.fixture
def client(server: MockServer) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=server.base_url, timeout=5.0) as client:
        yield client


def chat(client: httpx2.Client, **body: Any) -> httpx2.Response:
    body.setdefault("model", "gpt-4o-mini")
    body.setdefault("messages", HELLO)
    return client.post("/chat/completions", json=body)


def usage_of(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    usage: dict[str, Any] = response.json()["usage"]
    return usage


# -- endpoints ----------------------------------------------------------------------------------


def test_chat_completion_has_the_openai_shape(client: httpx2.Client) -> None:
    response = chat(client, model="gpt-4.1-mini")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"].startswith("req_")
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "gpt-4.1-mini"
    assert isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["completion_tokens"] == 16  # MockConfig.reply_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


def test_prompt_tokens_follow_the_text_messages_and_tools(client: httpx2.Client) -> None:
    short = usage_of(chat(client, messages=[{"role": "user", "content": "x" * 40}]))
    longer = usage_of(chat(client, messages=[{"role": "user", "content": "x" * 4000}]))
    assert longer["prompt_tokens"] - short["prompt_tokens"] == (4000 - 40) // 4
    two = usage_of(chat(client, messages=[{"role": "user", "content": "x" * 40}] * 2))
    assert two["prompt_tokens"] > short["prompt_tokens"] + 3
    parts = [{"type": "text", "text": "x" * 400}]
    assert (
        usage_of(chat(client, messages=[{"role": "user", "content": parts}]))["prompt_tokens"]
        > short["prompt_tokens"] + 80
    )
    tool = {"type": "function", "function": {"name": "f", "description": "d" * 400}}
    with_tools = usage_of(
        chat(client, messages=[{"role": "user", "content": "x" * 40}], tools=[tool])
    )
    assert with_tools["prompt_tokens"] > short["prompt_tokens"] + 100


def test_exact_tokens_count_the_prompt_as_the_estimate_and_openai_do() -> None:
    # The same tokenizers `batchrun estimate` uses: the demo's estimate and actual then agree.
    from batchrun.cost.tokens import count_request_tokens
    from tests.test_tokens import COOKBOOK_MESSAGES

    image = {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}}
    bodies = [
        {"model": "gpt-4o", "messages": COOKBOOK_MESSAGES},
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [image]}]},
    ]
    with (
        MockServer(MockConfig(exact_tokens=True)) as exact,
        httpx2.Client(base_url=exact.base_url, timeout=5.0) as client,
    ):
        for body in bodies:
            counted = count_request_tokens("/v1/chat/completions", body)
            assert usage_of(chat(client, **body))["prompt_tokens"] == counted.tokens
        embedded = client.post(
            "/embeddings", json={"model": "text-embedding-3-small", "input": "hello world"}
        )
        assert embedded.json()["usage"]["prompt_tokens"] == 2  # cl100k_base: "hello", " world"
    if counted.exact:  # o200k_base available (make installs it): OpenAI's own figure
        assert count_request_tokens("/v1/chat/completions", bodies[0]).tokens == 124


def test_echo_repeats_the_last_user_message(client: httpx2.Client) -> None:
    asked = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "row 7?"}]
    answer = chat(client, messages=asked, mock_echo=True).json()["choices"][0]["message"]
    assert answer["content"] == "row 7?"
    plain = chat(client, messages=asked).json()["choices"][0]["message"]["content"]
    assert plain != "row 7?"
    with (
        MockServer(MockConfig(echo=True)) as echoing,
        httpx2.Client(base_url=echoing.base_url, timeout=5.0) as other,
    ):
        reply = chat(other, messages=asked, max_tokens=1).json()["choices"][0]
        assert (reply["message"]["content"], reply["finish_reason"]) == ("row ", "length")


def test_images_are_billed_by_the_model_and_their_size(client: httpx2.Client) -> None:
    # OpenAI's vision guide: gpt-4o 85 + 170 per 512px tile, gpt-4o-mini 2,833 + 5,667 per tile;
    # 85 for any image, as the mock once billed, is gpt-4o's low-detail price.
    png = base64.b64encode(
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR"
        + struct.pack(">IIBBBBB", 1024, 1024, 8, 6, 0, 0, 0) + b"\0" * 4
    ).decode()  # fmt: skip

    def prompt_tokens(model: str, url: str, detail: str | None = None) -> int:
        image: dict[str, str] = {"url": url} | ({"detail": detail} if detail else {})
        content = [{"type": "image_url", "image_url": image}]
        return int(usage_of(chat(client, model=model, messages=[
            {"role": "user", "content": content}]))["prompt_tokens"])  # fmt: skip

    text_only = 3 + 3 + 1  # priming, the message, its role
    data_url = f"data:image/png;base64,{png}"
    assert prompt_tokens("gpt-4o", data_url) == text_only + 85 + 4 * 170
    assert prompt_tokens("gpt-4o", data_url, "low") == text_only + 85
    assert prompt_tokens("gpt-4o-mini", data_url) == text_only + 2833 + 4 * 5667
    # A remote image the mock cannot fetch: the most the model bills (8 tiles).
    assert prompt_tokens("gpt-4o-mini", "https://example.com/a.png") == text_only + 2833 + 8 * 5667


@pytest.mark.parametrize("cap_field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_cuts_the_reply_with_finish_reason_length(
    client: httpx2.Client, cap_field: str
) -> None:
    body = chat(client, **{cap_field: 5}).json()
    assert body["usage"]["completion_tokens"] == 5
    assert body["choices"][0]["finish_reason"] == "length"
    assert len(body["choices"][0]["message"]["content"].split()) == 5
    roomy = chat(client, **{cap_field: 500}).json()
    assert roomy["usage"]["completion_tokens"] == 16
    assert roomy["choices"][0]["finish_reason"] == "stop"


def test_mock_reply_tokens_sets_the_reply_length(client: httpx2.Client) -> None:
    assert usage_of(chat(client, mock_reply_tokens=40))["completion_tokens"] == 40


def test_n_choices_multiply_completion_tokens(client: httpx2.Client) -> None:
    body = chat(client, n=3, mock_reply_tokens=7).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"]["completion_tokens"] == 21


def test_reasoning_models_report_reasoning_tokens(client: httpx2.Client) -> None:
    usage = usage_of(chat(client, model="o3-mini"))
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 64
    assert usage["completion_tokens"] == 64 + 16
    for model in ("o1", "o4-mini", "gpt-5-nano"):
        assert usage_of(chat(client, model=model))["completion_tokens_details"]["reasoning_tokens"]
    starved = chat(client, model="gpt-5-mini", max_completion_tokens=10).json()
    assert starved["usage"]["completion_tokens_details"]["reasoning_tokens"] == 10
    assert starved["choices"][0]["message"]["content"] == ""
    assert starved["choices"][0]["finish_reason"] == "length"


def test_tools_get_a_tool_call(client: httpx2.Client) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"],
            },
        },
    }
    choice = chat(client, tools=[tool]).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "mock", "days": 1}
    plain = chat(client, tools=[tool], tool_choice="none").json()["choices"][0]
    assert plain["finish_reason"] == "stop" and "tool_calls" not in plain["message"]


def test_a_long_system_prompt_is_cached_the_second_time(client: httpx2.Client) -> None:
    messages = [{"role": "system", "content": "rules " * 1000}, *HELLO]
    first = usage_of(chat(client, messages=messages))
    second = usage_of(chat(client, messages=messages))
    assert first["prompt_tokens_details"]["cached_tokens"] == 0
    cached = second["prompt_tokens_details"]["cached_tokens"]
    assert cached >= 1024 and cached % 128 == 0 and cached <= second["prompt_tokens"]


def test_embeddings_take_a_string_or_a_list(client: httpx2.Client) -> None:
    one = client.post("/embeddings", json={"model": "text-embedding-3-small", "input": "hi"})
    assert one.status_code == 200
    body = one.json()
    assert body["object"] == "list" and body["model"] == "text-embedding-3-small"
    assert len(body["data"]) == 1 and body["data"][0]["object"] == "embedding"
    assert len(body["data"][0]["embedding"]) == 8
    assert body["usage"] == {"prompt_tokens": 1, "total_tokens": 1}
    many = client.post(
        "/embeddings", json={"model": "m", "input": ["a", "b" * 40, "a"], "dimensions": 4}
    ).json()
    assert [d["index"] for d in many["data"]] == [0, 1, 2]
    assert many["data"][0]["embedding"] == many["data"][2]["embedding"]  # deterministic
    assert many["data"][0]["embedding"] != many["data"][1]["embedding"]
    assert all(len(d["embedding"]) == 4 for d in many["data"])
    assert many["usage"]["prompt_tokens"] == 1 + 10 + 1
    packed = client.post(
        "/embeddings", json={"model": "m", "input": "hi", "encoding_format": "base64"}
    ).json()
    assert len(base64.b64decode(packed["data"][0]["embedding"])) == 8 * 4
    tokens = client.post("/embeddings", json={"model": "m", "input": [1, 2, 3]}).json()
    assert tokens["usage"]["prompt_tokens"] == 3


def test_models_lists_model_ids(client: httpx2.Client) -> None:
    body = client.get("/models").json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert "gpt-4o-mini" in ids and all(m["object"] == "model" for m in body["data"])


def test_models_can_be_unlisted_like_a_server_without_the_endpoint() -> None:
    with MockServer(MockConfig(list_models=False, models=("only-this",))) as server:
        response = httpx2.get(server.base_url + "/models")
    assert response.status_code == 404
    assert "Invalid URL (GET /v1/models)" in response.json()["error"]["message"]


def test_billing_endpoints_report_grant_and_cents(client: httpx2.Client) -> None:
    with MockServer(MockConfig(quota_usd=5.0, used_usd=6.9596)) as server:
        subscription = httpx2.get(server.base_url + "/dashboard/billing/subscription").json()
        usage = httpx2.get(server.base_url + "/dashboard/billing/usage?start_date=x").json()
    assert subscription["object"] == "billing_subscription"
    assert subscription["hard_limit_usd"] == 5.0 == subscription["system_hard_limit_usd"]
    assert usage == {"object": "list", "total_usage": 695.96}


def test_billing_can_be_absent() -> None:
    with MockServer(MockConfig(billing=False)) as server:
        for path in ("/dashboard/billing/subscription", "/dashboard/billing/usage"):
            response = httpx2.get(server.base_url + path)
            assert response.status_code == 404
            assert response.json()["error"]["type"] == "invalid_request_error"


def test_unknown_paths_and_methods_get_an_openai_404(client: httpx2.Client) -> None:
    for response in (client.get("/nothing"), client.get("/chat/completions")):
        assert response.status_code == 404
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert "GET /v1/chat/completions" in client.get("/chat/completions").json()["error"]["message"]


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": []}', "model"),
        (b'{"model": "m"}', "messages"),
        (b'{"model": "m", "messages": [{}], "n": 0}', "n"),
        (b'{"model": "m", "messages": [{}], "max_tokens": "5"}', "max_tokens"),
        (b'{"model": "m", "messages": [{}], "mock_fault": "nope"}', "mock_fault"),
    ],
)
def test_invalid_bodies_get_400(client: httpx2.Client, content: bytes, param: str | None) -> None:
    response = client.post("/chat/completions", content=content)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["param"] == param


def test_stats_count_requests_and_reset_zeroes_them(
    server: MockServer, client: httpx2.Client
) -> None:
    chat(client, mock_reply_tokens=3)
    chat(client, mock_fault="500")
    client.get("/nope")
    stats = client.get(server.base_url.removesuffix("/v1") + "/mock/stats").json()
    assert stats["requests"] == {
        "total": 3,
        "by_path": {"/v1/chat/completions": 2, "(unknown)": 1},
        "by_status": {"200": 1, "404": 1, "500": 1},
    }
    assert stats["faults"] == {"500": 1}
    assert stats["tokens"]["completion_tokens"] == 3
    assert stats["tokens"]["total_tokens"] == stats["tokens"]["prompt_tokens"] + 3
    assert server.stats()["requests"]["total"] == 3
    reset = client.post(server.base_url.removesuffix("/v1") + "/mock/reset")
    assert reset.status_code == 200
    assert server.stats()["requests"] == {"total": 0, "by_path": {}, "by_status": {}}


def test_api_key_is_required_and_never_echoed() -> None:
    key = "sk-mock-secret-123"
    config = MockConfig(api_key=key)
    assert key not in repr(config)
    with MockServer(config) as server, httpx2.Client(base_url=server.base_url) as client:
        missing = chat(client)
        wrong = client.post(
            "/chat/completions",
            json={"model": "m", "messages": HELLO},
            headers={"Authorization": "Bearer sk-other"},
        )
        for response in (missing, wrong, client.get("/models")):
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_api_key"
            assert response.json()["error"]["type"] == "invalid_request_error"
            assert key not in response.text and key not in str(response.headers)
        good = client.post(
            "/chat/completions",
            json={"model": "m", "messages": HELLO},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert good.status_code == 200
        assert key not in json.dumps(server.stats())


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "error_type", "code"),
    [
        ("429", 429, "requests", "rate_limit_exceeded"),
        ("429_no_retry_after", 429, "new_api_error", None),
        ("insufficient_quota", 429, "insufficient_quota", "insufficient_quota"),
        ("user_quota", 403, "one_api_error", "insufficient_user_quota"),
        ("401", 401, "invalid_request_error", "invalid_api_key"),
        ("400", 400, "invalid_request_error", "context_length_exceeded"),
        ("500", 500, "server_error", None),
        ("502", 502, "cf_bad_gateway", 502),
        ("503", 503, "new_api_error", "model_not_found"),
        ("error200", 200, "upstream_error", "do_request_failed"),
    ],
)
def test_error_faults_have_their_wire_shape(
    client: httpx2.Client, kind: str, status: int, error_type: str, code: str | int | None
) -> None:
    response = chat(client, mock_fault=kind)
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["type"], error["code"]) == (error_type, code)
    assert set(error) == {"message", "type", "param", "code"}
    assert ("retry-after" in response.headers) == (kind == "429")


def test_fault_429_says_when_to_retry(client: httpx2.Client) -> None:
    response = chat(client, mock_fault="429")
    assert response.headers["retry-after"] == "1"  # rounded up from 20 ms
    assert response.headers["retry-after-ms"] == "20"


def test_gateway_messages_end_with_a_request_id(client: httpx2.Client) -> None:
    message = chat(client, mock_fault="user_quota").json()["error"]["message"]
    assert message.startswith("用户额度不足") and message.endswith(")")
    assert "(request id: " in message


def test_fault_429_empty_has_an_empty_body(client: httpx2.Client) -> None:
    response = chat(client, mock_fault="429_empty")
    assert response.status_code == 429
    assert response.content == b""
    assert "retry-after" not in response.headers


def test_fault_html_is_a_proxy_page(client: httpx2.Client) -> None:
    response = chat(client, mock_fault="html")
    assert response.status_code == 502
    assert response.headers["content-type"] == "text/html"
    assert response.text.startswith("<html>")


def test_fault_malformed_is_not_json(client: httpx2.Client) -> None:
    response = chat(client, mock_fault="malformed")
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_fault_no_usage_is_a_completion_without_usage(client: httpx2.Client) -> None:
    body = chat(client, mock_fault="no_usage").json()
    assert body["object"] == "chat.completion" and body["choices"]
    assert "usage" not in body
    embedding = client.post(
        "/embeddings", json={"model": "m", "input": "x", "mock_fault": "no_usage"}
    )
    assert "usage" not in embedding.json() and embedding.json()["data"]


def test_fault_truncated_breaks_the_read(server: MockServer, client: httpx2.Client) -> None:
    with pytest.raises(httpx2.RemoteProtocolError):
        chat(client, mock_fault="truncated")
    assert chat(client).status_code == 200  # the client's pool recovers on a new connection
    assert server.stats()["faults"] == {"truncated": 1}


def test_fault_reset_drops_the_connection_both_ways(
    server: MockServer, client: httpx2.Client
) -> None:
    # The first reset comes before any byte, the second after part of the head.
    for _ in range(2):
        with pytest.raises(httpx2.TransportError):
            chat(client, mock_fault="reset")
    assert chat(client).status_code == 200
    assert server.stats()["faults"] == {"reset": 2}


def test_fault_timeout_never_answers_and_holds_the_connection(server: MockServer) -> None:
    with httpx2.Client(base_url=server.base_url, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(httpx2.ReadTimeout):
            chat(client, mock_fault="timeout")
        assert time.monotonic() - started >= 0.3
    assert server.stats()["faults"] == {"timeout": 1}
    assert "200" not in server.stats()["requests"]["by_status"]


def test_fault_times_fails_a_body_k_times_then_succeeds(client: httpx2.Client) -> None:
    statuses = [chat(client, mock_fault="503", mock_fault_times=2).status_code for _ in range(4)]
    assert statuses == [503, 503, 200, 200]
    other = [chat(client, mock_fault="503", mock_fault_times=1, n=2).status_code for _ in range(2)]
    assert other == [503, 200]  # another body has its own count


def test_random_faults_are_seeded_and_can_change_at_runtime() -> None:
    def statuses(server: MockServer) -> list[int]:
        with httpx2.Client(base_url=server.base_url) as client:
            return [chat(client).status_code for _ in range(200)]

    config = MockConfig(faults={"500": 0.3, "502": 0.2}, seed=7)
    with MockServer(config) as first, MockServer(config) as second:
        sequence = statuses(first)
        assert sequence == statuses(second)
        assert 30 <= sequence.count(500) <= 90 and 15 <= sequence.count(502) <= 65
        assert first.stats()["faults"] == {
            "500": sequence.count(500),
            "502": sequence.count(502),
        }
        first.reset()
        assert statuses(first) == sequence  # reset replays the same draws
        first.set_faults({"400": 1.0})
        assert set(statuses(first)) == {400}
        first.set_faults({})
        assert set(statuses(first)) == {200}
        with pytest.raises(ValueError, match="unknown fault kind"):
            first.set_faults({"418": 0.1})


# -- rate limits --------------------------------------------------------------------------------


def test_rpm_limit_answers_429_with_headers() -> None:
    with (
        MockServer(MockConfig(rpm=60, burst_s=1.0)) as server,
        httpx2.Client(base_url=server.base_url) as client,
    ):
        ok = chat(client)
        assert ok.status_code == 200
        assert ok.headers["x-ratelimit-limit-requests"] == "60"
        assert ok.headers["x-ratelimit-remaining-requests"] == "0"  # a 1-request burst, spent
        assert ok.headers["x-ratelimit-reset-requests"] in ("1s", "999ms", "998ms")
        assert "x-ratelimit-limit-tokens" not in ok.headers
        limited = chat(client)
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "1"
        assert 0 < int(limited.headers["retry-after-ms"]) <= 1000
        error = limited.json()["error"]
        assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
        assert error["message"].startswith("Rate limit reached for gpt-4o-mini")
        assert "requests per min (RPM): Limit 60" in error["message"]
        assert server.stats()["rate_limited"] == {"requests": 1}
        time.sleep(int(limited.headers["retry-after-ms"]) / 1000 + 0.02)
        assert chat(client).status_code == 200


def test_tpm_limit_charges_prompt_plus_max_tokens_times_n() -> None:
    # 600 TPM: a 10-token window refilled at 10 tokens/s, so one request leaves it in debt.
    with (
        MockServer(MockConfig(tpm=600, burst_s=1.0)) as server,
        httpx2.Client(base_url=server.base_url) as client,
    ):
        ok = chat(client, max_tokens=40, n=2)
        assert ok.status_code == 200
        charge = server.stats()["tokens"]["tpm_charged"]
        assert charge == usage_of(ok)["prompt_tokens"] + 80
        assert ok.headers["x-ratelimit-limit-tokens"] == "600"
        assert ok.headers["x-ratelimit-remaining-tokens"] == "0"
        assert ok.headers["x-ratelimit-reset-tokens"] == format_go_duration(charge / 10)
        assert "x-ratelimit-limit-requests" not in ok.headers
        limited = chat(client, max_tokens=40)
        assert limited.status_code == 429
        error = limited.json()["error"]
        assert (error["type"], error["code"]) == ("tokens", "rate_limit_exceeded")
        assert "tokens per min (TPM): Limit 600" in error["message"]
        assert 5 <= int(limited.headers["retry-after"]) <= 9
        too_large = chat(client, max_tokens=300, n=2)
        assert too_large.status_code == 429
        message = too_large.json()["error"]["message"]
        assert message.startswith("Request too large for gpt-4o-mini")
        assert "Limit 600, Requested" in message
        assert "retry-after" not in too_large.headers
        assert server.stats()["rate_limited"] == {"tokens": 1, "too_large": 1}


def test_token_bucket_refills_continuously_and_allows_debt() -> None:
    bucket = TokenBucket(600, burst_s=1.0, now=0.0)  # 10 per 1 s window, 10 per second refill
    assert bucket.capacity == 10 and bucket.remaining() == 600
    bucket.take(10)
    assert bucket.wait_s(1) == pytest.approx(0.1)
    bucket.refill(0.05)
    assert bucket.level == pytest.approx(0.5)
    bucket.refill(100.0)
    assert bucket.level == 10  # never above capacity
    assert TokenBucket(3, burst_s=1.0, now=0.0).capacity == 1  # at least one request
    tokens = TokenBucket(1200, burst_s=1.0, now=0.0)  # 20-token window, 20 tokens/s
    assert tokens.wait_s(500) == 0  # larger than the window but within the minute: admitted...
    tokens.take(500)
    assert tokens.wait_s(1) == pytest.approx(481 / 20)  # ...and paid back before the next one
    assert tokens.remaining() == 0 and tokens.reset_s() == pytest.approx(25.0)


def test_rate_limiter_takes_from_both_buckets_or_neither() -> None:
    limiter = RateLimiter(rpm=120, tpm=600, burst_s=1.0, now=0.0)  # windows: 2 req, 10 tokens
    assert limiter.admit(4, now=0.0).admitted
    refused = limiter.admit(8, now=0.0)
    assert not refused.admitted and refused.limit == "tokens"
    assert limiter.requests is not None and limiter.requests.level == 1  # untouched by refusal
    assert limiter.admit(6, now=0.0).admitted
    refused = limiter.admit(1, now=0.0)
    assert refused.limit == "requests" and refused.retry_after_s == pytest.approx(0.5)
    assert b"retry-after: 1\r\nretry-after-ms: 500\r\n" in refused.headers
    assert limiter.admit(601, now=10.0).too_large


def test_a_minute_bucket_reports_openai_headers_reset_is_until_full() -> None:
    # burst_s = 60: the bucket is the whole minute, continuous, as OpenAI describes its limits.
    limiter = RateLimiter(rpm=600, tpm=None, burst_s=60.0, now=0.0)
    for _ in range(2):
        assert limiter.admit(1, now=0.0).admitted
    headers = limiter.admit(1, now=0.0).headers
    # 3 of 600 used: 597 left, and full again after 3 refills of 0.1 s, not after a minute.
    assert b"x-ratelimit-remaining-requests: 597\r\n" in headers
    assert b"x-ratelimit-reset-requests: 300ms\r\n" in headers
    bucket = limiter.requests
    assert bucket is not None
    bucket.refill(0.3)
    assert bucket.remaining() == 600 and bucket.reset_s() == pytest.approx(0.0)


def test_a_cotenant_that_drained_the_key_leaves_one_refill_per_request() -> None:
    limiter = RateLimiter(rpm=300, tpm=None, burst_s=60.0, now=0.0, cotenant_drain=True)
    refused = limiter.admit(1, now=0.0)
    assert not refused.admitted and refused.retry_after_s == pytest.approx(0.2)
    assert b"x-ratelimit-remaining-requests: 0\r\n" in refused.headers
    assert b"x-ratelimit-reset-requests: 1m0s\r\n" in refused.headers  # until FULL
    assert b"retry-after-ms: 200\r\n" in refused.headers  # until the next one fits
    ok = limiter.admit(1, now=0.2)
    assert ok.admitted
    assert b"x-ratelimit-remaining-requests: 0\r\n" in ok.headers
    assert b"x-ratelimit-reset-requests: 1m0s\r\n" in ok.headers
    assert not limiter.admit(1, now=0.3).admitted
    assert limiter.admit(1, now=0.4).admitted


def test_a_cotenant_share_takes_part_of_every_refill() -> None:
    limiter = RateLimiter(
        rpm=600, tpm=6000, burst_s=60.0, now=0.0, cotenant_drain=True, cotenant_share=0.25
    )
    assert not limiter.admit(1, now=0.0).admitted  # drained as the first request came in
    # 10 requests and 100 tokens a second flow in; the co-tenant takes a quarter of each.
    assert limiter.admit(75, now=10.0).admitted
    assert limiter.requests is not None and limiter.requests.level == pytest.approx(74.0)
    assert limiter.tokens is not None and limiter.tokens.level == pytest.approx(675.0)
    # The server cannot foresee the co-tenant: its reset counts the full refill rate.
    assert limiter.requests.reset_s() == pytest.approx((600 - 74) / 10)
    limiter.reset(20.0)
    assert not limiter.admit(1, now=30.0).admitted  # drained again at the first request


def test_cotenant_drain_through_the_server_and_after_mock_reset() -> None:
    with (
        MockServer(MockConfig(rpm=600, burst_s=60.0, cotenant_drain=True)) as server,
        httpx2.Client(base_url=server.base_url) as client,
    ):
        first = chat(client)
        assert first.status_code == 429
        assert first.headers["x-ratelimit-remaining-requests"] == "0"
        assert first.headers["x-ratelimit-reset-requests"] == "1m0s"  # until full
        assert first.headers["retry-after-ms"] == "100"  # until the next one fits
        time.sleep(0.15)
        assert chat(client).status_code == 200
        server.reset()
        assert chat(client).status_code == 429


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0004, "0s"),
        (0.012, "12ms"),
        (0.5, "500ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (7.66, "7.66s"),
        (60, "1m0s"),
        (90.5, "1m30.5s"),
        (360, "6m0s"),
        (3600, "1h0m0s"),
        (3723.25, "1h2m3.25s"),
        (59.9996, "1m0s"),
        (-1.5, "-1.5s"),
    ],
)
def test_go_duration_format(seconds: float, text: str) -> None:
    assert format_go_duration(seconds) == text


# -- the HTTP layer -----------------------------------------------------------------------------


def _raw_request(body: dict[str, Any], *, version: str = "1.1", extra: str = "") -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/{version}\r\nHost: x\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[bytes, bytes]:
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response head"
        buffer += chunk
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end])
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(buffer) < end + length:
        buffer += sock.recv(65536)
    body = bytes(buffer[end : end + length])
    del buffer[: end + length]
    return head, body


def _connect(server: MockServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_pipelined_requests_are_answered_in_order() -> None:
    # Jitter would reorder replies if the server answered pipelined requests concurrently.
    with MockServer(MockConfig(latency_ms=5, jitter_ms=40, seed=3)) as server:
        sock = _connect(server)
        requests = [
            _raw_request({"model": "m", "messages": HELLO, "mock_reply_tokens": k})
            for k in range(1, 7)
        ]
        sock.sendall(b"".join(requests))
        sock.shutdown(socket.SHUT_WR)  # a half-closed peer still gets every answer
        buffer = bytearray()
        got = [
            json.loads(_read_response(sock, buffer)[1])["usage"]["completion_tokens"]
            for _ in requests
        ]
        assert _closed(sock)
        sock.close()
    assert got == [1, 2, 3, 4, 5, 6]


def _read_chunked(sock: socket.socket, buffer: bytearray) -> tuple[bytes, Any]:
    """The head of a chunked response and the sha256 of its body (never held whole)."""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(65536)
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end])
    del buffer[:end]
    digest = hashlib.sha256()
    while True:
        while b"\r\n" not in buffer:
            buffer += sock.recv(65536)
        size_end = buffer.index(b"\r\n")
        size = int(buffer[:size_end], 16)
        while len(buffer) < size_end + 2 + size + 2:
            buffer += sock.recv(1 << 20)
        digest.update(buffer[size_end + 2 : size_end + 2 + size])
        del buffer[: size_end + 2 + size + 2]
        if size == 0:
            return head, digest


def test_a_speech_answer_asked_for_by_size_is_streamed_chunked_then_the_next_request(
    server: MockServer,
) -> None:
    size = 20_000_000
    speech = {"model": "tts-1", "input": "Big.", "voice": "alloy", "mock_audio_bytes": size}
    data = json.dumps(speech).encode()
    first = (
        f"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data
    sock = _connect(server)
    sock.sendall(first + _raw_request({"model": "m", "messages": HELLO, "mock_reply_tokens": 3}))
    buffer = bytearray()
    head, digest = _read_chunked(sock, buffer)
    assert b"transfer-encoding: chunked\r\n" in head and b"content-length" not in head
    assert b"content-type: audio/mpeg\r\n" in head
    expected = hashlib.sha256()
    length = 0
    for chunk in speech_stream("Big.", "alloy", size):
        expected.update(chunk)
        length += len(chunk)
    assert size - 500 < length <= size  # whole MP3 frames
    assert digest.hexdigest() == expected.hexdigest()
    _, body = _read_response(sock, buffer)  # the pipelined request, answered after the stream
    assert json.loads(body)["usage"]["completion_tokens"] == 3
    sock.close()


def test_a_truncated_streamed_answer_ends_without_its_last_chunk(
    server: MockServer, client: httpx2.Client
) -> None:
    speech = {"model": "tts-1", "input": "Cut.", "voice": "alloy", "mock_audio_bytes": 10**7}
    with pytest.raises(httpx2.RemoteProtocolError):
        client.post("/audio/speech", json={**speech, "mock_fault": "truncated"})
    with pytest.raises(httpx2.HTTPStatusError, match="400"):
        wav = {**speech, "response_format": "wav"}  # a size is asked of MP3s only
        client.post("/audio/speech", json=wav).raise_for_status()


def test_requests_split_across_reads_are_reassembled(server: MockServer) -> None:
    sock = _connect(server)
    request = _raw_request({"model": "m", "messages": HELLO, "mock_reply_tokens": 2})
    buffer = bytearray()
    for _ in range(2):  # twice on one keep-alive connection
        for start in range(0, len(request), 23):
            sock.sendall(request[start : start + 23])
            time.sleep(0.002)
        head, body = _read_response(sock, buffer)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert json.loads(body)["usage"]["completion_tokens"] == 2
    sock.close()


@pytest.mark.parametrize(
    ("garbage", "status"),
    [
        (b"hello world\r\n\r\n", b"400"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"400"),  # a TLS ClientHello
        (b"GET / HTTP/2.0\r\n\r\n", b"400"),
        (b"POST /v1/embeddings HTTP/1.1\r\nContent-Length: ten\r\n\r\n", b"400"),
        (b"POST /v1/embeddings HTTP/1.1\r\nbad header\r\n\r\n", b"400"),
        (b"POST /v1/embeddings HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"501"),
    ],
)
def test_garbage_gets_an_error_and_a_close(
    server: MockServer, garbage: bytes, status: bytes
) -> None:
    sock = _connect(server)
    sock.sendall(garbage)
    head, body = _read_response(sock, bytearray())
    assert head.split(b" ")[1] == status
    assert b"connection: close" in head
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert _closed(sock)
    sock.close()


def test_http10_and_connection_close_end_the_connection(server: MockServer) -> None:
    for request in (
        _raw_request({"model": "m", "messages": HELLO}, version="1.0"),
        _raw_request({"model": "m", "messages": HELLO}, extra="Connection: close\r\n"),
    ):
        sock = _connect(server)
        sock.sendall(request)
        head, _ = _read_response(sock, bytearray())
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head
        assert _closed(sock)
        sock.close()


def test_latency_is_timer_based_and_requests_overlap() -> None:
    async def one(port: int, request: bytes) -> float:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        writer.close()
        return time.monotonic() - started

    async def many(port: int, count: int) -> list[float]:
        request = _raw_request({"model": "m", "messages": HELLO})
        return await asyncio.gather(*(one(port, request) for _ in range(count)))

    with MockServer(MockConfig(latency_ms=400)) as server:
        started = time.monotonic()
        durations = asyncio.run(many(server.port, 500))
        elapsed = time.monotonic() - started
    assert min(durations) >= 0.4
    assert elapsed < 2.5  # 500 x 0.4 s would take 200 s if requests were served one by one


def test_jitter_spreads_latency_reproducibly() -> None:
    def durations() -> list[float]:
        with (
            MockServer(MockConfig(latency_ms=10, jitter_ms=60, seed=5)) as server,
            httpx2.Client(base_url=server.base_url) as client,
        ):
            result = []
            for _ in range(8):
                started = time.monotonic()
                assert client.get("/models").status_code == 200  # no latency outside the API
                chat(client)
                result.append(time.monotonic() - started)
            return result

    spread = durations()
    assert min(spread) >= 0.01
    assert max(spread) - min(spread) > 0.015


def test_serve_runs_on_the_callers_loop_until_cancelled() -> None:
    async def main() -> None:
        listening = asyncio.Event()
        urls: list[str] = []

        def ready(url: str) -> None:
            urls.append(url)
            listening.set()

        task = asyncio.create_task(serve(MockConfig(), ready=ready))
        await asyncio.wait_for(listening.wait(), 5)
        async with httpx2.AsyncClient(base_url=urls[0]) as client:
            response = await client.post(
                "/chat/completions", json={"model": "m", "messages": HELLO}
            )
            assert response.status_code == 200
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        port = int(urls[0].rsplit(":", 1)[1].removesuffix("/v1"))
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)

    asyncio.run(main())


def test_go_down_refuses_connections_then_recovers_on_the_same_port() -> None:
    with (
        MockServer(MockConfig(latency_ms=3000)) as server,
        httpx2.Client(base_url=server.base_url, timeout=5) as client,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        port = server.port
        slow = pool.submit(chat, client)
        deadline = time.monotonic() + 5
        while server.stats()["connections"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        server.go_down(0.5)
        # A request in flight is cut off, not answered late; new connections are refused.
        with pytest.raises(httpx2.TransportError):
            slow.result(timeout=5)
        with pytest.raises(httpx2.ConnectError):
            client.get("/models")
        went_down = time.monotonic()
        while True:
            try:
                response = client.get("/models")
                break
            except httpx2.ConnectError:
                assert time.monotonic() < went_down + 5, "the server never came back"
                time.sleep(0.02)
        assert response.status_code == 200
        assert time.monotonic() - went_down >= 0.4
        assert server.port == port and server.base_url.endswith(f":{port}/v1")


# -- configuration and command line -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"port": 70000}, "port"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"jitter_ms": float("nan")}, "jitter_ms"),
        ({"rpm": 0}, "rpm"),
        ({"tpm": 1.5}, "tpm"),
        ({"burst_s": 0}, "burst_s"),
        ({"cotenant_drain": 1}, "cotenant_drain"),
        ({"cotenant_share": 1.0}, "cotenant_share"),
        ({"cotenant_share": -0.1}, "cotenant_share"),
        ({"faults": {"nope": 0.1}}, "faults"),
        ({"faults": {"500": 1.5}}, "faults"),
        ({"faults": {"500": 0.6, "502": 0.6}}, "faults"),
        ({"api_key": "two words"}, "api_key"),
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"models": ()}, "models"),
        ({"record_bodies": 1}, "record_bodies"),
        ({"list_models": 1}, "list_models"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"MockConfig.{field}"):
        MockConfig(**kwargs)


def test_record_bodies_keeps_each_body_byte_for_byte_until_reset() -> None:
    sent = [
        b'{"model":"gpt-4o-mini","messages":[{"role":"user",'
        b'"content":"caf\xc3\xa9 \\"{{x}}\\"\\n"}]}',
        b'{"model": "m", "input": "spaced  out"}',
    ]
    recording = MockServer(MockConfig(record_bodies=True))
    with recording as server, httpx2.Client(base_url=server.base_url, timeout=5.0) as client:
        assert client.post("/chat/completions", content=sent[0]).status_code == 200
        assert client.post("/embeddings", content=sent[1]).status_code == 200
        client.get("/models")  # no body: not an API request that carries one
        assert server.bodies() == sent
        server.reset()
        assert server.bodies() == []
    with MockServer(MockConfig()) as server, httpx2.Client(base_url=server.base_url) as client:
        client.post("/chat/completions", content=sent[0])
        assert server.bodies() == []  # off by default: memory must not grow in benchmarks


def test_config_is_frozen_and_copies_faults() -> None:
    faults = {"500": 0.1}
    config = MockConfig(faults=faults)
    faults["500"] = 0.9
    assert config.faults == {"500": 0.1}
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_flags_become_a_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCK_KEY", "sk-from-env")
    args = _parse(
        shlex.split(
            "--port 0 --latency-ms 5 --jitter-ms 2 --rpm 100 --tpm 5000 --burst-s 2 --seed 7 "
            "--fail 500=0.05,429=0.1 --api-key-env MOCK_KEY --quota-usd 5 --used-usd 1.5 "
            "--no-billing --cotenant-drain --cotenant-share 0.25 --no-models"
        )
    )
    config = config_from_args(args)
    assert (config.port, config.latency_ms, config.jitter_ms) == (0, 5.0, 2.0)
    assert (config.rpm, config.tpm, config.burst_s, config.seed) == (100, 5000, 2.0, 7)
    assert dict(config.faults) == {"500": 0.05, "429": 0.1}
    assert config.api_key == "sk-from-env"
    assert (config.billing, config.quota_usd, config.used_usd) == (False, 5.0, 1.5)
    assert (config.cotenant_drain, config.cotenant_share) == (True, 0.25)
    assert config.list_models is False and config_from_args(_parse([])).list_models is True
    assert config_from_args(_parse([])).port == 8000
    monkeypatch.delenv("MOCK_KEY")
    with pytest.raises(ValueError, match="MOCK_KEY"):
        config_from_args(args)


def test_the_media_flags_become_a_config_and_show_in_mock_server_help() -> None:
    args = _parse(["--media-url-ttl-s", "2.5", "--media-redirect-base", "http://127.0.0.1:9"])
    config = config_from_args(args)
    assert (config.media_url_ttl_s, config.media_redirect_base) == (2.5, "http://127.0.0.1:9")
    default = config_from_args(_parse([]))
    assert (default.media_url_ttl_s, default.media_redirect_base) == (3600.0, None)
    shown = subprocess.run(
        [sys.executable, "-m", "batchrun", "mock-server", "--help"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert "--media-url-ttl-s S" in shown and "--media-redirect-base URL" in shown


@pytest.mark.parametrize("spec", ["500", "teapot=0.1", "500=lots", "500=2"])
def test_cli_rejects_bad_fault_specs(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parse(["--fail", spec])
    assert exit_info.value.code == 2
    assert "--fail" in capsys.readouterr().err


def test_every_fault_kind_is_counted(server: MockServer, client: httpx2.Client) -> None:
    quick = [k for k in FAULT_KINDS if k not in ("timeout", "reset", "truncated")]
    for kind in quick:
        chat(client, mock_fault=kind)
    assert server.stats()["faults"] == dict.fromkeys(quick, 1)
    assert server.stats()["requests"]["total"] == len(quick)


def _readline(stream: Any, timeout_s: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout_s)
    assert ready, "no output from the mock server"
    line: str = stream.readline()
    return line


def test_module_entry_point_serves_and_stops_on_sigterm() -> None:
    env = {**os.environ, "MOCK_TEST_KEY": "sk-subprocess"}
    process = subprocess.Popen(
        [sys.executable, "-m", "batchrun.mock", "--port", "0", "--api-key-env", "MOCK_TEST_KEY"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = _readline(process.stdout, 15)
        prefix = "mock server listening on http://127.0.0.1:"
        assert line.startswith(prefix) and line.endswith("/v1\n")
        base_url = line.split()[-1]
        response = httpx2.post(
            base_url + "/chat/completions",
            json={"model": "m", "messages": HELLO},
            headers={"Authorization": "Bearer sk-subprocess"},
        )
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert stdout == "" and stderr == ""
