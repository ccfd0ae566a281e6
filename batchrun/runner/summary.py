"""What a run did: totals kept as records arrive, the summary it returns, the lines it prints.

`RunTotals` is updated on the event loop as each record is handed to the writer, never from a
thread; `RunSummary` is what `batchrun.run` returns; `render_summary` is the text `batchrun run`
prints at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from batchrun.models import ErrorType, Record
from batchrun.store.checkpoint import RerunPass
from batchrun.store.update import UpdateCounts

__all__ = [
    "EXIT_OK",
    "EXIT_ROW_ERRORS",
    "EXIT_STOPPED",
    "RunSummary",
    "RunTotals",
    "render_summary",
]

EXIT_OK = 0
EXIT_STOPPED = 3
EXIT_ROW_ERRORS = 4  # finished, but rows ended in error, and the caller asked to hear of it


@dataclass(slots=True)
class RunTotals:
    ok: int = 0
    errors: int = 0
    requests: int = 0  # HTTP attempts, retries included
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0  # ok records whose cost is unknown
    errors_by_type: dict[str, int] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)

    def add(self, record: Record) -> None:
        """A record handed to the writer (its cost is counted by `add_costs`, once priced)."""
        self.requests += record.attempts
        self.retries += max(0, record.attempts - 1)
        if record.ok:
            self.ok += 1
            self.prompt_tokens += record.prompt_tokens or 0
            self.completion_tokens += record.completion_tokens or 0
            self.cached_tokens += record.cached_tokens or 0
            self.reasoning_tokens += record.reasoning_tokens or 0
        else:
            self.errors += 1
            kind = record.error_type or "unknown"
            self.errors_by_type[kind] = self.errors_by_type.get(kind, 0) + 1

    def add_costs(self, records: list[Record], costs: list[float | None]) -> None:
        """What `records` cost (`costs`, one each); an ok record without one is unpriced."""
        for record, cost in zip(records, costs, strict=True):
            if not record.ok:
                continue
            if cost is None:
                self.unpriced += 1
            else:
                self.cost_usd += cost

    @property
    def rows(self) -> int:
        return self.ok + self.errors

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSummary:
    out_dir: Path
    total_rows: int | None  # None: the first pass had not counted the rows when the run stopped
    done_rows: int
    ok: int  # over the whole output, this run and earlier ones
    errors: int
    session: RunTotals  # this run only
    elapsed_s: float
    stopped: str | None  # why the run stopped early, None when it finished
    fatal: bool = False
    cost_usd: float = 0.0  # over the whole output (priced rows), this run and earlier ones
    done_before: int = 0  # rows the output had done when this run began
    fail_on_errors: bool = False
    waiting: bool = False  # stopped because a provider's batches are still running
    rerun: RerunPass | None = None  # the retry pass this run made (--retry-errors)
    update: UpdateCounts | None = None  # what --update found, when the input had changed

    @property
    def finished(self) -> bool:
        return (
            self.stopped is None
            and self.total_rows is not None
            and self.done_rows >= self.total_rows
        )

    @property
    def exit_code(self) -> int:
        """0 finished; 3 stopped early (resumable); 4 finished with error records, when
        `fail_on_errors` asked for it (RunConfig.fail_on_errors, `--fail-on-errors`)."""
        if not self.finished:
            return EXIT_STOPPED
        return EXIT_ROW_ERRORS if self.fail_on_errors and self.errors else EXIT_OK


def render_summary(summary: RunSummary, *, command: str) -> str:
    """The lines printed when a run ends: what was done, what it used, where it is, what next."""
    s = summary.session
    elapsed = max(summary.elapsed_s, 1e-9)
    lines = []
    total = "?" if summary.total_rows is None else f"{summary.total_rows:,}"
    if summary.finished:
        lines.append(f"finished: {summary.done_rows:,} of {total} rows done")
        if summary.exit_code == EXIT_ROW_ERRORS:
            lines.append(
                f"  {summary.errors:,} rows ended in error: exit code {EXIT_ROW_ERRORS} "
                "(--fail-on-errors)"
            )
    elif summary.stopped and summary.waiting:
        lines.append(f"submitted: {summary.stopped}")
        lines.append(f"  {summary.done_rows:,} of {summary.total_rows:,} rows done; collect with:")
        lines.append(f"  {command}")
    elif summary.stopped:
        lines.append(f"stopped early: {summary.stopped}")
        lines.append(f"  {summary.done_rows:,} of {total} rows done; resume with:")
        lines.append(f"  {command}")
    else:
        lines.append(f"incomplete: {summary.done_rows:,} of {total} rows done")
    resumed = f" (resumed at {summary.done_before:,} done)" if summary.done_before else ""
    lines.append(f"  whole output: {summary.ok:,} ok, {summary.errors:,} errors{resumed}")
    lines.append(
        f"  this run: {s.rows:,} rows ({s.ok:,} ok, {s.errors:,} errors), "
        f"{s.requests:,} requests, {s.retries:,} retries, {elapsed:,.1f} s, "
        f"{s.rows / elapsed:,.1f} rows/s"
    )
    if summary.update is not None:
        u = summary.update
        lines.append(
            f"  update: {u.unchanged:,} rows unchanged (kept), {u.changed:,} changed, "
            f"{u.added:,} new, {u.removed:,} removed from the results"
            + (f", {u.repeated:,} repeating a custom_id" if u.repeated else "")
            + (f", {u.unsendable:,} bad input" if u.unsendable else "")
        )
    if summary.rerun is not None:
        r = summary.rerun
        state = "" if r.finished else f", {r.rows - len(r.done):,} still to re-send"
        lines.append(
            f"  retry pass {r.number}: {len(r.done):,} of {r.rows:,} rows re-sent, "
            f"{r.fixed:,} ok now{state}"
        )
    if s.errors_by_type:
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(s.errors_by_type.items()))
        lines.append(f"  errors by type: {kinds}")
    if unknown := s.errors_by_type.get(ErrorType.SUBMIT_UNKNOWN):
        lines.append(
            f"  {unknown:,} rows ended submit_unknown: their submit may have been accepted (and "
            "paid); to send them again: --retry-errors=submit_unknown --resubmit-unknown"
        )
    lines.append(
        f"  tokens: prompt {s.prompt_tokens:,} (cached {s.cached_tokens:,}), "
        f"completion {s.completion_tokens:,} (reasoning {s.reasoning_tokens:,}), "
        f"{s.total_tokens / elapsed:,.0f} tokens/s"
    )
    if s.cost_usd or s.unpriced or summary.cost_usd:
        cost = f"  cost: ${s.cost_usd:,.4f} this run"
        if s.unpriced:
            cost += f" (+ {s.unpriced:,} rows with no known price)"
        if summary.done_before:
            cost += f"; ${summary.cost_usd:,.4f} whole output"
        lines.append(cost)
    lines.append(f"  results: {summary.out_dir / 'results'}")
    return "\n".join(lines)
