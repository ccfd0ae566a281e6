"""The progress bar on stderr while a run goes: rows done, ok / errors, req/s, tok/s, cost."""

from __future__ import annotations

import sys
import time
from typing import Any

from batchrun.runner.summary import RunTotals

__all__ = ["Progress"]

_REFRESH_S = 0.5
# Until the first pass has counted the rows: "12,345/? row [00:03, 4,100 row/s, ok=...]".
_UNKNOWN_TOTAL = "{n_fmt}/? {unit} [{elapsed}, {rate_fmt}{postfix}]"


class Progress:
    """A tqdm bar on stderr, only when it is a terminal and the run is not quiet."""

    def __init__(self, *, total: int | None, initial: int, enabled: bool) -> None:
        self._bar: Any = None
        self._next_refresh = 0.0
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                unit="row",
                dynamic_ncols=True,
                smoothing=0.1,
                bar_format=_UNKNOWN_TOTAL if total is None else None,
            )

    def set_total(self, total: int) -> None:
        """The row count, once the first pass knows it: the bar gets its end and its ETA."""
        if self._bar is not None:
            self._bar.total = total
            self._bar.bar_format = None
            self._bar.refresh()

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
