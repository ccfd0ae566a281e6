"""Submit-then-poll task families: Midjourney, Suno, video, Responses background mode.

Each family says how to read a submit's answer (the task id, or the gateway's refusal), how to
poll many ids at once, how to read a poll into `TaskState`s and when a task has finished, and
how a follow-up row (Midjourney's U1..V4) becomes a submit body. Pure functions of JSON values:
no I/O, no clock; the task engine (batchrun.runner) sends, journals and paces.

    family = task_family_for("/mj/submit/imagine", {"prompt": "a cat"})    # MIDJOURNEY
    family.read_submit(200, {"code": 24, "description": "banned prompt", ...})  # Rejected
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from batchrun.endpoints.tasks.base import (
    Accepted,
    PollRequest,
    Rejected,
    TaskFamily,
    TaskState,
    TaskStatus,
)
from batchrun.endpoints.tasks.midjourney import MIDJOURNEY
from batchrun.endpoints.tasks.responses import RESPONSES, output_text
from batchrun.endpoints.tasks.suno import SUNO_LYRICS, SUNO_MUSIC
from batchrun.endpoints.tasks.video import video_family

__all__ = [
    "MIDJOURNEY",
    "RESPONSES",
    "SUNO_LYRICS",
    "SUNO_MUSIC",
    "Accepted",
    "PollRequest",
    "Rejected",
    "TaskFamily",
    "TaskState",
    "TaskStatus",
    "output_text",
    "task_family_for",
    "video_family",
]

# new-api mounts the Midjourney routes under /mj and under /{mode}/mj (e.g. /mj-fast/mj/...).
_MJ_SUBMIT = re.compile(r"^(?:/[\w.-]+)?/mj/(?:submit/[\w-]+|insight-face/swap)/?$")
_SUNO_SUBMIT = re.compile(r"^/suno/submit/(music|lyrics)/?$", re.IGNORECASE)
_VIDEO_SUBMIT = re.compile(
    r"^(?:/v1/video/generations|/v1/videos|/v1/videos/[^/]+/remix"
    r"|/kling/v1/videos/(?:text2video|image2video))/?$"
)


def task_family_for(path: str, body: Mapping[str, Any]) -> TaskFamily | None:
    """The family of a row sent to `path`, or None for a one-exchange row."""
    path = path.partition("?")[0]
    if _MJ_SUBMIT.match(path):
        return MIDJOURNEY
    if found := _SUNO_SUBMIT.match(path):
        return SUNO_LYRICS if found.group(1).lower() == "lyrics" else SUNO_MUSIC
    if _VIDEO_SUBMIT.match(path):
        return video_family(path)
    if path.rstrip("/") == "/v1/responses" and body.get("background") is True:
        return RESPONSES
    return None
