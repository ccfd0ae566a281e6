"""The mock's provider Batch APIs: files, OpenAI batches, Anthropic message batches.

The lifecycle tests drive `MockApp` directly with a fake clock (no socket, no waiting); one
test goes through a real socket with httpx2's multipart upload, as a client sends it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2
import pytest

from batchrun.mock import MockConfig, MockServer
from batchrun.mock.app import MockApp
from batchrun.mock.files import parse_multipart
from batchrun.mock.http import HttpRequest

CHAT = "/v1/chat/completions"
PHASE = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def app(**config: Any) -> tuple[MockApp, Clock]:
    clock = Clock()
    return MockApp(MockConfig(batch_phase_s=PHASE, **config), clock=clock, connections=()), clock


def call(
    mock: MockApp,
    method: str,
    path: str,
    body: bytes | dict[str, Any] = b"",
    *,
    query: str = "",
    content_type: bytes | None = None,
    key: str | None = None,
) -> tuple[int, Any]:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    auth = f"Bearer {key}".encode() if key else None
    reply = mock.handle(
        HttpRequest(method, path, query, raw, auth, True, content_type=content_type)
    )
    try:
        return reply.status, json.loads(reply.body)
    except ValueError:
        return reply.status, reply.body


def line(i: int, **extra: Any) -> bytes:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}"}], **extra}
    return json.dumps({"custom_id": f"r{i}", "method": "POST", "url": CHAT, "body": body}).encode()


def multipart(content: bytes, purpose: str = "batch") -> tuple[bytes, bytes]:
    boundary = b"b0undary"
    body = (
        b'--b0undary\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
        + purpose.encode()
        + b'\r\n--b0undary\r\nContent-Disposition: form-data; name="file"; '
        b'filename="in.jsonl"\r\nContent-Type: application/octet-stream\r\n\r\n'
        + content
        + b"\r\n--b0undary--\r\n"
    )
    return body, b"multipart/form-data; boundary=" + boundary


def upload(mock: MockApp, lines: list[bytes]) -> str:
    body, content_type = multipart(b"\n".join(lines) + b"\n")
    status, stored = call(mock, "POST", "/v1/files", body, content_type=content_type)
    assert status == 200, stored
    assert stored["status"] == "processed" and stored["purpose"] == "batch"
    return str(stored["id"])


def create(mock: MockApp, file_id: str, **extra: Any) -> dict[str, Any]:
    request = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h", **extra}
    status, batch = call(mock, "POST", "/v1/batches", request)
    assert status == 200, batch
    return dict(batch)


def get(mock: MockApp, batch_id: str) -> dict[str, Any]:
    status, batch = call(mock, "GET", f"/v1/batches/{batch_id}")
    assert status == 200
    return dict(batch)


def content(mock: MockApp, file_id: str) -> list[dict[str, Any]]:
    status, raw = call(mock, "GET", f"/v1/files/{file_id}/content")
    assert status == 200
    text = raw if isinstance(raw, bytes) else json.dumps(raw).encode()
    return [json.loads(x) for x in text.splitlines()]


def test_a_batch_goes_through_every_state_and_errors_go_to_the_error_file() -> None:
    mock, clock = app()
    file_id = upload(mock, [line(0), line(1, mock_fault="400"), line(2), line(3)])
    batch = create(mock, file_id, metadata={"batchrun_chunk": "0"})
    assert batch["status"] == "validating" and batch["metadata"] == {"batchrun_chunk": "0"}
    clock.now += PHASE
    assert get(mock, batch["id"])["status"] == "in_progress"
    clock.now += PHASE / 2
    half = get(mock, batch["id"])
    assert half["request_counts"] == {"total": 4, "completed": 1, "failed": 1}
    clock.now += PHASE / 2
    assert get(mock, batch["id"])["status"] == "finalizing"
    clock.now += PHASE
    done = get(mock, batch["id"])
    assert done["status"] == "completed" and done["completed_at"] is not None
    assert done["request_counts"] == {"total": 4, "completed": 3, "failed": 1}
    output = content(mock, done["output_file_id"])
    assert sorted(x["custom_id"] for x in output) == ["r0", "r2", "r3"]
    assert output[0]["response"]["status_code"] == 200
    assert output[0]["response"]["body"]["usage"]["prompt_tokens"] > 0
    (error,) = content(mock, done["error_file_id"])
    assert error["custom_id"] == "r1" and error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["code"] == "context_length_exceeded"
    assert mock.stats()["batches"]["openai"] == {
        "created": 1, "cancel_requests": 0, "requests": 4, "custom_ids_in_two_batches": 0
    }  # fmt: skip


def test_every_request_failed_is_completed_without_an_output_file() -> None:
    mock, clock = app()
    batch = create(mock, upload(mock, [line(i, mock_fault="500") for i in range(3)]))
    clock.now += 3 * PHASE
    done = get(mock, batch["id"])
    assert done["status"] == "completed" and done["output_file_id"] is None
    assert done["request_counts"] == {"total": 3, "completed": 0, "failed": 3}
    assert len(content(mock, done["error_file_id"])) == 3


def test_an_expired_batch_returns_what_ran_and_nothing_for_the_rest() -> None:
    mock, clock = app()
    lines = [line(0), line(1), line(2, mock_batch_expire=True), line(3)]
    batch = create(mock, upload(mock, lines))
    clock.now += 2 * PHASE
    done = get(mock, batch["id"])
    assert done["status"] == "expired" and done["expired_at"] is not None
    assert [x["custom_id"] for x in content(mock, done["output_file_id"])] == ["r0", "r1"]
    assert done["error_file_id"] is None


def test_an_invalid_line_fails_the_batch_in_validation() -> None:
    mock, clock = app()
    batch = create(mock, upload(mock, [line(0), line(1, mock_batch_invalid=True)]))
    clock.now += PHASE
    failed = get(mock, batch["id"])
    assert failed["status"] == "failed" and failed["output_file_id"] is None
    assert failed["errors"]["data"][0]["line"] == 2
    assert "mock_batch_invalid" in failed["errors"]["data"][0]["message"]


def test_cancel_keeps_what_ran() -> None:
    mock, clock = app()
    batch = create(mock, upload(mock, [line(i) for i in range(4)]))
    clock.now += PHASE * 1.5  # half way through in_progress: 2 of 4 ran
    status, cancelling = call(mock, "POST", f"/v1/batches/{batch['id']}/cancel")
    assert status == 200 and cancelling["status"] == "cancelling"
    clock.now += PHASE
    cancelled = get(mock, batch["id"])
    assert cancelled["status"] == "cancelled"
    assert [x["custom_id"] for x in content(mock, cancelled["output_file_id"])] == ["r0", "r1"]
    status, again = call(mock, "POST", f"/v1/batches/{batch['id']}/cancel")
    assert status == 400 and "status 'cancelled'" in again["error"]["message"]


def test_list_pages_newest_first_and_files_list_by_purpose() -> None:
    mock, _ = app()
    ids = [create(mock, upload(mock, [line(i)]))["id"] for i in range(3)]
    status, page = call(mock, "GET", "/v1/batches", query="limit=2")
    assert status == 200 and [b["id"] for b in page["data"]] == ids[::-1][:2]
    assert page["has_more"] is True
    status, rest = call(mock, "GET", "/v1/batches", query=f"limit=2&after={page['last_id']}")
    assert [b["id"] for b in rest["data"]] == [ids[0]] and rest["has_more"] is False
    status, files = call(mock, "GET", "/v1/files", query="purpose=batch")
    assert len(files["data"]) == 3 and files["data"][0]["filename"] == "in.jsonl"


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ({"input_file_id": "file-nope", "endpoint": CHAT, "completion_window": "24h"},
         "Invalid 'input_file_id'"),
        ({"input_file_id": "x", "endpoint": "/v1/audio/speech", "completion_window": "24h"},
         "Invalid 'endpoint'"),
        ({"input_file_id": "x", "endpoint": CHAT, "completion_window": "1h"}, "only '24h'"),
        ({"input_file_id": "x", "endpoint": CHAT, "completion_window": "24h",
          "metadata": {f"k{i}": "v" for i in range(17)}}, "at most 16"),
    ],
)  # fmt: skip
def test_create_refuses_what_openai_refuses(request_body: dict[str, Any], message: str) -> None:
    mock, _ = app()
    status, answer = call(mock, "POST", "/v1/batches", request_body)
    assert status == 400 and message in answer["error"]["message"]


def test_a_batch_fault_acts_then_drops_the_connection() -> None:
    mock, _ = app(batch_faults={"create": 1})
    file_id = upload(mock, [line(0)])
    request = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
    reply = mock.handle(
        HttpRequest("POST", "/v1/batches", "", json.dumps(request).encode(), None, True)
    )
    assert reply.action == "reset"
    status, listed = call(mock, "GET", "/v1/batches")
    assert status == 200 and len(listed["data"]) == 1  # it was created all the same
    assert mock.stats()["batches"]["openai"]["created"] == 1
    assert create(mock, file_id)["status"] == "validating"  # the fault was used up
    assert mock.stats()["batches"]["openai"]["custom_ids_in_two_batches"] == 1


def test_batch_routes_need_the_key() -> None:
    mock, _ = app(api_key="sk-test-mock")
    status, answer = call(mock, "GET", "/v1/batches")
    assert status == 401 and answer["error"]["code"] == "invalid_api_key"
    assert call(mock, "GET", "/v1/batches", key="sk-test-mock")[0] == 200
    reply = mock.handle(
        HttpRequest("GET", "/v1/messages/batches", "", b"", None, True, api_key=b"sk-test-mock")
    )
    assert reply.status == 200  # Anthropic's x-api-key


# --------------------------------------------------------------------------------- Anthropic


def message_request(custom_id: str, **params: Any) -> dict[str, Any]:
    body = {"model": "claude-haiku-4-5", "max_tokens": 50, **params}
    body.setdefault("messages", [{"role": "user", "content": f"question {custom_id}"}])
    return {"custom_id": custom_id, "params": body}


def test_message_batch_lifecycle_and_result_types() -> None:
    mock, clock = app()
    requests = [
        message_request("a"),
        message_request("b", mock_fault="429"),
        message_request("c", mock_batch_expire=True),
        message_request("d"),
    ]
    status, batch = call(mock, "POST", "/v1/messages/batches", {"requests": requests})
    assert status == 200 and batch["processing_status"] == "in_progress"
    assert batch["request_counts"]["processing"] == 4 and batch["results_url"] is None
    status, early = call(mock, "GET", f"/v1/messages/batches/{batch['id']}/results")
    assert status == 400 and early["type"] == "error"
    clock.now += 2 * PHASE
    status, ended = call(mock, "GET", f"/v1/messages/batches/{batch['id']}")
    assert ended["processing_status"] == "ended"
    assert ended["request_counts"] == {
        "processing": 0, "succeeded": 1, "errored": 1, "canceled": 0, "expired": 2
    }  # fmt: skip
    assert ended["results_url"].endswith(f"/messages/batches/{batch['id']}/results")
    status, raw = call(mock, "GET", f"/v1/messages/batches/{batch['id']}/results")
    results = {x["custom_id"]: x["result"] for x in map(json.loads, raw.splitlines())}
    assert results["a"]["type"] == "succeeded"
    assert results["a"]["message"]["usage"]["input_tokens"] > 0
    assert results["b"] == {
        "type": "errored",
        "error": {"type": "error", "error": {"type": "rate_limit_error", "message": results["b"]
                  ["error"]["error"]["message"]}},
    }  # fmt: skip
    assert results["c"] == results["d"] == {"type": "expired"}


def test_message_batch_cancel_cancels_what_has_not_run() -> None:
    mock, clock = app()
    requests = [message_request(str(i)) for i in range(4)]
    _, batch = call(mock, "POST", "/v1/messages/batches", {"requests": requests})
    clock.now += PHASE  # half of the two phases: 2 of 4 ran
    status, canceling = call(mock, "POST", f"/v1/messages/batches/{batch['id']}/cancel")
    assert status == 200 and canceling["processing_status"] == "canceling"
    clock.now += PHASE
    _, ended = call(mock, "GET", f"/v1/messages/batches/{batch['id']}")
    assert ended["request_counts"]["succeeded"] == 2 and ended["request_counts"]["canceled"] == 2


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (message_request("has space"), "String should match pattern"),
        (message_request("x" * 65), "String should match pattern"),
        (message_request("z", max_tokens=0), "max_tokens 0"),
        ({"custom_id": "p"}, "params: Field required"),
    ],
)
def test_message_batch_refuses_what_anthropic_refuses(item: dict[str, Any], message: str) -> None:
    mock, _ = app()
    status, answer = call(mock, "POST", "/v1/messages/batches", {"requests": [item]})
    assert status == 400 and message in answer["error"]["message"]
    assert mock.stats()["batches"]["anthropic"]["created"] == 0


def test_multipart_parser() -> None:
    body, content_type = multipart(b'{"a": 1}\n')
    fields = parse_multipart(content_type, body)
    assert fields == {"purpose": (None, b"batch"), "file": ("in.jsonl", b'{"a": 1}\n')}
    with pytest.raises(ValueError, match="not closed"):
        parse_multipart(content_type, body[:-8])
    with pytest.raises(ValueError, match="multipart/form-data"):
        parse_multipart(b"application/json", body)


def test_over_a_socket_with_a_client_s_multipart_upload() -> None:
    with MockServer(MockConfig(batch_phase_s=0.05)) as server:
        client = httpx2.Client(base_url=server.base_url)
        data = line(0) + b"\n" + line(1) + b"\n"
        stored = client.post(
            "/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}
        ).json()
        assert stored["bytes"] == len(data)
        assert client.get(f"/files/{stored['id']}/content").content == data
        batch = client.post(
            "/batches",
            json={"input_file_id": stored["id"], "endpoint": CHAT, "completion_window": "24h"},
        ).json()
        time.sleep(0.2)
        done = client.get(f"/batches/{batch['id']}").json()
        assert done["status"] == "completed", done
        stats = server.stats()
        assert stats["requests"]["by_path"]["/v1/batches/{id}"] == 1
        assert stats["batches"]["files_uploaded"] == 1
