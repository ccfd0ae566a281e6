"""The progress bar on stderr while a run goes: rows done, ok / errors, req/s, tok/s, cost.

`tick` is called on a clock (every half second) whether rows arrive or not, so that the bar's
elapsed time keeps moving while nothing comes back, and a note (the server cannot be reached)
shows in front of it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import anyio

from batchrun.runner.summary import RunTotals

__all__ = ["Earlier", "Progress"]

_REFRESH_S = 0.5
log = logging.getLogger("batchrun")


@dataclass(frozen=True, slots=True)
class Earlier:
    """What the output held when this run began (a resume): rows ok and in error, USD spent."""

    ok: int = 0
    errors: int = 0
    cost_usd: float = 0.0


# Until the first pass has counted the rows: "12,345/? row [00:03, 4,100 row/s, ok=...]".
_UNKNOWN_TOTAL = "{n_fmt}/? {unit} [{elapsed}, {rate_fmt}{postfix}]"


class Progress:
    """A tqdm bar on stderr, only when it is a terminal and the run is not quiet.

    Its position, `ok=`, `err=` and `cost=` count the whole output (`earlier`: what the output
    held when this run began), as the summary does; `run cost=` is this run's share. `close`
    draws the final figures, so the bar ends where the summary does.
    """

    def __init__(
        self,
        *,
        total: int | None,
        initial: int,
        enabled: bool,
        stream: TextIO | None = None,
        earlier: Earlier | None = None,
    ) -> None:
        self._bar: Any = None
        self._next_refresh = 0.0
        self._note: str | None = None
        self._earlier = earlier or Earlier()
        self._totals: RunTotals | None = None
        stream = sys.stderr if stream is None else stream
        if enabled and stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                unit="row",
                dynamic_ncols=True,
                smoothing=0.1,
                file=stream,
                bar_format=_UNKNOWN_TOTAL if total is None else None,
            )

    async def keep_time(
        self, note: Callable[[], str | None], detail: Callable[[], str | None]
    ) -> None:
        """Until cancelled: redraw every half second with `note()` in front, and log
        `detail()` once when a note appears (a quiet run, or stderr not a terminal, sees it
        too) and once when it goes. A display clock: it decides nothing."""
        shown = False
        started = 0.0
        while True:
            await anyio.sleep(_REFRESH_S)
            current = note()
            if current is not None and not shown:
                shown, started = True, time.monotonic()
                log.warning("%s", detail() or current)
            elif current is None and shown:
                shown = False
                log.info("the server answers again, after %.0f s", time.monotonic() - started)
            self.tick(current)

    def tick(self, note: str | None) -> None:
        """Redraw (the elapsed time moves on) with `note` in front, or none."""
        if self._bar is None:
            return
        if note != self._note:
            self._note = note
            self._bar.set_description_str(note or "", refresh=False)
        self._bar.refresh()

    def set_total(self, total: int) -> None:
        """The row count, once the first pass knows it: the bar gets its end and its ETA."""
        if self._bar is not None:
            self._bar.total = total
            self._bar.bar_format = None
            self._bar.refresh()

    def show(self, done: int, totals: RunTotals, total: int | None) -> None:
        """Move the bar to `done` rows at once (a cluster's driver, fed by its shards' sums)."""
        if self._bar is None:
            return
        if total is not None and total != self._bar.total:
            self.set_total(total)
        self._totals = totals
        self._bar.update(done - self._bar.n)
        self._bar.set_postfix(self._postfix(totals), refresh=False)
        self._bar.refresh()

    def update(self, totals: RunTotals) -> None:
        if self._bar is None:
            return
        self._totals = totals
        self._bar.update(1)
        now = time.monotonic()
        if now >= self._next_refresh:
            self._next_refresh = now + _REFRESH_S
            self._bar.set_postfix(self._postfix(totals), refresh=False)

    def _postfix(self, totals: RunTotals) -> dict[str, object]:
        earlier = self._earlier
        elapsed = max(totals.elapsed_s(), 1e-9)
        postfix: dict[str, object] = {
            "ok": earlier.ok + totals.ok,
            "err": earlier.errors + totals.errors,
            "retries": totals.retries,
            "req/s": f"{totals.requests / elapsed:,.1f}",
            "tok/s": f"{totals.total_tokens / elapsed:,.0f}",
        }
        if earlier.cost_usd or totals.cost_usd:
            postfix["cost"] = f"${earlier.cost_usd + totals.cost_usd:,.4f}"
        if earlier.cost_usd and totals.cost_usd:
            postfix["run cost"] = f"${totals.cost_usd:,.4f}"
        return postfix

    def close(self) -> None:
        if self._bar is not None:
            if self._totals is not None:  # the last figures, not those of half a second ago
                self._bar.set_postfix(self._postfix(self._totals), refresh=False)
            self._bar.close()
