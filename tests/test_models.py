"""batchrun.send.models: GET /v1/models, the check of the key and server, and `batchrun models`.

(Not batchrun/models.py, the values that travel: those are tested through every stage.)
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx2
import pytest

from batchrun.common.errors import FatalRunError
from batchrun.mock import MockConfig, MockServer
from batchrun.mock.config import DEFAULT_MODELS
from batchrun.send.http import AiohttpEngine, TransportError
from batchrun.send.models import closest, list_models, list_models_sync, missing_models
from tests.helpers import TEST_KEY
from tests.torture import run_cli


def _answering(response: httpx2.Response) -> httpx2.MockTransport:
    return httpx2.MockTransport(lambda request: response)


def _free_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/v1"


@pytest.mark.anyio
async def test_the_mock_lists_its_models_with_the_key() -> None:
    with MockServer(MockConfig(api_key=TEST_KEY)) as server:
        engine = AiohttpEngine(connections=2, timeout_s=5)
        try:
            found = await list_models(engine, server.base_url, TEST_KEY)
        finally:
            await engine.aclose()
        assert server.stats()["requests"]["by_path"] == {"/v1/models": 1}
        assert found.url == server.base_url + "/models"
    assert found.models == DEFAULT_MODELS and found.listed and found.status == 200


def test_a_server_that_does_not_list_models_is_not_an_error() -> None:
    with MockServer(MockConfig(list_models=False)) as server:
        found = list_models_sync(server.base_url, TEST_KEY)
    assert (found.models, found.listed, found.status) == (None, False, 404)


@pytest.mark.parametrize(
    "response",
    [
        httpx2.Response(405),
        httpx2.Response(403, json={"error": {"message": "this token may not list models"}}),
        httpx2.Response(500, text="oops"),
        httpx2.Response(200, text="<html>a web page</html>"),
        httpx2.Response(200, json={"object": "list"}),  # no data
        httpx2.Response(200, json={"data": "all of them"}),
    ],
)
def test_answers_without_a_list_give_none(response: httpx2.Response) -> None:
    found = list_models_sync("http://gw.test/v1", TEST_KEY, transport=_answering(response))
    assert found.models is None and found.status == response.status_code


def test_odd_entries_are_skipped() -> None:
    data = {"data": [{"id": "a"}, {"id": ""}, {"name": "b"}, "c", {"id": 7}, {"id": "d"}]}
    found = list_models_sync(
        "http://gw.test/v1", None, transport=_answering(httpx2.Response(200, json=data))
    )
    assert found.models == ("a", "d")


def test_a_refused_key_is_fatal_and_the_message_keeps_the_reason_not_the_key() -> None:
    with MockServer(MockConfig(api_key=TEST_KEY)) as server, pytest.raises(FatalRunError) as caught:
        base_url = server.base_url
        list_models_sync(base_url, "sk-wrong-key-abcdef123456")
    assert caught.value.kind == "auth"
    assert caught.value.message.startswith("the API key was refused (HTTP 401")
    assert caught.value.message.endswith(f"at GET {base_url}/models")
    echo = httpx2.Response(401, json={"error": {"message": f"invalid token {TEST_KEY}"}})
    with pytest.raises(FatalRunError) as caught:
        list_models_sync("http://gw.test/v1", TEST_KEY, transport=_answering(echo))
    assert TEST_KEY not in caught.value.message and "invalid token" in caught.value.message


def test_no_balance_is_fatal_too() -> None:
    broke = httpx2.Response(
        403, json={"error": {"code": "insufficient_user_quota", "message": "x"}}
    )
    with pytest.raises(FatalRunError) as caught:
        list_models_sync("http://gw.test/v1", TEST_KEY, transport=_answering(broke))
    assert caught.value.kind == "quota"


def test_an_unreachable_server_is_a_transport_error() -> None:
    with pytest.raises(TransportError) as caught:
        list_models_sync(_free_port_url(), TEST_KEY, timeout_s=5)
    assert caught.value.looks_down
    assert caught.value.message.startswith("cannot connect to the server: ")


def test_missing_models_come_with_the_closest_listed_names() -> None:
    listed = list(DEFAULT_MODELS)
    assert closest("gpt-4o-mimi", sorted(listed))[0] == "gpt-4o-mini"
    missing = missing_models(["gpt-4o-mini", "gpt-4o-mimi", "zzz-unknown", "gpt-4o-mini"], listed)
    assert list(missing) == ["gpt-4o-mimi", "zzz-unknown"]
    assert missing["gpt-4o-mimi"][0] == "gpt-4o-mini"
    assert missing["zzz-unknown"] == []
    assert missing_models(["gpt-4o"], listed) == {}


# --------------------------------------------------------------------------------- the CLI


def test_cli_models_prints_one_name_a_line_or_json() -> None:
    with MockServer(MockConfig(api_key=TEST_KEY)) as server:
        base_url = server.base_url
        shown = run_cli("models", "--base-url", base_url)
        as_json = run_cli("models", "--base-url", base_url, "--json")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == sorted(DEFAULT_MODELS)
    document = json.loads(as_json.stdout)
    assert document == {
        "base_url": base_url,
        "listed": True,
        "models": sorted(DEFAULT_MODELS),
    }


def test_cli_models_says_when_the_server_does_not_list_them() -> None:
    with MockServer(MockConfig(list_models=False)) as server:
        base_url = server.base_url
        shown = run_cli("models", "--base-url", base_url)
        as_json = run_cli("models", "--base-url", base_url, "--json")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"models: {base_url}/models does not list its models (HTTP 404)\n"
    assert json.loads(as_json.stdout)["listed"] is False


def test_cli_models_refused_key_is_exit_3_and_unreachable_is_exit_2(tmp_path: Path) -> None:
    with MockServer(MockConfig(api_key=TEST_KEY)) as server:
        refused = run_cli("models", "--base-url", server.base_url, key="sk-wrong-key-abcdef123456")
    assert refused.returncode == 3
    assert refused.stderr.startswith("batchrun: error: the API key was refused (HTTP 401")
    assert "sk-wrong-key-abcdef123456" not in refused.stderr + refused.stdout
    url = _free_port_url()
    down = run_cli("models", "--base-url", url)
    assert down.returncode == 2
    assert down.stderr.startswith("batchrun: error: cannot connect to the server: ")
    assert down.stderr.rstrip().endswith(f"(GET {url}/models)")
