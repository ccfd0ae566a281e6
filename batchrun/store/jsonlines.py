"""Append-only JSON-lines journals: the shared parts of `batch_journal` and `tasks`.

Guarantees:
- `encode_line` gives one line (compact JSON, UTF-8, a newline), so one `write(2)` appends it.
- `whole_lines` keeps the lines that end in a newline: a crash mid-write leaves a torn last line,
  which is dropped; `cut_torn` cuts it off the file (fsynced) so the next append starts clean.
- `create_journal` makes a journal whole or not at all: its header is written aside, synced,
  then renamed into place (and the rename synced).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from batchrun.store.checkpoint import fsync_dir

__all__ = ["create_journal", "cut_torn", "encode_line", "read_journal", "whole_lines"]


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


def read_journal(path: Path, error: type[Exception]) -> bytes | None:
    """The journal's bytes; None when there is none. Any other failure to read is `error`,
    naming the file."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from exc


def create_journal(path: Path, header: dict[str, Any]) -> None:
    """A new journal at `path` holding only `header`, durably; its folder must exist."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(encode_line(header))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)
