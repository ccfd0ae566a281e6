"""The Responses API in background mode: `"background": true` on `POST /v1/responses`.

    POST /v1/responses {"model", "input", "background": true} -> {"id": "resp_...",
                                                                   "status": "queued"}
    GET  /v1/responses/{id}  -> status queued | in_progress | completed | failed | cancelled |
                                incomplete; a completed one carries `output` (and its text)

For servers that support it: upstream new-api drops `background` and has no GET route (the
notes, section 6), so there a background row fails its first polls with 404.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from batchrun.endpoints.answers import responses_answer
from batchrun.endpoints.tasks.base import (
    DAY_S,
    Accepted,
    PollRequest,
    Rejected,
    TaskFamily,
    TaskState,
    TaskStatus,
    as_dict,
    as_str,
    is_2xx,
)

__all__ = ["RESPONSES", "Responses", "output_text"]

_STATUSES: dict[str, TaskStatus] = {
    "queued": "pending",
    "in_progress": "running",
    "completed": "success",
    "failed": "failure",
    "cancelled": "failure",
    "incomplete": "failure",
}


def output_text(body: Any) -> str | None:
    """The text of a completed response (`output_text`, else its output messages' text)."""
    return responses_answer(as_dict(body)).text


def _fail_reason(body: dict[str, Any], status: str) -> str:
    error = as_dict(body.get("error"))
    if message := as_str(error.get("message")):
        return message
    reason = as_str(as_dict(body.get("incomplete_details")).get("reason"))
    return f"the response ended {status}" + (f" ({reason})" if reason else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class Responses(TaskFamily):
    def read_submit(self, status: int, body: Any) -> Accepted | Rejected | None:
        if not is_2xx(status) or not isinstance(body, dict):
            return None
        response_id = as_str(body.get("id"))
        if response_id is None or body.get("status") not in _STATUSES:
            return None
        return Accepted(response_id, body)

    def poll(self, ids: Sequence[str]) -> PollRequest:
        (response_id,) = ids
        return PollRequest("GET", f"/v1/responses/{urllib.parse.quote(response_id, safe='')}")

    def read_poll(self, status: int, body: Any, ids: Sequence[str]) -> dict[str, TaskState]:
        if not is_2xx(status) or not isinstance(body, dict):
            return {}
        response_id = as_str(body.get("id"))
        raw = body.get("status")
        if (
            response_id is None
            or response_id not in ids
            or not isinstance(raw, str)
            or raw not in _STATUSES
        ):
            return {}
        state = _STATUSES[raw]
        return {
            response_id: TaskState(
                task_id=response_id,
                status=state,
                fail_reason=_fail_reason(body, raw) if state == "failure" else None,
                body=body,
            )
        }


# OpenAI's own docs poll a background response every couple of seconds; no 15 s gateway cache.
RESPONSES = Responses(name="responses", timeout_s=DAY_S, refresh_s=5.0)
