"""The progress of a cluster run: each shard reports its figures, the driver draws one bar.

    shard (every ~1 s) ── ShardProgress ──► budget actor (latest per shard) ◄── driver polls
                                                                             └─► Progress bar

Guarantees:
- A shard reports once a second and once at its end, never per request: its committed figures
  (rows done, ok, errors, cost, its row count once counted) read from its own checkpoint, and
  this run's `RunTotals` (requests, retries, tokens) for the rates.
- The driver's bar is the local one (`batchrun.runner.progress.Progress`): rows done of the whole
  output over the total (known once every shard's rows are counted), ok, errors, req/s, tok/s,
  cost. A shard sent again after its worker died reports from its checkpoint, so what the dead
  worker committed is counted once and what it had not committed is not counted at all.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from batchrun.runner.progress import Earlier, Progress
from batchrun.runner.summary import RunTotals
from batchrun.store.checkpoint import Checkpoint, CheckpointError

__all__ = ["REPORT_EVERY_S", "ClusterProgress", "ShardProgress", "report_every", "shard_figures"]

REPORT_EVERY_S = 1.0
_TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens")


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardProgress:
    """One shard's figures: committed ones over its whole output, `session` this run's."""

    shard_id: str
    total_rows: int | None  # None: not counted yet
    done_rows: int
    ok: int
    errors: int
    cost_usd: float
    session: RunTotals = field(default_factory=RunTotals)


def shard_figures(
    shard_id: str, checkpoint: Checkpoint | None, session: RunTotals | None = None
) -> ShardProgress:
    if checkpoint is None:
        return ShardProgress(
            shard_id=shard_id, total_rows=None, done_rows=0, ok=0, errors=0, cost_usd=0.0,
            session=session or RunTotals(),
        )  # fmt: skip
    return ShardProgress(
        shard_id=shard_id,
        total_rows=checkpoint.total_rows,
        done_rows=len(checkpoint.done),
        ok=checkpoint.counts.get("ok", 0),
        errors=checkpoint.counts.get("error", 0),
        cost_usd=checkpoint.cost_usd,
        session=session or RunTotals(),
    )


async def report_every(
    shard_id: str,
    out_dir: Path,
    session: RunTotals,
    send: Callable[[ShardProgress], Awaitable[None]],
    interval_s: float = REPORT_EVERY_S,
) -> None:
    """Until cancelled: every `interval_s`, send the shard's figures (its checkpoint read off
    the event loop, `session` copied on it, where the run updates it)."""
    while True:
        await anyio.sleep(interval_s)
        checkpoint = await anyio.to_thread.run_sync(_load, out_dir)
        await send(shard_figures(shard_id, checkpoint, copy.deepcopy(session)))


def _load(out_dir: Path) -> Checkpoint | None:
    try:
        return Checkpoint.load(out_dir)
    except CheckpointError:
        return None  # the run names the damage itself


class ClusterProgress:
    """The driver's bar over every shard: fed the figures at the start, then the reports."""

    def __init__(
        self, start: list[ShardProgress], planned_rows: dict[str, int | None], *, enabled: bool
    ) -> None:
        self._start = {s.shard_id: s for s in start}
        self._latest = dict(self._start)
        self._planned = planned_rows
        self._sessions: dict[str, RunTotals] = {}
        self._totals = RunTotals()
        earlier = Earlier(
            ok=sum(s.ok for s in start),
            errors=sum(s.errors for s in start),
            cost_usd=sum(s.cost_usd for s in start),
        )
        self._bar = Progress(
            total=self._total(),
            initial=sum(s.done_rows for s in start),
            enabled=enabled,
            earlier=earlier,
        )

    @property
    def totals(self) -> RunTotals:
        """This run's figures so far, as the local bar's `RunTotals` (for the summary's rate)."""
        return self._totals

    def update(self, reports: list[ShardProgress]) -> None:
        for report in reports:
            latest = self._latest.get(report.shard_id)
            if latest is not None and latest.done_rows > report.done_rows:
                continue  # sent before the shard's end, polled after it: older news
            self._latest[report.shard_id] = report
            self._sessions[report.shard_id] = report.session
        self._totals = self._sum()
        self._bar.show(sum(s.done_rows for s in self._latest.values()), self._totals, self._total())

    def close(self) -> None:
        self._bar.close()

    def _total(self) -> int | None:
        total = 0
        for shard_id, planned in self._planned.items():
            latest = self._latest.get(shard_id)
            rows = latest.total_rows if latest is not None else None
            rows = rows if rows is not None else planned
            if rows is None:
                return None
            total += rows
        return total

    def _sum(self) -> RunTotals:
        totals = RunTotals(started_at=self._totals.started_at)
        for shard_id, latest in self._latest.items():
            start = self._start.get(shard_id)
            totals.ok += latest.ok - (start.ok if start else 0)
            totals.errors += latest.errors - (start.errors if start else 0)
            totals.cost_usd += latest.cost_usd - (start.cost_usd if start else 0.0)
        for session in self._sessions.values():
            totals.requests += session.requests
            totals.retries += session.retries
            for name in _TOKEN_FIELDS:
                setattr(totals, name, getattr(totals, name) + getattr(session, name))
        return totals
