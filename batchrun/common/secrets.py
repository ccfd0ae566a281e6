"""Keeping the API key out of everything batchrun stores or shows (DESIGN invariant 7)."""

from __future__ import annotations

import re

__all__ = ["redact"]

_KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9*_\-.]{4,}")


def redact(text: str, secret: str | None) -> str:
    """Remove the API key, and anything shaped like one, from text that will be stored or shown."""
    if secret:
        text = text.replace(secret, "[redacted]")
    return _KEY_PATTERN.sub("sk-[redacted]", text)
