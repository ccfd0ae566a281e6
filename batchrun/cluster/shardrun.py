"""One shard, sent the way a local run sends a file: what each cluster worker does.

Guarantees:
- The shard runs through `batchrun.runner.pipeline.run` with `RunConfig.rows` set to its span
  and `out_dir` its own (`OUT/shards/<id>/`): the same reader, pool, retries, writer, part and
  checkpoint commit, and resume, as a local run. Its limiter is a `LeasedLimiter` on the
  cluster's shared budget.
- On an object store the shard runs in a local staging directory that `ShardMirror` fills from
  the store first and copies back after every commit (part, then checkpoint); an input on an
  object store is fetched first, only the shard's byte range of a JSONL file.
- A shard whose rows cannot be read is reported as such (`input_fault`), so that the driver
  turns its rows into error records instead of stopping the whole job; a fatal stop for any
  other reason (a refused key) is reported as fatal, and the driver stops the job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import pyarrow.fs as pafs

from batchrun.cluster.budget import BudgetLink, LeasedCostBudget, LeasedLimiter
from batchrun.cluster.progress import ShardProgress, report_every
from batchrun.config import RunConfig
from batchrun.cost.budget import CostBudget
from batchrun.cost.pricebook import PriceBook
from batchrun.inputs.reader import InputError, iter_ids
from batchrun.inputs.rows import Offset
from batchrun.inputs.shards import RowSpan, Shard
from batchrun.runner.pipeline import RunControl, run
from batchrun.runner.summary import RunSummary, RunTotals
from batchrun.store.checkpoint import CheckpointError, OutputLockedError
from batchrun.store.remote import OutputLocation, ShardMirror, is_remote
from batchrun.store.shardset import SHARDS_DIR

__all__ = ["SHARDS_DIR", "ShardResult", "ShardTask", "run_shard", "shard_prefix"]

_COPY_BLOCK = 1 << 20
_LOCKED_TRIES = 30
_LOCKED_WAIT_S = 1.0


def shard_prefix(shard_id: str) -> str:
    return f"{SHARDS_DIR}/{shard_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardTask:
    shard: Shard
    config: RunConfig  # the job's settings; input_path, out_dir and rows are the shard's
    out_uri: str
    lease_requests: float
    lease_tokens: float
    lease_usd: float = 0.0  # --max-cost: room in the cap one lease asks for


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardResult:
    shard_id: str
    total_rows: int
    done_rows: int
    ok: int
    errors: int
    cost_usd: float
    session: RunTotals
    stopped: str | None
    fatal: bool
    input_fault: str | None = None  # the shard's rows cannot be read: why
    busy: bool = False  # another worker still holds the shard's output: try it again later

    @property
    def finished(self) -> bool:
        return self.stopped is None and self.done_rows >= self.total_rows


def run_shard(
    task: ShardTask,
    link: BudgetLink,
    scratch: Path | None = None,
    report: Callable[[ShardProgress], Awaitable[None]] | None = None,
) -> ShardResult:
    """Run one shard to the end (or to a stop). Blocking: it runs its own event loop.

    `report` gets the shard's figures every `REPORT_EVERY_S` while it runs (the driver's bar).
    """
    location = OutputLocation(task.out_uri)
    prefix = shard_prefix(task.shard.id)
    base = Path(scratch or tempfile.gettempdir()) / "batchrun-shards"
    job = hashlib.sha256(task.out_uri.encode()).hexdigest()[:12]
    staging = base / job / task.shard.id
    mirror: ShardMirror | None = None
    local_out = location.local
    if local_out is not None:
        out_dir = local_out / prefix
    else:
        mirror = ShardMirror(location, prefix, staging / "out")
        mirror.pull()
        out_dir = mirror.staging
    try:
        input_path, span = _local_input(task.shard, staging / "input")
    except (OSError, InputError) as exc:
        return _unreadable(task.shard, str(exc))
    config = dataclasses.replace(
        task.config,
        input_path=input_path,
        out_dir=out_dir,
        rows=span,
        progress=False,
        handle_signals=False,
    )
    limiter: LeasedLimiter | None = None

    async def main() -> ShardResult:
        nonlocal limiter
        control = RunControl()
        limiter = LeasedLimiter(
            link,
            lease_requests=task.lease_requests,
            lease_tokens=task.lease_tokens,
            burst_s=config.burst_s,
            on_stop=lambda reason: control.stop(reason, fatal=True),
        )
        budgets: list[LeasedCostBudget] = []
        totals = RunTotals()

        def cost_budget(spent_usd: float, prices: PriceBook) -> CostBudget:
            budgets.append(
                LeasedCostBudget(
                    link,
                    cap_usd=config.max_cost_usd or 0.0,
                    spent_usd=spent_usd,
                    prices=prices,
                    chunk_usd=task.lease_usd,
                )
            )
            return budgets[-1]

        outcome: RunSummary | Exception
        async with anyio.create_task_group() as tg:
            tg.start_soon(limiter.follow_pauses)
            if report is not None:
                tg.start_soon(report_every, task.shard.id, out_dir, totals, report)
            try:
                outcome = await run(
                    config,
                    control,
                    limiter=limiter,
                    on_commit=mirror.push if mirror else None,
                    cost_budget=cost_budget,
                    totals=totals,
                )
            except (InputError, CheckpointError) as exc:  # refused before anything was sent
                outcome = exc
            finally:
                await limiter.close()
                for budget in budgets:
                    await budget.close()
                tg.cancel_scope.cancel()
        if isinstance(outcome, Exception):
            raise outcome  # not inside the task group: as itself, not an ExceptionGroup
        summary = outcome
        result = ShardResult(
            shard_id=task.shard.id,
            # Unknown only when stopped before the output was set up: then nothing is done.
            total_rows=summary.total_rows
            if summary.total_rows is not None
            else task.shard.span.rows,
            done_rows=summary.done_rows,
            ok=summary.ok,
            errors=summary.errors,
            cost_usd=summary.cost_usd,
            session=summary.session,
            stopped=summary.stopped,
            fatal=summary.fatal,
        )
        if summary.fatal and not result.finished:
            fault = await anyio.to_thread.run_sync(_input_fault, config)
            if fault is not None:
                result = dataclasses.replace(result, input_fault=fault)
        return result

    try:
        for _ in range(_LOCKED_TRIES):
            try:
                return anyio.run(main, backend_options={"use_uvloop": True})
            except OutputLockedError:
                # The shard's previous worker is still alive (its driver was killed a moment
                # ago and Ray has not reaped it yet): wait for it to go, never write beside it.
                time.sleep(_LOCKED_WAIT_S)
            except InputError as exc:
                return _unreadable(task.shard, str(exc))
            except CheckpointError as exc:
                # A changed input, a damaged checkpoint: the job's problem, not the shard's.
                return dataclasses.replace(
                    _unreadable(task.shard, str(exc)), input_fault=None, fatal=True
                )
        return dataclasses.replace(
            _unreadable(task.shard, f"shard {task.shard.id} is locked by another worker"),
            input_fault=None,
            fatal=False,
            busy=True,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # fetched input, staged output: all copies


def _unreadable(shard: Shard, message: str) -> ShardResult:
    return ShardResult(
        shard_id=shard.id,
        total_rows=0,
        done_rows=0,
        ok=0,
        errors=0,
        cost_usd=0.0,
        session=RunTotals(),
        stopped=message,
        fatal=True,
        input_fault=message,
    )


def _input_fault(config: RunConfig) -> str | None:
    """Why the shard's rows cannot be read, or None when they can (the stop was not theirs)."""
    try:
        for _ in iter_ids(
            config.input_path,
            template=config.template,
            max_row_bytes=config.max_row_bytes,
            span=config.rows,
        ):
            pass
    except (InputError, OSError) as exc:
        return str(exc)
    return None


def _local_input(shard: Shard, staging: Path) -> tuple[Path, RowSpan]:
    """A local file holding the shard's rows, and the span to read in it.

    A local input is read in place. From an object store: a JSONL shard's byte range only (its
    span then starts at byte 0 of the copy, with the same rows and lines), any other file whole.
    """
    if not is_remote(shard.path):
        return Path(shard.path), shard.span
    fs, path = pafs.FileSystem.from_uri(shard.path)
    staging.mkdir(parents=True, exist_ok=True)
    name = Path(path).name
    offset, end = shard.span.offset, shard.end_byte
    if offset is not None and end is not None:
        target = staging / f"{shard.id}-{name}"
        with fs.open_input_file(path) as src, target.open("wb") as dst:
            src.seek(offset.byte)
            left = end - offset.byte
            while left > 0 and (block := src.read(min(_COPY_BLOCK, left))):
                dst.write(block)
                left -= len(block)
        span = dataclasses.replace(
            shard.span, offset=Offset(byte=0, row=offset.row, line=offset.line)
        )
        return target, span
    target = staging / name
    with fs.open_input_stream(path) as src, target.open("wb") as dst:
        while block := src.read(_COPY_BLOCK):
            dst.write(block)
    return target, shard.span
