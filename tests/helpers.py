"""Shared test helpers: input files, result readers, fake OpenAI handlers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pyarrow.dataset as ds

TEST_KEY = "sk-test-not-a-real-key-0123456789"


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def chat_rows(n: int, *, prefix: str = "req") -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"question number {i}"}],
                "max_tokens": 20,
            },
        }
        for i in range(n)
    ]


def faulty_rows(n: int, faults: dict[int, tuple[str, int | None]]) -> list[dict[str, Any]]:
    """`n` chat rows; row i asks the mock for `kind` the first `times` times (None: always)."""
    rows = chat_rows(n)
    for i, (kind, times) in faults.items():
        rows[i]["body"]["mock_fault"] = kind
        if times is not None:
            rows[i]["body"]["mock_fault_times"] = times
    return rows


def read_results(out: Path) -> list[dict[str, Any]]:
    table = ds.dataset(out / "results", format="parquet").to_table()
    return sorted(table.to_pylist(), key=lambda r: r["row"])


def completion(body: dict[str, Any], *, prompt_tokens: int = 10) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": body.get("model", "gpt-4o-mini"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "an answer"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 3,
            "total_tokens": prompt_tokens + 3,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }


def openai_handler(
    fail: Callable[[dict[str, Any], int], httpx2.Response | None] | None = None,
) -> tuple[Callable[[httpx2.Request], httpx2.Response], list[dict[str, Any]]]:
    """A MockTransport handler answering chat completions; `fail(body, n)` may answer instead.

    Returns the handler and the list of bodies it received (in order).
    """
    seen: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.method != "POST":  # e.g. the quota endpoints, which OpenAI does not have
            return httpx2.Response(404, json={"error": {"message": "not found"}})
        body = json.loads(request.content)
        seen.append(body)
        if fail is not None:
            response = fail(body, len(seen))
            if response is not None:
                return response
        return httpx2.Response(200, json=completion(body))

    return handler, seen
