"""Append-only JSON-lines journals: the shared parts of `batch_journal` and `tasks`.

Guarantees:
- `encode_line` gives one line (compact JSON, UTF-8, a newline), so one `write(2)` appends it.
- `whole_lines` keeps the lines that end in a newline: a crash mid-write leaves a torn last line,
  which is dropped; `cut_torn` cuts it off the file (fsynced) so the next append starts clean.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["cut_torn", "encode_line", "whole_lines"]


def encode_line(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def whole_lines(raw: bytes) -> tuple[list[bytes], int]:
    """The whole lines of `raw`, and how many bytes they take (the rest is a torn tail)."""
    good = raw.rfind(b"\n") + 1
    return raw[:good].splitlines(), good


def cut_torn(path: Path, good: int) -> None:
    """Cut `path` to its first `good` bytes (its whole lines), durably."""
    with path.open("r+b") as f:
        f.truncate(good)
        os.fsync(f.fileno())
