"""The hand-offs between the stages: order, bounds, and nobody left waiting for ever."""

from __future__ import annotations

import anyio
import pytest

from batchrun.models import Record, Request
from batchrun.runner.handoff import RecordBuffer, RequestFeed

pytestmark = pytest.mark.anyio


def request(row: int) -> Request:
    return Request(
        row=row,
        custom_id=f"r{row}",
        url="/v1/chat/completions",
        body=b"{}",
        model=None,
        prompt_tokens_estimate=1,
        max_output_tokens=1,
    )


def record(row: int) -> Record:
    return Record(custom_id=f"r{row}", row=row, status="ok")


async def test_feed_hands_out_requests_in_order_then_none_once_closed() -> None:
    feed = RequestFeed(low_water=2, workers=1)
    feed.extend(request(i) for i in range(3))
    feed.close()
    got = [await feed.get() for _ in range(4)]
    assert [r.row if r else None for r in got] == [0, 1, 2, None]


async def test_feed_wakes_a_waiting_worker_when_requests_arrive() -> None:
    feed = RequestFeed(low_water=1, workers=1)
    got: list[Request | None] = []

    async def worker() -> None:
        got.append(await feed.get())

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        await anyio.wait_all_tasks_blocked()
        assert got == []
        feed.extend([request(7)])
    assert [r.row for r in got if r] == [7]


async def test_the_reader_waits_until_the_feed_is_down_to_low_water() -> None:
    feed = RequestFeed(low_water=2, workers=1)
    await feed.wait_hungry()  # empty at the start: hungry at once
    feed.extend(request(i) for i in range(5))
    with anyio.move_on_after(0.05) as scope:
        await feed.wait_hungry()
    assert scope.cancelled_caught  # 5 queued: the reader must wait
    for _ in range(3):
        await feed.get()
    with anyio.fail_after(1):
        await feed.wait_hungry()  # 2 left = low water
    assert len(feed) == 2


async def test_when_every_worker_has_left_the_reader_is_woken_and_told() -> None:
    feed = RequestFeed(low_water=0, workers=2)
    feed.extend([request(0), request(1)])
    feed.leave()
    assert not feed.abandoned
    feed.leave()
    assert feed.abandoned
    with anyio.fail_after(1):
        await feed.wait_hungry()


async def test_buffer_gives_parts_of_at_most_flush_rows_in_order() -> None:
    buffer = RecordBuffer(flush_rows=3, limit=10)
    for i in range(7):
        await buffer.put(record(i))
    assert [r.row for r in buffer.take()] == [0, 1, 2]
    assert [r.row for r in buffer.take()] == [3, 4, 5]
    assert [r.row for r in buffer.take()] == [6]
    assert buffer.take() == []


async def test_buffer_wait_returns_when_full_when_closed_or_after_the_timeout() -> None:
    buffer = RecordBuffer(flush_rows=2, limit=4)
    with anyio.fail_after(1):
        await buffer.wait(0.01)  # nothing there: the timeout
    await buffer.put(record(0))
    await buffer.put(record(1))
    with anyio.fail_after(1):
        await buffer.wait(60)  # full
    buffer.take()
    buffer.close()
    with anyio.fail_after(1):
        await buffer.wait(60)  # closed
    assert buffer.closed


async def test_a_full_buffer_makes_workers_wait_until_the_writer_takes() -> None:
    buffer = RecordBuffer(flush_rows=2, limit=2)
    await buffer.put(record(0))
    await buffer.put(record(1))
    put_third = False

    async def worker() -> None:
        nonlocal put_third
        await buffer.put(record(2))
        put_third = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        await anyio.wait_all_tasks_blocked()
        assert not put_third and len(buffer) == 2  # bounded: the worker waits
        assert [r.row for r in buffer.take()] == [0, 1]
    assert put_third
    assert [r.row for r in buffer.take()] == [2]


def test_buffer_limit_below_one_part_is_refused() -> None:
    with pytest.raises(ValueError, match="limit must be at least flush_rows"):
        RecordBuffer(flush_rows=5, limit=4)
