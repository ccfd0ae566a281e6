"""The one task group that wires the stages together, and the run's start and end.

    reader ──(RequestFeed, bounded)──► N workers ──(RecordBuffer, bounded)──► writer
       └──────────── bad rows as error records ─────────────────────────────►┘

Guarantees:
- Every task is owned by one task group; the hand-offs (`batchrun.runner.handoff`) are bounded, so a
  fast reader waits for the workers, and the workers for the writer, and memory depends on
  concurrency and flush size only.
- A stop (Ctrl-C, SIGTERM, a fatal error such as a refused key, or `RunControl.stop`) ends
  dispatching at once; requests in flight get `grace_s` to finish; then whatever reached the
  writer is committed and the checkpoint written. A second Ctrl-C exits immediately: what is
  committed is consistent, so a resume is still exact.
- A run that finds its output finished does nothing and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from itertools import islice

import anyio
import httpx2

from batchrun.common.errors import FatalRunError
from batchrun.common.ranges import RangeSet
from batchrun.config import RunConfig
from batchrun.cost.budget import BudgetExhausted, CostBudget, cost_of
from batchrun.cost.pricebook import PriceBook
from batchrun.inputs.reader import InputError, iter_requests
from batchrun.inputs.sniff import check_sendable
from batchrun.models import ErrorType, Record, Request, RowError
from batchrun.runner.control import RunControl, watch_signals
from batchrun.runner.handoff import RecordBuffer, RequestFeed
from batchrun.runner.preflight import Interrupted, check_quota, prepare_output
from batchrun.runner.progress import Earlier, Progress
from batchrun.runner.summary import RunSummary, RunTotals
from batchrun.send.client import Sender
from batchrun.send.http import AiohttpEngine, HttpEngine, Httpx2Engine
from batchrun.send.limiter import Limiter
from batchrun.store.checkpoint import (
    Checkpoint,
    CheckpointError,
    OutputLock,
    discard_unused_output,
)
from batchrun.store.writer import ResultWriter

__all__ = ["RunControl", "RunSummary", "run", "run_sync"]

_READ_CHUNK = 256
log = logging.getLogger("batchrun")


def run_sync(
    config: RunConfig,
    control: RunControl | None = None,
    *,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> RunSummary:
    """`run` for callers without an event loop: asyncio, on uvloop where it is installed."""
    return anyio.run(
        lambda: run(config, control, transport=transport), backend_options=_loop_options()
    )


def _loop_options() -> dict[str, object]:
    # uvloop: 18% less client CPU per request at 2,000 in flight (643 vs 888 us, bench.profile).
    try:
        import uvloop  # noqa: F401
    except ImportError:  # not on Windows
        return {}
    return {"use_uvloop": True}


async def run(
    config: RunConfig,
    control: RunControl | None = None,
    *,
    transport: httpx2.AsyncBaseTransport | None = None,
    limiter: Limiter | None = None,
    on_commit: Callable[[], None] | None = None,
    cost_budget: Callable[[float, PriceBook], CostBudget] | None = None,
) -> RunSummary:
    """Send every pending row of `config.input_path`; store results in `config.out_dir`.

    Raises `InputError` / `CheckpointError` (nothing sent) for problems found before sending;
    an output directory this call created is then removed again.
    `transport` replaces the network (e.g. `httpx2.MockTransport` in tests).
    `limiter` replaces the run's own (a cluster's shared budget, `batchrun.cluster`), and so
    does `cost_budget(spent_usd, prices)` for `--max-cost`;
    `on_commit` runs in the writer's thread after each commit (part, then checkpoint) and
    before the next: a cluster copies the new part and then the checkpoint to an object store.
    An `OSError` it raises stops the run like a failed commit.
    """
    control = control or RunControl()
    control._stop_event = anyio.Event()
    out = config.out_dir
    if not config.input_path.exists():
        raise InputError(f"input file not found: {config.input_path}")
    if not Checkpoint.path_in(out).exists():
        # A new output only: a resumed one had sendable rows, and its checkpoint names what
        # changed since more precisely (a template dropped, say).
        await anyio.to_thread.run_sync(
            lambda: check_sendable(
                config.input_path,
                endpoint=config.endpoint,
                max_row_bytes=config.max_row_bytes,
                template=config.template,
            )
        )
    prices = await anyio.to_thread.run_sync(
        functools.partial(
            PriceBook.load, config.prices_file, max_output_tokens=config.max_output_tokens
        )
    )
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(
            f"cannot create the output directory {out}: {exc.strerror or exc}"
        ) from exc
    started = time.monotonic()
    totals = RunTotals()
    checkpoint: Checkpoint | None = None
    done_before = 0
    failure: Exception | None = None
    with OutputLock(out):
        async with anyio.create_task_group() as signals:
            if config.handle_signals:
                await signals.start(watch_signals, control)
            try:
                checkpoint, done_before = await _prepare_and_send(
                    config,
                    control,
                    totals,
                    prices,
                    transport,
                    _Seams(limiter, on_commit, cost_budget),
                )
            except Exception as exc:
                failure = exc  # raised below as itself, not wrapped in the group's ExceptionGroup
            finally:
                signals.cancel_scope.cancel()
    if failure is not None:
        if created and isinstance(failure, (InputError, CheckpointError)):
            discard_unused_output(out)  # refused before anything was sent: leave nothing
        raise failure
    total_rows = (checkpoint.total_rows or 0) if checkpoint else 0
    return RunSummary(
        out_dir=out,
        total_rows=total_rows,
        done_rows=len(checkpoint.done) if checkpoint else 0,
        ok=checkpoint.counts.get("ok", 0) if checkpoint else 0,
        errors=checkpoint.counts.get("error", 0) if checkpoint else 0,
        session=totals,
        elapsed_s=time.monotonic() - started,
        stopped=control.reason,
        fatal=control.fatal,
        cost_usd=checkpoint.cost_usd if checkpoint else 0.0,
        done_before=done_before,
        fail_on_errors=config.fail_on_errors,
    )


async def _prepare_and_send(
    config: RunConfig,
    control: RunControl,
    totals: RunTotals,
    prices: PriceBook,
    transport: httpx2.AsyncBaseTransport | None,
    seams: _Seams,
) -> tuple[Checkpoint | None, int]:
    """The run inside the output lock: the checkpoint (None when stopped before the output was
    set up) and how many rows were done when this run began."""
    try:
        prepared = await anyio.to_thread.run_sync(
            lambda: prepare_output(config, prices, should_stop=lambda: control.stopping)
        )
    except Interrupted:
        return None, 0
    checkpoint = prepared.checkpoint
    writer = ResultWriter(config.out_dir, checkpoint)
    await anyio.to_thread.run_sync(writer.recover)
    done_before = len(checkpoint.done)
    if done_before:
        log.info("resuming: %s of %s rows done", f"{done_before:,}", f"{checkpoint.total_rows:,}")
    if len(checkpoint.done) < (checkpoint.total_rows or 0) and not control.stopping:
        try:
            if config.check_quota:
                async with httpx2.AsyncClient(
                    timeout=httpx2.Timeout(config.timeout_s), transport=transport
                ) as http:
                    await check_quota(http, config, prepared)
        except FatalRunError as exc:
            control.stop(exc.message, fatal=True)
        else:
            async with _http_engine(config, transport) as engine:
                await _Stages(config, control, writer, totals, engine, prices, seams).run()
    return checkpoint, done_before


@contextlib.asynccontextmanager
async def _http_engine(
    config: RunConfig, transport: httpx2.AsyncBaseTransport | None
) -> AsyncIterator[HttpEngine]:
    """The engine `config.http_client` names; an injected httpx2 transport, or an event loop
    other than asyncio's (trio), means httpx2."""
    engine: HttpEngine
    if transport is not None or config.http_client == "httpx2" or not _on_asyncio():
        engine = Httpx2Engine.create(
            connections=config.concurrency, timeout_s=config.timeout_s, transport=transport
        )
    else:
        engine = AiohttpEngine(connections=config.concurrency, timeout_s=config.timeout_s)
    try:
        yield engine
    finally:
        with anyio.CancelScope(shield=True):
            await engine.aclose()


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Seams:
    """What a cluster run puts in place of a local run's own parts (see `run`)."""

    limiter: Limiter | None = None
    on_commit: Callable[[], None] | None = None
    cost_budget: Callable[[float, PriceBook], CostBudget] | None = None


class _Stages:
    """The reader, the workers and the writer of one run, and what they share."""

    def __init__(
        self,
        config: RunConfig,
        control: RunControl,
        writer: ResultWriter,
        totals: RunTotals,
        http: HttpEngine,
        prices: PriceBook,
        seams: _Seams,
    ) -> None:
        self.config = config
        self.on_commit = seams.on_commit
        self.control = control
        self.writer = writer
        self.totals = totals
        self.write_error: OSError | None = None
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
            cost_fn=lambda model, usage: cost_of(prices, model, usage),
            workers=config.concurrency,
        )
        spent_usd = writer.checkpoint.cost_usd
        self.budget = (
            None
            if config.max_cost_usd is None
            else seams.cost_budget(spent_usd, prices)
            if seams.cost_budget is not None
            else CostBudget(max_usd=config.max_cost_usd, spent_usd=spent_usd, prices=prices)
        )

    async def run(self) -> None:
        config = self.config
        checkpoint = self.writer.checkpoint
        earlier = Earlier(
            ok=checkpoint.counts.get("ok", 0),
            errors=checkpoint.counts.get("error", 0),
            cost_usd=checkpoint.cost_usd,
        )
        progress = Progress(
            total=checkpoint.total_rows or 0,
            initial=len(checkpoint.done),
            enabled=config.progress,
            earlier=earlier,
        )
        feed = RequestFeed(
            low_water=max(config.concurrency, _READ_CHUNK), workers=config.concurrency
        )
        # Room for one part while the previous one is being written, and every worker's record.
        results = RecordBuffer(
            flush_rows=config.flush_rows, limit=config.flush_rows + 2 * config.concurrency
        )
        # A copy: the writer adds to the checkpoint's set while the reader consults this one.
        skip = RangeSet(checkpoint.done.ranges())
        writer_done = anyio.Event()
        try:
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
                        work.start_soon(
                            self._read, skip, feed, results, progress, work.cancel_scope
                        )
                        for _ in range(config.concurrency):
                            work.start_soon(self._work, feed, results, progress)
                finally:
                    # Every producer of records is done: the writer drains, commits, finishes.
                    results.close()
                await writer_done.wait()
                outer.cancel_scope.cancel()  # the grace timer and the bar's clock
        finally:
            progress.close()

    async def _read(
        self,
        skip: RangeSet,
        feed: RequestFeed,
        results: RecordBuffer,
        progress: Progress,
        work_scope: anyio.CancelScope,
    ) -> None:
        config, control = self.config, self.control
        rows = iter_requests(
            config.input_path,
            endpoint=config.endpoint,
            skip=skip,
            max_row_bytes=config.max_row_bytes,
            template=config.template,
            span=config.rows,
        )
        try:
            while not control.stopping:
                await feed.wait_hungry()
                if control.stopping or feed.abandoned:
                    break  # a stop, or every worker has stopped: nothing more to hand out
                chunk = await anyio.to_thread.run_sync(_take, rows, _READ_CHUNK)
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
            rows.close()

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
                        budget.settle(reserved, record.cost_usd if record is not None else None)
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
            try:
                await anyio.to_thread.run_sync(self._commit_and_copy, buffer)
            except OSError as exc:
                self.write_error = exc
                self.control.stop(
                    f"cannot write the results in {self.writer.results_dir}: "
                    f"{exc.strerror or exc}; once that is fixed, run the same command to resume",
                    fatal=True,
                )

    def _commit_and_copy(self, buffer: list[Record]) -> None:
        self.writer.commit(buffer)
        if self.on_commit is not None:
            self.on_commit()

    async def _grace_timer(self, work_scope: anyio.CancelScope) -> None:
        assert self.control._stop_event is not None
        await self.control._stop_event.wait()
        await anyio.sleep(self.config.grace_s)
        work_scope.cancel()


def _take(rows: Iterator[Request | RowError], n: int) -> list[Request | RowError]:
    return list(islice(rows, n))


def _bad_row_record(error: RowError) -> Record:
    return Record(
        custom_id=error.custom_id,
        row=error.row,
        status="error",
        error_type=ErrorType.BAD_INPUT,
        error_message=error.message,
        attempts=0,
    )
