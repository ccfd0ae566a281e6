"""What new-api's task relay (Suno and video) shares: its status values and its envelope.

{"code": "success", "message": "", "data": <task id | TaskDto | [TaskDto, ...]>}
TaskDto = {"id": <db row>, "task_id": "task_...", "status": NOT_START | SUBMITTED | QUEUED |
           IN_PROGRESS | SUCCESS | FAILURE | UNKNOWN, "progress": "30%", "fail_reason", ...}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from batchrun.endpoints.tasks.base import TaskStatus, as_str, progress_of

__all__ = ["envelope_data", "status_of", "task_id_of"]

# Upper-cased: new-api's own, then the upstream words its fetch shapes pass through (Veo's
# live answer, the OpenAI video object, Kling, Sora).
_STATUSES: dict[str, TaskStatus] = {
    "": "pending",
    "NOT_START": "pending",
    "SUBMITTED": "pending",
    "QUEUED": "pending",
    "PENDING": "pending",
    "UNKNOWN": "pending",
    "IN_PROGRESS": "running",
    "PROCESSING": "running",
    "RUNNING": "running",
    "SUCCESS": "success",
    "SUCCEEDED": "success",
    "SUCCEED": "success",
    "COMPLETED": "success",
    "FAILURE": "failure",
    "FAILED": "failure",
    "CANCELLED": "failure",
    "CANCELED": "failure",
}


def status_of(task: Mapping[str, Any]) -> tuple[TaskStatus, str | None]:
    """(status, progress) of a task object; progress "100%" is terminal as SUCCESS is."""
    raw = task.get("status")
    status = _STATUSES.get(raw.upper() if isinstance(raw, str) else "", "pending")
    progress = progress_of(task.get("progress"))
    if progress == "100%" and status != "failure":
        status = "success"
    return status, progress


def envelope_data(body: Any) -> tuple[bool, Any]:
    """(is it the task relay's envelope with code "success", its `data`)."""
    if isinstance(body, dict) and "code" in body:
        return body.get("code") == "success", body.get("data")
    return False, None


def task_id_of(task: Mapping[str, Any], ids: Sequence[str]) -> str | None:
    """The polled id a task object answers for: `task_id`, else `id` (the notes: read task_id
    and fall back to id; TaskDto's `id` is a database row number)."""
    for key in ("task_id", "id"):
        found = as_str(task.get(key))
        if found is not None and found in ids:
            return found
    return None
