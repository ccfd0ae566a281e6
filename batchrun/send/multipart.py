"""A row's body as `multipart/form-data`, its files streamed from disk (uploads).

    body = multipart_body({"model": "whisper-1", "response_format": "srt"}, uploads)
    body.content_type   # 'multipart/form-data; boundary=batchrun-...'
    body.length         # exact, so the request carries Content-Length, never chunked
    async for chunk in body.chunks(): ...   # a new stream for every attempt

Guarantees:
- Files are read in 64 KiB chunks while the request is sent: memory does not depend on their
  size. Both engines send the same bytes, with the same Content-Length.
- The length is computed from the files' sizes when the body is made; a file that changes size
  before it has been sent ends the attempt with `UploadChanged` (an `OSError`), never a request
  whose body disagrees with its Content-Length.
- Form fields are the body's other fields: strings as they are, numbers and booleans as JSON
  writes them (`0.2`, `true`), lists as repeated `name[]` fields (`timestamp_granularities[]`,
  as OpenAI's SDK sends them), objects as JSON text; nulls are left out.
"""

from __future__ import annotations

import json
import mimetypes
import os
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from batchrun.models import Upload
from batchrun.send.http import StreamBody

__all__ = ["StreamBody", "UploadChanged", "form_fields", "multipart_body"]

_CHUNK_BYTES = 1 << 16


class UploadChanged(OSError):
    """A file to upload changed size after the request's length was computed."""


def _quote(value: str) -> str:
    """A name or filename inside a Content-Disposition header (as browsers and httpx escape)."""
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(value)  # numbers, booleans


def form_fields(body: dict[str, Any], skip: Iterable[str]) -> list[tuple[str, str]]:
    """The body's fields but `skip` (the file fields), as (name, text) form fields."""
    skipped = set(skip)
    fields: list[tuple[str, str]] = []
    for name, value in body.items():
        if name in skipped or value is None:
            continue
        if isinstance(value, list):
            fields.extend((f"{name}[]", _text(item)) for item in value if item is not None)
        else:
            fields.append((name, _text(value)))
    return fields


@dataclass(frozen=True, slots=True)
class _FilePart:
    head: bytes
    path: str
    size: int


def multipart_body(
    body: dict[str, Any], uploads: tuple[Upload, ...], *, file_fields: Iterable[str]
) -> StreamBody:
    """`body` (without its `file_fields`) and `uploads` as one streamed multipart body."""
    boundary = f"batchrun-{secrets.token_hex(16)}"
    dash = f"--{boundary}\r\n".encode()
    pieces: list[bytes | _FilePart] = []
    for name, value in form_fields(body, file_fields):
        head = f'Content-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'
        pieces.append(dash + head.encode() + value.encode("utf-8", "surrogatepass") + b"\r\n")
    for upload in uploads:
        content_type = mimetypes.guess_type(upload.filename)[0] or "application/octet-stream"
        head = (
            f'Content-Disposition: form-data; name="{_quote(upload.field)}"; '
            f'filename="{_quote(upload.filename)}"\r\nContent-Type: {content_type}\r\n\r\n'
        )
        pieces.append(_FilePart(dash + head.encode(), upload.path, os.stat(upload.path).st_size))
    tail = f"--{boundary}--\r\n".encode()
    length = len(tail)
    for piece in pieces:
        length += len(piece) if isinstance(piece, bytes) else len(piece.head) + piece.size + 2

    async def chunks() -> AsyncIterator[bytes]:
        for piece in pieces:
            if isinstance(piece, bytes):
                yield piece
                continue
            yield piece.head
            left = piece.size
            with open(piece.path, "rb") as f:  # noqa: ASYNC230 - 64 KiB reads of a local file
                while left:
                    data = f.read(min(left, _CHUNK_BYTES))
                    if not data:
                        break
                    left -= len(data)
                    yield data
                if left or f.read(1):
                    raise UploadChanged(f"{piece.path} changed size while it was uploaded")
            yield b"\r\n"
        yield tail

    return StreamBody(
        length=length, chunks=chunks, content_type=f"multipart/form-data; boundary={boundary}"
    )
