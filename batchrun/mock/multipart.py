"""Parsing `multipart/form-data` request bodies, as an upload endpoint of the API does.

    form = parse_form(content_type, body)
    form["model"]          # 'whisper-1'
    form["file"]           # FormFile(filename='a.mp3', content_type='audio/mpeg', data=b'...')
    form["include"]        # ['logprobs']  (from repeated `include[]` fields)

A malformed body (no boundary, no closing delimiter, a part without a name) is `Invalid`, the
400 a real server gives; the mock never guesses at a body it cannot read.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from batchrun.mock.jobs import Invalid

__all__ = ["FormFile", "form_key", "parse_form"]

_BOUNDARY = re.compile(rb'boundary="?([^";]+)"?', re.IGNORECASE)
_NAME = re.compile(rb'[; ]name="([^"]*)"', re.IGNORECASE)
_FILENAME = re.compile(rb'filename="([^"]*)"', re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class FormFile:
    filename: str
    content_type: str | None
    data: bytes


def parse_form(content_type: bytes | None, body: bytes) -> dict[str, Any]:
    """The fields of a multipart body: text as str, files as `FormFile`, `name[]` as lists."""
    if content_type is None or not content_type.lower().startswith(b"multipart/form-data"):
        raise Invalid("This endpoint takes multipart/form-data (a file upload).")
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise Invalid("The multipart body has no boundary.")
    delimiter = b"--" + found.group(1)
    if not body.rstrip(b"\r\n").endswith(delimiter + b"--"):
        raise Invalid("The multipart body is incomplete (no closing boundary).")
    form: dict[str, Any] = {}
    for part in body.split(delimiter)[1:-1]:
        part = part.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            raise Invalid("A part of the multipart body has no headers.")
        name_match = _NAME.search(head)
        if name_match is None:
            raise Invalid("A part of the multipart body has no name.")
        name = name_match.group(1).decode("utf-8", "replace")
        filename = _FILENAME.search(head)
        value: Any
        if filename is not None:
            type_line = re.search(rb"content-type:\s*([^\r\n]+)", head, re.IGNORECASE)
            value = FormFile(
                filename=filename.group(1).decode("utf-8", "replace"),
                content_type=type_line.group(1).decode("latin-1") if type_line else None,
                data=data,
            )
        else:
            value = data.decode("utf-8", "replace")
        if name.endswith("[]"):
            form.setdefault(name[:-2], []).append(value)
        else:
            form[name] = value
    return form


def form_key(form: dict[str, Any]) -> bytes:
    """What identifies an upload across its attempts, for `mock_fault_times`: its fields and
    the sha256 of each file, not its bytes (every attempt has a new boundary)."""

    def plain(value: Any) -> Any:
        if isinstance(value, FormFile):
            return ["file", value.filename, hashlib.sha256(value.data).hexdigest()]
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return json.dumps({k: plain(v) for k, v in form.items()}, sort_keys=True).encode()
