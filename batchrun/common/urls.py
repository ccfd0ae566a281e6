"""Where a request goes: the base URL the user gave, plus the endpoint path a row names."""

from __future__ import annotations

import re
import urllib.parse

__all__ = ["endpoint_in_base_url", "join_url"]

# Paths that are endpoints, never a base URL: a base URL ending in one is the full endpoint.
_ENDPOINT_TAIL = re.compile(
    r"/(chat/completions|completions|embeddings|responses|moderations|batches|"
    r"images/(generations|edits|variations)|audio/(speech|transcriptions|translations))/*$"
)


# A path that names its own API version (Gemini's /v1beta/...), other than the base's /v1.
_OTHER_VERSION = re.compile(r"^/v\d+[a-z]\w*(?:/|$)")
# Task families new-api serves at its root, beside /v1: Midjourney (also under a mode prefix,
# /mj-fast/mj/...), Suno, and the Kling and Jimeng native video routes.
_ROOT_LEVEL = re.compile(r"^(?:/(?:mj|suno|kling|jimeng)|/[\w.-]+/mj)(?:/|$)")


def join_url(base_url: str, path: str) -> str:
    """`https://host/v1` + `/v1/chat/completions` -> `https://host/v1/chat/completions`;
    `https://host/v1` + `/v1beta/models/m:generateContent` -> `https://host/v1beta/...` (the
    path's own version replaces the base's, as gateways serve /v1beta beside /v1);
    `https://host/v1` + `/mj/submit/imagine` -> `https://host/mj/submit/imagine` (the task
    families that live at the gateway's root: /mj, /{mode}/mj, /suno, /kling, /jimeng)."""
    base = base_url.rstrip("/")
    if base.endswith("/v1") and (path == "/v1" or path.startswith("/v1/")):
        path = path[3:]
    elif base.endswith("/v1") and (_OTHER_VERSION.match(path) or _ROOT_LEVEL.match(path)):
        base = base[:-3]
    return base + path


def endpoint_in_base_url(base_url: str) -> tuple[str, str] | None:
    """`(endpoint, base)` when `base_url` is a full endpoint such as `https://host/v1/chat/
    completions` (every request would go to `.../chat/completions/chat/completions`)."""
    parts = urllib.parse.urlsplit(base_url)
    match = _ENDPOINT_TAIL.search(parts.path)
    if match is None:
        return None
    base = parts._replace(path=parts.path[: match.start()], query="", fragment="")
    return "/" + match.group(1), urllib.parse.urlunsplit(base)
