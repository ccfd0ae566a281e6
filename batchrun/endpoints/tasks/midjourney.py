"""Midjourney through a new-api / midjourney-proxy gateway (`/mj/...` at the gateway's root).

    POST /mj/submit/imagine {"prompt": "..."}  -> {"code": 1, "description": "提交成功",
                                                   "result": "1712345678901234", "properties": {}}
    POST /mj/task/list-by-condition {"ids": [...]}  -> [ {task}, ... ]   (a bare array)
    GET  /mj/task/{id}/fetch                         -> {task}
    {task} = {"id", "status": "" | NOT_START | SUBMITTED | IN_PROGRESS | SUCCESS | FAILURE,
              "progress": "45%", "imageUrl", "failReason", "buttons": [{"customId", "label"}]}

Traps the notes describe: a rejection arrives as HTTP 200 with its own `code` (24 = banned
prompt, with `properties.bannedWord`), so the code decides, never the HTTP status; a new task's
status is the empty string until the gateway's first refresh; terminal is SUCCESS, FAILURE or
progress "100%".
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from batchrun.endpoints.tasks.base import (
    HOUR_S,
    Accepted,
    PollRequest,
    Rejected,
    TaskFamily,
    TaskState,
    TaskStatus,
    as_dict,
    as_str,
    is_2xx,
    progress_of,
    unique,
)

__all__ = ["MIDJOURNEY", "Midjourney", "mj_state"]

ACCEPTED_CODES = frozenset({1, 21, 22})  # submitted, already exists, queued
_CODE_MEANINGS = {
    3: "not found / no account available",
    4: "validation error",
    9: "system failure",
    23: "queue full",
    24: "banned prompt",
}
_STATUSES: dict[str, TaskStatus] = {
    "": "pending",
    "NOT_START": "pending",
    "SUBMITTED": "pending",
    "MODAL": "pending",  # waits for its /mj/submit/modal
    "UNKNOWN": "pending",
    "IN_PROGRESS": "running",
    "SUCCESS": "success",
    "FAILURE": "failure",
    "CANCEL": "failure",
}
_LIST_PATH = "/mj/task/list-by-condition"


def _rejection(body: Mapping[str, Any], code: Any) -> Rejected:
    """`可能包含敏感词: nsfw (code 24, banned prompt)`: the gateway's words, then ours."""
    meaning = _CODE_MEANINGS.get(code)
    description = as_str(body.get("description"))
    banned = as_str(as_dict(body.get("properties")).get("bannedWord"))
    if description is None:
        description, meaning = meaning or "rejected", None
    if banned is not None:
        description = f"{description}: {banned}"
    return Rejected(f"{description} (code {code}{', ' + meaning if meaning else ''})")


def mj_state(task: Mapping[str, Any]) -> TaskState | None:
    """The state of one task DTO, or None if it names no id."""
    task_id = as_str(task.get("id"))
    if task_id is None:
        return None
    raw = task.get("status")
    raw = raw.upper() if isinstance(raw, str) else ""
    progress = progress_of(task.get("progress"))
    status = _STATUSES.get(raw, "pending")
    if progress == "100%" and status != "failure":
        status = "success"
    fail_reason = None
    media: tuple[str, ...] = ()
    if status == "failure":
        fail_reason = as_str(task.get("failReason")) or f"the task ended {raw or 'FAILURE'}"
    elif status == "success":
        video_urls = [as_dict(v).get("url") for v in task.get("videoUrls") or ()]
        image_urls = [as_dict(v).get("url") for v in task.get("imageUrls") or ()]
        media = unique([task.get("imageUrl"), *image_urls, task.get("videoUrl"), *video_urls])
    return TaskState(
        task_id=task_id,
        status=status,
        progress=progress,
        fail_reason=fail_reason,
        media_urls=media,
        body=dict(task),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Midjourney(TaskFamily):
    def read_submit(self, status: int, body: Any) -> Accepted | Rejected | None:
        if not isinstance(body, dict) or "code" not in body:
            return None
        code = body["code"]
        if isinstance(code, str) and code.isdigit():
            code = int(code)
        if status == 429:  # MJ code 30 (rate limited) arrives as HTTP 429: retry rules apply
            return None
        if is_2xx(status) and code in ACCEPTED_CODES:
            task_id = as_str(body.get("result"))
            return None if task_id is None else Accepted(task_id, body)
        if not is_2xx(status) and as_str(body.get("description")) is None:
            return None  # a code without the MJ shape: the engine's rules judge it
        return _rejection(body, code)

    def poll(self, ids: Sequence[str]) -> PollRequest:
        return PollRequest("POST", _LIST_PATH, {"ids": list(ids)})

    def read_poll(self, status: int, body: Any, ids: Sequence[str]) -> dict[str, TaskState]:
        if not is_2xx(status):
            return {}
        tasks = body if isinstance(body, list) else [body] if isinstance(body, dict) else []
        wanted = set(ids)
        states: dict[str, TaskState] = {}
        for task in tasks:
            state = mj_state(task) if isinstance(task, dict) else None
            if state is not None and state.task_id in wanted:
                states[state.task_id] = state
        return states

    def fallback_poll(self, task_id: str) -> PollRequest | None:
        return PollRequest("GET", f"/mj/task/{urllib.parse.quote(task_id, safe='')}/fetch")

    def follow_up_view(self, state: TaskState) -> Any:
        """The buttons, with only what `follow_up` matches and sends."""
        buttons = [as_dict(b) for b in as_dict(state.body).get("buttons") or ()]
        keys = ("customId", "label", "emoji")
        return {"buttons": [{k: b[k] for k in keys if b.get(k)} for b in buttons]}

    def follow_up(self, body: Mapping[str, Any], parent: TaskState) -> dict[str, Any]:
        """`{"button": "U1"}` -> `{"taskId": <parent>, "customId": <its button U1's>}`; the
        row's other fields are kept, and a row that names its own `customId` keeps it."""
        if parent.status != "success":
            raise ValueError(f"task {parent.task_id} has not succeeded (it is {parent.status})")
        resolved = {k: v for k, v in body.items() if k != "button"}
        resolved["taskId"] = parent.task_id
        if "customId" in body:
            return resolved
        button = body.get("button")
        if not isinstance(button, str) or not button:
            raise ValueError('a Midjourney follow-up names a "button" (e.g. "U1") or a "customId"')
        buttons = [as_dict(b) for b in as_dict(parent.body).get("buttons") or ()]
        for candidate in buttons:
            if button in (candidate.get("label"), candidate.get("emoji")):
                custom_id = as_str(candidate.get("customId"))
                if custom_id is not None:
                    resolved["customId"] = custom_id
                    return resolved
        labels = ", ".join(str(b.get("label") or b.get("emoji")) for b in buttons) or "none"
        raise ValueError(f"task {parent.task_id} has no button {button!r} (its buttons: {labels})")


MIDJOURNEY = Midjourney(name="midjourney", timeout_s=HOUR_S, batch=200)
