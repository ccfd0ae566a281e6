"""A task family and a task gateway for the engine's unit tests (MockTransport, no server),
on the contract's types (`batchrun.endpoints.tasks`): submit `/fake/submit`, answers
`{"code": 1, "result": id}` (or code 24, "banned prompt", on HTTP 200), polled in batches with
`POST /fake/list` (`{"ids": [...]}`, a bare array back), `GET /fake/task/{id}` alone.

Prompts steer a task: "fail" ends FAILURE, "banned" is rejected, "slow" never ends, "timeout"
makes the submit time out after the task was made.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2

from batchrun.endpoints.tasks import Accepted, PollRequest, Rejected, TaskState
from tests.helpers import completion

GATEWAY = "http://gw.test/v1"
CDN = "http://cdn.test"


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeFamily:
    name: str = "fake"
    timeout_s: float = 3600.0
    refresh_s: float = 0.05
    batch: int = 50

    def read_submit(self, status: int, body: Any) -> Accepted | Rejected | None:
        if not isinstance(body, dict) or "code" not in body:
            return None
        if body["code"] == 1:
            return Accepted(str(body["result"]), body)
        return Rejected(f"{body.get('description')} (code {body['code']})")

    def poll(self, ids: Sequence[str]) -> PollRequest:
        return PollRequest("POST", "/fake/list", {"ids": list(ids)})

    def read_poll(self, status: int, body: Any, ids: Sequence[str]) -> dict[str, TaskState]:
        items = body if isinstance(body, list) else [body]
        return {item["id"]: _state(item) for item in items if isinstance(item, dict)}

    def fallback_poll(self, task_id: str) -> PollRequest | None:
        return PollRequest("GET", f"/fake/task/{task_id}")

    def follow_up_view(self, state: TaskState) -> Any:
        return None

    def follow_up(self, body: Mapping[str, Any], parent: TaskState) -> dict[str, Any]:
        raise ValueError("the fake family has no follow-ups")


_STATUS = {"": "pending", "SUBMITTED": "pending", "IN_PROGRESS": "running",
           "SUCCESS": "success", "FAILURE": "failure"}  # fmt: skip


def _state(item: dict[str, Any]) -> TaskState:
    return TaskState(
        task_id=item["id"],
        status=_STATUS[item["status"]],  # type: ignore[arg-type]
        progress=item.get("progress"),
        fail_reason=item.get("failReason") or None,
        media_urls=tuple(u for u in [item.get("imageUrl")] if u),
        body=item,
    )


def families(family: FakeFamily) -> Callable[[str, Mapping[str, Any]], FakeFamily | None]:
    return lambda path, body: family if path.startswith("/fake/submit") else None


@dataclass
class _Made:
    prompt: str
    made_at: float
    duration_s: float


@dataclass
class FakeGateway:
    """The gateway's side: a task lifecycle by the clock, and what it was asked."""

    duration_s: float = 0.15
    submit_faults: dict[str, list[int]] = field(default_factory=dict)  # prompt -> statuses
    poll_faults: list[int] = field(default_factory=list)  # statuses for the next polls
    on_submit: Callable[[int], None] | None = None  # called with the number of submits
    tasks: dict[str, _Made] = field(default_factory=dict)
    submits_by_prompt: Counter[str] = field(default_factory=Counter)
    polls: list[int] = field(default_factory=list)  # ids per poll request
    media_headers: list[dict[str, str]] = field(default_factory=list)
    chats: int = 0
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self.handle)

    def open_tasks(self) -> int:
        now = time.monotonic()
        return sum(
            1 for t in self.tasks.values() if self._status(t, now) not in ("SUCCESS", "FAILURE")
        )

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        with self._lock:
            if request.url.host == "cdn.test":
                self.media_headers.append(dict(request.headers))
                return httpx2.Response(
                    200, content=b"\x89PNG fake", headers={"content-type": "image/png"}
                )
            if path.endswith("/chat/completions"):
                self.chats += 1
                body = json.loads(request.content)
                return httpx2.Response(200, json=completion(body))
            if path.endswith("/fake/submit"):
                return self._submit(request)
            if path.endswith("/fake/list"):
                ids = json.loads(request.content)["ids"]
                self.polls.append(len(ids))
                if self.poll_faults:
                    return httpx2.Response(
                        self.poll_faults.pop(0), json={"error": {"message": "poll fault"}}
                    )
                now = time.monotonic()
                return httpx2.Response(
                    200, json=[self._item(i, now) for i in ids if i in self.tasks]
                )
            if "/fake/task/" in path:
                task_id = path.rsplit("/", 1)[1]
                self.polls.append(1)
                return httpx2.Response(200, json=self._item(task_id, time.monotonic()))
        return httpx2.Response(404, json={"error": {"message": "not found"}})

    def _submit(self, request: httpx2.Request) -> httpx2.Response:
        prompt = json.loads(request.content)["prompt"]
        faults = self.submit_faults.get(prompt)
        if faults:
            return httpx2.Response(faults.pop(0), json={"error": {"message": "submit fault"}})
        self.submits_by_prompt[prompt] += 1
        if self.on_submit is not None:
            self.on_submit(sum(self.submits_by_prompt.values()))
        if "banned" in prompt:
            return httpx2.Response(200, json={"code": 24, "description": "banned prompt: banned"})
        task_id = f"t{next(self._ids)}"
        self.tasks[task_id] = _Made(prompt, time.monotonic(), self.duration_s)
        if "timeout" in prompt:
            raise httpx2.ReadTimeout("timed out", request=request)
        return httpx2.Response(200, json={"code": 1, "description": "ok", "result": task_id})

    def _status(self, task: _Made, now: float) -> str:
        age = now - task.made_at
        if "slow" in task.prompt or age < task.duration_s / 3:
            return "" if age < task.duration_s / 3 else "IN_PROGRESS"
        if age < task.duration_s:
            return "IN_PROGRESS"
        return "FAILURE" if "fail" in task.prompt else "SUCCESS"

    def _item(self, task_id: str, now: float) -> dict[str, Any]:
        task = self.tasks[task_id]
        status = self._status(task, now)
        item: dict[str, Any] = {"id": task_id, "status": status, "prompt": task.prompt,
                                "progress": "100%" if status == "SUCCESS" else "50%"}  # fmt: skip
        if status == "SUCCESS":
            item["imageUrl"] = f"{CDN}/{task_id}.png"
        if status == "FAILURE":
            item["failReason"] = "the picture could not be made"
        return item
