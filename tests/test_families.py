"""Every endpoint family through the `batchrun` command against the real mock server.

For each family: the row is ok, the answer columns (`text`, `tool_calls`, `embedding`, `media`,
`content_type`) hold what the server sent, and the server saw exactly one request per row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchrun.mock import MockConfig, MockServer
from batchrun.mock.payloads import _vector
from tests.helpers import read_results, write_jsonl
from tests.test_cli import run_cli


@pytest.fixture
def mock() -> Iterator[MockServer]:
    with MockServer(MockConfig(port=0, latency_ms=1)) as server:
        yield server


def line(custom_id: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def run(tmp_path: Path, mock: MockServer, rows: list[dict[str, Any]], *args: str) -> list[Any]:
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    done = run_cli("run", path, "--out", out, "--base-url", mock.base_url, "-q", *args)
    assert done.returncode == 0, done.stderr + done.stdout
    return read_results(out)


def api_requests(mock: MockServer) -> dict[str, int]:
    by_path = dict(mock.stats()["requests"]["by_path"])
    by_path.pop("/v1/models", None)  # the check at start
    by_path.pop("/v1/dashboard/billing/subscription", None)
    by_path.pop("/v1/dashboard/billing/usage", None)
    return by_path


@pytest.mark.parametrize("engine", [(), ("--http-client", "httpx2")], ids=["aiohttp", "httpx2"])
def test_chat_and_embeddings_answers_are_columns(
    tmp_path: Path, mock: MockServer, engine: tuple[str, ...]
) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    rows = [
        line(
            "ask",
            "/v1/chat/completions",
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "mock_echo": True,
            },
        ),
        line(
            "call",
            "/v1/chat/completions",
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "Weather?"}],
                "tools": [tool],
            },
        ),
        line(
            "vec",
            "/v1/embeddings",
            {"model": "text-embedding-3-small", "input": ["one", "two"], "dimensions": 4},
        ),
    ]
    results = run(tmp_path, mock, rows, *engine)
    ask, call, vec = results
    assert [r["status"] for r in results] == ["ok"] * 3
    assert ask["text"] == "What is the capital of France?"
    assert ask["tool_calls"] is None and ask["embedding"] is None
    assert [(c["name"], json.loads(c["arguments"])) for c in json.loads(call["tool_calls"])] == [
        ("weather", {"city": "mock"})
    ]
    assert call["finish_reason"] == "tool_calls"
    # float32 in the column: the server's vectors to float32 precision, in input order.
    expected = [_vector("one", 4), _vector("two", 4)]
    assert len(vec["embedding"]) == 2
    for got, sent in zip(vec["embedding"], expected, strict=True):
        assert got == pytest.approx(sent, abs=1e-6)
    assert {r["content_type"] for r in results} == {"application/json"}
    assert all(r["media"] is None for r in results)
    assert api_requests(mock) == {"/v1/chat/completions": 2, "/v1/embeddings": 1}
