"""Submit-then-poll task rows (Midjourney, Suno, video, background responses): paid once.

    worker ─► TaskRunner.start(request) ─► intent (synced) ─► submit ─► task id (synced)
       ◄── returns at once: the worker takes its next row ──┘            │
                                                        Poller (one per family) ◄┘
    every refresh_s, `batch` ids per poll ─► success: media into OUT/media ─► record
                                           └► failure / --task-timeout ─► task_failed record
    `ended` line (synced) ─► record ─► the run's journal and writer ─► committed ─► `finished`

Guarantees (DESIGN invariant 3, money is spent once):
- A row's intent is durable (`batchrun.store.tasks`) before its submit is sent, and its task id
  before the row counts as submitted. A row the journal knows is never submitted again: a task
  id is polled; an intent without one ends `submit_unknown`, unless `resubmit_unknown`.
- The submit follows the Sender's rules for requests that must not go twice (`OnceOnly`): what
  the family calls a rejection is `invalid_request` at once, a timeout after the request was
  sent `submit_unknown`.
- A task does not hold a worker (a --concurrency slot) while it runs; at most `max_tasks` are
  submitted and unfinished at once: a worker waits for room before it submits.
- Each task is polled no more often than every `poll_interval_s` (default: the family's
  `refresh_s`); the tasks due together go in polls of `batch` ids, so the poll traffic is about
  ceil(tasks / batch) requests per interval. Polls take no request budget; they wait out the
  shared pause, and a failed poll backs off.
- Every task row ends in exactly one record, handed to the run's journal and writer like any
  other (`put`), unless the run stops first: then it stays submitted, and a resume polls it.
- A follow-up row (`"after": custom_id`) is submitted once its parent's task has succeeded,
  in this run or an earlier one: the parent's end (what `follow_up` needs of it) is durable in
  the journal before its record is handed over, so a resume finds it however long ago, and
  whenever, it ended. A failed parent fails its follow-ups with its reason.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from batchrun.common.errors import FatalRunError
from batchrun.endpoints.tasks import Accepted, Rejected, TaskState, task_family_for
from batchrun.models import ErrorType, Record, Request
from batchrun.runner.control import RunControl
from batchrun.runner.groupcommit import GroupCommit
from batchrun.runner.taskpoll import Family, Poller, Task
from batchrun.runner.taskrecords import (
    error_record,
    failure_record,
    save_media,
    task_record,
    unknown_record,
)
from batchrun.send.client import OnceOnly, Sender
from batchrun.send.http import HttpEngine
from batchrun.store.media import MediaStore
from batchrun.store.tasks import TaskEnd, TaskJournal, TaskLine

__all__ = ["TaskFamilies", "TaskRunner", "TaskSettings"]

_SYNC_INTERVAL_S = 0.03  # as the answers' journal: many rows per fsync, ~30 ms at most
_DOWNLOADS = 8  # finished tasks whose media are fetched at once


TaskFamilies = Callable[[str, Mapping[str, Any]], Any]  # (path, body) -> a family or None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSettings:
    """The run's task options (`batchrun run --max-tasks ...`)."""

    max_tasks: int = 100
    task_timeout_s: float | None = None  # None: the family's
    poll_interval_s: float | None = None  # None: the family's refresh_s
    resubmit_unknown: bool = False
    polls_per_s: float = 10.0  # each family's poll budget, apart from the submits' RPM

    def __post_init__(self) -> None:
        if self.max_tasks < 1:
            raise ValueError(f"max_tasks must be at least 1, got {self.max_tasks!r}")
        for name in ("task_timeout_s", "poll_interval_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")


@dataclass(slots=True)
class TaskCounts:
    """What the progress line shows."""

    submitted: int = 0
    done: int = 0
    failed: int = 0
    unknown: int = 0  # rows ended submit_unknown
    resubmitted: int = 0  # rows with an unknown submit sent again (--resubmit-unknown)
    polls: int = 0
    running: dict[str, float] = field(default_factory=dict)  # task id -> started


class TaskRunner:
    """The task rows of one run (see the module docstring).

    `put(record)` hands a finished row's record to the run's journal and writer; `serve()` runs
    the journal's group commit and the pollers until `input_done()` and every task has ended, or
    until the run stops.
    """

    def __init__(
        self,
        *,
        journal: TaskJournal,
        sender: Sender,
        http: HttpEngine,
        media: MediaStore | None,
        settings: TaskSettings,
        control: RunControl,
        put: Callable[[Record], Awaitable[None]],
        families: TaskFamilies = task_family_for,
        media_timeout_s: float = 300.0,
    ) -> None:
        self.journal = journal
        self.settings = settings
        self.counts = TaskCounts()
        self._sender = sender
        self._http = http
        self._media = media
        self._media_timeout_s = media_timeout_s
        self._control = control
        self._put = put
        self._families = families
        self._lines: GroupCommit[TaskLine] = GroupCommit(
            journal.write, journal.sync, sync_interval_s=_SYNC_INTERVAL_S
        )
        self._pollers: dict[Any, Poller] = {}  # by the family value: same-named ones poll apart
        self._open = 0  # tasks being submitted, or submitted (or resumed) and not yet recorded
        self._room = anyio.Event()  # set when a task ends (room for another) or on a stop
        self._input_done = False
        self._changed = anyio.Event()  # for serve: a task ended, or the input is done
        self._downloads = anyio.CapacityLimiter(_DOWNLOADS)
        # Follow-up rows waiting for their parent's task, by the parent's custom_id (ended
        # parents are looked up in the journal).
        self._children: dict[str, list[tuple[Request, Family]]] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    def __repr__(self) -> str:
        c = self.counts
        return (
            f"TaskRunner(open={self._open}, submitted={c.submitted}, done={c.done}, "
            f"failed={c.failed}, unknown={c.unknown})"
        )

    def family_for(self, request: Request) -> Family | None:
        """The row's task family, or None for a one-exchange row."""
        body: Mapping[str, Any] = {}
        if b'"background"' in request.body:  # only a Responses row needs its body read to tell
            parsed = json.loads(request.body)
            body = parsed if isinstance(parsed, dict) else {}
        family: Family | None = self._families(request.url, body)
        return family

    async def serve(self) -> None:
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._lines.run_writes, self._journal_failed)
            outer.start_soon(self._lines.run_syncs, self._journal_failed)
            try:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    tg.start_soon(self._cancel_on_stop, tg.cancel_scope)
                    while not self.idle():
                        if self._input_done and self._open == 0 and self._children:
                            await self._orphans()
                            continue
                        self._changed = anyio.Event()
                        await self._changed.wait()
                    for poller in self._pollers.values():
                        poller.wake()  # each ends, having no task left
                    tg.cancel_scope.cancel()  # the stop watcher, all that is left
            finally:
                self._lines.close()  # its last lines written and synced

    def idle(self) -> bool:
        return self._input_done and self._open == 0 and not self._children

    def input_done(self) -> None:
        """No row will come any more: `serve` ends once the open tasks have."""
        self._input_done = True
        self._changed.set()

    async def start(self, request: Request, family: Family) -> Record | None:
        """Submit (or resume) the task of `request`: None once a poller has it (or the run
        stopped while it waited for room: it stays pending); otherwise the row's final record
        (a rejection, a failed or unknown submit). Raises FatalRunError."""
        entry = self.journal.entries.get(request.row)
        if entry is not None and entry.request_sha256 != request.request_sha256:
            entry = None  # the row changed since (--update): a new request, a new task
        if entry is not None and not entry.finished:
            if entry.task_id is not None:  # already submitted: poll it
                if not await self._wait_for_room():
                    return None
                self._open += 1
                age_s = max(0.0, time.time() - (entry.submitted_at or time.time()))
                self._hand_over(request, family, entry.task_id, attempts=0, age_s=age_s)
                return None
            if not self.settings.resubmit_unknown:
                self.counts.unknown += 1
                why = "its submit was in flight when an earlier run stopped"
                return self._settled(request, unknown_record(request, why))
            self.counts.resubmitted += 1
        if request.after is not None:
            return self._settled(request, await self._follow(request, family))
        if not await self._wait_for_room():
            return None
        self._open += 1
        handed_over = False
        try:
            record = await self._submit(request, family)
            handed_over = record is None
            return self._settled(request, record)
        finally:
            if not handed_over:
                self._end()

    def _settled(self, request: Request, record: Record | None) -> Record | None:
        """A task row that ended without a task (rejected, unknown): its follow-ups fail."""
        if record is not None:
            self._start_children(request.custom_id, None, record.error_message or "no reason")
        return record

    async def _follow(self, request: Request, family: Family) -> Record | None:
        """A follow-up row: submitted once its parent's task has succeeded (now, if it has),
        task_failed if the parent failed; until then it waits without holding the worker."""
        assert request.after is not None
        end = self._journaled_end(request.after)
        if end is None:
            self._children.setdefault(request.after, []).append((request, family))
            return None
        self._open += 1
        handed_over = False
        try:
            record = await self._child(request, family, *end)
            handed_over = record is None
            return record
        finally:
            if not handed_over:
                self._end()

    async def _child(
        self, request: Request, family: Family, parent: Any, failure: str | None
    ) -> Record | None:
        if failure is not None:
            message = f"its parent {request.after} failed: {failure}"
            return error_record(request, ErrorType.TASK_FAILED, message)
        try:
            body = family.follow_up(json.loads(request.body), parent)
        except ValueError as exc:
            return error_record(request, ErrorType.INVALID_REQUEST, str(exc))
        send_as = dataclasses.replace(request, body=json.dumps(body).encode())
        return await self._submit(request, family, send_as=send_as)

    def _journaled_end(self, custom_id: str) -> tuple[Any, str | None] | None:
        """(state, failure) of a parent that ended, in this run or an earlier one, from the
        journal; None while it has not ended (or ended submit_unknown: see _orphans)."""
        entry = self.journal.by_custom_id(custom_id)
        end = None if entry is None else entry.end
        if entry is None or end is None:
            return None
        if not end.ok:
            return None, end.reason or "no reason given"
        state = TaskState(task_id=entry.task_id or "", status="success", body=end.view)
        return state, None

    def _start_children(self, custom_id: str, state: Any, failure: str | None) -> None:
        for request, family in self._children.pop(custom_id, []):
            self._open += 1  # before this task ends, so that serve does not end meanwhile
            assert self._tg is not None
            self._tg.start_soon(self._run_child, request, family, state, failure)

    async def _run_child(
        self, request: Request, family: Family, state: Any, failure: str | None
    ) -> None:
        handed_over = False
        try:
            record = self._settled(request, await self._child(request, family, state, failure))
            handed_over = record is None
            if record is not None:
                await self._put(record)
        finally:
            if not handed_over:
                self._end()

    async def _orphans(self) -> None:
        """Follow-ups whose parent never ended: no task row of the input has its custom_id
        (bad_input), or its submit may have been accepted in an earlier run (task_failed)."""
        while self._children:  # one parent at a time: an orphan's own follow-ups fail with it
            parent = next(iter(self._children))
            waiting = self._children.pop(parent)
            entry = self.journal.by_custom_id(parent)
            if entry is not None and entry.state == "intent":
                error_type = ErrorType.TASK_FAILED
                why = f"its parent {parent} ended submit_unknown (it may have been accepted)"
            else:
                error_type = ErrorType.BAD_INPUT
                why = (
                    f"'after' names {parent!r}, which is no task row of this input (no row has "
                    "that custom_id, or its row starts no task)"
                )
            for request, _ in waiting:
                self.counts.failed += 1
                record = self._settled(request, error_record(request, error_type, why))
                assert record is not None
                await self._put(record)

    async def _submit(
        self, request: Request, family: Family, *, send_as: Request | None = None
    ) -> Record | None:
        intent = TaskLine(
            step="intent",
            row=request.row,
            custom_id=request.custom_id,
            request_sha256=request.request_sha256,
        )
        await self._durable(intent)
        once = OnceOnly(lambda status, body: _rejection(family, status, body))
        record = await self._sender.send(send_as or request, once=once)
        record = dataclasses.replace(record, request_sha256=request.request_sha256)
        if not record.ok:
            if record.error_type == ErrorType.SUBMIT_UNKNOWN:
                self.counts.unknown += 1
            else:  # the gateway answered: no task was made, a later pass may send it again
                end = TaskEnd(ok=False, reason=record.error_message)
                self._lines.add(TaskLine(step="finished", row=request.row, end=end))
            return record
        answer = json.loads(record.response or "null")
        task_id = _accepted(family.read_submit(record.http_status or 200, answer))
        if task_id is None:
            self.counts.unknown += 1
            why = f"HTTP {record.http_status} without a task id in the answer"
            return unknown_record(request, why, record)
        await self._durable(TaskLine(step="submitted", row=request.row, task_id=task_id))
        self._hand_over(request, family, task_id, attempts=record.attempts, age_s=0.0)
        return None

    async def _durable(self, line: TaskLine) -> None:
        try:
            await self._lines.put_synced(line)
        except OSError as exc:
            raise FatalRunError("journal", self._cannot_write(exc)) from exc

    async def _wait_for_room(self) -> bool:
        """Wait until fewer than max_tasks are open; False if the run stops meanwhile."""
        while self._open >= self.settings.max_tasks and not self._control.stopping:
            if self._room.is_set():  # a new one for every waiter that still finds no room
                self._room = anyio.Event()
            await self._room.wait()
        return not self._control.stopping

    def _hand_over(
        self, request: Request, family: Family, task_id: str, *, attempts: int, age_s: float
    ) -> None:
        if self._control.stopping:
            return  # its task id is in the journal: the resume polls it
        poller = self._pollers.get(family)
        if poller is None:
            settings = self.settings
            poller = self._pollers[family] = Poller(
                family,
                self,
                self._sender,
                interval_s=settings.poll_interval_s or family.refresh_s,
                timeout_s=settings.task_timeout_s or family.timeout_s,
                polls_per_s=settings.polls_per_s,
            )
            assert self._tg is not None, "TaskRunner.start is for a runner being served"
            self._tg.start_soon(poller.run)
        now = anyio.current_time()
        task = Task(
            request=request,
            task_id=task_id,
            started=now - age_s,
            next_poll=now + poller.interval_s,
            attempts=attempts,
            timeout_s=poller.timeout_s,
        )
        self.counts.submitted += 1
        self.counts.running[task_id] = task.started
        poller.add(task)

    def ended(self, task: Task, state: Any | None) -> None:
        """A poller's task reached its end (`state`), or its timeout (None)."""
        self.counts.running.pop(task.task_id, None)
        assert self._tg is not None
        self._tg.start_soon(self._record, task, state)

    async def _record(self, task: Task, state: Any | None) -> None:
        try:
            if state is not None and state.status == "success":
                record = await self._success(task, state)
            else:
                record = failure_record(task, state)
            if record.ok:
                self.counts.done += 1
            else:
                self.counts.failed += 1
            failure = None if record.ok else record.error_message or "no reason given"
            end = self._end_of(task, state, failure)
            try:
                await self._lines.put_synced(TaskLine(step="ended", row=task.request.row, end=end))
            except OSError as exc:  # the run stops; a resume polls the task again
                self._journal_failed(exc)
                return
            self._start_children(task.request.custom_id, state, failure)
            await self._put(record)
        finally:
            self._end()

    def _end_of(self, task: Task, state: Any, failure: str | None) -> TaskEnd:
        if failure is not None:
            return TaskEnd(ok=False, reason=failure)
        family = self.family_for(task.request)
        return TaskEnd.of(ok=True, view=family.follow_up_view(state) if family else None)

    async def _success(self, task: Task, state: Any) -> Record:
        async with self._downloads:
            saved, problems = await save_media(
                self._http, self._media, task, state.media_urls, timeout_s=self._media_timeout_s
            )
        return task_record(
            task,
            status="ok",
            response=json.dumps(state.body, ensure_ascii=False),
            media=tuple(saved) or None,
            error_message="; ".join(problems) or None,
        )

    def _end(self) -> None:
        self._open -= 1
        self._room.set()
        self._changed.set()

    def committed(self, rows: Iterable[int]) -> None:
        """The writer committed these rows' records (from its thread): `finished` lines."""
        self.journal.finish(rows)

    def figures(self) -> str | None:
        """For the progress line: submitted / running / done / failed, the oldest's age."""
        c = self.counts
        if not (c.submitted or c.unknown):
            return None
        text = f"tasks: {c.submitted} submitted, {len(c.running)} running, {c.done} done, "
        text += f"{c.failed} failed"
        if c.running:
            text += f", oldest {anyio.current_time() - min(c.running.values()):.0f} s"
        return text

    async def _cancel_on_stop(self, scope: anyio.CancelScope) -> None:
        await self._control.wait_stopped()
        self._room.set()  # workers waiting for room give up
        scope.cancel()  # tasks stay submitted in the journal: a resume polls them

    def _cannot_write(self, exc: OSError) -> str:
        return f"cannot write the task journal {self.journal.path}: {exc.strerror or exc}"

    def _journal_failed(self, exc: OSError) -> None:
        self._control.stop(self._cannot_write(exc), fatal=True)


def _rejection(family: Family, status: int, body: Any) -> str | None:
    answer = family.read_submit(status, body)
    return answer.message if isinstance(answer, Rejected) else None


def _accepted(answer: Any) -> str | None:
    return answer.task_id if isinstance(answer, Accepted) and answer.task_id else None
