"""A provider batch's files under `OUT/batches/`: the chunk file that is uploaded, its index, and
the result files that are downloaded (the journal that names them: `batch_journal`).

    chunk-000003-requests.jsonl     the bytes uploaded (OpenAI: JSONL; Anthropic: one JSON body)
    chunk-000003-index.jsonl        [row, wire custom_id, custom_id] per request, in file order
    chunk-000003-output.jsonl       the provider's results, as downloaded (and -errors.jsonl)

Guarantees:
- Every file is written under a hidden temporary name, fsynced and renamed: a file with its
  final name is whole, and a chunk file's sha256 is the one its journal line holds.
- Written and read as streams: memory does not depend on a file's size (`read_index` holds one
  entry per row of a chunk, at most a batch's requests).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from batchrun.common.ranges import RangeSet
from batchrun.store.checkpoint import fsync_dir

__all__ = [
    "BATCHES_DIR",
    "ChunkWriter",
    "Download",
    "FileKind",
    "SealedChunk",
    "chunk_file",
    "file_digest",
    "iter_lines",
    "read_index",
    "remove_chunk_files",
    "remove_request_file",
    "request_file",
    "sweep_temporary",
]

BATCHES_DIR = "batches"
FileKind = Literal["requests", "index", "output", "errors"]
_READ_BLOCK = 1 << 20


def chunk_file(out_dir: Path, number: int, kind: FileKind, *, suffix: str = ".jsonl") -> Path:
    return out_dir / BATCHES_DIR / f"chunk-{number:06d}-{kind}{suffix}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedChunk:
    number: int
    path: Path
    rows: RangeSet
    requests: int
    size_bytes: int
    sha256: str


class ChunkWriter:
    """Writes one chunk's request file and index under hidden names; `seal` makes them final.

    `head`, `separator` and `tail` frame the items: nothing for OpenAI's JSONL (each line ends
    with its newline), `{"requests":[`, `,` and `]}` for Anthropic's JSON body.
    """

    def __init__(
        self,
        out_dir: Path,
        number: int,
        *,
        suffix: str = ".jsonl",
        head: bytes = b"",
        separator: bytes = b"",
        tail: bytes = b"",
    ) -> None:
        self.number = number
        self._final = chunk_file(out_dir, number, "requests", suffix=suffix)
        self._final_index = chunk_file(out_dir, number, "index")
        self._final.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self._final.with_name(f".{self._final.name}.tmp")
        self._tmp_index = self._final_index.with_name(f".{self._final_index.name}.tmp")
        self._file = self._tmp.open("wb")
        self._index = self._tmp_index.open("wb")
        self._hash = hashlib.sha256()
        self._separator, self._tail = separator, tail
        self._rows = RangeSet()
        self.requests = 0
        self.size_bytes = 0
        self._write(head)

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.size_bytes += len(data)

    def size_with(self, item: bytes) -> int:
        """The file's size, tail included, if `item` were added."""
        separator = len(self._separator) if self.requests else 0
        return self.size_bytes + separator + len(item) + len(self._tail)

    def add(self, item: bytes, *, row: int, wire_id: str, custom_id: str) -> None:
        if self.requests:
            self._write(self._separator)
        self._write(item)
        self._index.write(_line_of([row, wire_id, None if custom_id == wire_id else custom_id]))
        self._rows.add(row)
        self.requests += 1

    def seal(self) -> SealedChunk:
        """Finish both files: fsync, rename into place, fsync the directory."""
        self._write(self._tail)
        for f in (self._file, self._index):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        self._tmp_index.replace(self._final_index)
        self._tmp.replace(self._final)
        fsync_dir(self._final.parent)
        return SealedChunk(
            number=self.number,
            path=self._final,
            rows=self._rows,
            requests=self.requests,
            size_bytes=self.size_bytes,
            sha256=self._hash.hexdigest(),
        )

    def discard(self) -> None:
        for f in (self._file, self._index):
            f.close()
        self._tmp.unlink(missing_ok=True)
        self._tmp_index.unlink(missing_ok=True)


def _line_of(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def read_index(out_dir: Path, number: int) -> dict[str, tuple[int, str]]:
    """wire custom_id -> (row, custom_id) of chunk `number` (as many entries as it has rows)."""
    found: dict[str, tuple[int, str]] = {}
    for line in iter_lines(chunk_file(out_dir, number, "index")):
        row, wire_id, custom_id = json.loads(line)
        found[wire_id] = (int(row), wire_id if custom_id is None else custom_id)
    return found


def file_digest(path: Path) -> str | None:
    """sha256 of a file, or None when it is missing."""
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while block := f.read(_READ_BLOCK):
                h.update(block)
    except FileNotFoundError:
        return None
    return h.hexdigest()


def iter_lines(path: Path) -> Iterator[bytes]:
    """The non-blank lines of a file, streamed."""
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                yield line


class Download:
    """A result file of chunk `number` being downloaded: `write` pieces, then `finish`."""

    def __init__(self, out_dir: Path, number: int, kind: FileKind) -> None:
        self.path = chunk_file(out_dir, number, kind)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._file = self._tmp.open("wb")
        self.size_bytes = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.size_bytes += len(data)

    def finish(self) -> Path:
        """fsync, rename into place, fsync the directory. Blocking: call it from a thread."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._tmp.replace(self.path)
        fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


def request_file(out_dir: Path, file_name: str) -> Path:
    """Where a chunk's request file is, by the name its journal line holds."""
    return out_dir / BATCHES_DIR / file_name


def remove_request_file(out_dir: Path, file_name: str) -> None:
    """Once the batch exists, its request file has done its work (the index stays)."""
    request_file(out_dir, file_name).unlink(missing_ok=True)


def remove_chunk_files(out_dir: Path, number: int) -> None:
    """Delete what chunk `number` left under OUT/batches (its journal lines stay)."""
    for path in (out_dir / BATCHES_DIR).glob(f"chunk-{number:06d}-*"):
        path.unlink(missing_ok=True)


def sweep_temporary(out_dir: Path) -> None:
    """Delete the hidden temporary files a crash left (never a file with its final name)."""
    folder = out_dir / BATCHES_DIR
    if folder.exists():
        for path in folder.glob(".chunk-*.tmp"):
            path.unlink(missing_ok=True)
