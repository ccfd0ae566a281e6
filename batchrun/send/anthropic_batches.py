"""Anthropic's Message Batches: create a batch from one JSON body, poll, cancel, stream results.

    create(path, size) ─► BatchState       find_batches(requests, since, known) (after a crash)
    get(id) / cancel(id) ─► BatchState     results(id, new_sink)

Guarantees:
- `create` is sent at most once per call; a lost answer raises `MaybeAccepted`. Message batches
  carry no metadata, so `find_batches` can only offer candidates: batches created since `since`
  with exactly `requests` requests that no chunk of this output owns. The caller adopts a sole
  candidate and refuses to guess between several.
- Results are fetched from `{base}/messages/batches/{id}/results`, never from another host the
  batch's `results_url` might name: the API key goes only to the API's own host.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from batchrun.send.batch_http import BatchApiError, BatchHttp, BatchState, Sink, file_stream

__all__ = ["AnthropicBatches"]

_PAGE = 100
_S = TypeVar("_S", bound=Sink)
_RESULT_KINDS = ("succeeded", "errored", "canceled", "expired")


class AnthropicBatches:
    def __init__(self, http: BatchHttp) -> None:
        self._http = http

    async def create(self, path: Path, size: int) -> BatchState:
        answer = await self._http.call(
            "POST",
            "/v1/messages/batches",
            content=lambda: file_stream(path),
            content_length=size,
            once=True,
        )
        return _state(answer, "POST /v1/messages/batches")

    async def find_batches(
        self, requests: int, since: float, known: Collection[str]
    ) -> list[BatchState]:
        found: list[BatchState] = []
        after: str | None = None
        while True:
            query: dict[str, str | int] = {"limit": _PAGE}
            if after is not None:
                query["after_id"] = after
            answer = await self._http.call("GET", "/v1/messages/batches", params=query)
            data = answer.get("data") if isinstance(answer, dict) else None
            if not isinstance(data, list):
                raise BatchApiError("GET /v1/messages/batches: unexpected answer (no 'data')")
            for item in data:
                state = _state(item, "GET /v1/messages/batches")
                if state.created_at is not None and state.created_at < since:
                    return found
                if state.total == requests and state.id not in known:
                    found.append(state)
            if not answer.get("has_more") or not data:
                return found
            after = str(data[-1].get("id"))

    async def get(self, batch_id: str) -> BatchState:
        answer = await self._http.call("GET", f"/v1/messages/batches/{batch_id}")
        return _state(answer, "GET /v1/messages/batches/{id}")

    async def cancel(self, batch_id: str) -> BatchState:
        answer = await self._http.call("POST", f"/v1/messages/batches/{batch_id}/cancel")
        return _state(answer, "POST /v1/messages/batches/{id}/cancel")

    async def results(self, batch_id: str, new_sink: Callable[[], _S]) -> _S:
        return await self._http.download(f"/v1/messages/batches/{batch_id}/results", new_sink)


def _state(answer: Any, what: str) -> BatchState:
    batch_id = answer.get("id") if isinstance(answer, dict) else None
    if not isinstance(batch_id, str) or not batch_id:
        raise BatchApiError(f"{what}: unexpected answer (no id): {str(answer)[:200]}")
    status = str(answer.get("processing_status"))
    raw = answer.get("request_counts")
    counts = (
        {k: int(v) for k, v in raw.items() if isinstance(v, int)} if isinstance(raw, dict) else {}
    )
    finished = sum(counts.get(k, 0) for k in _RESULT_KINDS)
    return BatchState(
        id=batch_id,
        status=status,
        ended=status == "ended",
        counts=counts,
        total=finished + counts.get("processing", 0) if counts else None,
        finished=finished,
        created_at=_seconds(answer.get("created_at")),
    )


def _seconds(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None
