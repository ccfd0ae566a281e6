"""The rows a run hands to its workers: read in a worker thread, a chunk at a time, each judged.

Guarantees:
- Chunks come in file order; a row whose custom_id is not judged yet is never handed out: the
  source waits (without a thread, cancellably) for the first pass's list, or for a stop.
- The judge switches to the first pass's list only between chunks.
- `InputError` from the reader propagates from `take`; the generator is closed by `close`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Generator

import anyio

from batchrun.common.ranges import RowFilter
from batchrun.config import RunConfig
from batchrun.inputs.idtable import Pending
from batchrun.inputs.reader import iter_requests
from batchrun.models import Request, RowError
from batchrun.runner.control import RunControl
from batchrun.runner.firstpass import FirstPass, Verdicts

__all__ = ["CHUNK_ROWS", "RowSource"]

log = logging.getLogger("batchrun")

CHUNK_ROWS = 256

Item = Request | RowError
_MORE, _PENDING, _END = "more", "pending", "end"


class RowSource:
    def __init__(
        self,
        config: RunConfig,
        skip: RowFilter,
        verdicts: Verdicts | None,
        control: RunControl,
    ) -> None:
        self._rows = iter_requests(
            config.input_path,
            endpoint=config.endpoint,
            skip=skip,
            max_row_bytes=config.max_row_bytes,
            template=config.template,
            judge=verdicts,
            span=config.rows,
            files_root=config.files_root,
        )
        self._verdicts = verdicts
        self._first_pass: FirstPass | None = None
        self._control = control
        self._held: list[Item] = []
        self._ended = False

    def watch(self, first_pass: FirstPass) -> None:
        """The first pass whose progress the waiting message quotes."""
        self._first_pass = first_pass

    async def peek(self) -> bool:
        """Read the first chunk now (a file that cannot be read fails here, before anything is
        set up); False when the input has no row to hand out."""
        chunk, state = await anyio.to_thread.run_sync(_take, self._rows, CHUNK_ROWS)
        self._held = chunk
        self._ended = state == _END
        return bool(chunk) or state == _PENDING

    async def take(self) -> list[Item]:
        """The next chunk; empty at the end of the input, or when the run is stopping."""
        if self._held:
            chunk, self._held = self._held, []
            return chunk
        while not self._ended and not self._control.stopping:
            if self._verdicts is not None and self._verdicts.adopt_offer():
                log.debug("custom_ids are now judged by the first pass's list")
            chunk, state = await anyio.to_thread.run_sync(_take, self._rows, CHUNK_ROWS)
            self._ended = state == _END
            if chunk or state == _END:
                return chunk
            await self._wait_for_the_list()
        return []

    async def _wait_for_the_list(self) -> None:
        assert self._verdicts is not None
        read = self._first_pass.rows_read if self._first_pass is not None else 0
        log.info(
            "rows from %s on wait for the first pass to check their custom_ids on disk "
            "(it has read %s rows so far)",
            f"{self._verdicts.horizon:,}",
            f"{read:,}",
        )
        async with anyio.create_task_group() as tg:

            async def until(happened: Callable[[], Awaitable[None]]) -> None:
                await happened()
                tg.cancel_scope.cancel()

            tg.start_soon(until, self._verdicts.wait_offer)
            tg.start_soon(until, self._control.wait_stopped)

    def close(self) -> None:
        self._rows.close()


def _take(rows: Generator[Item | Pending, None, None], n: int) -> tuple[list[Item], str]:
    chunk: list[Item] = []
    for item in rows:
        if isinstance(item, Pending):
            return chunk, _PENDING
        chunk.append(item)
        if len(chunk) >= n:
            return chunk, _MORE
    return chunk, _END
