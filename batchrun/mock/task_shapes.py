"""What the mock's task families say about a task: the JSON of each family's routes.

A `MockTask` is the mock's record of one task; `Phase` is where the gateway last saw it (at its
last refresh tick, `batchrun.mock.tasks`). The builders here turn the two into the shapes the
notes describe (../shared/notes/gateway-formats.md, sections 1-3 and 6): Midjourney's task DTO
with `buttons`, Suno's `TaskDto` with clips, both video fetch shapes (new-api's envelope, Veo's
live answer, the OpenAI video object) and the Responses object. Pure: no clock, no state.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from batchrun.mock.images import MEDIA_PREFIX
from batchrun.mock.mediafiles import mp3_name, mp4_name

__all__ = [
    "MockTask",
    "Phase",
    "mj_buttons",
    "mj_task",
    "responses_object",
    "suno_task",
    "veo_answer",
    "video_object",
    "video_task",
]

Phase = Literal["new", "submitted", "running", "success", "failure"]

FAIL_REASON = "mock failure: the upstream job failed (mock_task=fail)"
_CLIP_SECONDS = 2
_MJ_STATUS = {"new": "", "submitted": "SUBMITTED", "running": "IN_PROGRESS",
              "success": "SUCCESS", "failure": "FAILURE"}  # fmt: skip
_TASK_STATUS = _MJ_STATUS | {"new": "NOT_START"}
_OPENAI_VIDEO_STATUS = {"new": "queued", "submitted": "queued", "running": "in_progress",
                        "success": "completed", "failure": "failed"}  # fmt: skip
_VEO_STATUS = _OPENAI_VIDEO_STATUS | {"running": "processing", "success": "succeeded"}
_RESPONSES_STATUS = _OPENAI_VIDEO_STATUS


@dataclass(slots=True, kw_only=True)
class MockTask:
    task_id: str
    family: Literal["mj", "suno", "video", "responses"]
    prompt: str
    outcome: Literal["fail", "never"] | None  # a body's mock_task; None: it succeeds
    created_s: float  # on the app's clock
    created_unix: float
    duration_s: float
    seq: int
    action: str = ""  # MJ: IMAGINE / UPSCALE / VARIATION / REROLL; Suno: MUSIC / LYRICS
    model: str = ""
    label: str = ""  # MJ: the button of the parent that made this task (U1, V2, ...)
    final: Any = None  # Responses: the completed response object

    @property
    def finish_unix(self) -> float:
        return self.created_unix + self.duration_s

    def media_url(self, public_url: str, name: str, ttl_s: float) -> str:
        # Valid for ttl_s from the task's end: the same URL on every poll.
        return f"{public_url}{MEDIA_PREFIX}{name}?expires={int(self.finish_unix + ttl_s)}"


def _hex(text: str, size: int) -> str:
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


def _percent(phase: Phase, fraction: float) -> str:
    if phase == "success":
        return "100%"
    return f"{int(fraction * 100)}%"


def _times_ms(task: MockTask, phase: Phase) -> tuple[int, int, int]:
    submit = int(task.created_unix * 1000)
    start = submit if phase != "new" else 0
    finish = int(task.finish_unix * 1000) if phase in ("success", "failure") else 0
    return submit, start, finish


def mj_buttons(task: MockTask) -> list[dict[str, Any]]:
    """The buttons of a finished task: a grid's U1..U4, reroll and V1..V4; an upscale's vary."""
    job = str(uuid.UUID(_hex(task.task_id, 16)))

    def button(custom_id: str, label: str, emoji: str = "") -> dict[str, Any]:
        return {"customId": custom_id, "emoji": emoji, "label": label, "type": 2, "style": 2}

    if task.action == "UPSCALE":
        return [button(f"MJ::JOB::variation::1::{job}::SOLO", "Vary (Strong)", "🪄")]
    return [
        *(button(f"MJ::JOB::upsample::{i}::{job}", f"U{i}") for i in range(1, 5)),
        button(f"MJ::JOB::reroll::0::{job}::SOLO", "", "🔄"),
        *(button(f"MJ::JOB::variation::{i}::{job}", f"V{i}") for i in range(1, 5)),
    ]


def mj_task(
    task: MockTask, phase: Phase, fraction: float, *, public_url: str, ttl_s: float
) -> dict[str, Any]:
    """`GET /mj/task/{id}/fetch` (and each item of list-by-condition)."""
    submit, start, finish = _times_ms(task, phase)
    image_url = ""
    if phase == "success":
        side = 512 if task.action == "UPSCALE" else 256
        image_url = task.media_url(
            public_url, f"{_hex(task.task_id, 8)}-{side}x{side}-0.png", ttl_s
        )
    return {
        "id": task.task_id,
        "action": task.action,
        "customId": "",
        "botType": "MID_JOURNEY",
        "prompt": task.prompt,
        "promptEn": task.prompt,
        "description": "Submit success",
        "state": "",
        "submitTime": submit,
        "startTime": start,
        "finishTime": finish,
        "imageUrl": image_url,
        "status": _MJ_STATUS[phase],
        "progress": "0%" if phase in ("new", "submitted") else _percent(phase, fraction),
        "failReason": FAIL_REASON if phase == "failure" else "",
        "buttons": mj_buttons(task) if phase == "success" else [],
        "properties": {"finalPrompt": task.prompt, "finalZhPrompt": ""},
    }


def _clips(task: MockTask, phase: Phase, *, public_url: str, ttl_s: float) -> Any:
    if phase not in ("running", "success"):
        return None
    done = phase == "success"
    if task.action == "LYRICS":
        if not done:
            return None
        lyrics = f"[Verse]\n{task.prompt}\n[Chorus]\n{task.prompt}"
        return {"id": task.task_id, "text": lyrics, "title": task.prompt[:40], "status": "complete"}
    clips = []
    for n in range(2):
        name = mp3_name(f"{task.task_id}/{n}", _CLIP_SECONDS, n)
        cover = f"{_hex(f'{task.task_id}/{n}', 8)}-64x64-0.png"
        clips.append(
            {
                "id": str(uuid.UUID(_hex(f"{task.task_id}/{n}", 16))),
                "title": task.prompt[:40],
                "status": "complete" if done else "streaming",
                "audio_url": task.media_url(public_url, name, ttl_s) if done else "",
                "image_url": task.media_url(public_url, cover, ttl_s) if done else "",
                "video_url": "",
                "model_name": task.model or "chirp-v3-5",
                "metadata": {"prompt": task.prompt, "duration": _CLIP_SECONDS if done else None},
            }
        )
    return clips


def _task_dto(task: MockTask, phase: Phase, fraction: float) -> dict[str, Any]:
    """new-api's TaskDto (`dto/task.go`), times in seconds."""
    submit, start, finish = _times_ms(task, phase)
    return {
        "id": task.seq,
        "task_id": task.task_id,
        "action": task.action,
        "status": _TASK_STATUS[phase],
        "fail_reason": FAIL_REASON if phase == "failure" else "",
        "submit_time": submit // 1000,
        "start_time": start // 1000,
        "finish_time": finish // 1000,
        "progress": {"new": "0%", "submitted": "10%"}.get(phase) or _percent(phase, fraction),
        "properties": {"input": task.prompt},
    }


def suno_task(
    task: MockTask, phase: Phase, fraction: float, *, public_url: str, ttl_s: float
) -> dict[str, Any]:
    dto = _task_dto(task, phase, fraction) | {"platform": "suno"}
    dto["data"] = _clips(task, phase, public_url=public_url, ttl_s=ttl_s)
    return dto


def _video_url(task: MockTask, public_url: str, ttl_s: float) -> str:
    return task.media_url(public_url, mp4_name(task.task_id, 0), ttl_s)


def video_task(
    task: MockTask, phase: Phase, fraction: float, *, public_url: str, ttl_s: float
) -> dict[str, Any]:
    """`GET /v1/video/generations/{id}`: new-api's envelope around a TaskDto."""
    dto = _task_dto(task, phase, fraction) | {"platform": "kling"}
    if phase == "success":
        dto["result_url"] = _video_url(task, public_url, ttl_s)
    dto["data"] = {
        "task_status": {"success": "succeed", "failure": "failed"}.get(phase, "processing")
    }
    return {"code": "success", "message": "", "data": dto}


def veo_answer(
    task: MockTask, phase: Phase, fraction: float, *, public_url: str, ttl_s: float
) -> dict[str, Any]:
    """`GET /v1/video/generations/{id}` of a Veo (Gemini) channel: fetched live upstream."""
    data: dict[str, Any] = {"task_id": task.task_id, "status": _VEO_STATUS[phase],
                            "format": "mp4", "error": None, "metadata": None}  # fmt: skip
    if phase == "success":
        data["url"] = _video_url(task, public_url, ttl_s)
    if phase == "failure":
        data["error"] = {"message": FAIL_REASON, "code": "mock_failure"}
    return {"code": "success", "data": data}


def video_object(
    task: MockTask, phase: Phase, fraction: float, *, public_url: str, ttl_s: float
) -> dict[str, Any]:
    """`POST /v1/videos` and `GET /v1/videos/{id}`: an OpenAI video object."""
    body: dict[str, Any] = {
        "id": task.task_id,
        "task_id": task.task_id,
        "object": "video",
        "model": task.model,
        "status": _OPENAI_VIDEO_STATUS[phase],
        "progress": 100 if phase == "success" else int(fraction * 100),
        "created_at": int(task.created_unix),
    }
    if phase == "success":
        body["completed_at"] = int(task.finish_unix)
        body["metadata"] = {"url": _video_url(task, public_url, ttl_s)}
    if phase == "failure":
        body["error"] = {"message": FAIL_REASON, "code": "mock_failure"}
    return body


def responses_object(task: MockTask, phase: Phase) -> dict[str, Any]:
    """`GET /v1/responses/{id}` of a background response."""
    if phase == "success":
        return dict(task.final)
    body: dict[str, Any] = {
        "id": task.task_id,
        "object": "response",
        "created_at": int(task.created_unix),
        "status": _RESPONSES_STATUS[phase],
        "background": True,
        "model": task.model,
        "output": [],
        "usage": None,
        "error": None,
    }
    if phase == "failure":
        body["error"] = {"code": "server_error", "message": FAIL_REASON}
    return body
