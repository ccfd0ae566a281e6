"""OpenAI's Batch API on the mock's clock: create, get, list and cancel batches of requests.

    POST /v1/batches {input_file_id, endpoint, completion_window: "24h", metadata}
    GET  /v1/batches/{id}        GET /v1/batches?limit=&after=        POST /v1/batches/{id}/cancel

A batch lives through OpenAI's states, each `MockConfig.batch_phase_s` long on the mock's clock
(tests make it short; the state is worked out whenever the batch is looked at, nothing ticks):

    validating ─► in_progress ─► finalizing ─► completed      output file (+ error file)
        │             │  requests run at an even pace over the phase, through the same answers
        │             │  as the online endpoints (faults a body asks for become error lines)
        │             └► expired: a body with "mock_batch_expire": true is not reached; the
        │                rows before it are in the output, the rest in neither file
        └► failed: a line that is not a valid batch line (or "mock_batch_invalid": true)
    cancel: ─► cancelling ─► cancelled, with the results of the requests already run

A batch whose every request failed is `completed` with `output_file_id: null` (a pitfall seen
from OpenAI). `created` counts batches per run, and `custom_ids_in_two_batches` how many
custom_ids were sent in more than one batch, so tests can prove that nothing was paid twice.
"""

from __future__ import annotations

import itertools
import json
import math
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchrun.mock.files import FileStore
from batchrun.mock.http import HttpRequest, Reply
from batchrun.mock.payloads import dump, error_body

__all__ = ["BATCH_ENDPOINTS", "BatchService", "Execute", "Work"]

# request url, body bytes -> HTTP status, response body bytes (as the online endpoint answers)
Execute = Callable[[str, bytes], tuple[int, bytes]]

BATCH_ENDPOINTS = frozenset(
    {"/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions",
     "/v1/moderations", "/v1/images/generations", "/v1/images/edits", "/v1/videos"}
)  # fmt: skip
MAX_REQUESTS = 50_000
MAX_FILE_BYTES = 200 * 1024 * 1024
_MAX_ERRORS_SHOWN = 10
_MAX_LIST = 100


@dataclass(slots=True)
class Work:
    """The requests of one batch and how far they have run (shared with Message Batches)."""

    requests: list[tuple[str, str, bytes]]  # custom_id, url, body
    stop_before: int | None  # the first request a "mock_batch_expire" body keeps from running
    results: list[tuple[str, int, bytes]] = field(default_factory=list)

    @classmethod
    def of(cls, requests: list[tuple[str, str, bytes]]) -> Work:
        stop = next((i for i, (_, _, b) in enumerate(requests) if b"mock_batch_expire" in b), None)
        return cls(requests, stop)

    def run_until(self, fraction: float, execute: Execute) -> None:
        """Run requests until `fraction` of them (0..1) have run, or the expiry marker."""
        target = math.floor(len(self.requests) * min(1.0, fraction))
        if self.stop_before is not None:
            target = min(target, self.stop_before)
        for custom_id, url, body in self.requests[len(self.results) : target]:
            status, answer = execute(url, body)
            self.results.append((custom_id, status, answer))

    def ok_count(self) -> int:
        return sum(1 for _, status, _ in self.results if 200 <= status < 300)


@dataclass(slots=True)
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None
    started: float  # on the mock's clock
    created_at: int
    status: str = "validating"
    work: Work | None = None
    total: int = 0
    phase_at: float = 0.0  # when the current phase began (mock clock)
    times: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        ok = self.work.ok_count() if self.work else 0
        ran = len(self.work.results) if self.work else 0
        stamp = self.times.get
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": stamp("in_progress"),
            "expires_at": self.created_at + 86_400,
            "finalizing_at": stamp("finalizing"),
            "completed_at": stamp("completed"),
            "failed_at": stamp("failed"),
            "expired_at": stamp("expired"),
            "cancelling_at": stamp("cancelling"),
            "cancelled_at": stamp("cancelled"),
            "request_counts": {"total": self.total, "completed": ok, "failed": ran - ok},
            "metadata": self.metadata,
        }


class BatchService:
    """The batches of one mock server (see the module docstring)."""

    def __init__(
        self,
        files: FileStore,
        execute: Execute,
        *,
        clock: Callable[[], float],
        phase_s: float,
        fail_validation: Callable[[], bool] = lambda: False,
    ) -> None:
        self._fail_validation = fail_validation
        self._files = files
        self._execute = execute
        self._clock = clock
        self._phase_s = phase_s
        self._batches: dict[str, _Batch] = {}
        self._ids = itertools.count(1)
        self.created = 0
        self.cancelled = 0
        self.submitted: Counter[str] = Counter()  # custom_id -> batches it was sent in

    def stats(self) -> dict[str, int]:
        return {
            "created": self.created,
            "cancel_requests": self.cancelled,
            "requests": sum(self.submitted.values()),
            "custom_ids_in_two_batches": sum(1 for n in self.submitted.values() if n > 1),
        }

    def create(self, request: HttpRequest) -> Reply:
        try:
            data = json.loads(request.body)
        except ValueError:
            return _invalid("We could not parse the JSON body of your request.")
        if not isinstance(data, dict):
            return _invalid("The request body must be a JSON object.")
        problem = _check_create(data)
        if problem is not None:
            return _invalid(problem[1], problem[0])
        stored = self._files.files.get(data["input_file_id"])
        if stored is None or stored.purpose != "batch":
            return _invalid(f"Invalid 'input_file_id': {data['input_file_id']!r}", "input_file_id")
        now = self._clock()
        batch = _Batch(
            id=f"batch_mock{next(self._ids):020d}",
            input_file_id=stored.id,
            endpoint=data["endpoint"],
            metadata=data.get("metadata"),
            started=now,
            created_at=int(time.time()),
            phase_at=now,
        )
        self._batches[batch.id] = batch
        self.created += 1
        for line in stored.content.splitlines():
            custom_id = _custom_id_of(line)
            if custom_id is not None:
                self.submitted[custom_id] += 1
        return Reply(200, dump(batch.to_json()))

    def get(self, batch_id: str) -> Reply:
        batch = self._batches.get(batch_id)
        if batch is None:
            return _not_found(batch_id)
        self._advance(batch)
        return Reply(200, dump(batch.to_json()))

    def listing(self, request: HttpRequest) -> Reply:
        query = urllib.parse.parse_qs(request.query)
        try:
            limit = min(int(query.get("limit", ["20"])[0]), _MAX_LIST)
        except ValueError:
            return _invalid("limit must be an integer", "limit")
        batches = list(reversed(self._batches.values()))  # newest first
        after = query.get("after", [None])[0]
        if after is not None:
            ids = [b.id for b in batches]
            batches = batches[ids.index(after) + 1 :] if after in ids else []
        page = batches[:limit]
        for batch in page:
            self._advance(batch)
        body = {
            "object": "list",
            "data": [b.to_json() for b in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(batches) > limit,
        }
        return Reply(200, dump(body))

    def cancel(self, batch_id: str) -> Reply:
        batch = self._batches.get(batch_id)
        if batch is None:
            return _not_found(batch_id)
        self._advance(batch)
        if batch.status not in ("validating", "in_progress", "finalizing"):
            return _invalid(f"Cannot cancel a batch with status {batch.status!r}.")
        self.cancelled += 1
        self._enter(batch, "cancelling", self._clock())
        return Reply(200, dump(batch.to_json()))

    # -- the lifecycle ----------------------------------------------------------------------

    def _enter(self, batch: _Batch, status: str, at: float) -> None:
        batch.status = status
        batch.phase_at = at
        batch.times[status] = int(time.time())

    def _advance(self, batch: _Batch) -> None:
        now, phase = self._clock(), self._phase_s
        if batch.status == "validating" and now >= batch.phase_at + phase:
            stored = self._files.files.get(batch.input_file_id)
            errors, requests = _validate(stored.content if stored else b"", batch.endpoint)
            if not errors and self._fail_validation():
                message = (
                    "Enqueued token limit reached for gpt-4o-mini in organization org-mock. "
                    "Limit: 2,000,000 enqueued tokens. Please try submitting again later."
                )
                errors = [{"code": "token_limit_exceeded", "message": message, "param": None,
                           "line": None}]  # fmt: skip
            batch.total = len(requests)
            if errors:
                batch.errors = errors
                self._enter(batch, "failed", batch.phase_at + phase)
                return
            batch.work = Work.of(requests)
            self._enter(batch, "in_progress", batch.phase_at + phase)
        if batch.status == "in_progress" and batch.work is not None:
            fraction = (now - batch.phase_at) / phase
            batch.work.run_until(fraction, self._execute)
            if fraction >= 1:
                ended = batch.phase_at + phase
                if batch.work.stop_before is not None:
                    self._finish(batch, "expired", ended)
                    return
                self._enter(batch, "finalizing", ended)
        if batch.status == "finalizing" and now >= batch.phase_at + phase:
            self._finish(batch, "completed", batch.phase_at + phase)
        if batch.status == "cancelling" and now >= batch.phase_at + phase:
            self._finish(batch, "cancelled", batch.phase_at + phase)

    def _finish(self, batch: _Batch, status: str, at: float) -> None:
        output: list[bytes] = []
        errors: list[bytes] = []
        for n, (custom_id, code, answer) in enumerate(batch.work.results if batch.work else ()):
            line = {
                "id": f"batch_req_{batch.id[-8:]}{n:08d}",
                "custom_id": custom_id,
                "response": {
                    "status_code": code,
                    "request_id": f"req_{batch.id[-8:]}{n:08d}",
                    "body": _json_or_text(answer),
                },
                "error": None,
            }
            (output if 200 <= code < 300 else errors).append(dump(line) + b"\n")
        stem = batch.id
        if output:
            name = f"{stem}_output.jsonl"
            stored = self._files.add(b"".join(output), filename=name, purpose="batch_output")
            batch.output_file_id = stored.id
        if errors:
            name = f"{stem}_error.jsonl"
            stored = self._files.add(b"".join(errors), filename=name, purpose="batch_output")
            batch.error_file_id = stored.id
        self._enter(batch, status, at)


def _check_create(data: dict[str, Any]) -> tuple[str, str] | None:
    """(param, message) of what is wrong with a create request, as OpenAI words it."""
    if not isinstance(data.get("input_file_id"), str):
        return "input_file_id", "Missing required parameter: 'input_file_id'."
    if data.get("endpoint") not in BATCH_ENDPOINTS:
        return "endpoint", f"Invalid 'endpoint': {data.get('endpoint')!r}."
    if data.get("completion_window") != "24h":
        return "completion_window", "Invalid 'completion_window': only '24h' is supported."
    metadata = data.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or len(metadata) > 16:
            return "metadata", "Invalid 'metadata': at most 16 key-value pairs."
        for key, value in metadata.items():
            if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
                return "metadata", "Invalid 'metadata': keys up to 64, values up to 512 chars."
    return None


def _validate(content: bytes, endpoint: str) -> tuple[list[dict[str, Any]], list[Any]]:
    """The validation errors of an input file (by line), and its requests."""
    errors: list[dict[str, Any]] = []
    requests: list[tuple[str, str, bytes]] = []
    seen: set[str] = set()
    lines = [line for line in content.splitlines() if line.strip()]
    if len(lines) > MAX_REQUESTS or len(content) > MAX_FILE_BYTES:
        message = f"The batch input file is larger than {MAX_REQUESTS} requests or 200 MB."
        return [{"code": "too_large", "message": message, "param": None, "line": None}], []
    for number, line in enumerate(lines, start=1):
        problem = _line_problem(line, endpoint, seen)
        if problem is not None:
            errors.append({"code": "invalid_request", "message": problem, "line": number,
                           "param": None})  # fmt: skip
            continue
        data = json.loads(line)
        requests.append((data["custom_id"], data["url"], json.dumps(data["body"]).encode()))
    return errors[:_MAX_ERRORS_SHOWN], requests


def _line_problem(line: bytes, endpoint: str, seen: set[str]) -> str | None:
    try:
        data = json.loads(line)
    except ValueError:
        return "This line is not valid JSON."
    if not isinstance(data, dict):
        return "This line is not a JSON object."
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return "Missing 'custom_id'."
    if custom_id in seen:
        return f"The custom_id {custom_id!r} is used on more than one line."
    seen.add(custom_id)
    if data.get("method") != "POST":
        return "Invalid 'method': only POST is supported."
    if data.get("url") != endpoint:
        return f"The url {data.get('url')!r} does not match the batch's endpoint {endpoint!r}."
    body = data.get("body")
    if not isinstance(body, dict):
        return "Invalid 'body': expected an object."
    if body.get("mock_batch_invalid"):
        return "Invalid 'body': the mock was asked to refuse this line (mock_batch_invalid)."
    return None


def _custom_id_of(line: bytes) -> str | None:
    try:
        data = json.loads(line)
    except ValueError:
        return None
    custom_id = data.get("custom_id") if isinstance(data, dict) else None
    return custom_id if isinstance(custom_id, str) else None


def _json_or_text(answer: bytes) -> Any:
    try:
        return json.loads(answer)
    except ValueError:
        text = answer.decode("utf-8", "replace")[:200]
        return {"error": {"message": text, "type": "server_error"}}


def _invalid(message: str, param: str | None = None) -> Reply:
    return Reply(400, error_body(message, "invalid_request_error", param=param))


def _not_found(batch_id: str) -> Reply:
    return Reply(404, error_body(f"No batch found with id '{batch_id}'.", "invalid_request_error"))
