"""A provider batch run's state: `OUT/batches/journal.jsonl`, the journal of each chunk's steps
(the files it names: `batch_files`).

    journal.jsonl                   one header, then one fsynced line per step of each chunk:
                                    packed ─► uploading ─► uploaded ─► creating ─► created
                                    ─► status ... ─► ended ─► downloaded ─► committed
                                    (or abandoned: the chunk's rows are free to go again)

Guarantees:
- Every journal line is written, flushed and fsynced before `record` returns, so a step the
  journal names happened (or, for "uploading" / "creating", may have happened) before any later
  step began: money is spent once because nothing is created again for a chunk whose journal
  says it may have been.
- A crash mid-line leaves a torn last line, which `open` ignores and cuts off; every whole line
  before it stands.
- Memory: the journal holds one small record per chunk (its rows as ranges).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from batchrun.common.ranges import RangeSet
from batchrun.store.batch_files import BATCHES_DIR, SealedChunk
from batchrun.store.checkpoint import CheckpointError
from batchrun.store.jsonlines import (
    create_journal,
    cut_torn,
    encode_line,
    read_journal,
    whole_lines,
)

__all__ = ["BatchJournal", "Chunk", "JournalError"]

JOURNAL_NAME = "journal.jsonl"
_FORMAT = "batchrun-batches"
_VERSION = 1


class JournalError(CheckpointError):
    """`OUT/batches/journal.jsonl` cannot be read (another format, a damaged line)."""


@dataclass(slots=True, kw_only=True)
class Chunk:
    """Everything the journal says about one chunk. Changed only by `BatchJournal.record`."""

    number: int
    backend: str
    base_url: str  # where it was sent, for `batchrun status` / `cancel`
    endpoint: str
    rows: RangeSet
    requests: int
    size_bytes: int
    sha256: str
    file_name: str
    packed_at: float
    worst_usd: float = 0.0  # what --max-cost holds for the chunk until it is collected
    uploading_at: float | None = None
    file_id: str | None = None
    creating_at: float | None = None
    batch_id: str | None = None
    status: str | None = None  # the provider's word, as last seen
    counts: dict[str, int] = field(default_factory=dict)
    ended: bool = False
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[str] = field(default_factory=list)  # a failed batch's validation errors
    downloaded: set[str] = field(default_factory=set)
    committed: bool = False
    abandoned: str | None = None  # why; the rows are pending again

    @property
    def live(self) -> bool:
        """Its rows belong to it: neither collected nor given up."""
        return not self.committed and self.abandoned is None

    @property
    def stage(self) -> str:
        """Where the chunk is, in a word or two, for `batchrun status`."""
        if self.abandoned is not None:
            return "abandoned"
        if self.committed:
            return "collected"
        if self.ended:
            return "ended"
        if self.batch_id is not None:
            return "submitted"
        if self.creating_at is not None:
            return "creating"
        if self.file_id is not None:
            return "uploaded"
        if self.uploading_at is not None:
            return "uploading"
        return "packed"


_STEPS = frozenset(
    {"packed", "uploading", "uploaded", "creating", "created", "status", "ended", "downloaded",
     "committed", "abandoned"}
)  # fmt: skip


class BatchJournal:
    """The append-only journal of one output's chunks (see the module docstring).

    `out_id` names this output at the provider (in file names and batch metadata), so that a
    resume can tell its own uploads and batches from anyone else's.
    """

    def __init__(self, out_dir: Path, header: dict[str, Any], chunks: dict[int, Chunk]) -> None:
        self.out_dir = out_dir
        self.out_id = str(header["out_id"])
        self.created_at = float(header.get("created_at", 0.0))
        self.chunks = chunks
        self._file: IO[bytes] | None = None

    @staticmethod
    def path_in(out_dir: Path) -> Path:
        return out_dir / BATCHES_DIR / JOURNAL_NAME

    @classmethod
    def load(cls, out_dir: Path) -> BatchJournal | None:
        """The journal as it stands, read only; None when OUT never ran a batch backend."""
        raw = read_journal(cls.path_in(out_dir), JournalError)
        if raw is None:
            return None
        journal, _ = cls._parse(out_dir, raw)
        return journal

    @classmethod
    def open(cls, out_dir: Path) -> BatchJournal:
        """The journal for writing, made with a new `out_id` if there is none; a torn last line
        (a crash mid-write) is cut off. The caller holds the output lock."""
        path = cls.path_in(out_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = read_journal(path, JournalError)
        if raw:
            journal, good = cls._parse(out_dir, raw)
            if good < len(raw):
                cut_torn(path, good)
        else:
            header = {
                "format": _FORMAT,
                "version": _VERSION,
                "out_id": secrets.token_hex(8),
                "created_at": time.time(),
            }
            create_journal(path, header)
            journal = cls(out_dir, header, {})
        journal._file = path.open("ab")
        return journal

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @classmethod
    def _parse(cls, out_dir: Path, raw: bytes) -> tuple[BatchJournal, int]:
        """The journal in `raw`, and how many bytes of it are whole lines."""
        path = cls.path_in(out_dir)
        lines, good = whole_lines(raw)
        try:
            header = json.loads(lines[0]) if lines else None
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != _FORMAT:
            raise JournalError(f"{path} is not a batchrun batch journal; use a new --out")
        if header.get("version") != _VERSION:
            raise JournalError(f"{path}: unsupported version {header.get('version')!r}")
        journal = cls(out_dir, header, {})
        for number, line in enumerate(lines[1:], start=2):
            try:
                journal._apply(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise JournalError(f"{path} line {number} is damaged ({exc!r})") from exc
        return journal, good

    def record(self, number: int, step: str, **fields: Any) -> None:
        """Append one step of chunk `number`, durably, then apply it."""
        if step not in _STEPS:
            raise ValueError(f"unknown journal step {step!r}")
        if self._file is None:
            raise RuntimeError("the journal was loaded read-only")
        entry = {"chunk": number, "step": step, "at": time.time(), **fields}
        self._file.write(encode_line(entry))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._apply(entry)

    def add(
        self,
        sealed: SealedChunk,
        *,
        backend: str,
        base_url: str,
        endpoint: str,
        worst_usd: float = 0.0,
    ) -> Chunk:
        """Record a sealed chunk file as chunk `sealed.number` ("packed")."""
        self.record(
            sealed.number,
            "packed",
            worst_usd=worst_usd,
            backend=backend,
            base_url=base_url,
            endpoint=endpoint,
            rows=[[s, e] for s, e in sealed.rows.ranges()],
            requests=sealed.requests,
            bytes=sealed.size_bytes,
            sha256=sealed.sha256,
            file=sealed.path.name,
        )
        return self.chunks[sealed.number]

    def _apply(self, entry: dict[str, Any]) -> None:
        number, step = int(entry["chunk"]), entry["step"]
        if step == "packed":
            self.chunks[number] = Chunk(
                number=number,
                backend=str(entry["backend"]),
                base_url=str(entry["base_url"]),
                endpoint=str(entry["endpoint"]),
                rows=RangeSet((int(s), int(e)) for s, e in entry["rows"]),
                requests=int(entry["requests"]),
                size_bytes=int(entry["bytes"]),
                sha256=str(entry["sha256"]),
                file_name=str(entry["file"]),
                packed_at=float(entry["at"]),
                worst_usd=float(entry.get("worst_usd", 0.0)),
            )
            return
        chunk = self.chunks[number]
        at = float(entry["at"])
        if step == "uploading":
            chunk.uploading_at = at
        elif step == "uploaded":
            chunk.file_id = str(entry["file_id"])
        elif step == "creating":
            chunk.creating_at = at
        elif step in ("created", "status", "ended"):
            if step == "created":
                chunk.batch_id = str(entry["batch_id"])
            chunk.status = entry.get("status", chunk.status)
            chunk.counts = dict(entry.get("counts") or chunk.counts)
            if step == "ended":
                chunk.ended = True
                chunk.output_file_id = entry.get("output_file_id")
                chunk.error_file_id = entry.get("error_file_id")
                chunk.errors = list(entry.get("errors") or ())
        elif step == "downloaded":
            chunk.downloaded.add(str(entry["kind"]))
        elif step == "committed":
            chunk.committed = True
        elif step == "abandoned":
            chunk.abandoned = str(entry["reason"])

    @property
    def live_chunks(self) -> list[Chunk]:
        return [c for _, c in sorted(self.chunks.items()) if c.live]

    def claimed_rows(self) -> RangeSet:
        """Rows that belong to a live chunk: they are not packed again."""
        claimed = RangeSet()
        for chunk in self.live_chunks:
            for start, end in chunk.rows.ranges():
                claimed.add_range(start, end)
        return claimed

    def next_number(self) -> int:
        return max(self.chunks, default=-1) + 1

    def batch_ids(self) -> set[str]:
        return {c.batch_id for c in self.chunks.values() if c.batch_id is not None}
