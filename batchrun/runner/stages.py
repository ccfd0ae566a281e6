"""The reader, the workers and the writer of one run, wired by the bounded hand-offs.

    reader ──(RequestFeed, bounded)──► N workers ──(GroupCommit: journal)──► RecordBuffer ──► writer
       └──────────── bad rows as error records ──────────►┘                 (bounded)

Guarantees:
- An answer is written to the journal (`batchrun.runner.groupcommit`, `OUT/journal/`) before its
  worker takes another request, and synced within ~30 ms: a kill -9 costs the requests in
  flight, nothing more. A second Ctrl-C writes what is pending and syncs it (at most ~2 s)
  before it quits.
- The hand-offs (`batchrun.runner.handoff`) are bounded, so a fast reader waits for the workers,
  and the workers for the writer, and memory depends on concurrency and flush size only.
- A stop ends dispatching at once; requests in flight get `grace_s` to finish; then whatever
  reached the writer is committed and the checkpoint written.
- After a failed commit (a full disk, say) the run stops; rows that arrive later stay pending
  (or journaled, for the resume to fold). A journal that cannot be written stops the run too.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from batchrun.common.errors import FatalRunError
from batchrun.config import RunConfig
from batchrun.cost.budget import BudgetExhausted, CostBudget, record_cost
from batchrun.cost.pricebook import PriceBook
from batchrun.endpoints.tasks import task_family_for
from batchrun.inputs.rows import InputError
from batchrun.models import ErrorType, Record, RowError
from batchrun.runner.control import RunControl
from batchrun.runner.groupcommit import GroupCommit
from batchrun.runner.handoff import RecordBuffer, RequestFeed
from batchrun.runner.progress import Progress
from batchrun.runner.rowsource import CHUNK_ROWS, RowSource
from batchrun.runner.summary import RunTotals
from batchrun.runner.tasks import TaskFamilies, TaskRunner, TaskSettings
from batchrun.send.client import Sender
from batchrun.send.http import HttpEngine
from batchrun.send.limiter import Limiter
from batchrun.store.media import MediaStore
from batchrun.store.tasks import TaskJournal
from batchrun.store.writer import ResultWriter

__all__ = ["Seams", "Stages", "cannot_write_message", "fold_journal"]

log = logging.getLogger("batchrun")

# One fdatasync of the journal costs ~0.1-0.3 ms of CPU whatever it covers (measured on the
# journal2 branch): at most ~33 a second keeps that near 1% of a core. An answer is exposed to a
# power cut for 30 ms plus one sync; a kill -9 cannot lose it (it is written before its worker
# goes on).
_SYNC_INTERVAL_S = 0.03
# How long a second Ctrl-C waits for that sync before it quits anyway.
_EXIT_SYNC_S = 2.0


@dataclass(frozen=True, slots=True)
class Seams:
    """What a cluster run puts in place of a local run's own parts (`batchrun.run`'s keywords):
    the limiter, the `--max-cost` budget (`cost_budget(spent_usd, prices)`), and a hook run in
    the writer's thread after each commit (a cluster copies the part, then the checkpoint, to an
    object store; an OSError it raises stops the run like a failed commit)."""

    limiter: Limiter | None = None
    on_commit: Callable[[], None] | None = None
    cost_budget: Callable[[float, PriceBook], CostBudget] | None = None
    # What a row's task family is (`batchrun.runner.tasks`); tests give a family of their own.
    task_families: TaskFamilies | None = None


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
        seams: Seams | None = None,
    ) -> None:
        """`prices` gives the price book once it is loaded (the first commit waits for it, not
        the first request); `budget_prices` is it, already loaded, when `--max-cost` is set."""
        seams = seams or Seams()
        self.on_commit = seams.on_commit
        self.config = config
        self.source = source
        self.progress = progress
        self.control = control
        self.writer = writer
        self.totals = totals
        self.prices = prices
        self.write_error: OSError | None = None
        self.http = http
        self.task_families = seams.task_families or task_family_for
        self.tasks: TaskRunner | None = None
        self._workers_left = config.concurrency
        limiter = seams.limiter or Limiter(
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
            spent_usd = writer.checkpoint.cost_usd
            self.budget = (
                seams.cost_budget(spent_usd, budget_prices)
                if seams.cost_budget is not None
                else CostBudget(
                    max_usd=config.max_cost_usd, spent_usd=spent_usd, prices=budget_prices
                )
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
        journal = self.writer.journal
        commits = (
            GroupCommit(journal.write, journal.sync, sync_interval_s=_SYNC_INTERVAL_S)
            if config.journal
            else None
        )
        records = _Records(results, commits, self.totals, progress)
        self.tasks = tasks = self._task_runner(records)
        writer_done = anyio.Event()
        if commits is not None:
            self.control.on_hard_exit(lambda: self._save_before_exit(commits))
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._write, results, writer_done)
                if commits is not None:
                    outer.start_soon(commits.run_writes, self._journal_failed)
                    outer.start_soon(commits.run_syncs, self._journal_failed)
                outer.start_soon(
                    progress.keep_time,
                    lambda: self.sender.outage_note() or tasks.figures(),
                    lambda: self.sender.outage_note(detail=True),
                )
                try:
                    async with anyio.create_task_group() as work:
                        outer.start_soon(self._grace_timer, work.cancel_scope)
                        work.start_soon(tasks.serve)
                        work.start_soon(self._read, feed, records, work.cancel_scope)
                        for _ in range(config.concurrency):
                            work.start_soon(self._work, feed, records)
                finally:
                    # Every producer of records is done: the writer drains, commits, finishes.
                    results.close()
                    if commits is not None:
                        commits.close()
                await writer_done.wait()
                outer.cancel_scope.cancel()  # the grace timer and the bar's clock
        finally:
            self.control.on_hard_exit(None)
            tasks.journal.close()

    def _task_runner(self, records: _Records) -> TaskRunner:
        config = self.config
        return TaskRunner(
            journal=TaskJournal.open(config.out_dir),
            sender=self.sender,
            http=self.http,
            media=MediaStore(config.out_dir) if config.download_media else None,
            settings=TaskSettings(
                max_tasks=config.max_tasks,
                task_timeout_s=config.task_timeout_s,
                poll_interval_s=config.task_poll_interval_s,
                resubmit_unknown=config.resubmit_unknown,
            ),
            control=self.control,
            put=records.put,
            families=self.task_families,
            media_timeout_s=config.timeout_s,
        )

    async def _read(
        self, feed: RequestFeed, records: _Records, work_scope: anyio.CancelScope
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
                        await records.put_unwritten(_bad_row_record(item))
                    else:
                        requests.append(item)
                await records.written()  # one write for the chunk's bad rows, not one per row
                feed.extend(requests)
        except InputError as exc:
            control.stop(str(exc), fatal=True)
            work_scope.cancel()
        finally:
            feed.close()

    async def _work(self, feed: RequestFeed, records: _Records) -> None:
        control, budget, tasks = self.control, self.budget, self.tasks
        assert tasks is not None
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
                    family = tasks.family_for(request)
                    if family is not None:
                        # None: a poller has the task (the worker goes on), or the run stopped.
                        record = await tasks.start(request, family)
                        if record is None:
                            continue
                    else:
                        record = await self.sender.send(request)
                        # What the answer answers: --update compares it with the row's request.
                        record = dataclasses.replace(record, request_sha256=request.request_sha256)
                except FatalRunError as exc:
                    control.stop(exc.message, fatal=True)
                    return
                finally:
                    # Also on a fatal stop or a cancellation: workers waiting for room must
                    # not wait for a request that will never settle.
                    if budget is not None:
                        cost = record_cost(budget.prices, record) if record is not None else None
                        budget.settle(reserved, cost)
                await records.put(record)
            self.sender.input_done()  # the feed is closed and empty: no more rows will come
        finally:
            feed.leave()
            self._workers_left -= 1
            if self._workers_left == 0:
                tasks.input_done()  # no row will come: the pollers end with their last task

    def _journal_failed(self, exc: OSError) -> None:
        self.control.stop(cannot_write_message(self.writer.journal.dir, exc), fatal=True)

    def _save_before_exit(self, commits: GroupCommit[Record]) -> str:
        """For a second Ctrl-C: write what is pending (it then survives the exit), and sync it
        for a power cut too, waiting at most a couple of seconds."""
        commits.write_now(self._journal_failed)
        if commits.error is not None:
            reason = commits.error.strerror or commits.error
            return f"the answers since the journal failed ({reason}) will be sent again"
        commits.sync_before_exit(timeout_s=_EXIT_SYNC_S)
        return "every answer that arrived is saved"

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
                await anyio.to_thread.run_sync(self._commit_and_copy, buffer, costs)
            except OSError as exc:
                self.write_error = exc
                self.control.stop(cannot_write_message(self.writer.results_dir, exc), fatal=True)

    def _commit_and_copy(self, buffer: list[Record], costs: list[float | None]) -> None:
        self.writer.commit(buffer, costs)
        if self.tasks is not None and self.tasks.journal.entries:
            self.tasks.committed(r.row for r in buffer)
        if self.on_commit is not None:
            self.on_commit()

    async def _grace_timer(self, work_scope: anyio.CancelScope) -> None:
        assert self.control._stop_event is not None
        await self.control._stop_event.wait()
        await anyio.sleep(self.config.grace_s)
        work_scope.cancel()


class _Records:
    """Where the reader and the workers hand their records over: into the journal, then into
    the buffer the writer takes parts from.

    `put` returns once the record is written to the journal, so a worker sends its next request
    only after its last answer is safe from a kill -9. Without a journal (`RunConfig.journal`
    off, to measure its cost) records go straight to the buffer.
    """

    def __init__(
        self,
        results: RecordBuffer,
        commits: GroupCommit[Record] | None,
        totals: RunTotals,
        progress: Progress,
    ) -> None:
        self._results = results
        self._commits = commits
        self._totals = totals
        self._progress = progress
        self._last: anyio.Event | None = None

    async def put(self, record: Record) -> None:
        """Hand `record` over; return once it is written to the journal."""
        written = self._add(record)
        if written is not None:
            await written.wait()
        await self._results.put(record)

    async def put_unwritten(self, record: Record) -> None:
        """Hand `record` over without waiting for the journal: `written()` waits for it (the
        reader's bad rows, written together)."""
        self._last = self._add(record)
        await self._results.put(record)

    async def written(self) -> None:
        """Return once the records of `put_unwritten` are written to the journal."""
        if self._last is not None:
            last, self._last = self._last, None
            await last.wait()

    def _add(self, record: Record) -> anyio.Event | None:
        self._totals.add(record)
        self._progress.update(self._totals)
        return self._commits.add(record) if self._commits is not None else None


async def fold_journal(
    writer: ResultWriter, prices: Callable[[], Awaitable[PriceBook]], control: RunControl
) -> bool:
    """Commit what a crash left in the journal (`ResultWriter.fold_journal`), each answer
    priced as `Stages._commit` prices it, so that the checkpoint's cost counts it; before
    anything is sent. False when the fold cannot be written: the run is stopped (fatal) and the
    journal kept."""
    if not await anyio.to_thread.run_sync(writer.has_journal):
        return True  # a new output, or a clean end: the price book is not waited for
    book = await prices()
    try:
        folded = await anyio.to_thread.run_sync(
            writer.fold_journal, lambda record: record_cost(book, record)
        )
    except OSError as exc:  # a disk still full
        control.stop(cannot_write_message(writer.results_dir, exc), fatal=True)
        return False
    if folded:
        log.info("committed %s answers that the last run had saved in its journal", f"{folded:,}")
    return True


def cannot_write_message(where: Path, exc: OSError) -> str:
    return (
        f"cannot write the results in {where}: {exc.strerror or exc}; "
        "once that is fixed, run the same command to resume"
    )


def _bad_row_record(error: RowError) -> Record:
    return Record(
        custom_id=error.custom_id,
        row=error.row,
        status="error",
        error_type=ErrorType.BAD_INPUT,
        error_message=error.message,
        attempts=0,
    )
