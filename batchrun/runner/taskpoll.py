"""Polling the submitted tasks of one family, many ids per request (`batchrun.runner.tasks`).

    Poller.add(task) ─► waits until the earliest task is due (+ a quarter interval, to gather)
      ─► the due tasks, `family.batch` ids per poll, paced by its own budget ─► read_poll
      ─► success / failure / timeout: `owner.finish(task, state)` in a task of its own

Guarantees:
- A task is polled no more often than every `interval_s` (its last poll, or its submit, plus
  the interval); tasks polled together stay together, so the traffic settles at about
  ceil(tasks / batch) requests per interval.
- Polls take no request budget; they wait out the shared pause (`Sender.fetch`). A poll that
  fails (transport error, a non-2xx) backs off: interval x 2^failures, at most a minute.
- An id that batch polls keep leaving out is fetched alone (`family.fallback_poll`).
- A task past `timeout_s` since its submit ends (`owner.timed_out`) without another poll.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from batchrun.models import Request
from batchrun.send.client import Sender
from batchrun.send.http import TransportError

__all__ = ["Family", "Poller", "Task"]

log = logging.getLogger("batchrun")

_MAX_BACKOFF_S = 60.0
_FALLBACK_AFTER_MISSES = 2  # batch polls that left an id out before it is fetched alone


class Family(Protocol):
    """`batchrun.endpoints.tasks.TaskFamily` as the engine uses it."""

    @property
    def name(self) -> str: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def refresh_s(self) -> float: ...
    @property
    def batch(self) -> int: ...

    def read_submit(self, status: int, body: Any) -> Any: ...
    def poll(self, ids: Sequence[str]) -> Any: ...
    def read_poll(self, status: int, body: Any, ids: Sequence[str]) -> Mapping[str, Any]: ...
    def fallback_poll(self, task_id: str) -> Any: ...
    def follow_up_view(self, state: Any) -> Any: ...
    def follow_up(self, body: Mapping[str, Any], parent: Any) -> dict[str, Any]: ...


@dataclass(slots=True, kw_only=True)
class Task:
    """A submitted task waiting for its end."""

    request: Request
    task_id: str
    started: float  # on anyio's clock: when it was submitted (a resumed one: back-dated)
    next_poll: float
    attempts: int  # submits of it this run that reached the gateway (0: resumed)
    timeout_s: float  # since `started`
    misses: int = 0
    status: str = "pending"
    progress: str | None = None


class Owner(Protocol):
    """What a poller reports to (`batchrun.runner.tasks.TaskRunner`)."""

    def ended(self, task: Task, state: Any | None) -> None:
        """The task reached success or failure (`state`), or its timeout (None)."""

    def idle(self) -> bool:
        """No task will come any more: a poller without tasks may end."""


class Poller:
    """The waiting tasks of one family (see the module docstring)."""

    def __init__(
        self,
        family: Family,
        owner: Owner,
        sender: Sender,
        *,
        interval_s: float,
        timeout_s: float,
        polls_per_s: float,
    ) -> None:
        self.family = family
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.tasks: dict[str, Task] = {}
        self.polls = 0
        self._owner = owner
        self._sender = sender
        self._wake = anyio.Event()
        self._gap_s = 1.0 / polls_per_s
        self._next_request = -math.inf
        self._errors = 0  # polls failed in a row

    def __repr__(self) -> str:
        return f"Poller({self.family.name}, tasks={len(self.tasks)}, polls={self.polls})"

    def add(self, task: Task) -> None:
        self.tasks[task.task_id] = task
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Until no task is left and the owner is idle."""
        while True:
            if not self.tasks:
                if self._owner.idle():
                    return
                await self._sleep(math.inf)
                continue
            now = anyio.current_time()
            self._end_timed_out(now)
            if not self.tasks:
                continue
            first = min(t.next_poll for t in self.tasks.values())
            if first > now:
                # A quarter interval more gathers the tasks due about then into the same polls.
                await self._sleep(first - now + self.interval_s / 4)
                continue
            due = sorted((t for t in self.tasks.values() if t.next_poll <= now), key=_due)
            batch = max(1, self.family.batch)
            for start in range(0, len(due), batch):
                await self._poll(due[start : start + batch])

    def _end_timed_out(self, now: float) -> None:
        for task in [t for t in self.tasks.values() if now - t.started >= t.timeout_s]:
            del self.tasks[task.task_id]
            self._owner.ended(task, None)

    async def _poll(self, tasks: Sequence[Task]) -> None:
        ids = [t.task_id for t in tasks]
        states = await self._fetch(self.family.poll(ids), tasks)
        if states is None:
            return
        at = anyio.current_time() + self.interval_s
        for task in tasks:
            task.next_poll = at
            state = states.get(task.task_id)
            if state is None:
                task.misses += 1
                if task.misses >= _FALLBACK_AFTER_MISSES:
                    await self._fetch_alone(task)
                continue
            task.misses = 0
            self._seen(task, state)

    async def _fetch_alone(self, task: Task) -> None:
        poll = self.family.fallback_poll(task.task_id)
        if poll is None:
            return
        states = await self._fetch(poll, [task])
        if states is not None and (state := states.get(task.task_id)) is not None:
            task.misses = 0
            self._seen(task, state)

    def _seen(self, task: Task, state: Any) -> None:
        task.status, task.progress = state.status, state.progress
        if state.status in ("success", "failure") and task.task_id in self.tasks:
            del self.tasks[task.task_id]
            self._owner.ended(task, state)

    async def _fetch(self, poll: Any, tasks: Sequence[Task]) -> Mapping[str, Any] | None:
        """One poll request: the states it holds, or None (failed: those tasks back off)."""
        now = anyio.current_time()
        if self._next_request > now:
            await anyio.sleep(self._next_request - now)
        self._next_request = max(now, self._next_request) + self._gap_s
        self.polls += 1
        ids = [t.task_id for t in tasks]
        try:
            status, body = await self._sender.fetch(poll.method, poll.path, poll.json)
        except TransportError as exc:
            self._failed(tasks, exc.message)
            return None
        if not 200 <= status < 300:
            self._failed(tasks, f"HTTP {status}")
            return None
        try:
            states = self.family.read_poll(status, body, ids)
        except (ValueError, TypeError, KeyError) as exc:  # an answer of an unexpected shape
            self._failed(tasks, f"unreadable answer ({exc})")
            return None
        self._errors = 0
        return states

    def _failed(self, tasks: Sequence[Task], why: str) -> None:
        self._errors += 1
        backoff = min(self.interval_s * 2**self._errors, max(self.interval_s, _MAX_BACKOFF_S))
        if self._errors in (1, 5) or self._errors % 20 == 0:
            log.warning("a %s poll failed (%s); again in %.1f s", self.family.name, why, backoff)
        at = anyio.current_time() + backoff
        for task in tasks:
            task.next_poll = at

    async def _sleep(self, seconds: float) -> None:
        self._wake = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._wake.wait()


def _due(task: Task) -> float:
    return task.next_poll
