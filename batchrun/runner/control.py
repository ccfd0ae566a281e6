"""How a run is told to stop, and how it says why it stopped.

`RunControl.stop(reason)` may be called from any task (a signal watcher, a worker that met a
refused key, the caller's own code); the first reason wins, and the run's grace timer wakes on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

__all__ = ["RunControl"]


@dataclass(slots=True)
class RunControl:
    """Lets the caller (or a signal) stop a run; the run reports why it stopped."""

    reason: str | None = None
    fatal: bool = False
    _stop_event: anyio.Event | None = field(default=None, repr=False)

    @property
    def stopping(self) -> bool:
        return self.reason is not None

    async def wait_stopped(self) -> None:
        """Return once `stop` has been called (inside `batchrun.run` only)."""
        assert self._stop_event is not None, "wait_stopped is for tasks of a running run"
        await self._stop_event.wait()

    def stop(self, reason: str, *, fatal: bool = False) -> None:
        if self.reason is None:
            self.reason = reason
            self.fatal = fatal
            if self._stop_event is not None:
                self._stop_event.set()
