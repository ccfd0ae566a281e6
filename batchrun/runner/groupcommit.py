"""Group commit into the journal: one write per turn of the event loop, one sync per ~30 ms.

    workers ─put(record)─► GroupCommit ─journal.write(group)─► kernel   (on this thread)
            ◄─ returns once written ─┘  └─ journal.sync(), in a thread ─► disk (every interval_s)

Two levels of durability, because they cost very different amounts (measured on this project's
machine, a shared VM):
- written: once `write(2)` has returned the bytes belong to the kernel, so a kill -9, a second
  Ctrl-C's `os._exit` or any crash of the process keeps them. `put` returns only then, and a
  worker takes its next request only after `put`, so a kill -9 loses the requests in flight and
  no answer that arrived. One write per answer cost ~60 us of the event loop's time per answer
  under the overhead benchmark (py-spy): the write releases the GIL and a busy thread (the
  reader's, the writer's) takes it. Here the answers that arrive in one turn of the event loop
  share one write: the group task is woken by the first of them, and runs after every worker
  already scheduled in that turn has added its own.
- synced: an fdatasync makes them survive a power cut too. It waits milliseconds for the disk
  and costs ~0.1-0.3 ms of CPU however much it covers, so it runs in a thread, at most once per
  `sync_interval_s`, for everything written since the last; nobody waits for it.

Guarantees:
- `put` returns once its record is written (or the write failed: then `error` is set and
  `on_error` was called once; later records are not written, and `put` still returns).
- Each group is one `write`, records in the order they were put.
- Syncs: at most one at a time, starting at least `sync_interval_s` apart, the first within
  `sync_interval_s` of a write; a failed sync calls `on_error` and ends them (writes go on).
- `close()` writes what is pending, syncs once more, and ends both tasks.
- `write_now()` (for a second Ctrl-C, on the loop's thread) writes what is pending at once.
- `put_synced` returns once its item is synced too (the task journal: an intent must be on the
  disk before the submit goes), raising the OSError of a failed write or sync.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import anyio

__all__ = ["GroupCommit"]

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """See the module docstring."""

    def __init__(
        self,
        write: Callable[[Sequence[T]], None],
        sync: Callable[[], None],
        *,
        sync_interval_s: float,
    ) -> None:
        if not sync_interval_s >= 0:
            raise ValueError(f"sync_interval_s must be zero or more, got {sync_interval_s!r}")
        self._write = write
        self._sync = sync
        self._sync_interval_s = sync_interval_s
        self._pending: list[T] = []
        self._written = anyio.Event()  # set once the pending group is written (or failed)
        self._ready = anyio.Event()  # set when something is pending, or on close
        self._unsynced = anyio.Event()  # set when something was written since the last sync
        self._closing = anyio.Event()
        self._synced = anyio.Event()  # set when the next sync to start has ended
        self._written_synced = self._synced  # that event as of the latest write
        self._closed = False
        self.error: OSError | None = None  # a write failed: nothing more is written
        self.sync_error: OSError | None = None  # a sync failed: nothing more is synced
        self.writes = 0
        self.syncs = 0

    def __repr__(self) -> str:
        return (
            f"GroupCommit(pending={len(self._pending)}, writes={self.writes}, "
            f"syncs={self.syncs}, closed={self._closed}, error={self.error!r})"
        )

    def add(self, record: T) -> anyio.Event:
        """Queue `record`; the event is set once it is written."""
        self._pending.append(record)
        self._ready.set()
        return self._written

    async def put(self, record: T) -> None:
        """Queue `record` and return once it is written."""
        await self.add(record).wait()

    async def put_synced(self, item: T) -> None:
        """Queue `item` and return once it is synced; OSError if its write or sync failed."""
        await self.add(item).wait()
        if self.error is not None:
            raise self.error
        # The sync due after the latest write (ours, or a later one: its sync covers ours too).
        await self._written_synced.wait()
        if self.sync_error is not None:
            raise self.sync_error

    def close(self) -> None:
        """Nothing more will be put: write what is pending, sync, and end the tasks."""
        self._closed = True
        self._ready.set()
        self._unsynced.set()
        self._closing.set()

    async def run_writes(self, on_error: Callable[[OSError], None]) -> None:
        while self._pending or not self._closed:
            if not self._pending:
                self._ready = anyio.Event()
                await self._ready.wait()
                continue
            self.write_now(on_error)

    def write_now(self, on_error: Callable[[OSError], None]) -> None:
        """Write what is pending, on this thread, and wake whoever waits for it."""
        group, self._pending = self._pending, []
        written, self._written = self._written, anyio.Event()
        if group and self.error is None:
            self.writes += 1
            try:
                self._write(group)
            except OSError as exc:
                self.error = exc
                on_error(exc)
            else:
                self._unsynced.set()
                self._written_synced = self._synced
        written.set()

    async def run_syncs(self, on_error: Callable[[OSError], None]) -> None:
        last_start = -math.inf
        while True:
            await self._unsynced.wait()
            wait_s = last_start + self._sync_interval_s - anyio.current_time()
            if wait_s > 0:
                # What is written meanwhile joins this sync; close() cuts the wait short.
                with anyio.move_on_after(wait_s):
                    await self._closing.wait()
            closing = self._closed
            self._unsynced = anyio.Event()
            synced, self._synced = self._synced, anyio.Event()
            last_start = anyio.current_time()
            self.syncs += 1
            try:
                await anyio.to_thread.run_sync(self._sync)  # the loop must not wait for the disk
            except OSError as exc:
                # The run stops; answers arriving meanwhile are still written (a kill -9 then
                # keeps them), just no longer synced.
                self.sync_error = exc
                on_error(exc)
                self._synced.set()  # later waiters see sync_error
                return
            finally:
                synced.set()
            if closing:
                return

    def sync_before_exit(self, *, timeout_s: float) -> bool:
        """Sync in a thread of its own and wait at most `timeout_s`: for the instant before a
        hard exit, when a disk that hangs must not hold up the exit. True if it finished."""
        finished = threading.Event()
        synced: list[bool] = []

        def sync() -> None:
            try:
                self._sync()
                synced.append(True)
            except BaseException:  # quitting anyway; what was written survives the exit
                pass
            finally:
                finished.set()

        threading.Thread(target=sync, name="batchrun-exit-sync", daemon=True).start()
        return finished.wait(timeout_s) and bool(synced)
