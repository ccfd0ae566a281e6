"""The records of task rows (`batchrun.runner.tasks`): ok with the task's JSON and its media
files, task_failed, submit_unknown, and the errors of follow-ups.

Guarantees: every record names the row's own request_sha256 (what `--update` compares); media
are fetched with the media download code (a GET without the API key, `batchrun.send.download`),
and a file that cannot be fetched leaves the row ok with the reason in `error_message`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

import anyio

from batchrun.models import ErrorType, Record, Request
from batchrun.runner.taskpoll import Task
from batchrun.send.client import MAY_BE_ACCEPTED
from batchrun.send.download import DownloadFailed, download
from batchrun.send.http import HttpEngine
from batchrun.store.media import MediaStore

__all__ = ["error_record", "failure_record", "save_media", "task_record", "unknown_record"]


def failure_record(task: Task, state: Any | None) -> Record:
    """task_failed: the task's FAILURE (state), or its timeout (None)."""
    if state is None:
        status = task.status + (f" {task.progress}" if task.progress else "")
        message = f"the task outlived --task-timeout ({task.timeout_s:g} s); last seen {status}"
        body = None
    else:
        message = state.fail_reason or "the task failed (no reason given)"
        body = json.dumps(state.body, ensure_ascii=False)
    return task_record(
        task,
        status="error",
        response=body,
        error_type=ErrorType.TASK_FAILED,
        error_message=message,
    )


async def save_media(
    http: HttpEngine, media: MediaStore | None, task: Task, urls: Sequence[str], *, timeout_s: float
) -> tuple[list[str], list[str]]:
    """The task's files downloaded into OUT/media (a GET without the API key, as every
    media download): their paths, and what could not be fetched (the row stays ok)."""
    saved: list[str] = []
    problems: list[str] = []
    if media is None or not urls:
        return saved, problems
    custom_id = task.request.custom_id
    for index, url in enumerate(urls):
        try:
            path = await download(
                http, url, functools.partial(media.open, custom_id, index), timeout_s=timeout_s
            )
        except DownloadFailed as exc:
            problems.append(f"media[{index}] not downloaded: {exc}")
        else:
            saved.append(path)
    return saved, problems


def error_record(request: Request, error_type: str, message: str) -> Record:
    return Record(
        custom_id=request.custom_id,
        row=request.row,
        status="error",
        endpoint=request.url,
        error_type=error_type,
        error_message=message,
        model=request.model,
        request_sha256=request.request_sha256,
    )


def unknown_record(request: Request, why: str, answer: Record | None = None) -> Record:
    message = why if MAY_BE_ACCEPTED in why else f"{why}: {MAY_BE_ACCEPTED}"
    return Record(
        custom_id=request.custom_id,
        row=request.row,
        status="error",
        endpoint=request.url,
        http_status=answer.http_status if answer is not None else None,
        response=answer.response if answer is not None else None,
        error_type=ErrorType.SUBMIT_UNKNOWN,
        error_message=message,
        model=request.model,
        attempts=answer.attempts if answer is not None else 0,
        request_sha256=request.request_sha256,
    )


def task_record(task: Task, *, status: str, **fields: Any) -> Record:
    request = task.request
    return Record(
        custom_id=request.custom_id,
        row=request.row,
        status=status,
        endpoint=request.url,
        http_status=200,
        model=request.model,
        attempts=max(task.attempts, 1),
        latency_ms=round((anyio.current_time() - task.started) * 1000, 3),
        request_sha256=request.request_sha256,
        **fields,
    )
