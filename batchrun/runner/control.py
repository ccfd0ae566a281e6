"""Stopping a run: `RunControl`, which any task (or the caller) uses to stop it, and the watch
that turns SIGINT / SIGTERM into such a stop.

A first signal stops dispatching and lets requests in flight finish (the pipeline's grace
timer); a second one exits at once, after the run's `on_hard_exit` hook has saved the answers
that arrived (into the journal; at most a couple of seconds): what was committed is consistent
and what was journaled is folded on resume, so a resume re-sends only the requests in flight.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskStatus

from batchrun.runner.summary import EXIT_STOPPED

__all__ = ["RunControl", "watch_signals"]


@dataclass(slots=True)
class RunControl:
    """Lets the caller (or a signal) stop a run; the run reports why it stopped."""

    reason: str | None = None
    fatal: bool = False
    # The run returns with work in flight at a provider (batches submitted, not yet ended):
    # not a failure, the same command collects it later.
    waiting: bool = False
    _stop_event: anyio.Event | None = field(default=None, repr=False)
    # What to save before a second signal quits the process; says what became of the answers.
    _before_exit: Callable[[], str] | None = field(default=None, repr=False)

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

    def on_hard_exit(self, save: Callable[[], str] | None) -> None:
        """Set (or clear) what a second Ctrl-C runs before it quits the process."""
        self._before_exit = save

    def save_before_exit(self) -> str:
        """Run the hook; what became of the answers that arrived, for the user."""
        if self._before_exit is None:
            return "what was saved is consistent"
        return self._before_exit()


async def watch_signals(control: RunControl, *, task_status: TaskStatus[None]) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if not control.stopping:
                control.stop(f"interrupted by {name}")
                print(
                    f"\n{name}: finishing requests in flight, then saving; "
                    f"press Ctrl-C again to quit at once",
                    file=sys.stderr,
                    flush=True,
                )
            else:
                saved = control.save_before_exit()
                print(
                    f"\n{name} again: quitting now; {saved}; run the same command to resume",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(EXIT_STOPPED)
