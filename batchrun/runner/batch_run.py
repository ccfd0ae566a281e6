"""Running the rows through a provider's Batch API (`backend="openai-batch"` / `"anthropic-batch"`).

    resume ──► chunks whose submit may have been cut short: look up, then finish submitting
    poll   ──► every batch in flight: its state; an ended one is downloaded and collected
    pack   ──► the rows in no chunk: sealed chunks, each submitted as soon as it is sealed
    wait   ──► (--wait) poll every poll_interval_s until every batch has ended and is collected

Guarantees:
- The same command does everything: the first run submits, a later run collects (or `--wait`
  stays to the end). Results go through the same `ResultWriter` and checkpoint as an online
  run: exactly one record per row (invariant 1).
- Money is spent once (invariant 3): see `batchrun.runner.batch_provider`; no chunk is created
  twice, and no row is in two live chunks.
- A run that returns with batches still in flight stops with exit 3 and says so: nothing is
  lost, and running the same command again collects. A batch that failed validation (nothing
  ran, nothing was charged) gives its rows back: the run says why and a later run sends them
  in a new batch.
- A stop (Ctrl-C, SIGTERM) starts nothing new; a call in flight gets `grace_s`, then is
  cancelled: the journal's intent lines make the resume look before it sends again.
- An output with live chunks of one backend is not resumed with another (its rows would be
  sent twice); `refuse_other_backend` says so before anything is sent.
"""

from __future__ import annotations

import logging

import anyio
import httpx2

from batchrun.common.errors import FatalRunError
from batchrun.common.ranges import RangeSet
from batchrun.config import RunConfig
from batchrun.cost.budget import CostBudget
from batchrun.cost.pricebook import PriceBook
from batchrun.endpoints.batch_wire import BACKEND_LIMITS
from batchrun.endpoints.profiles import auth_headers, profile_for
from batchrun.models import Record
from batchrun.runner.batch_collect import collect_chunk
from batchrun.runner.batch_pack import Packer
from batchrun.runner.batch_provider import (
    AnthropicProvider,
    ChunkLost,
    OpenAIProvider,
    Provider,
)
from batchrun.runner.control import RunControl
from batchrun.runner.summary import RunTotals
from batchrun.send.anthropic_batches import AnthropicBatches
from batchrun.send.batch_http import BatchApiError, BatchHttp, BatchState
from batchrun.send.openai_batches import OpenAIBatches
from batchrun.store.batch_files import remove_chunk_files, remove_request_file, sweep_temporary
from batchrun.store.batch_journal import BatchJournal, Chunk
from batchrun.store.checkpoint import CheckpointError
from batchrun.store.writer import ResultWriter

__all__ = ["make_provider", "refuse_other_backend", "run_batches"]

log = logging.getLogger("batchrun")


def refuse_other_backend(config: RunConfig) -> None:
    """Raise `CheckpointError` when OUT has batches in flight that `config` would not collect."""
    journal = BatchJournal.load(config.out_dir)
    if journal is None:
        return
    others = [c for c in journal.live_chunks if c.backend != config.backend]
    if others:
        backend = others[0].backend
        raise CheckpointError(
            f"{config.out_dir} has {len(others)} {backend} batches in flight, whose rows "
            f"{config.backend} would send again; run with --backend {backend} to collect them "
            f"(or batchrun cancel {config.out_dir}, then run again to collect what completed)"
        )


def make_provider(
    backend: str,
    journal: BatchJournal,
    client: httpx2.AsyncClient,
    *,
    base_url: str,
    api_key: str | None,
    max_retries: int,
    config: RunConfig | None = None,
) -> Provider:
    """The adapter of `backend`, its key in the headers the provider wants."""
    if backend == "anthropic-batch":
        headers = auth_headers(profile_for("/v1/messages"), base_url, api_key)
    else:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    http = BatchHttp(
        client, base_url=base_url, headers=headers, api_key=api_key, max_retries=max_retries
    )
    if backend == "anthropic-batch":
        return AnthropicProvider(AnthropicBatches(http), journal)
    if backend == "openai-batch":
        return OpenAIProvider(OpenAIBatches(http), journal)
    raise ValueError(f"not a batch backend: {backend!r}")


async def run_batches(
    config: RunConfig,
    control: RunControl,
    writer: ResultWriter,
    totals: RunTotals,
    prices: PriceBook,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> None:
    """Submit, poll and collect `config`'s pending rows (see the module docstring)."""
    refuse_other_backend(config)
    journal = await anyio.to_thread.run_sync(BatchJournal.open, config.out_dir)
    try:
        await anyio.to_thread.run_sync(sweep_temporary, config.out_dir)
        async with httpx2.AsyncClient(
            timeout=httpx2.Timeout(config.timeout_s), transport=transport
        ) as client:
            provider = make_provider(
                config.backend,
                journal,
                client,
                base_url=config.base_url,
                api_key=config.api_key,
                max_retries=config.max_retries,
            )
            run = _BatchRun(config, control, writer, totals, prices, journal, provider)
            await run.run()
    finally:
        journal.close()


class _BatchRun:
    def __init__(
        self,
        config: RunConfig,
        control: RunControl,
        writer: ResultWriter,
        totals: RunTotals,
        prices: PriceBook,
        journal: BatchJournal,
        provider: Provider,
    ) -> None:
        self.config, self.control, self.writer = config, control, writer
        self.totals, self.prices = totals, prices
        self.journal, self.provider = journal, provider
        self.limits = BACKEND_LIMITS[config.backend]
        self.held = RangeSet()  # rows of batches that failed validation in this run
        self.failures: list[str] = []

    async def run(self) -> None:
        work = anyio.CancelScope()
        async with anyio.create_task_group() as group:
            group.start_soon(self._grace_timer, work)
            with work:
                try:
                    await self._work()
                except FatalRunError as exc:
                    self.control.stop(exc.message, fatal=True)
                except BatchApiError as exc:
                    self.control.stop(exc.message, fatal=True)
            group.cancel_scope.cancel()
        self._say_how_it_stands()

    async def _work(self) -> None:
        for chunk in self.journal.live_chunks:
            if chunk.batch_id is None and not self.control.stopping:
                await self._submit(chunk)
        await self._poll_all()
        await self._pack_and_submit()
        while self.config.wait and self.journal.live_chunks and not self.control.stopping:
            await self._pause(self.config.poll_interval_s)
            await self._poll_all()
            await self._pack_and_submit()  # rows a lost chunk file gave back, if any

    async def _pause(self, seconds: float) -> None:
        assert self.control._stop_event is not None
        with anyio.move_on_after(seconds):
            await self.control._stop_event.wait()

    async def _grace_timer(self, work: anyio.CancelScope) -> None:
        assert self.control._stop_event is not None
        await self.control._stop_event.wait()
        await anyio.sleep(self.config.grace_s)
        work.cancel()

    # -- submitting -------------------------------------------------------------------------

    async def _submit(self, chunk: Chunk) -> None:
        try:
            state = await self.provider.submit(chunk)
        except ChunkLost as exc:
            self.journal.record(chunk.number, "abandoned", reason=f"chunk file lost: {exc}")
            log.info("chunk %s: its file was lost before it was sent (%s); packing again",
                     chunk.number, exc)  # fmt: skip
            return
        await anyio.to_thread.run_sync(remove_request_file, self.config.out_dir, chunk.file_name)
        log.info(
            "chunk %s: %s rows submitted as batch %s (%s)",
            chunk.number, f"{chunk.requests:,}", state.id, state.status,
        )  # fmt: skip

    async def _pack_and_submit(self) -> None:
        checkpoint = self.writer.checkpoint
        skip = RangeSet(checkpoint.done.ranges())
        for start, end in [*self.journal.claimed_rows().ranges(), *self.held.ranges()]:
            skip.add_range(start, end)
        if len(skip) >= (checkpoint.total_rows or 0):
            return
        budget = None
        if self.config.max_cost_usd is not None:
            # A live chunk holds its worst case until its records are in (then its real cost).
            held = sum(c.worst_usd for c in self.journal.live_chunks)
            budget = CostBudget(
                max_usd=self.config.max_cost_usd,
                spent_usd=checkpoint.cost_usd + held,
                prices=self.prices,
            )
        packer = Packer(self.config, self.provider, self.journal, skip, budget)
        try:
            more = True
            while more and not self.control.stopping:
                chunk, more = await anyio.to_thread.run_sync(packer.next_chunk, self._stopping)
                await self._commit(packer.bad)
                packer.bad = []
                if chunk is not None:
                    log.info(
                        "chunk %s: %s rows packed (%s bytes)",
                        chunk.number, f"{chunk.requests:,}", f"{chunk.size_bytes:,}",
                    )  # fmt: skip
                    await self._submit(chunk)
        finally:
            await anyio.to_thread.run_sync(packer.close)
        if packer.blocked is not None and not self.control.stopping:
            if self.journal.live_chunks:  # they may cost less than their worst case
                log.info("--max-cost: no more rows fit until the batches in flight are collected")
            else:
                self.control.stop(packer.blocked)

    def _stopping(self) -> bool:
        return self.control.stopping

    async def _commit(self, records: list[Record]) -> None:
        if not records:
            return
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.writer.commit, records)
        for record in records:
            self.totals.add(record)

    # -- polling and collecting -------------------------------------------------------------

    async def _poll_all(self) -> None:
        for chunk in self.journal.live_chunks:
            if self.control.stopping:
                return
            if chunk.batch_id is None:
                continue
            if not chunk.ended:
                state = await self.provider.get(chunk.batch_id)
                self._note(chunk, state)
            if chunk.ended:
                await self._collect(chunk)

    def _note(self, chunk: Chunk, state: BatchState) -> None:
        if state.status == chunk.status and state.counts == chunk.counts and not state.ended:
            return
        if state.ended:
            self.journal.record(
                chunk.number, "ended", status=state.status, counts=state.counts,
                output_file_id=state.output_file_id, error_file_id=state.error_file_id,
                errors=list(state.errors),
            )  # fmt: skip
        else:
            self.journal.record(chunk.number, "status", status=state.status, counts=state.counts)
        total = f"{state.total:,}" if state.total is not None else "?"
        log.info("batch %s (chunk %s): %s, %s of %s requests done",
                 state.id, chunk.number, state.status, f"{state.finished:,}", total)  # fmt: skip

    async def _collect(self, chunk: Chunk) -> None:
        if chunk.status == "failed":
            reason = "; ".join(chunk.errors[:3]) or "no reason given"
            message = (
                f"batch {chunk.batch_id} (chunk {chunk.number}) failed validation, so nothing "
                f"of it ran or was charged: {reason}; its {chunk.requests:,} rows are pending "
                "again, and the next run sends them in a new batch"
            )
            self.journal.record(chunk.number, "abandoned", reason=message)
            for start, end in chunk.rows.ranges():
                self.held.add_range(start, end)
            self.failures.append(message)
            log.warning("%s", message)
            await anyio.to_thread.run_sync(remove_chunk_files, self.config.out_dir, chunk.number)
            return
        for kind in self.provider.result_kinds:
            if kind not in chunk.downloaded:
                path = await self.provider.download(chunk, kind)
                self.journal.record(chunk.number, "downloaded", kind=kind,
                                    bytes=path.stat().st_size if path else 0)  # fmt: skip
        with anyio.CancelScope(shield=True):  # a commit is never cut half way
            collected = await anyio.to_thread.run_sync(
                lambda: collect_chunk(
                    chunk,
                    self.provider,
                    self.writer,
                    self.prices,
                    api_key=self.config.api_key,
                    flush_rows=self.config.flush_rows,
                )
            )
            self.journal.record(chunk.number, "committed", records=collected.committed)
        _merge(self.totals, collected.totals)
        if collected.unmatched_lines:
            log.warning("batch %s: %s result lines matched no row of chunk %s; ignored",
                        chunk.batch_id, collected.unmatched_lines, chunk.number)  # fmt: skip
        part = collected.totals
        log.info("batch %s (chunk %s): %s: %s ok, %s errors; collected",
                 chunk.batch_id, chunk.number, chunk.status, f"{part.ok:,}",
                 f"{part.errors:,}")  # fmt: skip
        await anyio.to_thread.run_sync(remove_chunk_files, self.config.out_dir, chunk.number)

    def _say_how_it_stands(self) -> None:
        if self.control.stopping:
            return
        checkpoint = self.writer.checkpoint
        if len(checkpoint.done) >= (checkpoint.total_rows or 0):
            return
        live = self.journal.live_chunks
        if self.failures:
            self.control.stop(self.failures[0])
        elif live:
            submitted = sum(1 for c in live if c.batch_id is not None)
            self.control.waiting = True
            self.control.stop(
                f"{submitted} {self.config.backend} batches submitted and not finished yet; "
                "run the same command to collect their results (or add --wait)"
            )


def _merge(into: RunTotals, part: RunTotals) -> None:
    into.requests += part.requests
    into.retries += part.retries
    into.ok += part.ok
    into.errors += part.errors
    into.prompt_tokens += part.prompt_tokens
    into.completion_tokens += part.completion_tokens
    into.cached_tokens += part.cached_tokens
    into.reasoning_tokens += part.reasoning_tokens
    into.cost_usd += part.cost_usd
    into.unpriced += part.unpriced
    for kind, n in part.errors_by_type.items():
        into.errors_by_type[kind] = into.errors_by_type.get(kind, 0) + n
