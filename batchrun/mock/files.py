"""`/v1/files` as OpenAI serves it, for the Batch API: multipart upload, list, get, content.

    POST /v1/files                 multipart/form-data: purpose=batch, file=<JSONL>  -> file object
    GET  /v1/files?purpose=&limit=&after=&order=                                      -> list
    GET  /v1/files/{id}                                                               -> file object
    GET  /v1/files/{id}/content                                                       -> the bytes
    DELETE /v1/files/{id}

Files live in memory (the mock serves tests and demos). An upload is `processed` at once, which
is what clients that wait for processing (curator's `files.wait_for_processing`) look for.
"""

from __future__ import annotations

import itertools
import time
import urllib.parse
from dataclasses import dataclass

from batchrun.mock.http import HttpRequest, Reply
from batchrun.mock.payloads import dump, error_body

__all__ = ["FileStore", "StoredFile", "parse_multipart"]

_PURPOSES = frozenset({"batch", "batch_output", "fine-tune", "assistants", "vision", "user_data"})
_MAX_LIST = 10_000


@dataclass(slots=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


def parse_multipart(content_type: bytes | None, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """`name -> (filename, value)` of a multipart/form-data body; ValueError when malformed."""
    if content_type is None or not content_type.lower().startswith(b"multipart/form-data"):
        raise ValueError("expected a multipart/form-data body")
    boundary = None
    for piece in content_type.split(b";")[1:]:
        key, _, value = piece.strip().partition(b"=")
        if key.lower() == b"boundary":
            boundary = value.strip(b'"')
    if not boundary:
        raise ValueError("the multipart body has no boundary")
    fields: dict[str, tuple[str | None, bytes]] = {}
    delimiter = b"--" + boundary
    parts = body.split(delimiter)
    if len(parts) < 3 or not parts[-1].startswith(b"--"):
        raise ValueError("the multipart body is not closed")
    for part in parts[1:-1]:
        head, sep, value = part.partition(b"\r\n\r\n")
        if not sep or not value.endswith(b"\r\n"):
            raise ValueError("a multipart part is malformed")
        name = filename = None
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-disposition:"):
                for item in line.split(b";")[1:]:
                    key, _, raw = item.strip().partition(b"=")
                    text = raw.strip(b'"').decode("utf-8", "replace")
                    if key.lower() == b"name":
                        name = text
                    elif key.lower() == b"filename":
                        filename = text
        if name is None:
            raise ValueError("a multipart part has no name")
        fields[name] = (filename, value[:-2])
    return fields


class FileStore:
    """Every file uploaded to (or produced by) the mock, by id."""

    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}
        self._ids = itertools.count(1)
        self.uploads = 0

    def add(self, content: bytes, *, filename: str, purpose: str) -> StoredFile:
        stored = StoredFile(
            id=f"file-mock{next(self._ids):020d}",
            filename=filename,
            purpose=purpose,
            content=content,
            created_at=int(time.time()),
        )
        self.files[stored.id] = stored
        return stored

    def upload(self, request: HttpRequest) -> Reply:
        try:
            fields = parse_multipart(request.content_type, request.body)
        except ValueError as exc:
            return Reply(400, error_body(str(exc), "invalid_request_error"))
        purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", "replace")
        if purpose not in _PURPOSES:
            message = f"'{purpose}' is not one of {sorted(_PURPOSES)} - 'purpose'"
            return Reply(400, error_body(message, "invalid_request_error", param="purpose"))
        if "file" not in fields or fields["file"][0] is None:
            return Reply(400, error_body("Missing file", "invalid_request_error", param="file"))
        filename, content = fields["file"]
        self.uploads += 1
        stored = self.add(content, filename=filename or "upload", purpose=purpose)
        return Reply(200, dump(stored.to_json()))

    def listing(self, request: HttpRequest) -> Reply:
        query = urllib.parse.parse_qs(request.query)
        purpose = query.get("purpose", [None])[0]
        try:
            limit = min(int(query.get("limit", ["10000"])[0]), _MAX_LIST)
        except ValueError:
            return Reply(400, error_body("limit must be an integer", "invalid_request_error"))
        newest_first = query.get("order", ["desc"])[0] != "asc"
        files = [f for f in self.files.values() if purpose is None or f.purpose == purpose]
        if newest_first:
            files.reverse()
        after = query.get("after", [None])[0]
        if after is not None:
            ids = [f.id for f in files]
            files = files[ids.index(after) + 1 :] if after in ids else []
        page = files[:limit]
        return Reply(
            200,
            dump(
                {
                    "object": "list",
                    "data": [f.to_json() for f in page],
                    "first_id": page[0].id if page else None,
                    "last_id": page[-1].id if page else None,
                    "has_more": len(files) > limit,
                }
            ),
        )

    def get(self, file_id: str) -> Reply:
        stored = self.files.get(file_id)
        return Reply(200, dump(stored.to_json())) if stored else _no_such_file(file_id)

    def content(self, file_id: str) -> Reply:
        stored = self.files.get(file_id)
        if stored is None:
            return _no_such_file(file_id)
        return Reply(200, stored.content, content_type=b"application/octet-stream")

    def delete(self, file_id: str) -> Reply:
        if self.files.pop(file_id, None) is None:
            return _no_such_file(file_id)
        return Reply(200, dump({"id": file_id, "object": "file", "deleted": True}))


def _no_such_file(file_id: str) -> Reply:
    message = f"No such File object: {file_id}"
    return Reply(404, error_body(message, "invalid_request_error", param="id"))
