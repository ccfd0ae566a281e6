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


def join_url(base_url: str, path: str) -> str:
    """`https://host/v1` + `/v1/chat/completions` -> `https://host/v1/chat/completions`."""
    base = base_url.rstrip("/")
    if base.endswith("/v1") and (path == "/v1" or path.startswith("/v1/")):
        path = path[3:]
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
