"""Where a request goes: the base URL the user gave, plus the endpoint path a row names."""

from __future__ import annotations

__all__ = ["join_url"]


def join_url(base_url: str, path: str) -> str:
    """`https://host/v1` + `/v1/chat/completions` -> `https://host/v1/chat/completions`."""
    base = base_url.rstrip("/")
    if base.endswith("/v1") and (path == "/v1" or path.startswith("/v1/")):
        path = path[3:]
    return base + path
