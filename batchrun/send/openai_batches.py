"""OpenAI's Batch API (and servers that copy it, such as the LiteLLM proxy): upload a JSONL file,
create a batch over it, poll, cancel, download the output and error files.

    upload(path, filename) ─► file id      create(file id, endpoint, metadata) ─► BatchState
    find_upload(filename, size, since)     find_batch(metadata, since)          (after a crash)
    get(id) / cancel(id) ─► BatchState     download(file id, new_sink)

Guarantees:
- `upload` and `create` are sent at most once per call (`BatchHttp.call(once=True)`); when their
  answer is lost they raise `MaybeAccepted`, and `find_upload` / `find_batch` tell whether the
  provider has it: a file by its name and size, a batch by the metadata batchrun attached. Both
  read the provider's lists newest first and stop at what is older than `since`.
- A batch `completed` with `output_file_id: null` (every request failed) is an ended batch with
  nothing in its output: its rows are in the error file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from batchrun.send.batch_http import BatchApiError, BatchHttp, BatchState, Sink

__all__ = ["OPENAI_ENDED", "OpenAIBatches"]

OPENAI_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
_FILES_PAGE = 10_000
_BATCHES_PAGE = 100
_S = TypeVar("_S", bound=Sink)


class OpenAIBatches:
    def __init__(self, http: BatchHttp) -> None:
        self._http = http

    async def upload(self, path: Path, filename: str) -> str:
        def files() -> dict[str, Any]:
            return {"file": (filename, path.open("rb"), "application/jsonl")}

        answer = await self._http.call(
            "POST", "/v1/files", files=files, data={"purpose": "batch"}, once=True
        )
        return _id(answer, "POST /v1/files")

    async def find_upload(self, filename: str, size: int, since: float) -> str | None:
        async for item in self._pages("/v1/files", {"purpose": "batch"}, _FILES_PAGE, since):
            if item.get("filename") == filename and item.get("bytes") == size:
                return _id(item, "GET /v1/files")
        return None

    async def create(self, file_id: str, endpoint: str, metadata: dict[str, str]) -> BatchState:
        body = {
            "input_file_id": file_id,
            "endpoint": endpoint,
            "completion_window": "24h",
            "metadata": metadata,
        }
        answer = await self._http.call("POST", "/v1/batches", json_body=body, once=True)
        return _state(answer, "POST /v1/batches")

    async def find_batch(self, metadata: dict[str, str], since: float) -> BatchState | None:
        async for item in self._pages("/v1/batches", {}, _BATCHES_PAGE, since):
            found = item.get("metadata")
            if isinstance(found, dict) and all(found.get(k) == v for k, v in metadata.items()):
                return _state(item, "GET /v1/batches")
        return None

    async def get(self, batch_id: str) -> BatchState:
        return _state(await self._http.call("GET", f"/v1/batches/{batch_id}"), "GET /v1/batches")

    async def cancel(self, batch_id: str) -> BatchState:
        answer = await self._http.call("POST", f"/v1/batches/{batch_id}/cancel")
        return _state(answer, "POST /v1/batches/{id}/cancel")

    async def download(self, file_id: str, new_sink: Callable[[], _S]) -> _S:
        return await self._http.download(f"/v1/files/{file_id}/content", new_sink)

    async def _pages(self, path: str, params: dict[str, str], limit: int, since: float) -> Any:
        """The items of a list endpoint, newest first, until one is older than `since`."""
        after: str | None = None
        while True:
            query: dict[str, str | int] = {**params, "limit": limit}
            if after is not None:
                query["after"] = after
            answer = await self._http.call("GET", path, params=query)
            data = answer.get("data") if isinstance(answer, dict) else None
            if not isinstance(data, list):
                raise BatchApiError(f"GET {path}: unexpected answer (no 'data' list)")
            for item in data:
                if not isinstance(item, dict):
                    continue
                created = item.get("created_at")
                if isinstance(created, int | float) and created < since:
                    return
                yield item
            if not answer.get("has_more") or not data:
                return
            after = str(data[-1].get("id"))


def _id(answer: Any, what: str) -> str:
    value = answer.get("id") if isinstance(answer, dict) else None
    if not isinstance(value, str) or not value:
        raise BatchApiError(f"{what}: unexpected answer (no id): {str(answer)[:200]}")
    return value


def _state(answer: Any, what: str) -> BatchState:
    batch_id = _id(answer, what)
    status = str(answer.get("status"))
    counts = answer.get("request_counts")
    counts = (
        {k: int(v) for k, v in counts.items() if isinstance(v, int)}
        if isinstance(counts, dict)
        else {}
    )
    errors: list[str] = []
    block = answer.get("errors")
    for error in (block.get("data") or []) if isinstance(block, dict) else []:
        if isinstance(error, dict):
            where = f"line {error['line']}: " if error.get("line") is not None else ""
            errors.append(f"{where}{error.get('code') or 'error'}: {error.get('message')}")
    metadata = answer.get("metadata")
    created = answer.get("created_at")
    return BatchState(
        id=batch_id,
        status=status,
        ended=status in OPENAI_ENDED,
        failed=status == "failed",
        counts=counts,
        total=counts.get("total"),
        finished=counts.get("completed", 0) + counts.get("failed", 0),
        output_file_id=_optional(answer.get("output_file_id")),
        error_file_id=_optional(answer.get("error_file_id")),
        errors=tuple(errors),
        created_at=float(created) if isinstance(created, int | float) else None,
        metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict)
        else None,
    )  # fmt: skip


def _optional(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
