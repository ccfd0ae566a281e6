"""batchrun.runner.preflight: the key and the server are checked before anything long starts.

The check is one `GET /v1/models` with the run's key: a refused key and an unreachable server
stop the run at once (exit 3, nothing sent, nothing to undo), a server that does not list its
models or answers slowly is fine.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx2
import pytest

import batchrun
from batchrun.mock import MockConfig, MockServer
from tests.helpers import TEST_KEY, chat_rows, completion, write_jsonl
from tests.torture import assert_all_ok, chat_requests, config, one_record_per_row, run_cli

WRONG_KEY = "sk-wrong-key-abcdef123456"


def _free_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/v1"


def test_a_refused_key_stops_at_the_check_before_anything_else(tmp_path: Path) -> None:
    rows = chat_rows(50)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(api_key=TEST_KEY)) as server:
        stopped = batchrun.run_sync(config(path, out, server.base_url, api_key=WRONG_KEY))
        assert server.stats()["requests"]["by_path"] == {"/v1/models": 1}
        models_url = server.base_url + "/models"
        resumed = batchrun.run_sync(config(path, out, server.base_url))
        assert chat_requests(server) == len(rows)
    assert stopped.fatal and stopped.exit_code == 3 and stopped.done_rows == 0
    reason = stopped.stopped or ""
    assert reason.startswith("the API key was refused (HTTP 401 invalid_api_key: ")
    assert f"at GET {models_url}; check the API key" in reason
    assert WRONG_KEY not in reason
    assert resumed.finished
    assert_all_ok(one_record_per_row(out, rows))


def test_a_refused_key_via_the_cli_is_exit_3_with_the_fix(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(5))
    with MockServer(MockConfig(api_key=TEST_KEY)) as server:
        result = run_cli(
            "run", path, "--out", tmp_path / "out", "--base-url", server.base_url, "-q",
            key=WRONG_KEY,
        )  # fmt: skip
        assert chat_requests(server) == 0
    assert result.returncode == 3, result.stderr
    [line] = [x for x in result.stdout.splitlines() if x.startswith("stopped early: ")]
    assert "the API key was refused (HTTP 401" in line
    assert line.endswith(
        "check the API key (batchrun reads it from $OPENAI_API_KEY, or from the variable "
        "--api-key-env names), then run the same command again"
    )
    assert WRONG_KEY not in result.stdout + result.stderr


def test_an_unreachable_server_stops_at_once_saying_so(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(5))
    url = _free_port_url()
    started = time.monotonic()
    stopped = batchrun.run_sync(config(path, tmp_path / "out", url, max_outage_s=300))
    assert time.monotonic() - started < 10  # not --max-outage: nothing was sent yet
    assert stopped.fatal and stopped.exit_code == 3 and stopped.done_rows == 0
    reason = stopped.stopped or ""
    assert reason.startswith("cannot connect to the server: ")
    assert reason.endswith(
        f"(GET {url}/models); check --base-url, or run the same command again once the server is up"
    )


def test_a_server_that_does_not_list_models_is_fine(tmp_path: Path) -> None:
    rows = chat_rows(12)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    with MockServer(MockConfig(list_models=False)) as server:
        summary = batchrun.run_sync(config(path, tmp_path / "out", server.base_url))
    assert summary.finished
    assert_all_ok(one_record_per_row(tmp_path / "out", rows))


def test_a_check_answered_too_slowly_is_a_warning_and_the_run_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = chat_rows(6)
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET" and request.url.path == "/v1/models":
            raise httpx2.ReadTimeout("slow", request=request)
        if request.method == "GET":
            return httpx2.Response(404)
        return httpx2.Response(200, json=completion({"model": "gpt-4o-mini"}))

    caplog.set_level("INFO", logger="batchrun")
    summary = batchrun.run_sync(
        config(path, tmp_path / "out", "http://gw.test/v1"), transport=httpx2.MockTransport(handler)
    )
    assert summary.finished
    assert "warning: no answer to GET http://gw.test/v1/models (no response in time" in caplog.text
    assert len(one_record_per_row(tmp_path / "out", rows)) == len(rows)


def test_the_check_is_the_first_request_and_comes_before_the_first_pass(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(4))
    out = tmp_path / "out"
    seen: list[tuple[str, str, list[str]]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        state = sorted(p.name for p in out.iterdir())
        seen.append((request.method, request.url.path, state))
        if request.method == "GET":
            return httpx2.Response(404)
        return httpx2.Response(200, json=completion({"model": "gpt-4o-mini"}))

    summary = batchrun.run_sync(
        config(path, out, "http://gw.test/v1"), transport=httpx2.MockTransport(handler)
    )
    assert summary.finished
    method, url_path, state = seen[0]
    assert (method, url_path) == ("GET", "/v1/models")
    assert state == [".lock"]  # no checkpoint, no scan directory: the first pass has not begun
