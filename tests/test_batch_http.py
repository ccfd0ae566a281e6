"""send/batch_http.py: what is retried, what is never sent twice, and the key kept out."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest

from batchrun.common.errors import FatalRunError
from batchrun.mock.files import parse_multipart
from batchrun.send.batch_http import BatchApiError, BatchHttp, MaybeAccepted
from batchrun.send.openai_batches import OpenAIBatches

KEY = "sk-test-batch-Qw8Er7Ty6"
Handler = Callable[[httpx2.Request], httpx2.Response]


def client(handler: Handler) -> tuple[BatchHttp, list[float]]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    http = BatchHttp(
        httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
        base_url="https://api.example.test/v1",
        headers={"authorization": f"Bearer {KEY}"},
        api_key=KEY,
        max_retries=3,
        sleep=sleep,
    )
    return http, waits


def answers(*responses: httpx2.Response | Exception) -> tuple[Handler, list[httpx2.Request]]:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        answer = responses[min(len(seen), len(responses)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handler, seen


def error(status: int, message: str, code: str | None = None, **headers: str) -> httpx2.Response:
    body = {"error": {"message": message, "type": "x", "code": code}}
    return httpx2.Response(status, json=body, headers=headers)


@pytest.mark.anyio
async def test_a_get_is_retried_on_what_a_row_would_retry() -> None:
    handler, seen = answers(
        error(500, "boom"), error(429, "slow down", **{"retry-after": "7"}), httpx2.Response(
            200, json={"id": "batch_1"}
        )
    )  # fmt: skip
    http, waits = client(handler)
    assert await http.call("GET", "/v1/batches/batch_1") == {"id": "batch_1"}
    assert len(seen) == 3 and waits[1] == 7.0
    assert seen[0].url == "https://api.example.test/v1/batches/batch_1"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "failure",
    [error(500, "oops"), error(502, "bad gateway"), httpx2.ReadTimeout("read timed out")],
    ids=["500", "502", "timeout"],
)
async def test_a_create_whose_answer_is_lost_is_never_sent_twice(
    failure: httpx2.Response | Exception,
) -> None:
    handler, seen = answers(failure, httpx2.Response(200, json={"id": "batch_2"}))
    http, _ = client(handler)
    with pytest.raises(MaybeAccepted):
        await http.call("POST", "/v1/batches", json_body={"x": 1}, once=True)
    assert len(seen) == 1


@pytest.mark.anyio
async def test_a_create_refused_with_429_goes_again() -> None:
    handler, seen = answers(error(429, "rate limited"), httpx2.Response(200, json={"id": "b"}))
    http, _ = client(handler)
    assert await http.call("POST", "/v1/batches", json_body={}, once=True) == {"id": "b"}
    assert len(seen) == 2


@pytest.mark.anyio
async def test_refusals_and_whole_run_failures_keep_the_key_out() -> None:
    handler, _ = answers(error(400, f"bad input_file_id (you sent {KEY})", "invalid"))
    http, _ = client(handler)
    with pytest.raises(BatchApiError) as refused:
        await http.call("POST", "/v1/batches", json_body={}, once=True)
    assert not isinstance(refused.value, MaybeAccepted)
    assert refused.value.status == 400 and KEY not in refused.value.message
    assert refused.value.message.startswith("POST /v1/batches: HTTP 400 invalid: bad input_file_id")
    handler, _ = answers(error(401, f"Incorrect API key provided: {KEY}", "invalid_api_key"))
    http, _ = client(handler)
    with pytest.raises(FatalRunError) as fatal:
        await http.call("GET", "/v1/batches")
    assert fatal.value.kind == "auth" and KEY not in fatal.value.message


class Sink:
    def __init__(self, sinks: list[Sink]) -> None:
        self.data = b""
        self.discarded = False
        sinks.append(self)

    def write(self, data: bytes) -> None:
        self.data += data

    def discard(self) -> None:
        self.discarded = True


@pytest.mark.anyio
async def test_a_download_that_fails_starts_again_in_a_new_sink() -> None:
    handler, seen = answers(httpx2.ReadError("reset"), error(503, "busy"),
                            httpx2.Response(200, content=b"line1\nline2\n"))  # fmt: skip
    http, _ = client(handler)
    sinks: list[Sink] = []
    sink = await http.download("/v1/files/f/content", lambda: Sink(sinks))
    assert sink.data == b"line1\nline2\n" and len(seen) == 3
    assert [s.discarded for s in sinks] == [True, True, False]
    handler, _ = answers(error(404, "No such File object: f"))
    http, _ = client(handler)
    with pytest.raises(BatchApiError, match="HTTP 404"):
        await http.download("/v1/files/f/content", lambda: Sink(sinks))
    assert sinks[-1].discarded


@pytest.mark.anyio
async def test_upload_is_a_multipart_body_of_known_length(tmp_path: Path) -> None:
    content = b'{"custom_id":"a"}\n' * 3
    path = tmp_path / "chunk.jsonl"
    path.write_bytes(content)
    handler, seen = answers(httpx2.Response(200, json={"id": "file-1"}))
    http, _ = client(handler)
    assert await OpenAIBatches(http).upload(path, "batchrun-x.jsonl") == "file-1"
    request = seen[0]
    body = request.read()
    assert int(request.headers["content-length"]) == len(body)
    fields = parse_multipart(request.headers["content-type"].encode(), body)
    assert fields["purpose"] == (None, b"batch")
    assert fields["file"] == ("batchrun-x.jsonl", content)
    assert request.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.anyio
async def test_lookups_page_newest_first_and_stop_at_since() -> None:
    pages = {
        None: {"data": [{"id": "b3", "created_at": 300, "metadata": {"k": "other"}},
                        {"id": "b2", "created_at": 200, "metadata": {"k": "mine"}}],
               "has_more": True},
        "b2": {"data": [{"id": "b1", "created_at": 100, "metadata": {"k": "old"}}],
               "has_more": False},
    }  # fmt: skip
    seen: list[str | None] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        after = request.url.params.get("after")
        seen.append(after)
        return httpx2.Response(200, content=json.dumps(pages[after]).encode())

    api = OpenAIBatches(client(handler)[0])
    found = await api.find_batch({"k": "mine"}, since=150)
    assert found is not None and found.id == "b2" and seen == [None]
    assert await api.find_batch({"k": "old"}, since=150) is None  # older than since: not read
    assert seen == [None, None, "b2"]
