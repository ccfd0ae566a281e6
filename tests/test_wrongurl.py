"""batchrun.send.wrongurl, through `Sender.send`: a wrong URL stops the run, rows' own 404s stand.

Many sends at once in one task group, over `httpx2.MockTransport`, as the workers send them.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
import httpx2
import pytest

from batchrun.common.errors import FatalRunError
from batchrun.models import Record
from batchrun.send.client import Sender
from batchrun.send.http import Httpx2Engine
from batchrun.send.limiter import Limiter
from batchrun.send.wrongurl import NOT_FOUND_LIMIT
from tests.test_client import KEY, completion, make_request

INVALID_URL = {"error": {"message": "Invalid URL (POST /v1/x)", "type": "invalid_request_error"}}


def sender_for(handler: Callable[[httpx2.Request], httpx2.Response], workers: int) -> Sender:
    http = Httpx2Engine(httpx2.AsyncClient(transport=httpx2.MockTransport(handler)))
    return Sender(
        http,
        Limiter(),
        base_url="https://gw.test/v1/v2",
        api_key=KEY,
        max_retries=0,
        workers=workers,
    )


async def send_all(sender: Sender, rows: int, workers: int) -> tuple[list[Record], list[str]]:
    """`rows` sends by `workers` workers; the records, and the FatalRunError kinds raised."""
    records: list[Record] = []
    stopped: list[str] = []
    pending = iter(range(rows))

    async def worker() -> None:
        for row in pending:
            try:
                records.append(await sender.send(make_request(row=row, custom_id=str(row))))
            except FatalRunError as exc:
                stopped.append(exc.kind)
                return
        sender.input_done()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)
    return records, stopped


@pytest.mark.anyio
@pytest.mark.parametrize("workers", [50, 4, 1])
async def test_every_answer_invalid_url_stops_with_every_row_pending(workers: int) -> None:
    seen: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(1)
        return httpx2.Response(404, json=INVALID_URL)

    sender = sender_for(handler, workers)
    records, stopped = await send_all(sender, 500, workers)
    assert records == []  # no row recorded: all pending for the resume
    assert stopped and set(stopped) == {"not_found"}
    # Stopped at NOT_FOUND_LIMIT answers, or as soon as every worker held one.
    assert len(seen) == min(NOT_FOUND_LIMIT, workers)
    with pytest.raises(FatalRunError) as info:
        await sender.send(make_request())
    message = info.value.message
    assert message.startswith(f"{len(seen)} request")
    assert "answered HTTP 404 (Invalid URL (POST /v1/x)) and none was accepted" in message
    assert "https://gw.test/v1/v2/v1/chat/completions" in message
    assert "--base-url https://gw.test/v1/v2" in message


@pytest.mark.anyio
async def test_rows_own_404s_stand_once_another_request_is_accepted() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        row = json.loads(request.content)["row"]
        if row < 5:  # the first rows name a path the server lacks; the rest are fine
            return httpx2.Response(404, json=INVALID_URL)
        return httpx2.Response(200, json=completion())

    sender = sender_for(handler, workers=10)

    async def send(row: int) -> Record:
        body = json.dumps({"model": "gpt-4o-mini", "messages": [], "row": row}).encode()
        return await sender.send(make_request(row=row, custom_id=str(row), body=body))

    records: list[Record] = []

    async def one(row: int) -> None:
        records.append(await send(row))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for row in range(10):
                tg.start_soon(one, row)
    by_row = {r.row: r for r in records}
    assert sorted(by_row) == list(range(10))
    assert [by_row[r].status for r in range(5)] == ["error"] * 5
    assert by_row[0].error_message == "HTTP 404 invalid_request_error: Invalid URL (POST /v1/x)"
    assert all(by_row[r].status == "ok" for r in range(5, 10))


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [
        httpx2.Response(404, json={"error": {"message": "The model `x` does not exist",
                                             "code": "model_not_found"}}),
        httpx2.Response(404, json={"error": {"message": "bad 'messages'"}}),
    ],
    ids=["model_not_found", "another-404"],
)  # fmt: skip
async def test_a_404_that_is_not_about_the_path_is_a_row_error(answer: httpx2.Response) -> None:
    sender = sender_for(lambda request: answer, workers=1)
    records, stopped = await send_all(sender, 30, 1)
    assert stopped == []
    assert len(records) == 30 and all(r.status == "error" for r in records)


@pytest.mark.anyio
async def test_a_400_proves_the_endpoint_exists() -> None:
    # Bad bodies get 400 from an endpoint that exists: 404s before it were the rows' own.
    answers = iter([httpx2.Response(404, json=INVALID_URL)] * 3)

    def handler(request: httpx2.Request) -> httpx2.Response:
        return next(answers, httpx2.Response(400, json={"error": {"message": "bad 'n'"}}))

    sender = sender_for(handler, workers=8)
    records, stopped = await send_all(sender, 30, 8)
    assert stopped == []
    assert len(records) == 30
    assert sum(r.http_status == 404 for r in records) == 3


@pytest.mark.anyio
async def test_an_input_smaller_than_the_limit_stops_once_every_row_was_answered() -> None:
    seen: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(1)
        return httpx2.Response(404, text="<html><title>404 Not Found</title></html>")

    sender = sender_for(handler, workers=50)
    records, stopped = await send_all(sender, 5, 50)
    assert (records, len(seen)) == ([], 5)
    assert set(stopped) == {"not_found"}
