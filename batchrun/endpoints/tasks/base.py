"""The values every task family shares, and the parts of their wire formats that repeat.

A family is pure: it builds the poll requests and reads answers (plain JSON values) into
`TaskState`s. It never sends anything, sleeps or keeps state between calls, so the engine can
ask it from any worker and a resume asks the same questions again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "Accepted",
    "PollRequest",
    "Rejected",
    "TaskFamily",
    "TaskState",
    "TaskStatus",
    "as_dict",
    "as_str",
    "is_2xx",
    "progress_of",
    "unique",
]

TaskStatus = Literal["pending", "running", "success", "failure"]

DEFAULT_REFRESH_S = 15.0  # new-api refreshes MJ, Suno and video task state every 15 s
HOUR_S = 3600.0
DAY_S = 86400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskState:
    """One task as the gateway last described it."""

    task_id: str
    status: TaskStatus
    progress: str | None = None  # as the gateway says it ("45%"), for progress display
    fail_reason: str | None = None
    media_urls: tuple[str, ...] = ()  # every file the task produced (grid, clips, video), in order
    body: Any = None  # the task's JSON as last polled: it becomes the record's `response`

    @property
    def finished(self) -> bool:
        return self.status in ("success", "failure")


@dataclass(frozen=True, slots=True)
class Accepted:
    """The gateway took the submit: the task exists and is being paid for."""

    task_id: str
    body: Any


@dataclass(frozen=True, slots=True)
class Rejected:
    """The gateway refused the submit for good (a retry cannot fix it): no task exists."""

    message: str


@dataclass(frozen=True, slots=True)
class PollRequest:
    method: Literal["GET", "POST"]
    path: str
    json: Any | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFamily:
    """How one family's tasks are submitted, polled and recognised as finished.

    Two instances with the same `name` may differ (Suno's music and lyrics poll with their own
    `action`, each video route polls under its own path): group ids by the family value itself,
    not by its name, when building batch polls.
    """

    name: str
    timeout_s: float  # --task-timeout default: the gateway's own hard timeout
    refresh_s: float = DEFAULT_REFRESH_S  # never poll one task faster than this
    batch: int = 1  # ids per poll request

    def read_submit(self, status: int, body: Any) -> Accepted | Rejected | None:
        """The task id of an accepted submit, or the gateway's refusal; None when the answer
        is not this family's shape (a non-2xx the engine's retry rules judge, or a 2xx that
        names no task: the submit may have been accepted)."""
        raise NotImplementedError

    def poll(self, ids: Sequence[str]) -> PollRequest:
        """The request that asks for these ids (at most `batch` of them)."""
        raise NotImplementedError

    def read_poll(self, status: int, body: Any, ids: Sequence[str]) -> dict[str, TaskState]:
        """The states the answer holds, by task id; ids absent from it are absent here (poll
        them again). A non-2xx answer holds none."""
        raise NotImplementedError

    def fallback_poll(self, task_id: str) -> PollRequest | None:
        """A per-id request for an id that batch polls keep leaving out, if the family has one."""
        return None

    def follow_up_view(self, state: TaskState) -> Any:
        """The part of a succeeded task's JSON that `follow_up` reads (a plain JSON value, kept
        in the task journal so that a follow-up row finds its parent in a later run), or None
        when the family takes no follow-ups. `follow_up` accepts a parent whose `body` is it."""
        return None

    def follow_up(self, body: Mapping[str, Any], parent: TaskState) -> dict[str, Any]:
        """The submit body of a follow-up row once its parent task succeeded; ValueError when
        the row cannot be resolved against that parent."""
        raise ValueError(f"{self.name} tasks take no follow-up rows (only Midjourney actions do)")


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_str(value: Any) -> str | None:
    """A non-empty string, or None (ids may arrive as numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) and value else None


def progress_of(value: Any) -> str | None:
    """`"45%"` as given; an integer (the OpenAI video object's) as `"45%"`."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return f"{value:g}%"
    return value if isinstance(value, str) and value else None


def unique(urls: Iterable[Any]) -> tuple[str, ...]:
    """The string URLs among `urls`, in order, each once."""
    seen: dict[str, None] = {}
    for url in urls:
        if isinstance(url, str) and url:
            seen.setdefault(url, None)
    return tuple(seen)


def is_2xx(status: int) -> bool:
    return 200 <= status < 300
