"""`--retry-errors`: a pass over a finished output that re-sends the rows whose record is an error.

    finished output ─► open the pass (or resume the open one) ─► stages over its rows only
                       OUT/pass-N.rows + checkpoint              each new record supersedes
                                                                 the old in its commit
                    ─► pass finished (checkpoint) ─► compact (unless --no-compact)

Guarantees:
- Only rows whose *current* record is an error of the asked types are sent, each once per pass;
  a pass killed at any instant and resumed with the same command sends only the rows it has not
  committed (`batchrun.store.rerun`). Running it again after it finished starts a new pass
  over the errors that remain.
- A pass open with other error types is closed as it stands (its committed rows stay) and a new
  one starts with the types asked now.
- Duplicate custom_ids stay judged: a repeated row is a `bad_input` record again, never sent.
- When the pass finishes, the superseded records are compacted away, so that plain Parquet
  readers of `OUT/results` see one record per row again (`compact=False` leaves them, until
  `batchrun compact`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Awaitable, Callable

import anyio

from batchrun.common.errors import FatalRunError
from batchrun.config import RunConfig
from batchrun.cost.pricebook import PriceBook
from batchrun.runner.control import RunControl
from batchrun.runner.firstpass import Verdicts
from batchrun.runner.progress import Earlier, Progress
from batchrun.runner.rowsource import RowSource
from batchrun.runner.stages import Seams, Stages
from batchrun.runner.summary import RunTotals
from batchrun.send.http import HttpEngine
from batchrun.store.checkpoint import Checkpoint, RerunPass
from batchrun.store.duplicates import DUPLICATES_NAME, DuplicateCursor, make_scratch_dir
from batchrun.store.ordered import ResultsError
from batchrun.store.rerun import PassRows, pass_path, start_retry_pass
from batchrun.store.writer import ResultWriter

__all__ = ["close_open_pass", "note_open_pass", "run_retry_pass"]

log = logging.getLogger("batchrun")


def note_open_pass(checkpoint: Checkpoint) -> None:
    """A resume without `--retry-errors` of an output whose retry pass was stopped: say so."""
    open_pass = checkpoint.open_pass
    if open_pass is not None:
        left = open_pass.rows - len(open_pass.done)
        log.info(
            "note: retry pass %d was stopped with %s of %s rows still to re-send; add "
            "--retry-errors to finish it",
            open_pass.number,
            f"{left:,}",
            f"{open_pass.rows:,}",
        )


async def run_retry_pass(
    config: RunConfig,
    control: RunControl,
    writer: ResultWriter,
    totals: RunTotals,
    engine: HttpEngine,
    prices: Callable[[], Awaitable[PriceBook]],
    budget_prices: PriceBook | None,
    seams: Seams | None = None,
) -> RerunPass | None:
    """Re-send the errors `config.retry_errors` names (see the module docstring); the pass, or
    None when no row needed it."""
    assert config.retry_errors is not None
    checkpoint = writer.checkpoint
    types = list(config.retry_errors)
    try:
        opened = await anyio.to_thread.run_sync(_open, config, writer, types)
    except (OSError, ResultsError) as exc:  # nothing sent; the pass not opened, or not changed
        raise FatalRunError(
            "output",
            f"cannot list the rows to retry in {config.out_dir}: {exc}; once that is fixed, "
            "run the same command to resume",
        ) from exc
    if opened is None:
        log.info("no row's record is an error of the types to retry (%s)", ", ".join(types))
        return None
    rerun, rows = opened
    left = rows.pending
    log.info(
        "retry pass %d: re-sending %s of %s rows whose record is an error (%s)",
        rerun.number,
        f"{left:,}",
        f"{rerun.rows:,}",
        ", ".join(types),
    )
    verdicts = None
    if checkpoint.duplicates:
        verdicts = Verdicts.known(DuplicateCursor(config.out_dir / DUPLICATES_NAME))
    source = RowSource(config, rows, verdicts, control)
    progress = Progress(
        total=rerun.rows,
        initial=rerun.rows - left,
        enabled=config.progress,
        earlier=Earlier(
            ok=checkpoint.counts.get("ok", 0),
            errors=checkpoint.counts.get("error", 0) - left,
            cost_usd=checkpoint.cost_usd,
        ),
    )
    try:
        stages = Stages(
            config, control, writer, totals, engine, prices, source, progress,
            budget_prices=budget_prices, seams=seams,
        )  # fmt: skip
        await stages.run()
    finally:
        progress.close()
        source.close()
        if verdicts is not None:
            verdicts.close()
    if len(rerun.done) < rerun.rows or control.stopping:
        return rerun
    await anyio.to_thread.run_sync(_finish, config, writer, rerun)
    if config.compact and checkpoint.stale_records:
        await _compact(config, writer)
    return rerun


def _open(
    config: RunConfig, writer: ResultWriter, types: list[str]
) -> tuple[RerunPass, PassRows] | None:
    """The pass to run and its rows: the open one if it retries the same types, else a new one
    (None: no row needs it). Blocking."""
    checkpoint = writer.checkpoint
    out = config.out_dir
    current = checkpoint.open_pass
    if current is not None and current.error_types == types and isinstance(writer.rerun, PassRows):
        writer.rerun.resume()  # opened before the crash's parts and journal were taken up
        return current, writer.rerun
    if current is not None:
        log.info(
            "retry pass %d (%s) was stopped part way; closing it as it stands",
            current.number,
            ", ".join(current.error_types),
        )
        _close_pass(config, writer, current)
    scratch = make_scratch_dir(out)
    try:
        rerun = start_retry_pass(out, checkpoint, types, scratch)
    finally:
        scratch.rmdir()
    if rerun.rows == 0:  # nothing to do: no pass to remember
        checkpoint.passes.pop()
        writer.save()
        pass_path(out, rerun.number).unlink(missing_ok=True)
        return None
    rows = writer.rerun = PassRows(out, rerun)
    return rerun, rows


def close_open_pass(config: RunConfig, writer: ResultWriter) -> None:
    """Close a stopped retry pass as it stands (its committed rows stay). Blocking."""
    current = writer.checkpoint.open_pass
    if current is not None:
        log.info("retry pass %d was stopped part way; closing it as it stands", current.number)
        _close_pass(config, writer, current)


def _finish(config: RunConfig, writer: ResultWriter, rerun: RerunPass) -> None:
    _close_pass(config, writer, rerun)
    log.info(
        "retry pass %d: %s of %s rows re-sent are ok now", rerun.number, f"{rerun.fixed:,}",
        f"{rerun.rows:,}",
    )  # fmt: skip


async def _compact(config: RunConfig, writer: ResultWriter) -> None:
    """Compact OUT in a child process (`batchrun.runner.compactjob`), then take up the
    checkpoint it saved. A failure is a warning: the results are complete either way."""
    checkpoint = writer.checkpoint
    log.info(
        "compacting %s: %s superseded records leave", writer.results_dir,
        f"{checkpoint.stale_records:,}",
    )  # fmt: skip
    command = [sys.executable, "-m", "batchrun.runner.compactjob", str(config.out_dir)]
    with anyio.CancelScope(shield=True):  # a stop meanwhile waits for it: it is atomic anyway
        done = await anyio.run_process(command, check=False)
        saved = await anyio.to_thread.run_sync(Checkpoint.load, config.out_dir)
    if saved is not None:
        checkpoint.first_part, checkpoint.parts = saved.first_part, saved.parts
        checkpoint.stale_records = saved.stale_records
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        log.warning(
            "warning: cannot compact %s (%s); the results are complete, but plain Parquet "
            "readers see the superseded records until `batchrun compact %s` succeeds",
            writer.results_dir, reason[-1] if reason else f"exit {done.returncode}",
            config.out_dir,
        )  # fmt: skip
        return
    figures = json.loads(done.stdout)
    log.info(
        "compacted: %s parts into %s, %s records, %.1f s", f"{figures['parts_before']:,}",
        f"{figures['parts_after']:,}", f"{figures['records']:,}", figures["seconds"],
    )  # fmt: skip


def _close_pass(config: RunConfig, writer: ResultWriter, rerun: RerunPass) -> None:
    """The pass is over: saved as finished, then its list removed (nothing reads it again)."""
    rerun.finished = True
    if writer.rerun is not None:
        writer.rerun.close()
        writer.rerun = None
    writer.save()
    pass_path(config.out_dir, rerun.number).unlink(missing_ok=True)
