"""One profile per endpoint family: how its request is sent and how its answer is read.

    profile_for("/v1/audio/speech")  ->  Profile(name="speech", answer=None, reply="binary", ...)

A profile is data, not code paths: the stages ask it questions (which field must the body have?
which files does it upload? is a binary answer the answer? which reader gives the text and the
usage? which auth header does the provider itself want?) so that adding a family means adding a
profile here and, where its shapes are new, a reader in `answers` / `usage`.

Guarantees:
- `profile_for` never fails: a path no profile knows gets `GENERIC`, JSON in and JSON out with
  no answer columns, as every path was treated before profiles existed.
- Paths match exactly, or by the profile's pattern (Gemini's `/v1beta/models/{model}:...`); a
  query string does not change the match.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "GENERIC",
    "PROFILES",
    "Profile",
    "auth_headers",
    "is_media_type",
    "is_textual_type",
    "profile_for",
]

Reply = Literal["json", "binary", "text_or_json"]
Auth = Literal["bearer", "anthropic", "google"]

ANTHROPIC_VERSION = "2023-06-01"


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    name: str
    paths: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None  # for paths that carry a value (the model)
    method: Literal["POST", "GET"] = "POST"
    answer: str | None = None  # a key of endpoints.answers.ANSWER_READERS
    usage: str = "openai"  # a key of endpoints.usage.USAGE_READERS
    required: tuple[str, tuple[type, ...]] | None = None  # the field the body cannot do without
    multipart: bool = False  # sent as multipart/form-data, files streamed from disk
    files: tuple[str, ...] = ()  # body fields that name files to upload
    max_upload_bytes: int | None = None  # per file, as the provider documents it
    reply: Reply = "json"  # binary: a 2xx body is a media file; text_or_json: srt/vtt/text too
    auth: Auth = "bearer"  # what the provider itself wants; a gateway takes Bearer for all
    media_in_json: bool = False  # b64_json / url media inside a JSON answer (images)
    output_tokens: bool = True  # False: the answer has no output tokens (embeddings)

    def model_in_path(self, path: str) -> str | None:
        """The model a path names (Gemini native), if any."""
        if self.pattern is None:
            return None
        match = self.pattern.match(_path_only(path))
        return match.group("model") if match and "model" in match.groupdict() else None


GENERIC = Profile(name="generic")

_25_MB = 25 * 1024 * 1024
_50_MB = 50 * 1024 * 1024

PROFILES: tuple[Profile, ...] = (
    Profile(
        name="chat",
        paths=("/v1/chat/completions",),
        answer="chat",
        required=("messages", (list,)),
    ),
    Profile(
        name="completions",
        paths=("/v1/completions",),
        answer="completions",
        required=("prompt", (str, list)),
    ),
    Profile(
        name="responses",
        paths=("/v1/responses",),
        answer="responses",
        required=("input", (str, list)),
    ),
    Profile(
        name="claude",
        paths=("/v1/messages",),
        answer="claude",
        usage="claude",
        required=("messages", (list,)),
        auth="anthropic",
    ),
    Profile(
        name="gemini",
        pattern=re.compile(r"^/v1(?:beta)?/models/(?P<model>[^/:]+):generateContent$"),
        answer="gemini",
        usage="gemini",
        required=("contents", (list,)),
        auth="google",
    ),
    Profile(
        name="embeddings",
        paths=("/v1/embeddings",),
        answer="embeddings",
        required=("input", (str, list)),
        output_tokens=False,
    ),
    Profile(
        name="images",
        paths=("/v1/images/generations",),
        required=("prompt", (str,)),
        media_in_json=True,
    ),
    Profile(
        name="image_edits",
        paths=("/v1/images/edits",),
        required=("image", (str, list)),
        multipart=True,
        files=("image", "mask"),
        max_upload_bytes=_50_MB,
        media_in_json=True,
    ),
    Profile(
        name="speech",
        paths=("/v1/audio/speech",),
        required=("input", (str,)),
        reply="binary",
        output_tokens=False,
    ),
    Profile(
        name="transcriptions",
        paths=("/v1/audio/transcriptions", "/v1/audio/translations"),
        answer="transcription",
        required=("file", (str,)),
        multipart=True,
        files=("file",),
        max_upload_bytes=_25_MB,
        reply="text_or_json",
    ),
    Profile(name="models", paths=("/v1/models",), method="GET"),
)

_BY_PATH: Mapping[str, Profile] = {path: p for p in PROFILES for path in p.paths}
_BY_PATTERN = tuple(p for p in PROFILES if p.pattern is not None)


def _path_only(url: str) -> str:
    return url.split("?", 1)[0]


def profile_for(path: str) -> Profile:
    """The profile of an endpoint path (`/v1/...`, query string allowed); `GENERIC` if none."""
    bare = _path_only(path)
    found = _BY_PATH.get(bare)
    if found is not None:
        return found
    for profile in _BY_PATTERN:
        assert profile.pattern is not None
        if profile.pattern.match(bare):
            return profile
    return GENERIC


def auth_headers(profile: Profile, base_url: str, api_key: str | None) -> dict[str, str]:
    """The headers that carry the key: the provider's own scheme when the base URL is that
    provider (Anthropic's `x-api-key`, Google's `x-goog-api-key`), Bearer everywhere else
    (OpenAI, and gateways such as new-api, which accept Bearer for every family)."""
    headers: dict[str, str] = {}
    host = (urllib.parse.urlsplit(base_url).hostname or "").lower()
    if profile.auth == "anthropic":
        headers["anthropic-version"] = ANTHROPIC_VERSION
    if api_key is None:
        return headers
    if profile.auth == "anthropic" and _is_host(host, "anthropic.com"):
        headers["x-api-key"] = api_key
    elif profile.auth == "google" and _is_host(host, "googleapis.com"):
        headers["x-goog-api-key"] = api_key
    else:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


_MEDIA_PREFIXES = ("audio/", "image/", "video/")


def _base_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_media_type(content_type: str | None) -> bool:
    """Audio, image, video or octet-stream: a body that is a file, whatever the endpoint."""
    base = _base_type(content_type)
    return base.startswith(_MEDIA_PREFIXES) or base == "application/octet-stream"


def is_textual_type(content_type: str | None) -> bool:
    """JSON or text: an answer to read (or an error), never a media file."""
    base = _base_type(content_type)
    return base.startswith("text/") or base == "application/json" or base.endswith("+json")


def _is_host(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)
