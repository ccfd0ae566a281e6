"""Anthropic's Message Batches on the mock's clock.

    POST /v1/messages/batches {"requests": [{"custom_id", "params": {...}}]}
    GET  /v1/messages/batches/{id}           GET /v1/messages/batches?limit=&after_id=
    POST /v1/messages/batches/{id}/cancel    GET /v1/messages/batches/{id}/results (JSONL)

`processing_status` is `in_progress` for two phases of `MockConfig.batch_phase_s` (the requests
run at an even pace), then `ended`; a cancel makes it `canceling` for one phase, then `ended`
with the requests not yet run `canceled`. A body with `"mock_batch_expire": true` is not
reached: it and the requests after it end `expired`. Every result is one JSONL line,
`{"custom_id", "result": {"type": "succeeded" | "errored" | "canceled" | "expired", ...}}`.
Anthropic batches carry no metadata: `created` and `custom_ids_in_two_batches` let tests prove
that no row was sent in two batches.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from batchrun.mock.batches import Execute, Work
from batchrun.mock.http import HttpRequest, Reply
from batchrun.mock.payloads import claude_error, dump

__all__ = ["MessageBatchService"]

MAX_REQUESTS = 100_000
_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_MESSAGES = "/v1/messages"
_ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error",
                     403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
                     529: "overloaded_error"}  # fmt: skip


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class _MessageBatch:
    id: str
    work: Work
    started: float  # mock clock
    created_at: float  # wall clock
    base_url: str
    cancel_at: float | None = None
    ended_at: float | None = None
    results: bytes | None = None
    counts: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        ran = len(self.work.results)
        if self.ended_at is None:
            status = "canceling" if self.cancel_at is not None else "in_progress"
            counts = {"processing": len(self.work.requests) - ran,
                      "succeeded": self.work.ok_count(), "errored": ran - self.work.ok_count(),
                      "canceled": 0, "expired": 0}  # fmt: skip
        else:
            status = "ended"
            counts = {"processing": 0, **{k: self.counts[k] for k in
                      ("succeeded", "errored", "canceled", "expired")}}  # fmt: skip
        ended = self.ended_at is not None
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "ended_at": _rfc3339(self.ended_at) if self.ended_at else None,
            "created_at": _rfc3339(self.created_at),
            "expires_at": _rfc3339(self.created_at + 86_400),
            "archived_at": None,
            "cancel_initiated_at": _rfc3339(time.time()) if self.cancel_at else None,
            "results_url": f"{self.base_url}/messages/batches/{self.id}/results" if ended else None,
        }


class MessageBatchService:
    """The message batches of one mock server (see the module docstring)."""

    def __init__(
        self,
        execute: Execute,
        *,
        clock: Callable[[], float],
        phase_s: float,
        base_url: Callable[[], str],
    ) -> None:
        self._execute = execute
        self._clock = clock
        self._phase_s = phase_s
        self._base_url = base_url
        self._batches: dict[str, _MessageBatch] = {}
        self._ids = itertools.count(1)
        self.created = 0
        self.cancelled = 0
        self.submitted: Counter[str] = Counter()

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
            return _invalid("request body is not valid JSON")
        items = data.get("requests") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items:
            return _invalid("requests: Field required (a non-empty list)")
        if len(items) > MAX_REQUESTS:
            return _invalid(f"requests: at most {MAX_REQUESTS} requests per batch")
        requests: list[tuple[str, str, bytes]] = []
        seen: set[str] = set()
        for i, item in enumerate(items):
            problem = _item_problem(item, seen)
            if problem is not None:
                return _invalid(f"requests.{i}: {problem}")
            requests.append((item["custom_id"], _MESSAGES, json.dumps(item["params"]).encode()))
        batch = _MessageBatch(
            id=f"msgbatch_mock{next(self._ids):020d}",
            work=Work.of(requests),
            started=self._clock(),
            created_at=time.time(),
            base_url=self._base_url(),
        )
        self._batches[batch.id] = batch
        self.created += 1
        for custom_id, _, _ in requests:
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
            limit = min(int(query.get("limit", ["20"])[0]), 1000)
        except ValueError:
            return _invalid("limit: must be an integer")
        batches = list(reversed(self._batches.values()))
        after = query.get("after_id", [None])[0]
        if after is not None:
            ids = [b.id for b in batches]
            batches = batches[ids.index(after) + 1 :] if after in ids else []
        page = batches[:limit]
        for batch in page:
            self._advance(batch)
        body = {
            "data": [b.to_json() for b in page],
            "has_more": len(batches) > limit,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }
        return Reply(200, dump(body))

    def cancel(self, batch_id: str) -> Reply:
        batch = self._batches.get(batch_id)
        if batch is None:
            return _not_found(batch_id)
        self._advance(batch)
        if batch.ended_at is None and batch.cancel_at is None:
            self.cancelled += 1
            batch.cancel_at = self._clock()
        return Reply(200, dump(batch.to_json()))

    def results(self, batch_id: str) -> Reply:
        batch = self._batches.get(batch_id)
        if batch is None:
            return _not_found(batch_id)
        self._advance(batch)
        if batch.results is None:
            return _invalid(f"Batch {batch_id} has not ended yet; its results are not ready.")
        return Reply(200, batch.results, content_type=b"application/binary")

    def _advance(self, batch: _MessageBatch) -> None:
        if batch.ended_at is not None:
            return
        now, phase = self._clock(), self._phase_s
        running_until = now if batch.cancel_at is None else batch.cancel_at
        batch.work.run_until((running_until - batch.started) / (2 * phase), self._execute)
        if batch.cancel_at is not None and now >= batch.cancel_at + phase:
            self._end(batch, "canceled")
        elif batch.cancel_at is None and now >= batch.started + 2 * phase:
            self._end(batch, "expired")

    def _end(self, batch: _MessageBatch, not_run: str) -> None:
        lines = []
        for custom_id, status, answer in batch.work.results:
            if status == 200:
                result: dict[str, Any] = {"type": "succeeded", "message": json.loads(answer)}
                batch.counts["succeeded"] += 1
            else:
                result = {"type": "errored", "error": _anthropic_error(status, answer)}
                batch.counts["errored"] += 1
            lines.append(dump({"custom_id": custom_id, "result": result}))
        for custom_id, _, _ in batch.work.requests[len(batch.work.results) :]:
            lines.append(dump({"custom_id": custom_id, "result": {"type": not_run}}))
            batch.counts[not_run] += 1
        batch.results = b"\n".join(lines) + b"\n"
        batch.ended_at = time.time()


def _item_problem(item: Any, seen: set[str]) -> str | None:
    if not isinstance(item, dict):
        return "must be an object"
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
        return f"custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$' ({custom_id!r})"
    if custom_id in seen:
        return f"custom_id {custom_id!r} is not unique within the batch"
    seen.add(custom_id)
    params = item.get("params")
    if not isinstance(params, dict):
        return "params: Field required"
    limit = params.get("max_tokens")
    if isinstance(limit, int) and limit == 0:
        return "params.max_tokens: max_tokens 0 (cache pre-warming) is not allowed in a batch"
    return None


def _anthropic_error(status: int, answer: bytes) -> dict[str, Any]:
    """The errored result's `error`: Anthropic's envelope, whatever the answer said."""
    try:
        body = json.loads(answer)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("type") == "error":
        return body
    inner = body.get("error") if isinstance(body, dict) else None
    message = inner.get("message") if isinstance(inner, dict) else None
    kind = _ANTHROPIC_ERRORS.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": str(message or f"HTTP {status}")}}


def _invalid(message: str) -> Reply:
    return Reply(400, claude_error("invalid_request_error", message))


def _not_found(batch_id: str) -> Reply:
    return Reply(404, claude_error("not_found_error", f"No batch with id {batch_id!r}"))
