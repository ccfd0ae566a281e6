"""Bodies that do not fit in memory: uploads streamed from disk, answers streamed to disk.

- `StreamBody`: a request body sent in chunks with an exact Content-Length (a multipart upload,
  `batchrun.send.multipart`); each attempt starts a new stream.
- `StreamTo`: where a media answer goes instead of memory. `stream_into` writes every chunk
  into a new `BodySink` and commits it only after the last byte, aborting it on any failure, so
  that no half answer is ever in place.

Both engines of `batchrun.send.http` use these, so they stream alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import anyio

from batchrun.endpoints.profiles import is_media_type, is_textual_type

__all__ = ["CHUNK_BYTES", "BodySink", "StreamBody", "StreamTo", "body_and_headers", "stream_into"]

CHUNK_BYTES = 1 << 16


@dataclass(frozen=True, slots=True)
class StreamBody:
    """A request body sent in chunks (a multipart upload, `batchrun.send.multipart`):
    `chunks()` starts a new stream of exactly `length` bytes, sent with that Content-Length."""

    length: int
    chunks: Callable[[], AsyncIterator[bytes]]
    content_type: str


def body_and_headers(
    body: bytes | StreamBody, headers: Mapping[str, str]
) -> tuple[bytes | AsyncIterator[bytes], Mapping[str, str]]:
    if isinstance(body, bytes):
        return body, headers
    sized = {**headers, "content-type": body.content_type, "content-length": str(body.length)}
    return body.chunks(), sized


class BodySink(Protocol):
    """Where a streamed body goes (a media file, `batchrun.store.media.MediaFile`)."""

    def write(self, data: bytes) -> None: ...

    def commit(self) -> str:
        """Durable and in place; what names it."""
        ...

    def abort(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StreamTo:
    """How a reply's body is streamed to disk instead of read into memory.

    `open(content_type)` gives the sink. `binary`: the endpoint answers with media whatever the
    content type says (speech): stream any 2xx body that is not JSON or text; otherwise only
    bodies whose content type is audio, image, video or octet-stream are streamed.
    """

    open: Callable[[str | None], BodySink]
    binary: bool = False

    def wants(self, status: int, content_type: str | None) -> bool:
        if not 200 <= status < 300:
            return False
        if is_media_type(content_type):
            return True
        return self.binary and not is_textual_type(content_type)


async def stream_into(
    target: StreamTo, content_type: str | None, chunks: Callable[[], AsyncIterable[bytes]]
) -> str:
    """Every chunk into a new sink, then the sink committed; aborted if anything fails."""
    sink = target.open(content_type)
    try:
        async for chunk in chunks():
            sink.write(chunk)
        # fsync and rename: a few ms on a disk, not to be spent on the event loop.
        return await anyio.to_thread.run_sync(sink.commit)
    except BaseException:
        sink.abort()
        raise
