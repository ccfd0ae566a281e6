"""Video through new-api's task relay: one family value per submit route, polled per id.

    POST /v1/video/generations  -> {"id": "task_x", "task_id": "task_x", "status": "queued"}
    GET  /v1/video/generations/{id}
        -> {"code": "success", "data": TaskDto}         TaskDto.result_url: the video
        -> {"code": "success", "data": {"task_id", "status": "succeeded", "url"}}   (Veo, live)
    POST /v1/videos              GET /v1/videos/{id} -> {"id", "status": "completed",
                                                         "progress": 100, "metadata": {"url"}}
    POST /kling/v1/videos/{text2video,image2video}   GET .../{id}

The submit answer's id is `task_id`, falling back to `id` (the notes, section 3).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from batchrun.endpoints.tasks.base import (
    DAY_S,
    Accepted,
    PollRequest,
    Rejected,
    TaskFamily,
    TaskState,
    as_dict,
    as_str,
    is_2xx,
    unique,
)
from batchrun.endpoints.tasks.common import envelope_data, status_of, task_id_of

__all__ = ["Video", "video_family"]


def _fail_reason(task: dict[str, Any]) -> str:
    error = task.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    return as_str(task.get("fail_reason")) or as_str(error) or "the task failed"


def _urls(task: dict[str, Any]) -> tuple[str, ...]:
    raw = as_dict(task.get("data"))
    kling = as_dict(raw.get("task_result")).get("videos") or ()
    return unique(
        [
            task.get("result_url"),
            task.get("url"),
            as_dict(task.get("metadata")).get("url"),
            *(as_dict(v).get("url") for v in kling),
        ]
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Video(TaskFamily):
    poll_prefix: str = "/v1/video/generations"  # GET {poll_prefix}/{id}

    def read_submit(self, status: int, body: Any) -> Accepted | Rejected | None:
        if not is_2xx(status) or not isinstance(body, dict):
            return None
        ok, data = envelope_data(body)
        task = as_dict(data) if ok else body
        task_id = as_str(task.get("task_id")) or as_str(task.get("id"))
        if task_id is None and ok:
            task_id = as_str(data)
        if task_id is not None:
            return Accepted(task_id, body)
        if "code" in body and not ok:
            return Rejected(f"{as_str(body.get('message')) or 'rejected'} (code {body['code']})")
        return None

    def poll(self, ids: Sequence[str]) -> PollRequest:
        (task_id,) = ids
        return PollRequest("GET", f"{self.poll_prefix}/{urllib.parse.quote(task_id, safe='')}")

    def read_poll(self, status: int, body: Any, ids: Sequence[str]) -> dict[str, TaskState]:
        if not is_2xx(status) or not isinstance(body, dict):
            return {}
        ok, data = envelope_data(body)
        if "code" in body and not ok:
            return {}
        task = as_dict(data) if ok else body
        task_id = task_id_of(task, ids) or (ids[0] if len(ids) == 1 and task else None)
        if task_id is None:
            return {}
        state, progress = status_of(task)
        return {
            task_id: TaskState(
                task_id=task_id,
                status=state,
                progress=progress,
                fail_reason=_fail_reason(task) if state == "failure" else None,
                media_urls=_urls(task) if state == "success" else (),
                body=body,
            )
        }


def video_family(submit_path: str) -> Video:
    """The family of a video submit route: its polls go to that route's own fetch."""
    prefix = submit_path.rstrip("/")
    if prefix.startswith("/v1/videos/"):  # /v1/videos/{id}/remix makes a new /v1/videos task
        prefix = "/v1/videos"
    return Video(name="video", timeout_s=DAY_S, poll_prefix=prefix)
