"""The few HTTP calls of a provider Batch API: JSON in and out, a multipart upload, a streamed
download, each retried by the same rules as a row (`batchrun.send.retry`).

    BatchHttp.call("GET", "/v1/batches/ID")            -> the JSON answer
    BatchHttp.call("POST", "/v1/batches", json=..., once=True)
    BatchHttp.download("/v1/files/ID/content", new_sink) -> the sink, every byte written

httpx2 directly, not the row engines: a run makes a handful of these calls per batch (not one
per row), and they need what the engines do not do, GET, a multipart body streamed from a file
(up to 256 MB) and a body streamed to disk.

Guarantees:
- A call that may be repeated (GET, cancel) is retried on what a row would retry (429, 5xx,
  connection errors, timeouts), honouring `retry-after`, up to `max_retries` times.
- A call that costs money when it lands twice (upload, create: `once=True`) is never repeated
  here. When its answer is lost (a dropped connection, a timeout, a 5xx), the provider may have
  acted on it: `MaybeAccepted` says so, and the caller looks before it sends again. A 429 is a
  refusal, so it is waited out and sent again.
- Whole-run failures (a refused key, no quota, a TLS failure) raise `FatalRunError`; other
  refusals (4xx) raise `BatchApiError` with the server's words. Every message is scrubbed of
  the API key, which goes only in the auth headers given at construction.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import httpx2

from batchrun.common.errors import FatalRunError
from batchrun.common.secrets import redact
from batchrun.common.urls import join_url
from batchrun.send.http import USER_AGENT, httpx2_transport_error
from batchrun.send.retry import FATAL, RETRY, backoff_s, classify_response, parse_retry_after_s

__all__ = ["BatchApiError", "BatchHttp", "BatchState", "MaybeAccepted", "Sink", "file_stream"]

_BLOCK = 1 << 20
_S = TypeVar("_S", bound="Sink")


class BatchApiError(Exception):
    """The provider refused a Batch API call, or kept failing; `message` is for the user."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class MaybeAccepted(BatchApiError):
    """A call that must not land twice got no answer: it may or may not have been carried out."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchState:
    """A provider batch as last seen, in words both providers share.

    `ended`: no more results will come (OpenAI completed / expired / cancelled / failed,
    Anthropic ended); `failed`: OpenAI refused it in validation, so nothing ran or was charged.
    `finished`: requests with a result so far, of `total`.
    """

    id: str
    status: str  # the provider's own word
    ended: bool
    failed: bool = False
    counts: dict[str, int] = field(default_factory=dict)  # the provider's request_counts
    total: int | None = None
    finished: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: tuple[str, ...] = ()  # why validation failed, line by line
    created_at: float | None = None  # seconds since the epoch
    metadata: dict[str, str] | None = None


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...

    def discard(self) -> None: ...


async def file_stream(path: Path) -> AsyncIterator[bytes]:
    """The bytes of `path`, a block at a time (a request body streamed from disk)."""
    async with await anyio.open_file(path, "rb") as f:
        while block := await f.read(_BLOCK):
            yield block


class BatchHttp:
    """One provider's Batch API calls, with its auth headers. Owns nothing: `client` is the
    caller's (so tests can give it an httpx2 transport)."""

    def __init__(
        self,
        client: httpx2.AsyncClient,
        *,
        base_url: str,
        headers: Mapping[str, str],
        api_key: str | None,
        max_retries: int,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._client = client
        self._base_url = base_url
        self._headers = {"user-agent": USER_AGENT, **headers}
        self._api_key = api_key
        self._max_retries = max_retries
        self._sleep = sleep

    def url(self, path: str) -> str:
        return join_url(self._base_url, path)

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json_body: Any = None,
        content: Callable[[], AsyncIterator[bytes]] | None = None,
        content_length: int | None = None,
        files: Callable[[], dict[str, Any]] | None = None,
        data: Mapping[str, str] | None = None,
        once: bool = False,
    ) -> Any:
        """The JSON answer of one call (see the module docstring). `content` and `files` are
        factories: a retry after a 429 needs the body again from its start."""
        what = f"{method} {path}"
        for attempt in range(self._max_retries + 1):
            headers = dict(self._headers)
            kwargs: dict[str, Any] = {"params": params}
            if json_body is not None:
                kwargs["content"] = json.dumps(json_body).encode()
                headers["content-type"] = "application/json"
            elif content is not None:
                kwargs["content"] = content()
                headers["content-type"] = "application/json"
                if content_length is not None:
                    headers["content-length"] = str(content_length)
            elif files is not None:
                kwargs["files"] = files()
                kwargs["data"] = data
            try:
                response = await self._client.request(
                    method, self.url(path), headers=headers, **kwargs
                )
            except httpx2.RequestError as exc:
                error = httpx2_transport_error(exc)
                if error.kind == "config":
                    raise FatalRunError("config", self._scrub(error.message)) from exc
                if once:
                    raise MaybeAccepted(self._scrub(f"{what}: {error.message}")) from exc
                if attempt < self._max_retries:
                    await self._sleep(backoff_s(attempt + 1))
                    continue
                raise BatchApiError(self._scrub(f"{what}: {error.message}")) from exc
            finally:
                await _close(kwargs.get("files"))
            body = _json(response.content)
            verdict = classify_response(response.status_code, response.headers, body, response.text)
            if verdict is None:
                return body
            message = self._scrub(f"{what}: {verdict.message}")
            if verdict.action == FATAL:
                raise FatalRunError(verdict.error_type, message)
            refused = verdict.rate_limited or response.status_code < 500
            if verdict.action != RETRY:
                raise BatchApiError(message, status=response.status_code)
            if once and not refused:
                raise MaybeAccepted(message, status=response.status_code)
            if attempt < self._max_retries:
                retry_after = parse_retry_after_s(response.headers)
                await self._sleep(retry_after if retry_after else backoff_s(attempt + 1))
                continue
            raise BatchApiError(message, status=response.status_code)
        raise AssertionError("unreachable")

    async def download(self, path: str, new_sink: Callable[[], _S]) -> _S:
        """Stream the body of GET `path` into a sink; a failed attempt's sink is discarded and
        the next one starts from the first byte."""
        what = f"GET {path}"
        for attempt in range(self._max_retries + 1):
            sink = new_sink()
            try:
                async with self._client.stream("GET", self.url(path), headers=self._headers) as r:
                    if 200 <= r.status_code < 300:
                        async for block in r.aiter_bytes(_BLOCK):
                            sink.write(block)
                        return sink
                    await r.aread()
                    status, headers, text, raw = r.status_code, r.headers, r.text, r.content
            except httpx2.RequestError as exc:
                sink.discard()
                error = httpx2_transport_error(exc)
                if error.kind != "config" and attempt < self._max_retries:
                    await self._sleep(backoff_s(attempt + 1))
                    continue
                raise BatchApiError(self._scrub(f"{what}: {error.message}")) from exc
            except BaseException:
                sink.discard()
                raise
            sink.discard()
            verdict = classify_response(status, headers, _json(raw), text)
            assert verdict is not None  # not a 2xx
            message = self._scrub(f"{what}: {verdict.message}")
            if verdict.action == FATAL:
                raise FatalRunError(verdict.error_type, message)
            if verdict.action == RETRY and attempt < self._max_retries:
                retry_after = parse_retry_after_s(headers)
                await self._sleep(retry_after if retry_after else backoff_s(attempt + 1))
                continue
            raise BatchApiError(message, status=status)
        raise AssertionError("unreachable")

    def _scrub(self, message: str) -> str:
        return redact(message, self._api_key)


def _json(content: bytes) -> Any:
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        return None


async def _close(files: dict[str, Any] | None) -> None:
    """Close the file objects a multipart body was read from."""
    for value in (files or {}).values():
        if isinstance(value, tuple) and len(value) > 1 and hasattr(value[1], "close"):
            value[1].close()
