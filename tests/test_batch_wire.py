"""endpoints/batch_wire.py: batch lines out, result lines in, ids Anthropic accepts."""

from __future__ import annotations

import json

import pytest

from batchrun.endpoints.batch_wire import (
    anthropic_item,
    anthropic_wire_id,
    embedding_inputs,
    openai_line,
    read_anthropic_line,
    read_openai_line,
)


def test_openai_line_carries_the_body_byte_for_byte() -> None:
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"caf\\u00e9 \\"x\\""}]}'
    line = openai_line('id "1"', "/v1/chat/completions", body + b"\n")
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    parsed = json.loads(line)
    assert parsed == {"custom_id": 'id "1"', "method": "POST", "url": "/v1/chat/completions",
                      "body": json.loads(body)}  # fmt: skip
    assert body in line


def test_anthropic_item_and_ids() -> None:
    item = json.loads(anthropic_item("q-1", b'{"model":"m","max_tokens":5}'))
    assert item == {"custom_id": "q-1", "params": {"model": "m", "max_tokens": 5}}
    assert anthropic_wire_id("ok_id-9", 3) == "ok_id-9"
    assert anthropic_wire_id("has space", 3) == "batchrun-row-3"
    assert anthropic_wire_id("x" * 65, 4) == "batchrun-row-4"
    assert anthropic_wire_id("", 5) == "batchrun-row-5"
    # an own id that looks like a generated one is not kept: it could meet another row's
    assert anthropic_wire_id("batchrun-row-7", 2) == "batchrun-row-2"


@pytest.mark.parametrize(
    ("body", "inputs"),
    [({"input": "one"}, 1), ({"input": ["a", "b", "c"]}, 3), ({"input": [1, 2, 3]}, 1),
     ({"input": [[1, 2], [3]]}, 2)],
)  # fmt: skip
def test_embedding_inputs(body: dict[str, object], inputs: int) -> None:
    assert embedding_inputs(body) == inputs


def _line(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_openai_result_lines() -> None:
    ok = read_openai_line(_line(id="b1", custom_id="a", error=None, response={
        "status_code": 200, "request_id": "r", "body": {"object": "chat.completion"}}))  # fmt: skip
    assert (ok.kind, ok.custom_id, ok.status_code) == ("ok", "a", 200)
    assert ok.answer == {"object": "chat.completion"}
    failed = read_openai_line(_line(custom_id="b", error=None, response={
        "status_code": 400, "body": {"error": {"code": "bad", "message": "no"}}}))  # fmt: skip
    assert (failed.kind, failed.error_code, failed.error_message) == ("error", "bad", "no")
    error200 = read_openai_line(_line(custom_id="c", response={
        "status_code": 200, "body": {"error": {"message": "upstream"}}}))  # fmt: skip
    assert error200.kind == "error"
    expired = read_openai_line(_line(custom_id="d", response=None, error={
        "code": "batch_expired", "message": "not run in time"}))  # fmt: skip
    assert (expired.kind, expired.error_message) == ("expired", "not run in time")
    cancelled = read_openai_line(_line(custom_id="e", error={"code": "batch_cancelled"}))
    assert cancelled.kind == "cancelled"
    assert read_openai_line(b"{nope").kind == "malformed"
    assert read_openai_line(b"[1]").kind == "malformed"
    assert read_openai_line(_line(custom_id="f")).kind == "malformed"


def test_anthropic_result_lines() -> None:
    succeeded = {"type": "succeeded", "message": {"type": "message"}}
    ok = read_anthropic_line(_line(custom_id="a", result=succeeded))
    assert (ok.kind, ok.answer) == ("ok", {"type": "message"})
    inner = {"type": "invalid_request_error", "message": "low credit"}
    result = {"type": "errored", "error": {"type": "error", "error": inner}}
    errored = read_anthropic_line(_line(custom_id="b", result=result))
    assert (errored.kind, errored.error_code, errored.error_message) == (
        "error", "invalid_request_error", "low credit")  # fmt: skip
    assert read_anthropic_line(_line(custom_id="c", result={"type": "canceled"})).kind == (
        "cancelled"
    )
    assert read_anthropic_line(_line(custom_id="d", result={"type": "expired"})).kind == "expired"
    assert read_anthropic_line(_line(custom_id="e", result={"type": "?"})).kind == "malformed"
