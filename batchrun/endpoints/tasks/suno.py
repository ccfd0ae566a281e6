"""Suno through new-api's task relay (`/suno/...` at the gateway's root).

    POST /suno/submit/music {"prompt", "mv", "title", "tags", ...}
        -> {"code": "success", "message": "", "data": "task_..."}
    POST /suno/fetch {"ids": [...], "action": "MUSIC"}
        -> {"code": "success", "data": [TaskDto, ...]}   (TaskDto.data: the clips)
    GET  /suno/fetch/{id}  -> {"code": "success", "data": TaskDto}

A song's files are its clips' `audio_url`s (`data[].audio_url`); `result_url` is not used, as it
falls back to the fail reason when no URL is stored (the notes, section 2).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

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

__all__ = ["SUNO_LYRICS", "SUNO_MUSIC", "Suno"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Suno(TaskFamily):
    action: Literal["MUSIC", "LYRICS"] = "MUSIC"

    def read_submit(self, status: int, body: Any) -> Accepted | Rejected | None:
        if not is_2xx(status) or not isinstance(body, dict) or "code" not in body:
            return None
        ok, data = envelope_data(body)
        if not ok:
            message = as_str(body.get("message")) or "rejected"
            return Rejected(f"{message} (code {body.get('code')})")
        task_id = as_str(data)
        return None if task_id is None else Accepted(task_id, body)

    def poll(self, ids: Sequence[str]) -> PollRequest:
        return PollRequest("POST", "/suno/fetch", {"ids": list(ids), "action": self.action})

    def read_poll(self, status: int, body: Any, ids: Sequence[str]) -> dict[str, TaskState]:
        ok, data = envelope_data(body)
        if not is_2xx(status) or not ok:
            return {}
        states: dict[str, TaskState] = {}
        for task in data if isinstance(data, list) else [data]:
            task = as_dict(task)
            task_id = task_id_of(task, ids)
            if task_id is None:
                continue
            state, progress = status_of(task)
            clips = task.get("data")
            clips = clips if isinstance(clips, list) else []
            states[task_id] = TaskState(
                task_id=task_id,
                status=state,
                progress=progress,
                fail_reason=(as_str(task.get("fail_reason")) or "the task failed")
                if state == "failure"
                else None,
                media_urls=unique(as_dict(c).get("audio_url") for c in clips)
                if state == "success"
                else (),
                body=task,
            )
        return states

    def fallback_poll(self, task_id: str) -> PollRequest | None:
        return PollRequest("GET", f"/suno/fetch/{urllib.parse.quote(task_id, safe='')}")


SUNO_MUSIC = Suno(name="suno", timeout_s=DAY_S, batch=200, action="MUSIC")
SUNO_LYRICS = Suno(name="suno", timeout_s=DAY_S, batch=200, action="LYRICS")
