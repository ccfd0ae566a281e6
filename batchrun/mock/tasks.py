"""The mock's submit-then-poll families: Midjourney, Suno, video and Responses background mode.

    POST /mj/submit/imagine {"prompt"}        -> {"code": 1, "result": "<id>"}   (also /{mode}/mj)
    POST /mj/submit/action {"taskId", "customId"}   a button of a parent task that succeeded
    POST /mj/task/list-by-condition {"ids"}   -> [task, ...]        GET /mj/task/{id}/fetch
    POST /suno/submit/{music,lyrics}          -> {"code": "success", "data": "task_..."}
    POST /suno/fetch {"ids"}                  -> {"code": "success", "data": [TaskDto]}
    POST /v1/video/generations, /v1/videos    -> {"id", "task_id", "status": "queued"}
    GET  /v1/video/generations/{id} (Veo models: the live shape), /v1/videos/{id}
    POST /v1/responses {"background": true}   -> {"id", "status": "queued"}; GET /v1/responses/{id}

A task's state changes only at refresh ticks (`MockConfig.task_refresh_s`, as new-api's poller):
before the first tick after its submit it is new (MJ status "", progress "0%"; NOT_START), at that
tick SUBMITTED, then IN_PROGRESS with progress, and once it has run `task_duration_s` SUCCESS with
media the mock serves (`batchrun.mock.mediafiles`, `images`) or FAILURE with a reason. A body's
`"mock_task"` picks the outcome: "fail", "never" (runs for ever), "banned" (refused: MJ HTTP 200
code 24 with properties.bannedWord; Suno and video HTTP 400), "timeout_after_submit" (the task is
created, then the connection hangs). Submits and polls go through the app's ladder, so
`mock_fault` and the fault table apply to them as to chat.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import batchrun.mock.task_shapes as shapes
from batchrun.mock.config import MockConfig
from batchrun.mock.http import HttpRequest, Reply
from batchrun.mock.jobs import Invalid, Job, model_of
from batchrun.mock.native import responses_job
from batchrun.mock.payloads import error_body
from batchrun.mock.task_shapes import MockTask, Phase

__all__ = ["MOCK_TASKS", "TaskBook"]

MOCK_TASKS = ("fail", "banned", "never", "timeout_after_submit")
_MODE = r"(?:/[\w.-]+)?"


class Api(Protocol):
    def __call__(
        self, request: HttpRequest, make_job: Callable[[dict[str, Any]], Job], *, form: bool = False
    ) -> Reply: ...


Handler = Callable[[HttpRequest, re.Match[str]], Reply]


def _outcome(data: dict[str, Any]) -> str | None:
    kind = data.get("mock_task")
    if kind is not None and kind not in MOCK_TASKS:
        raise Invalid(f"mock_task must be one of: {', '.join(MOCK_TASKS)}", "mock_task")
    return kind


def _answer(body: Any, *, status: int = 200, hang: bool = False, model: str = "") -> Job:
    encoded = json.dumps(body, ensure_ascii=False).encode()
    return Job(model, 0, lambda with_usage: (encoded, 0, 0), status=status, hang=hang)


def _mj_refusal(description: str, code: int = 4) -> Job:
    return _answer({"code": code, "description": description, "type": "upstream_error"}, status=400)


def _task_error(code: str, message: str, status: int = 400) -> Job:
    return _answer({"code": code, "message": message, "data": None}, status=status)


def _prompt(data: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = data.get(name)
        if isinstance(value, str) and value:
            return value
    return None


class TaskBook:
    """Every task the mock was given, their lifecycle and the routes that serve them."""

    def __init__(
        self,
        config: MockConfig,
        *,
        api: Api,
        clock: Callable[[], float],
        public_url: Callable[[], str],
    ) -> None:
        self._config = config
        self._api = api
        self._clock = clock
        self._public_url = public_url
        duration = config.task_duration_s
        assert isinstance(duration, tuple)
        self._duration = duration
        self._patterns: list[tuple[str, re.Pattern[str], str, Handler]] = [
            ("POST", re.compile(_MODE + r"/mj/submit/imagine"), "/mj/submit/imagine",
             self._imagine),
            ("POST", re.compile(_MODE + r"/mj/submit/action"), "/mj/submit/action", self._action),
            ("POST", re.compile(_MODE + r"/mj/task/list-by-condition"),
             "/mj/task/list-by-condition", self._mj_list),
            ("GET", re.compile(_MODE + r"/mj/task/(?P<id>[^/]+)/fetch"),
             "/mj/task/{id}/fetch", self._mj_fetch),
            ("POST", re.compile(r"/suno/submit/(?P<action>music|lyrics)", re.I),
             "/suno/submit/{action}", self._suno_submit),
            ("POST", re.compile(r"/suno/fetch"), "/suno/fetch", self._suno_list),
            ("GET", re.compile(r"/suno/fetch/(?P<id>[^/]+)"), "/suno/fetch/{id}", self._suno_fetch),
            ("POST", re.compile(r"/v1/video/generations"), "/v1/video/generations",
             self._video_submit),
            ("GET", re.compile(r"/v1/video/generations/(?P<id>[^/]+)"),
             "/v1/video/generations/{id}", self._video_fetch),
            ("POST", re.compile(r"/v1/videos"), "/v1/videos", self._video_submit),
            ("GET", re.compile(r"/v1/videos/(?P<id>[^/]+)"), "/v1/videos/{id}",
             self._video_fetch),
            ("GET", re.compile(r"/v1/responses/(?P<id>[^/]+)"), "/v1/responses/{id}",
             self._responses_fetch),
        ]  # fmt: skip
        self.reset()

    def reset(self) -> None:
        self._origin = self._clock()
        self._rng = random.Random(f"{self._config.seed}/tasks")
        self._tasks: dict[str, MockTask] = {}
        self._seq = itertools.count(1)
        self._submits: Counter[str] = Counter()
        self._polls: Counter[str] = Counter()
        self._rejected = 0

    def stats(self) -> dict[str, Any]:
        """`submits_by_prompt`: submits that reached the gateway (a created task or a refusal),
        by prompt (a follow-up's is "<parent prompt> [U1]"); `polls`: poll requests by path
        (templates such as /mj/task/{id}/fetch); `by_status`: tasks by pending / running /
        success / failure as of now; `rejected`: refused submits."""
        now = self._clock()
        by_status: Counter[str] = Counter()
        for task in self._tasks.values():
            phase = self.phase(task, now)[0]
            by_status["pending" if phase in ("new", "submitted") else phase] += 1
        return {
            "submits_by_prompt": dict(self._submits),
            "polls": dict(self._polls),
            "by_status": dict(by_status),
            "created": len(self._tasks),
            "rejected": self._rejected,
        }

    # -- lifecycle ------------------------------------------------------------------------------

    def phase(self, task: MockTask, now: float) -> tuple[Phase, float]:
        """Where the gateway saw `task` at its last refresh tick, and the share of its run done."""
        refresh_s = self._config.task_refresh_s
        tick = math.floor((now - self._origin) / refresh_s)
        first = math.floor((task.created_s - self._origin) / refresh_s) + 1
        if tick < first:
            return "new", 0.0
        elapsed = self._origin + tick * refresh_s - task.created_s
        if task.outcome != "never" and elapsed >= task.duration_s:
            return ("failure" if task.outcome == "fail" else "success"), 1.0
        if tick == first:
            return "submitted", 0.0
        return "running", min(elapsed / task.duration_s if task.duration_s else 0.0, 0.99)

    def _create(self, family: Any, prompt: str, outcome: str | None, **fields: Any) -> MockTask:
        seq = next(self._seq)
        prefix = {"mj": "", "responses": "resp_mock"}.get(family, "task_")
        if family == "mj":
            task_id = f"{int(time.time() * 1000)}{seq:05d}"
        else:
            task_id = f"{prefix}{self._rng.getrandbits(128):032x}"
        low, high = self._duration
        task = MockTask(
            task_id=task_id,
            family=family,
            prompt=prompt,
            outcome="fail" if outcome == "fail" else "never" if outcome == "never" else None,
            created_s=self._clock(),
            created_unix=time.time(),
            duration_s=self._rng.uniform(low, high),
            seq=seq,
            **fields,
        )
        self._tasks[task_id] = task
        return task

    def _view(self, task: MockTask, builder: Callable[..., dict[str, Any]]) -> dict[str, Any]:
        phase, fraction = self.phase(task, self._clock())
        ttl_s = self._config.media_url_ttl_s
        return builder(task, phase, fraction, public_url=self._public_url(), ttl_s=ttl_s)

    def _find(self, task_id: str, family: str) -> MockTask | None:
        task = self._tasks.get(task_id)
        return task if task is not None and task.family == family else None

    # -- routing --------------------------------------------------------------------------------

    def route(self, method: str, path: str) -> tuple[str, Callable[[HttpRequest], Reply]] | None:
        """(the path's label for the counters, its handler), or None if no task route matches."""
        for want, pattern, label, handler in self._patterns:
            if want == method and (found := pattern.fullmatch(path)) is not None:
                if label.startswith(("/mj/task", "/suno/fetch")) or method == "GET":
                    self._polls[label] += 1
                return label, lambda request, found=found, h=handler: h(request, found)
        return None

    def _get(self, request: HttpRequest, make_job: Callable[[dict[str, Any]], Job]) -> Reply:
        # A poll by GET has no body: the app's ladder reads an empty JSON object.
        return self._api(dataclasses.replace(request, body=b"{}"), make_job)

    def responses_job(self, data: dict[str, Any], *, echo: bool, reply_tokens: int) -> Job:
        """`POST /v1/responses`: a background response becomes a task, any other is answered."""
        job = responses_job(data, echo=echo, reply_tokens=reply_tokens)
        if data.get("background") is not True:
            return job
        outcome = _outcome(data)
        if outcome == "banned":
            message = "Your request was rejected by the safety system (mock_task=banned)."
            return _answer(json.loads(error_body(message, "invalid_request_error")), status=400)

        def build(with_usage: bool) -> tuple[bytes, int, int]:
            answer = job.build(True)[0]
            given = data.get("input")
            prompt = given if isinstance(given, str) else json.dumps(given)
            task = self._create("responses", prompt, outcome, model=job.model)
            task.final = json.loads(answer) | {"id": task.task_id, "background": True}
            self._submits[task.prompt] += 1
            body = shapes.responses_object(task, "new")
            return json.dumps(body).encode(), 0, 0

        return Job(job.model, job.charge, build, hang=outcome == "timeout_after_submit")

    # -- Midjourney -----------------------------------------------------------------------------

    def _mj_submit(self, prompt: str, outcome: str | None, **fields: Any) -> Job:
        def build(with_usage: bool) -> tuple[bytes, int, int]:
            self._submits[prompt] += 1
            if outcome == "banned":
                self._rejected += 1
                word = prompt.split()[0]
                body = {"code": 24, "description": "可能包含敏感词", "result": None,
                        "properties": {"promptEn": prompt, "bannedWord": word}}  # fmt: skip
            else:
                task = self._create("mj", fields.pop("parent_prompt", prompt), outcome, **fields)
                body = {"code": 1, "description": "提交成功", "result": task.task_id,
                        "properties": {"discordInstanceId": "mock"}}  # fmt: skip
            return json.dumps(body, ensure_ascii=False).encode(), 0, 0

        return Job("midjourney", 0, build, hang=outcome == "timeout_after_submit")

    def _imagine(self, request: HttpRequest, found: re.Match[str]) -> Reply:
        def make_job(data: dict[str, Any]) -> Job:
            outcome = _outcome(data)
            prompt = _prompt(data, "prompt")
            if prompt is None:
                return _mj_refusal("prompt_is_required")
            return self._mj_submit(prompt, outcome, action="IMAGINE")

        return self._api(request, make_job)

    def _action(self, request: HttpRequest, found: re.Match[str]) -> Reply:
        def make_job(data: dict[str, Any]) -> Job:
            outcome = _outcome(data)
            parent = self._find(str(data.get("taskId")), "mj")
            if parent is None:
                return _mj_refusal("task_no_found")
            if self.phase(parent, self._clock())[0] != "success":
                return _mj_refusal("task_status_not_success")
            custom_id = data.get("customId")
            labels = {b["customId"]: b["label"] or b["emoji"] for b in shapes.mj_buttons(parent)}
            if custom_id not in labels:
                return _mj_refusal(f"customId is not a button of task {parent.task_id}")
            kind = str(custom_id).split("::")[2]
            action = {"upsample": "UPSCALE", "variation": "VARIATION"}.get(kind, "REROLL")
            key = f"{parent.prompt} [{labels[custom_id]}]"
            return self._mj_submit(
                key, outcome, action=action, label=labels[custom_id], parent_prompt=parent.prompt
            )

        return self._api(request, make_job)

    def _mj_list(self, request: HttpRequest, found: re.Match[str]) -> Reply:
        def make_job(data: dict[str, Any]) -> Job:
            ids = data.get("ids")
            if not isinstance(ids, list):
                return _mj_refusal("ids is required")
            tasks = [t for i in ids if (t := self._find(str(i), "mj")) is not None]
            return _answer([self._view(t, shapes.mj_task) for t in tasks])

        return self._api(request, make_job)

    def _mj_fetch(self, request: HttpRequest, found: re.Match[str]) -> Reply:
        def make_job(data: dict[str, Any]) -> Job:
            task = self._find(found.group("id"), "mj")
            return (
                _mj_refusal("task_no_found")
                if task is None
                else _answer(self._view(task, shapes.mj_task))
            )

        return self._get(request, make_job)

    # -- Suno -----------------------------------------------------------------------------------

    def _suno_submit(self, request: HttpRequest, found: re.Match[str]) -> Reply:
        action = found.group("action").upper()

        def make_job(data: dict[str, Any]) -> Job:
            outcome = _outcome(data)
            prompt = _prompt(data, "prompt", "gpt_description_prompt")
            if prompt is None:
                return _task_error("invalid_request", "prompt is required")
            if outcome == "banned":
                return _task_error(
                    "prompt_banned", f"prompt contains a banned word: {prompt.split()[0]}"
                )
            model = data.get("mv") if isinstance(data.get("mv"), str) else "chirp-v3-5"
            return self._task_submit(
                "suno",
                prompt,
                outcome,
                lambda t: {"code": "success", "message": "", "data": t.task_id},
                action=action,
                model=model,
            )

        return self._api(request, make_job)

    def _task_submit(
        self,
        family: str,
        prompt: str,
        outcome: str | None,
        answer: Callable[[MockTask], Any],
        **fields: Any,
    ) -> Job:
        def build(with_usage: bool) -> tuple[bytes, int, int]:
            self._submits[prompt] += 1
            task = self._create(family, prompt, outcome, **fields)
            return json.dumps(answer(task)).encode(), 0, 0

        return Job(fields.get("model", ""), 0, build, hang=outcome == "timeout_after_submit")

    def _suno_list(self, request: HttpRequest, found: re.Match[str]) -> Reply:
        def make_job(data: dict[str, Any]) -> Job:
            ids = data.get("ids")
            if not isinstance(ids, list):
                return _task_error("invalid_request", "ids is required")
            tasks = [t for i in ids if (t := self._find(str(i), "suno")) is not None]
            views = [self._view(t, shapes.suno_task) for t in tasks]
            return _answer({"code": "success", "message": "", "data": views})

        return self._api(request, make_job)

    def _suno_fetch(self, request: HttpRequest, found: re.Match[str]) -> Reply:
        def make_job(data: dict[str, Any]) -> Job:
            task = self._find(found.group("id"), "suno")
            if task is None:
                return _task_error("task_not_exist", "task_not_exist")
            return _answer(
                {"code": "success", "message": "", "data": self._view(task, shapes.suno_task)}
            )

        return self._get(request, make_job)

    # -- video ----------------------------------------------------------------------------------

    def _video_submit(self, request: HttpRequest, found: re.Match[str]) -> Reply:
        def make_job(data: dict[str, Any]) -> Job:
            outcome = _outcome(data)
            model = model_of(data)
            prompt = _prompt(data, "prompt")
            if prompt is None:
                return _task_error("invalid_request", "prompt is required")
            if outcome == "banned":
                return _task_error("prompt_blocked", f"the prompt was blocked: {prompt.split()[0]}")
            return self._task_submit(
                "video",
                prompt,
                outcome,
                lambda t: shapes.video_object(t, "new", 0.0, public_url="", ttl_s=0),
                model=model,
                action=request.path,
            )

        return self._api(request, make_job)

    def _video_fetch(self, request: HttpRequest, found: re.Match[str]) -> Reply:
        def make_job(data: dict[str, Any]) -> Job:
            task = self._find(found.group("id"), "video")
            if task is None:
                return _task_error("task_not_exist", "task_not_exist", status=404)
            if request.path.startswith("/v1/videos/"):
                return _answer(self._view(task, shapes.video_object))
            veo = task.model.startswith("veo")
            return _answer(self._view(task, shapes.veo_answer if veo else shapes.video_task))

        return self._get(request, make_job)

    def _responses_fetch(self, request: HttpRequest, found: re.Match[str]) -> Reply:
        def make_job(data: dict[str, Any]) -> Job:
            task = self._find(found.group("id"), "responses")
            if task is None:
                message = f"No response found with id '{found.group('id')}'."
                return _answer(json.loads(error_body(message, "invalid_request_error")), status=404)
            return _answer(shapes.responses_object(task, self.phase(task, self._clock())[0]))

        return self._get(request, make_job)
