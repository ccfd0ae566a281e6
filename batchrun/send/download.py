"""Media in JSON answers: `b64_json` decoded to files, `url`s downloaded before they expire.

    saved = await save_json_media(body, open_file=..., http=engine, download=True)
    saved.body        # the answer with each saved item's payload replaced by its file
    saved.media       # ("media/3f/row-7-3f2a9c0d11-0.png", ...) in answer order
    saved.problems    # ["data[1].url: HTTP 404 ..."]: what could not be saved, the row still ok

Guarantees (DESIGN invariant 7: the key never reaches another host):
- A download is a GET with no header of the API request: no key, no content type, nothing but
  the engine's user-agent. Only http and https URLs are fetched; a redirect is followed (up to
  5, each checked the same way: a CDN on another host is normal, an `ftp:` one is refused).
- A body over `max_bytes` is refused as it streams (never held whole), the partial file aborted.
- Timeouts, connection failures, 408, 429 and 5xx are retried (3 attempts, backed off); any other
  answer fails at once (a 404 or 403: the URL has expired, a retry cannot bring it back).
- A file is committed (fsynced, in place) before its path is returned; `b64_json` items lose
  their base64 in `body` (`"batchrun_media": path` in its place) so stored answers stay small.
"""

from __future__ import annotations

import base64
import binascii
import functools
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from batchrun.send.bodies import BodySink, StreamTo
from batchrun.send.http import HttpEngine, TransportError

__all__ = ["DEFAULT_MAX_MEDIA_BYTES", "DownloadFailed", "SavedMedia", "download", "save_json_media"]

DEFAULT_MAX_MEDIA_BYTES = 1 << 30  # 1 GiB: a long video; past it a URL is more likely a mistake
_ATTEMPTS = 3
_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRYABLE = frozenset({408, 429})
_IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}

OpenFile = Callable[[int, str | None], BodySink]  # (index, content type) -> a new media file


class DownloadFailed(Exception):
    """A media URL that could not be fetched; the message says why, in one line."""


class _TooLarge(Exception):
    pass


class _Capped:
    """A sink that refuses more than `limit` bytes."""

    def __init__(self, sink: BodySink, limit: int) -> None:
        self._sink, self._left = sink, limit

    def write(self, data: bytes) -> None:
        self._left -= len(data)
        if self._left < 0:
            raise _TooLarge
        self._sink.write(data)

    def commit(self) -> str:
        return self._sink.commit()

    def abort(self) -> None:
        self._sink.abort()


async def download(
    http: HttpEngine,
    url: str,
    open_sink: Callable[[str | None], BodySink],
    *,
    max_bytes: int = DEFAULT_MAX_MEDIA_BYTES,
    timeout_s: float = 300.0,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> str:
    """Fetch `url` into a new file; its path, or `DownloadFailed`."""
    target = StreamTo(open=lambda ct: _Capped(open_sink(ct), max_bytes), binary=True)
    problem = "no attempt made"
    for attempt in range(_ATTEMPTS):
        if attempt:
            await sleep(0.5 * 2**attempt)
        current = url
        for _ in range(_MAX_REDIRECTS + 1):
            scheme = urllib.parse.urlsplit(current).scheme.lower()
            if scheme not in ("http", "https"):
                raise DownloadFailed(f"not an http(s) URL: {_short(current)}")
            try:
                reply = await http.get(current, {}, timeout_s=timeout_s, stream_to=target)
            except _TooLarge:
                raise DownloadFailed(f"larger than {max_bytes:,} bytes: {_short(url)}") from None
            except TransportError as exc:
                problem = exc.message
                break  # retried
            if reply.media is not None:
                return reply.media
            location = reply.headers.get("location")
            if reply.status in _REDIRECTS and location:
                current = urllib.parse.urljoin(current, location)
                continue
            problem = f"HTTP {reply.status}"
            if 200 <= reply.status < 300:
                kind = reply.headers.get("content-type") or "no content type"
                raise DownloadFailed(f"HTTP {reply.status} but not media ({kind}): {_short(url)}")
            if reply.status not in _RETRYABLE and reply.status < 500:
                raise DownloadFailed(f"{problem} (expired?): {_short(url)}")
            break
        else:
            raise DownloadFailed(f"more than {_MAX_REDIRECTS} redirects: {_short(url)}")
    raise DownloadFailed(f"{problem} (after {_ATTEMPTS} attempts): {_short(url)}")


def _short(url: str) -> str:
    """A URL for a message: without its query (signatures), at most 200 characters."""
    bare = url.split("?", 1)[0]
    return bare if len(bare) <= 200 else bare[:197] + "..."


@dataclass(slots=True)
class SavedMedia:
    body: dict[str, Any]
    media: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    changed: bool = False


async def save_json_media(
    body: dict[str, Any],
    *,
    open_file: OpenFile,
    http: HttpEngine,
    download_urls: bool,
    max_bytes: int = DEFAULT_MAX_MEDIA_BYTES,
    timeout_s: float = 300.0,
) -> SavedMedia:
    """Every `data[i]` of an images answer saved as file `i` (see the module docstring)."""
    saved = SavedMedia(body=body)
    items = body.get("data")
    if not isinstance(items, list):
        return saved
    output_format = body.get("output_format")
    b64_type = (
        _IMAGE_TYPES.get(output_format, "image/png")
        if isinstance(output_format, str)
        else "image/png"
    )
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        encoded, url = item.get("b64_json"), item.get("url")
        if isinstance(encoded, str):
            try:
                data = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                saved.problems.append(f"data[{index}].b64_json is not valid base64; kept as sent")
                continue
            sink = open_file(index, b64_type)
            path = await anyio.to_thread.run_sync(_write_all, sink, data)
            del item["b64_json"]
            item["batchrun_media"] = path
            saved.media.append(path)
            saved.changed = True
        elif isinstance(url, str) and download_urls:
            try:
                path = await download(
                    http,
                    url,
                    functools.partial(open_file, index),
                    max_bytes=max_bytes,
                    timeout_s=timeout_s,
                )
            except DownloadFailed as exc:
                saved.problems.append(f"data[{index}].url not downloaded: {exc}")
                continue
            item["batchrun_media"] = path
            saved.media.append(path)
            saved.changed = True
    return saved


def _write_all(sink: BodySink, data: bytes) -> str:
    try:
        sink.write(data)
        return sink.commit()
    except BaseException:
        sink.abort()
        raise
