"""What a run has done so far, shown on a progress bar while it runs and in a summary at the end.

`RunTotals` is written by the writer task alone (it sees every record), never by the workers.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchrun.models import Record

if TYPE_CHECKING:
    from batchrun.pipeline import RunSummary

__all__ = ["Progress", "RunTotals", "render_summary"]

_REFRESH_S = 0.5


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
        self.requests += record.attempts
        self.retries += max(0, record.attempts - 1)
        if record.ok:
            self.ok += 1
            self.prompt_tokens += record.prompt_tokens or 0
            self.completion_tokens += record.completion_tokens or 0
            self.cached_tokens += record.cached_tokens or 0
            self.reasoning_tokens += record.reasoning_tokens or 0
            if record.cost_usd is None:
                self.unpriced += 1
            else:
                self.cost_usd += record.cost_usd
        else:
            self.errors += 1
            kind = record.error_type or "unknown"
            self.errors_by_type[kind] = self.errors_by_type.get(kind, 0) + 1

    @property
    def rows(self) -> int:
        return self.ok + self.errors

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at


class Progress:
    """A tqdm bar on stderr, only when it is a terminal and the run is not quiet."""

    def __init__(self, *, total: int, initial: int, enabled: bool) -> None:
        self._bar: Any = None
        self._next_refresh = 0.0
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=initial, unit="row", dynamic_ncols=True, smoothing=0.1
            )

    def update(self, totals: RunTotals) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        now = time.monotonic()
        if now >= self._next_refresh:
            self._next_refresh = now + _REFRESH_S
            elapsed = max(totals.elapsed_s(), 1e-9)
            postfix = {
                "ok": totals.ok,
                "err": totals.errors,
                "retries": totals.retries,
                "req/s": f"{totals.requests / elapsed:,.1f}",
                "tok/s": f"{totals.total_tokens / elapsed:,.0f}",
            }
            if totals.cost_usd:
                postfix["cost"] = f"${totals.cost_usd:,.4f}"
            self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def render_summary(summary: RunSummary, *, command: str) -> str:
    """The lines printed when a run ends: what was done, what it used, where it is, what next."""
    s = summary.session
    elapsed = max(summary.elapsed_s, 1e-9)
    lines = []
    if summary.finished:
        lines.append(f"finished: {summary.done_rows:,} of {summary.total_rows:,} rows done")
    elif summary.stopped:
        lines.append(f"stopped early: {summary.stopped}")
        lines.append(f"  {summary.done_rows:,} of {summary.total_rows:,} rows done; resume with:")
        lines.append(f"  {command}")
    else:
        lines.append(f"incomplete: {summary.done_rows:,} of {summary.total_rows:,} rows done")
    lines.append(f"  whole output: {summary.ok:,} ok, {summary.errors:,} errors")
    lines.append(
        f"  this run: {s.rows:,} rows ({s.ok:,} ok, {s.errors:,} errors), "
        f"{s.requests:,} requests, {s.retries:,} retries, {elapsed:,.1f} s, "
        f"{s.rows / elapsed:,.1f} rows/s"
    )
    if s.errors_by_type:
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(s.errors_by_type.items()))
        lines.append(f"  errors by type: {kinds}")
    lines.append(
        f"  tokens: prompt {s.prompt_tokens:,} (cached {s.cached_tokens:,}), "
        f"completion {s.completion_tokens:,} (reasoning {s.reasoning_tokens:,}), "
        f"{s.total_tokens / elapsed:,.0f} tokens/s"
    )
    if s.cost_usd or s.unpriced:
        cost = f"  cost: ${s.cost_usd:,.4f}"
        if s.unpriced:
            cost += f" (+ {s.unpriced:,} rows with no known price)"
        lines.append(cost)
    lines.append(f"  results: {summary.out_dir / 'results'}")
    return "\n".join(lines)
