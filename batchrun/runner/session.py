"""One run inside the output lock, in the order that gets the first request out in seconds.

    price book ─┐ (threads, meanwhile)                                      ┌─ first pass (child)
    fingerprint ┤                                                           │  counted: total,
    GET /models ┴─► open the output ─► first chunk ─► checkpoint saved ─────┤  estimate, models
                                     (bad or empty input: nothing set up)   │  judged: repeats
                                                                            ▼
                                       [--require-quota waits for the estimate] ─► stages ─►
                                       wait for the first pass ─► done

Guarantees:
- Nothing is sent before the key and the server are checked, nor before the output is resumable
  (its checkpoint saved). A file that cannot be read at all, or has no rows, is refused before
  the output is set up (`InputError`, exit 2).
- On a new output, counting rows, judging custom_ids and estimating run alongside sending in a
  child process at low priority (`batchrun.runner.firstpass`); the reader hands out only rows
  whose id is judged. `--check-ids-first` makes that pass first, as earlier versions did.
  `--require-quota` waits for the estimate it needs, and says so; `--max-cost` needs no
  estimate (it reserves each request's worst case as it goes), only the price book.
- The price database loads meanwhile (~0.3 s); answers are priced as they are committed.
- A run that sends every row before the first pass ends waits for it, so that the checkpoint,
  `OUT/estimate.json` and the row count are complete when it returns; a stopping run does not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

import anyio
import httpx2
from anyio.abc import TaskGroup

from batchrun.common.errors import FatalRunError
from batchrun.common.ranges import RangeSet
from batchrun.config import RunConfig
from batchrun.cost.estimate import Estimate, load_estimate, save_estimate
from batchrun.cost.pricebook import PriceBook
from batchrun.cost.prices import load_price_file
from batchrun.inputs.rows import InputError
from batchrun.runner.batch_run import refuse_other_backend, run_batches
from batchrun.runner.control import RunControl
from batchrun.runner.firstpass import FirstPass, Verdicts
from batchrun.runner.preflight import (
    Interrupted,
    ModelCheck,
    QuotaCheck,
    check_everything_first,
    check_server,
    log_estimate,
    open_output,
)
from batchrun.runner.progress import Earlier, Progress
from batchrun.runner.rerun import note_open_pass, run_retry_pass
from batchrun.runner.rowsource import RowSource
from batchrun.runner.scan import ScanSettings
from batchrun.runner.stages import Seams, Stages, fold_journal
from batchrun.runner.summary import RunTotals
from batchrun.runner.update import PendingUpdate, apply_update
from batchrun.send.http import HttpEngine
from batchrun.store.checkpoint import Checkpoint, CheckpointError, RerunPass, fingerprint_file
from batchrun.store.compact import open_writer
from batchrun.store.duplicates import DUPLICATES_NAME, DuplicateCursor, make_scratch_dir
from batchrun.store.media import MediaStore
from batchrun.store.update import UpdateCounts
from batchrun.store.writer import ResultWriter

__all__ = ["Session"]

log = logging.getLogger("batchrun")
T = TypeVar("T")


class _Later(Generic[T]):
    """A blocking call run in a worker thread meanwhile; its result (or error) when awaited."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._done = anyio.Event()
        self._value: T | None = None
        self._error: Exception | None = None

    async def run(self) -> None:
        try:
            self._value = await anyio.to_thread.run_sync(self._fn)
        except Exception as exc:  # raised, as itself, where the result is awaited
            self._error = exc
        finally:
            self._done.set()

    async def result(self) -> T:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


class Session:
    """What `batchrun.run` does inside the output lock (see the module docstring)."""

    def __init__(
        self,
        config: RunConfig,
        control: RunControl,
        totals: RunTotals,
        engine: HttpEngine,
        transport: httpx2.AsyncBaseTransport | None,
        seams: Seams | None = None,
    ) -> None:
        self.config = config
        self.seams = seams
        self.control = control
        self.totals = totals
        self.engine = engine
        self.transport = transport
        self.checkpoint: Checkpoint | None = None
        self.progress: Progress | None = None
        self.estimate: Estimate | None = None
        self._first_pass_recorded = anyio.Event()
        self._count_recorded = anyio.Event()  # the row count, estimate and models acted on
        self.done_at_start = 0
        self._writer: ResultWriter | None = None
        self.rerun: RerunPass | None = None  # the retry pass this run made (--retry-errors)
        self.update: UpdateCounts | None = None  # what --update found, if the input changed

    async def run(self) -> Checkpoint | None:
        """The checkpoint as it ends; None when stopped before the output was set up."""
        config = self.config
        if config.prices_file is not None:  # a bad price file is refused before anything else
            await anyio.to_thread.run_sync(load_price_file, config.prices_file)
        prices = _Later(
            lambda: PriceBook.load(
                config.prices_file,
                max_output_tokens=config.max_output_tokens,
                batch=config.backend != "online",  # the Batch API's prices, for cost_usd too
            )
        )
        fingerprint = _Later(lambda: fingerprint_file(config.input_path))
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(prices.run)
            tg.start_soon(fingerprint.run)
            try:
                # Anthropic's own API wants x-api-key, not the Bearer key GET /v1/models sends:
                # its batch backend checks the key with its first Batch API call instead.
                found = None
                if config.backend != "anthropic-batch":
                    found = await check_server(self.engine, config)
                opened = await anyio.to_thread.run_sync(
                    open_output, config, await fingerprint.result()
                )
                writer = await self._with_output(tg, *opened, ModelCheck(found), prices)
                if writer is not None:
                    await self._retry_errors(writer, prices)
            except FatalRunError as exc:  # from the server check: nothing was set up
                self.control.stop(exc.message, fatal=True)
            except Exception as exc:
                failure = exc  # raised below as itself, not wrapped in the group's ExceptionGroup
            finally:
                tg.cancel_scope.cancel()  # the first pass and what follows it
                if self._writer is not None:  # after the retry pass, which journals too
                    self._writer.close()  # the journal's directory goes once it is all committed
        if failure is not None:
            raise failure
        return self.checkpoint

    async def _with_output(
        self,
        tg: TaskGroup,
        checkpoint: Checkpoint,
        resumed: bool,
        update: PendingUpdate | None,
        models: ModelCheck,
        prices: _Later[PriceBook],
    ) -> ResultWriter | None:
        """Send the pending rows; the writer, for a retry pass, unless the run is stopping."""
        config, control = self.config, self.control
        out = config.out_dir
        writer = self._writer = await anyio.to_thread.run_sync(open_writer, out, checkpoint)
        if update is not None:  # --update, and the input changed: only its new rows pending
            self.update = await anyio.to_thread.run_sync(apply_update, config, writer, update)
        # Half-written media files of a killed run: no record names them, and a resend of their
        # row writes the same name anew.
        await anyio.to_thread.run_sync(MediaStore(out).sweep)
        self.checkpoint = checkpoint
        if not await fold_journal(writer, prices.result, control):
            return None  # the journal could not be committed: nothing is sent
        done_at_start = self.done_at_start = len(checkpoint.done)
        if done_at_start:
            total = "?" if checkpoint.total_rows is None else f"{checkpoint.total_rows:,}"
            log.info("resuming: %s of %s rows done", f"{done_at_start:,}", total)
        if checkpoint.total_rows is not None and done_at_start >= checkpoint.total_rows:
            return writer  # finished already: nothing to send
        if resumed:
            self.estimate = await anyio.to_thread.run_sync(load_estimate, out)
            if self.estimate is not None:
                models.warn(g.model for g in self.estimate.groups if g.model)
        batch = config.backend != "online"
        # A provider batch is packed from rows whose ids are judged and whose count is known:
        # it waits for the whole pass (the batch itself takes hours; the pass, seconds).
        # A shard of a cluster run (`rows`) too: its row count is its own, which the first pass
        # alongside sending (a child reading the whole file) does not know.
        whole_pass_first = (
            config.check_ids_first or batch or config.rows is not None
        ) and checkpoint.duplicates is None
        if whole_pass_first and not await self._check_everything_first(checkpoint, models, prices):
            if not resumed:
                self.checkpoint = None  # stopped during the pass: nothing was set up
            return None
        if batch:
            await anyio.to_thread.run_sync(writer.save)  # resumable from here on
            book = await prices.result()
            await run_batches(config, control, writer, self.totals, book, self.transport)
            return None
        refuse_other_backend(config)  # batches in flight: their rows must not go online too
        pending = None if checkpoint.total_rows is None else checkpoint.total_rows - done_at_start
        quota = QuotaCheck(config, pending_rows=pending)

        first_pass: FirstPass | None = None
        verdicts: Verdicts | None = None
        if checkpoint.duplicates is None:
            verdicts = Verdicts(config.id_horizon_rows)
        elif checkpoint.duplicates > 0:
            verdicts = Verdicts.known(DuplicateCursor(out / DUPLICATES_NAME))
        source = RowSource(config, RangeSet(checkpoint.done.ranges()), verdicts, control)
        try:
            if not resumed:
                if not await source.peek():
                    raise InputError(f"{config.input_path} has no rows; nothing to send")
                await anyio.to_thread.run_sync(writer.save)  # resumable from here on
            if checkpoint.duplicates is None:
                first_pass = await self._start_first_pass(tg, writer, verdicts, models, quota)
                source.watch(first_pass)
            if not await self._quota(tg, quota, first_pass):
                return None
            # The price book (~0.3 s to load) prices the answers as they are committed: only
            # --max-cost, which prices each request before sending it, waits for it here.
            budget_prices = await prices.result() if config.max_cost_usd is not None else None
            earlier = Earlier(
                ok=checkpoint.counts.get("ok", 0),
                errors=checkpoint.counts.get("error", 0),
                cost_usd=checkpoint.cost_usd,
            )
            self.progress = Progress(
                total=checkpoint.total_rows,
                initial=done_at_start,
                enabled=config.progress,
                earlier=earlier,
            )
            try:
                stages = Stages(
                    config, control, writer, self.totals, self.engine, prices.result, source,
                    self.progress, budget_prices=budget_prices, seams=self.seams,
                )  # fmt: skip
                await stages.run()
                if first_pass is not None and not control.stopping:
                    await self._wait_for(first_pass)
            finally:
                self.progress.close()
        finally:
            source.close()
            if verdicts is not None:
                verdicts.close()
        return None if control.stopping else writer

    async def _retry_errors(self, writer: ResultWriter, prices: _Later[PriceBook]) -> None:
        """`--retry-errors`, once every row has a record; else a note if a pass was stopped."""
        checkpoint = writer.checkpoint
        total = checkpoint.total_rows
        try:
            if self.config.retry_errors is None or total is None or len(checkpoint.done) < total:
                note_open_pass(checkpoint)
                return
            budget_prices = await prices.result() if self.config.max_cost_usd else None
            self.rerun = await run_retry_pass(
                self.config, self.control, writer, self.totals, self.engine, prices.result,
                budget_prices, self.seams,
            )  # fmt: skip
        finally:
            if writer.rerun is not None:
                writer.rerun.close()

    async def _check_everything_first(
        self, checkpoint: Checkpoint, models: ModelCheck, prices: _Later[PriceBook]
    ) -> bool:
        """`--check-ids-first`: the whole pass now. False when a stop came meanwhile."""
        config, control = self.config, self.control
        book = await prices.result()
        try:
            full = await anyio.to_thread.run_sync(
                lambda: check_everything_first(config, book, should_stop=lambda: control.stopping)
            )
        except Interrupted:
            return False
        checkpoint.total_rows, checkpoint.duplicates = full.total_rows, 0
        if full.estimate is not None:
            self.estimate = full.estimate
            saved = await anyio.to_thread.run_sync(save_estimate, config.out_dir, full.estimate)
            log_estimate(full.estimate, saved)
        models.warn(full.models)
        return True

    async def _start_first_pass(
        self,
        tg: TaskGroup,
        writer: ResultWriter,
        verdicts: Verdicts | None,
        models: ModelCheck,
        quota: QuotaCheck,
    ) -> FirstPass:
        config = self.config
        scratch = await anyio.to_thread.run_sync(make_scratch_dir, config.out_dir)
        size = config.input_path.stat().st_size
        compressed = config.input_path.suffix.lower() in (".gz", ".zst", ".zstd")
        first_pass = FirstPass(
            ScanSettings(
                input_path=config.input_path,
                scratch_dir=scratch,
                endpoint=config.endpoint,
                max_row_bytes=config.max_row_bytes,
                estimate=config.estimate,
                prices_file=config.prices_file,
                max_output_tokens=config.max_output_tokens,
                template=ScanSettings.template_spec(config.template),
                files_root=config.files_root,
            ),
            in_process=size * (8 if compressed else 1) < config.first_pass_process_bytes,
        )
        log.info(
            "reading %s alongside sending: counting rows, checking custom_ids%s",
            config.input_path,
            ", estimating tokens and cost" if config.estimate else "",
        )
        tg.start_soon(first_pass.run)
        tg.start_soon(self._follow, first_pass, writer, verdicts, models, quota)
        return first_pass

    async def _follow(
        self,
        first_pass: FirstPass,
        writer: ResultWriter,
        verdicts: Verdicts | None,
        models: ModelCheck,
        quota: QuotaCheck,
    ) -> None:
        """Act on what the first pass says, as it says it. Never raises: a failure stops the run."""
        try:
            await self._act_on(first_pass, writer, verdicts, models, quota)
        except (OSError, CheckpointError) as exc:
            self.control.stop(
                f"cannot record the first pass's findings in {self.config.out_dir}: {exc}; "
                "once that is fixed, run the same command to resume",
                fatal=True,
            )
        finally:
            self._count_recorded.set()
            self._first_pass_recorded.set()

    async def _act_on(
        self,
        first_pass: FirstPass,
        writer: ResultWriter,
        verdicts: Verdicts | None,
        models: ModelCheck,
        quota: QuotaCheck,
    ) -> None:
        await first_pass.first_models.wait()
        models.warn(first_pass.early_models or ())
        await first_pass.counted.wait()
        if first_pass.failure is not None:
            self.control.stop(first_pass.failure, fatal=True)
            return
        total = first_pass.total_rows
        assert total is not None and self.checkpoint is not None
        await anyio.to_thread.run_sync(
            lambda: writer.record_first_pass(total_rows=total, duplicates=None)
        )
        if self.progress is not None:
            self.progress.set_total(total)
        if quota.pending_rows is None:
            quota.pending_rows = total - self.done_at_start
        models.warn(first_pass.models)
        if first_pass.estimate is not None:
            self.estimate = estimate = first_pass.estimate
            saved = await anyio.to_thread.run_sync(save_estimate, self.config.out_dir, estimate)
            log_estimate(estimate, saved)
            if quota.asked:  # else _ask_quota compares once it has the balance
                quota.compare(estimate)
        self._count_recorded.set()
        await first_pass.judged.wait()
        if first_pass.failure is not None:
            self.control.stop(first_pass.failure, fatal=True)
            return
        repeats = first_pass.duplicates or 0
        cursor = None
        if repeats and first_pass.duplicates_file is not None:
            cursor = DuplicateCursor(first_pass.duplicates_file)
            log.warning(
                "warning: %s rows repeat a custom_id used on an earlier row: each is recorded as "
                "bad_input naming that row, not sent",
                f"{repeats:,}",
            )
        await anyio.to_thread.run_sync(
            lambda: writer.record_first_pass(total_rows=total, duplicates=repeats)
        )
        if verdicts is not None:
            verdicts.offer(cursor)
        elif cursor is not None:
            cursor.close()

    async def _quota(self, tg: TaskGroup, quota: QuotaCheck, first_pass: FirstPass | None) -> bool:
        """Ask for the balance; with `--require-quota`, first wait for the estimate and refuse
        (`QuotaError`) when it is short. False when the run is to stop instead."""
        config = self.config
        if not config.check_quota:
            return True
        if not config.require_quota:
            tg.start_soon(self._ask_quota, quota)
            return True
        if self.estimate is None and first_pass is not None and config.estimate:
            log.info("waiting for the first pass's estimate before sending (--require-quota)")
            await self._count_recorded.wait()  # logged and saved in OUT before anything else
            if first_pass.failure is not None:
                self.control.stop(first_pass.failure, fatal=True)
            if self.control.stopping:
                return False
            self.estimate = first_pass.estimate
        try:
            await quota.ask(self.transport)
        except FatalRunError as exc:
            self.control.stop(exc.message, fatal=True)
            return False
        quota.compare(self.estimate)
        return True

    async def _ask_quota(self, quota: QuotaCheck) -> None:
        try:
            await quota.ask(self.transport)
        except FatalRunError as exc:
            self.control.stop(exc.message, fatal=True)
            return
        quota.compare(self.estimate)  # None until the first pass has counted: it compares then

    async def _wait_for(self, first_pass: FirstPass) -> None:
        if not self._first_pass_recorded.is_set():
            log.info(
                "every row is sent; finishing the first pass (%s rows read) before exiting",
                f"{first_pass.rows_read:,}",
            )
        async with anyio.create_task_group() as tg:

            async def recorded() -> None:
                await self._first_pass_recorded.wait()
                tg.cancel_scope.cancel()

            async def stopped() -> None:
                await self.control.wait_stopped()
                tg.cancel_scope.cancel()

            tg.start_soon(recorded)
            tg.start_soon(stopped)
