"""The two hand-offs between the stages, built for one wake-up per batch instead of per row.

    reader ─extend(chunk)─► RequestFeed ─get()─► workers ─put(record)─► RecordBuffer ─► writer

An anyio memory stream switches tasks for every item: with the HTTP work itself down to
~400 us per request (aiohttp), the two streams cost ~35 us of client CPU per request
(py-spy, `python -m bench.profile`). Here a worker takes a request, and hands back its record,
without a task switch while there is work queued and room for results; the reader is woken once
per chunk, the writer once per part.

Guarantees:
- Bounded: the feed holds at most `low_water` + one chunk; the buffer at most `limit` records
  (a worker waits for room: a slow disk slows the workers, memory does not grow).
- `RequestFeed.get` returns None once the reader has closed the feed and it is empty.
- When every worker has left, the reader is woken and told (`abandoned`), so a stop in which all
  workers return cannot leave the reader waiting for ever.
- `RecordBuffer.take` returns at most `flush_rows` records, in the order they were put.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import anyio

from batchrun.models import Record, Request

__all__ = ["RecordBuffer", "RequestFeed"]


class RequestFeed:
    """Requests waiting for a worker: the reader adds chunks, each worker takes one at a time."""

    def __init__(self, *, low_water: int, workers: int) -> None:
        self._items: deque[Request] = deque()
        self._low_water = low_water
        self._workers = workers
        self._closed = False
        self._ready = anyio.Event()  # set when requests arrive or the feed closes
        self._hungry = anyio.Event()  # set when the feed is down to `low_water`
        self._hungry.set()

    @property
    def abandoned(self) -> bool:
        """Every worker has left: nobody will take what the reader adds."""
        return self._workers == 0

    def __len__(self) -> int:
        return len(self._items)

    async def wait_hungry(self) -> None:
        """For the reader: return when the workers need more (or have all left)."""
        await self._hungry.wait()

    def extend(self, requests: Iterable[Request]) -> None:
        self._items.extend(requests)
        if len(self._items) > self._low_water and self._hungry.is_set():
            self._hungry = anyio.Event()
        self._wake_workers()

    def close(self) -> None:
        """No more requests: workers drain what is queued, then `get` returns None."""
        self._closed = True
        self._wake_workers()

    async def get(self) -> Request | None:
        while not self._items:
            if self._closed:
                return None
            await self._ready.wait()
        request = self._items.popleft()
        if len(self._items) <= self._low_water:
            self._hungry.set()
        return request

    def leave(self) -> None:
        """A worker is done (finished or stopped)."""
        self._workers -= 1
        if self._workers <= 0:
            self._hungry.set()

    def _wake_workers(self) -> None:
        ready, self._ready = self._ready, anyio.Event()
        ready.set()


class RecordBuffer:
    """Finished records waiting for the writer, which takes them a part at a time."""

    def __init__(self, *, flush_rows: int, limit: int) -> None:
        if limit < flush_rows:
            raise ValueError("limit must be at least flush_rows")
        self._records: list[Record] = []
        self._flush_rows = flush_rows
        self._limit = limit
        self._closed = False
        self._full = anyio.Event()  # set at `flush_rows` records, or when closed
        self._room = anyio.Event()  # set (then replaced) whenever the writer takes records

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._records)

    async def put(self, record: Record) -> None:
        while len(self._records) >= self._limit:
            await self._room.wait()
        self._records.append(record)
        if len(self._records) >= self._flush_rows:
            self._full.set()

    def close(self) -> None:
        """Nothing more will be put: the writer takes the rest and finishes."""
        self._closed = True
        self._full.set()

    async def wait(self, timeout_s: float) -> None:
        """For the writer: return at `flush_rows` records, on close, or after `timeout_s`."""
        with anyio.move_on_after(timeout_s):
            await self._full.wait()

    def take(self) -> list[Record]:
        """The oldest records, at most `flush_rows` of them (one part)."""
        n = self._flush_rows
        if len(self._records) <= n:
            records, self._records = self._records, []
        else:
            records = self._records[:n]
            del self._records[:n]
        if not self._closed and len(self._records) < n:
            self._full = anyio.Event()
        room, self._room = self._room, anyio.Event()
        room.set()
        return records
