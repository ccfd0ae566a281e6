"""The mock's image family: generations and edits, answered as `b64_json` or as a URL.

    POST /v1/images/generations {"model": "dall-e-3", "prompt": "a cat", "size": "1024x1024"}
      -> {"created": ..., "data": [{"url": "http://127.0.0.1:PORT/mock-media/<name>.png?..."}]}
    POST /v1/images/edits (multipart: image / image[], mask, prompt, model)
    GET  /mock-media/<name>.png?expires=<unix time>   -> the PNG, 404 once expired

As OpenAI does: dall-e-2 and dall-e-3 answer with URLs unless `response_format` is `b64_json`,
and their URLs expire (60 minutes, `MockConfig.media_url_ttl_s`); gpt-image-1 always answers
`b64_json`, with its token usage (text and image input tokens). The images are real PNGs of the
requested size (one colour, so they are small), made from their name alone: the media route
keeps no state, and another mock (`MockConfig.media_redirect_base`) can serve the same name.

Faults for the download: a body's `"mock_url_fault"` of `"expired"` gives a URL that already
404s, `"ftp"` one that redirects to an `ftp://` URL.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import time
import zlib
from collections import Counter
from typing import Any

from batchrun.mock.http import HttpRequest, Reply
from batchrun.mock.jobs import Invalid, Job, model_of, optional_int
from batchrun.mock.mediafiles import media_file
from batchrun.mock.multipart import FormFile

__all__ = ["MEDIA_PREFIX", "image_job", "media_reply_of", "media_route", "png_named", "png_of"]

MEDIA_PREFIX = "/mock-media/"
_SIZE = re.compile(r"^(\d{2,4})x(\d{2,4})$")
_NAME = re.compile(r"^([0-9a-f]{16})-(\d{2,4})x(\d{2,4})-(\d+)\.png$")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_URL_MODELS = ("dall-e-2", "dall-e-3")
_FORMATS = ("url", "b64_json")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of(seed: str, width: int, height: int) -> bytes:
    """A valid PNG of one colour chosen by `seed`, `width` x `height` pixels."""
    rgb = hashlib.blake2b(seed.encode(), digest_size=3).digest()
    row = b"\x00" + rgb * width
    pixels = zlib.compress(row * height, 6)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b"")


def png_named(name: str) -> bytes | None:
    """The PNG a media name stands for, or None if it is not one of the mock's names."""
    match = _NAME.match(name)
    if match is None:
        return None
    return png_of(name, int(match.group(2)), int(match.group(3)))


def media_reply_of(path: str, query: str, now: float) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) of `GET /mock-media/<name>?<query>`: a PNG, or the audio and
    video of the task families (`batchrun.mock.mediafiles`), with its content-type header."""
    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
    if params.get("redirect") == "ftp":
        return 302, b"", {"location": "ftp://127.0.0.1/image.png"}
    expires = params.get("expires", "")
    name = path[len(MEDIA_PREFIX) :]
    png = png_named(name)
    found = (png, b"image/png") if png is not None else media_file(name)
    if found is None or not expires.isdigit() or int(expires) < now:
        return 404, b"", {}
    return 200, found[0], {"content-type": found[1].decode()}


def media_route(
    request: HttpRequest, redirect_base: str | None, counts: Counter[str], now: float
) -> Reply:
    """`GET /mock-media/...`, counted in `counts`: how many, their statuses, and how many
    carried a key (Authorization, x-api-key, x-goog-api-key), which a client must never send."""
    counts["requests"] += 1
    if request.authorization or request.x_api_key or request.x_goog_api_key:
        counts["with_credentials"] += 1
    if redirect_base is not None:
        counts["302"] += 1
        location = f"{redirect_base}{request.path}?{request.query}".encode()
        return Reply(302, b"", content_type=None, headers=b"location: " + location + b"\r\n")
    status, body, extra = media_reply_of(request.path, request.query, now)
    counts[str(status)] += 1
    content_type = extra.pop("content-type", None)
    headers = b"".join(f"{k}: {v}\r\n".encode() for k, v in extra.items())
    return Reply(
        status, body, content_type=content_type.encode() if content_type else None, headers=headers
    )


def _intact_png(upload: FormFile, field: str) -> None:
    data = upload.data
    if not data.startswith(_PNG_SIGNATURE) or not data.endswith(_chunk(b"IEND", b"")):
        raise Invalid(f"Invalid image file for '{field}': it must be a whole PNG.", field)


def _size(data: dict[str, Any], model: str) -> tuple[int, int]:
    size = data.get("size", "1024x1024")
    if size == "auto":
        size = "1024x1024"
    match = _SIZE.match(size) if isinstance(size, str) else None
    if match is None:
        raise Invalid("Invalid 'size': expected WIDTHxHEIGHT such as '1024x1024'.", "size")
    return int(match.group(1)), int(match.group(2))


def image_job(data: dict[str, Any], *, public_url: str, ttl_s: float, edit: bool = False) -> Job:
    """`/v1/images/generations`, or `/edits` when `edit` (the form's images checked whole)."""
    model = model_of(data)
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise Invalid("Missing required parameter: 'prompt'.", "prompt")
    images: list[FormFile] = []
    if edit:
        given = data.get("image")
        images = given if isinstance(given, list) else [given] if given is not None else []
        if not images or not all(isinstance(i, FormFile) for i in images):
            raise Invalid("image is required", "image")
        for image in images:
            _intact_png(image, "image")
        if isinstance(data.get("mask"), FormFile):
            _intact_png(data["mask"], "mask")
    n = optional_int(data, "n", 1, 10) if not isinstance(data.get("n"), str) else int(data["n"])
    n = n or 1
    width, height = _size(data, model)
    fmt = data.get("response_format")
    if fmt is not None and fmt not in _FORMATS:
        raise Invalid("'response_format' must be 'url' or 'b64_json'.", "response_format")
    url_answer = model in _URL_MODELS and fmt != "b64_json"
    url_fault = data.get("mock_url_fault")
    tokens = model.startswith("gpt-image")
    text_tokens = max(1, len(prompt) // 4)
    image_tokens = 65 * len(images) if tokens else 0  # a low-fidelity input image

    def build(with_usage: bool) -> tuple[bytes, int, int]:
        seed = hashlib.sha256(f"{model}\x00{prompt}".encode()).hexdigest()[:16]
        items = []
        for i in range(n):
            name = f"{seed}-{width}x{height}-{i}.png"
            if url_answer:
                expires = 0 if url_fault == "expired" else int(time.time() + ttl_s)
                query = f"expires={expires}" + ("&redirect=ftp" if url_fault == "ftp" else "")
                items.append({"url": f"{public_url}{MEDIA_PREFIX}{name}?{query}"})
            else:
                encoded = base64.b64encode(png_of(name, width, height)).decode("ascii")
                items.append({"b64_json": encoded})
            if model == "dall-e-3":
                items[-1]["revised_prompt"] = prompt
        body: dict[str, Any] = {"created": int(time.time()), "data": items}
        completion = 0
        if tokens:
            completion = 272 * n  # gpt-image-1's low-quality square image
            body |= {"output_format": "png", "size": f"{width}x{height}", "quality": "low"}
            if with_usage:
                body["usage"] = {
                    "input_tokens": text_tokens + image_tokens,
                    "input_tokens_details": {
                        "text_tokens": text_tokens,
                        "image_tokens": image_tokens,
                    },
                    "output_tokens": completion,
                    "total_tokens": text_tokens + image_tokens + completion,
                }
        return json.dumps(body).encode(), text_tokens + image_tokens, completion

    return Job(model, text_tokens + image_tokens, build)
