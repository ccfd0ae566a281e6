"""Gateway quota: one-api billing endpoints on the real mock server, and servers without them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from batchrun.common.errors import FatalRunError
from batchrun.cost.quota import Quota, Unreachable, fetch_quota, fetch_quota_sync, render_quota
from batchrun.mock import MockConfig, MockServer
from tests.helpers import TEST_KEY

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def billing() -> Iterator[MockServer]:
    with MockServer(MockConfig(api_key=TEST_KEY, quota_usd=5.0, used_usd=6.9596)) as server:
        yield server


@pytest.mark.anyio
async def test_granted_used_remaining_from_the_mock(billing: MockServer) -> None:
    paths: list[str] = []

    async def record(request: httpx2.Request) -> None:
        paths.append(request.url.path)

    async with httpx2.AsyncClient(event_hooks={"request": [record]}) as http:
        quota = await fetch_quota(http, billing.base_url, TEST_KEY)
    # usage is reported in cents (695.96): remaining = 5 - 6.9596, over the grant
    assert quota == Quota(granted_usd=5.0, used_usd=6.9596, remaining_usd=-1.9596, unlimited=False)
    assert quota.covers(0.01) is False
    assert paths == ["/v1/dashboard/billing/subscription", "/v1/dashboard/billing/usage"]


def test_unlimited_key() -> None:
    with MockServer(MockConfig(quota_usd=100_000_000.0, used_usd=12.5)) as server:
        quota = fetch_quota_sync(server.base_url, None)
    assert quota == Quota(granted_usd=None, used_usd=12.5, remaining_usd=None, unlimited=True)
    assert quota.covers(1e9) is True


def test_base_url_with_or_without_v1_and_trailing_slash(billing: MockServer) -> None:
    root = billing.base_url.removesuffix("/v1")
    for base in (billing.base_url, billing.base_url + "/", root):
        quota = fetch_quota_sync(base, TEST_KEY)
        assert quota is not None and quota.granted_usd == 5.0, base


@pytest.mark.anyio
async def test_server_without_the_endpoints_gives_none() -> None:
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    with MockServer(MockConfig(billing=False)) as server:
        async with httpx2.AsyncClient(event_hooks={"response": [record]}) as http:
            assert await fetch_quota(http, server.base_url, TEST_KEY) is None
    assert statuses == [404]  # the usage endpoint is not asked once the subscription is absent


def test_unreachable_server_says_so_rather_than_no_billing_endpoints() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}/v1"
    quota = fetch_quota_sync(base, TEST_KEY, timeout_s=2)
    assert isinstance(quota, Unreachable)
    assert quota.detail.startswith("ConnectError: "), quota.detail
    line = render_quota(quota, base)
    assert line.startswith(f"quota: unknown: the server at {base} could not be reached (Conn")
    assert "billing endpoints" not in line
    document = json.loads(render_quota(quota, base, as_json=True))
    assert document["known"] is False and document["unreachable"] == quota.detail


def _transport(
    subscription: httpx2.Response, usage: httpx2.Response | None = None
) -> httpx2.MockTransport:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/subscription"):
            return subscription
        return usage or httpx2.Response(404)

    return httpx2.MockTransport(handler)


@pytest.mark.parametrize(
    "subscription",
    [
        httpx2.Response(200, text="<html>a web page</html>"),
        httpx2.Response(200, json={"object": "billing_subscription"}),  # no hard_limit_usd
        httpx2.Response(200, json={"hard_limit_usd": "5"}),
        httpx2.Response(403, json={"error": {"message": "forbidden"}}),
        httpx2.Response(500),
    ],
)
def test_unusable_answers_give_none(subscription: httpx2.Response) -> None:
    assert (
        fetch_quota_sync("http://gw.test/v1", TEST_KEY, transport=_transport(subscription)) is None
    )


def test_usage_missing_leaves_used_and_remaining_unknown() -> None:
    transport = _transport(httpx2.Response(200, json={"hard_limit_usd": 20}))
    quota = fetch_quota_sync("http://gw.test/v1", TEST_KEY, transport=transport)
    assert quota == Quota(granted_usd=20.0, used_usd=None, remaining_usd=None, unlimited=False)
    assert quota.covers(1.0) is None


def test_refused_key_raises_without_the_key(billing: MockServer) -> None:
    with pytest.raises(FatalRunError) as caught:
        fetch_quota_sync(billing.base_url, "sk-wrong-key-abcdef123456")
    assert caught.value.kind == "auth" and "401" in caught.value.message
    # A gateway that echoes the key it refused: the message keeps the reason, not the key.
    echo = httpx2.Response(401, json={"error": {"message": f"invalid token {TEST_KEY}"}})
    with pytest.raises(FatalRunError) as caught:
        fetch_quota_sync("http://gw.test/v1", TEST_KEY, transport=_transport(echo))
    assert TEST_KEY not in str(caught.value) and "invalid token" in caught.value.message


def _cli(*args: str, key: str = TEST_KEY) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["OPENAI_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "batchrun", "quota", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


def test_cli_quota(billing: MockServer) -> None:
    shown = _cli("--base-url", billing.base_url)
    assert shown.returncode == 0, shown.stderr
    assert "granted $5.00, used $6.96, remaining -$1.96" in shown.stdout
    as_json = _cli("--base-url", billing.base_url, "--json")
    assert json.loads(as_json.stdout)["remaining_usd"] == -1.9596
    refused = _cli("--base-url", billing.base_url, key="sk-wrong-key-abcdef123456")
    assert refused.returncode == 3 and "401" in refused.stderr
    assert "sk-wrong-key-abcdef123456" not in refused.stderr + refused.stdout
    with MockServer(MockConfig(billing=False)) as bare:
        unknown = _cli("--base-url", bare.base_url)
    assert unknown.returncode == 0 and unknown.stdout.startswith("quota: unknown for")
