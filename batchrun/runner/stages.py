"""The reader, the workers and the writer of one run, wired by the bounded hand-offs.

    reader ──(RequestFeed, bounded)──► N workers ──(RecordBuffer, bounded)──► writer
       └──────────── bad rows as error records ─────────────────────────────►┘

Guarantees:
- The hand-offs (`batchrun.runner.handoff`) are bounded, so a fast reader waits for the workers,
  and the workers for the writer, and memory depends on concurrency and flush size only.
- A stop ends dispatching at once; requests in flight get `grace_s` to finish; then whatever
  reached the writer is committed and the checkpoint written.
- After a failed commit (a full disk, say) the run stops; rows that arrive later stay pending.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from batchrun.common.errors import FatalRunError
from batchrun.config import RunConfig
from batchrun.cost.budget import BudgetExhausted, CostBudget, record_cost
from batchrun.cost.pricebook import PriceBook
from batchrun.inputs.rows import InputError
from batchrun.models import ErrorType, Record, RowError
from batchrun.runner.control import RunControl
from batchrun.runner.handoff import RecordBuffer, RequestFeed
from batchrun.runner.progress import Progress
from batchrun.runner.rowsource import CHUNK_ROWS, RowSource
from batchrun.runner.summary import RunTotals
from batchrun.send.client import Sender
from batchrun.send.http import HttpEngine
from batchrun.send.limiter import Limiter
from batchrun.store.media import MediaStore
from batchrun.store.writer import ResultWriter

__all__ = ["Stages"]


class Stages:
    """The reader, the workers and the writer of one run, and what they share."""

    def __init__(
        self,
        config: RunConfig,
        control: RunControl,
        writer: ResultWriter,
        totals: RunTotals,
        http: HttpEngine,
        prices: Callable[[], Awaitable[PriceBook]],
        source: RowSource,
        progress: Progress,
        budget_prices: PriceBook | None = None,
    ) -> None:
        """`prices` gives the price book once it is loaded (the first commit waits for it, not
        the first request); `budget_prices` is it, already loaded, when `--max-cost` is set."""
        self.config = config
        self.source = source
        self.progress = progress
        self.control = control
        self.writer = writer
        self.totals = totals
        self.prices = prices
        self.write_error: OSError | None = None
        limiter = Limiter(
            max_requests_per_minute=config.max_requests_per_minute,
            max_tokens_per_minute=config.max_tokens_per_minute,
            burst_s=config.burst_s,
        )
        self.sender = Sender(
            http,
            limiter,
            base_url=config.base_url,
            api_key=config.api_key,
            max_retries=config.max_retries,
            max_outage_s=config.max_outage_s,
            workers=config.concurrency,
            media=MediaStore(config.out_dir),
            download_media=config.download_media,
            media_timeout_s=config.timeout_s,
        )
        self.budget: CostBudget | None = None
        if config.max_cost_usd is not None:
            assert budget_prices is not None, "--max-cost needs its prices before sending"
            self.budget = CostBudget(
                max_usd=config.max_cost_usd,
                spent_usd=writer.checkpoint.cost_usd,
                prices=budget_prices,
            )

    async def run(self) -> None:
        config = self.config
        progress = self.progress
        feed = RequestFeed(
            low_water=max(config.concurrency, CHUNK_ROWS), workers=config.concurrency
        )
        # Room for one part while the previous one is being written, and every worker's record.
        results = RecordBuffer(
            flush_rows=config.flush_rows, limit=config.flush_rows + 2 * config.concurrency
        )
        writer_done = anyio.Event()
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._write, results, writer_done)
            outer.start_soon(
                progress.keep_time,
                self.sender.outage_note,
                lambda: self.sender.outage_note(detail=True),
            )
            try:
                async with anyio.create_task_group() as work:
                    outer.start_soon(self._grace_timer, work.cancel_scope)
                    work.start_soon(self._read, feed, results, progress, work.cancel_scope)
                    for _ in range(config.concurrency):
                        work.start_soon(self._work, feed, results, progress)
            finally:
                # Every producer of records is done: the writer drains, commits, finishes.
                results.close()
            await writer_done.wait()
            outer.cancel_scope.cancel()  # the grace timer and the bar's clock

    async def _read(
        self,
        feed: RequestFeed,
        results: RecordBuffer,
        progress: Progress,
        work_scope: anyio.CancelScope,
    ) -> None:
        control = self.control
        try:
            while not control.stopping:
                await feed.wait_hungry()
                if control.stopping or feed.abandoned:
                    break  # a stop, or every worker has stopped: nothing more to hand out
                chunk = await self.source.take()
                if not chunk:
                    break
                requests = []
                for item in chunk:
                    if isinstance(item, RowError):
                        await self._put(_bad_row_record(item), results, progress)
                    else:
                        requests.append(item)
                feed.extend(requests)
        except InputError as exc:
            control.stop(str(exc), fatal=True)
            work_scope.cancel()
        finally:
            feed.close()

    async def _work(self, feed: RequestFeed, results: RecordBuffer, progress: Progress) -> None:
        control, budget = self.control, self.budget
        try:
            while (request := await feed.get()) is not None:
                if control.stopping:
                    return
                reserved = 0.0
                if budget is not None:
                    try:
                        reserved = await budget.reserve(request)
                    except BudgetExhausted as exc:
                        control.stop(str(exc))
                        return
                    if control.stopping:  # stopped while this worker waited for room
                        budget.settle(reserved, None)
                        return
                record: Record | None = None
                try:
                    record = await self.sender.send(request)
                except FatalRunError as exc:
                    control.stop(exc.message, fatal=True)
                    return
                finally:
                    # Also on a fatal stop or a cancellation: workers waiting for room must
                    # not wait for a request that will never settle.
                    if budget is not None:
                        cost = record_cost(budget.prices, record) if record is not None else None
                        budget.settle(reserved, cost)
                await self._put(record, results, progress)
            self.sender.input_done()  # the feed is closed and empty: no more rows will come
        finally:
            feed.leave()

    async def _put(self, record: Record, results: RecordBuffer, progress: Progress) -> None:
        await results.put(record)
        self.totals.add(record)
        progress.update(self.totals)

    async def _write(self, results: RecordBuffer, done: anyio.Event) -> None:
        interval = self.config.flush_interval_s
        next_flush = anyio.current_time() + interval
        while True:
            await results.wait(max(0.0, next_flush - anyio.current_time()))
            records = results.take()
            if records:
                await self._commit(records)
            next_flush = anyio.current_time() + interval
            if results.closed and len(results) == 0:
                break
        done.set()

    async def _commit(self, buffer: list[Record]) -> None:
        """Commit `buffer`. After a failed commit (a full disk, say) the run stops, and what
        arrives later is dropped: those rows stay pending for the resume, the checkpoint true."""
        if self.write_error is not None:
            return
        # Committing must not be interrupted half way by a cancellation.
        with anyio.CancelScope(shield=True):
            book = await self.prices()  # loaded long before the first part, in practice
            costs = [record_cost(book, r) for r in buffer]
            self.totals.add_costs(buffer, costs)  # spent, whether or not the disk takes it
            try:
                await anyio.to_thread.run_sync(self.writer.commit, buffer, costs)
            except OSError as exc:
                self.write_error = exc
                self.control.stop(
                    f"cannot write the results in {self.writer.results_dir}: "
                    f"{exc.strerror or exc}; once that is fixed, run the same command to resume",
                    fatal=True,
                )

    async def _grace_timer(self, work_scope: anyio.CancelScope) -> None:
        assert self.control._stop_event is not None
        await self.control._stop_event.wait()
        await anyio.sleep(self.config.grace_s)
        work_scope.cancel()


def _bad_row_record(error: RowError) -> Record:
    return Record(
        custom_id=error.custom_id,
        row=error.row,
        status="error",
        error_type=ErrorType.BAD_INPUT,
        error_message=error.message,
        attempts=0,
    )
