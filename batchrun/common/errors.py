"""The failure that concerns the whole run, raised by any stage that talks to the server."""

from __future__ import annotations

__all__ = ["FatalRunError"]


class FatalRunError(Exception):
    """A failure that no other row can avoid either: stop dispatching, keep the rest resumable.

    `kind` names the cause (`auth`, `insufficient_quota`, `config`, ...); `message` is for the
    user and never carries the API key.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
