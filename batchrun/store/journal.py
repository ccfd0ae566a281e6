"""The write-ahead journal: an answer is in the journal before its worker sends another request.

    answers ─write(group)─► OUT/journal/segment-NNNNNN.log   one write(2), no waiting
    every ~30 ms, in a thread ─sync()─► one fdatasync for everything written since the last
    part + checkpoint committed ─release(done)─► segments whose rows are all counted: deleted
    resume ─► ResultWriter.recover folds read() into a part, then clear()

(`batchrun.runner.groupcommit` decides when: a write per turn of the event loop, a sync per
~30 ms.)

A part file holds up to `flush_rows` records and is written every `flush_interval_s`; between two
parts, the answers that arrived lived only in memory, and a kill -9 threw them away (they were
sent, and paid for, again). The journal closes that gap.

Two levels of durability, because they cost very different amounts:
- written: once `write` returns, the bytes belong to the kernel; a kill -9, a second Ctrl-C's
  `os._exit`, any crash of the process keeps them. It costs a few microseconds per answer and
  never waits for the disk, so the run does not slow down.
- synced: `sync` (fdatasync, and the directory's fsync for a new segment) makes them survive a
  power cut or a kernel crash as well. It costs milliseconds of waiting and ~0.1-0.3 ms of CPU
  however much it covers, so it is done for a group: the runner calls it from a thread at most
  every few tens of milliseconds, and nobody waits for it.

A file is a run of frames: `magic "BRJ1" | payload length (u32 LE) | crc32 of payload (u32 LE) |
payload`. The first frame is a JSON header naming the columns; each later frame is a JSON array
of up to 16 rows, each row an array of values in the header's column order (so a later version
that adds a field still reads old files).

Guarantees:
- `write` puts its records in the file with one `write(2)`; `sync` returns once everything
  written before it was called is on the disk.
- A torn tail is harmless: reading stops a file at the first frame that is cut short, fails its
  crc or does not decode (a power cut before the sync, or a kill in the middle of a large write).
  Its rows were never in the journal whole, and stay pending.
- A retry pass's answers are in segments tagged with the pass (`tag`), so a resume commits them
  for the pass (they supersede the rows' old records) instead of skipping them as rows the
  checkpoint already counts, which would send them, and pay for them, again.
- The journal never decides what counts; the checkpoint does. A file may hold rows that a
  committed part holds too (a crash between the checkpoint and `release`): whoever reads it skips
  the rows the checkpoint counts, and takes each row once.
- Bounded: `release` syncs and closes the open segment and deletes every segment whose rows the
  checkpoint all counts, so about two flushes of records stay on disk, and in memory only their
  row numbers.
- Thread-safe: `write` (the event loop), `sync` (a thread) and `release` (the writer's thread) are
  ordered by a lock that no one holds while waiting for the disk.
- Records are stored as the writer was given them: the key is scrubbed before a record exists
  (`batchrun.send`), and nothing else (no header, no setting) is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
import zlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from operator import attrgetter
from pathlib import Path
from typing import Any, BinaryIO

from batchrun.common.ranges import RangeSet
from batchrun.models import Record
from batchrun.store.checkpoint import fsync_dir

__all__ = ["JOURNAL_DIR", "Journal", "read_file", "read_tagged"]

JOURNAL_DIR = "journal"
_MAGIC = b"BRJ1"
_FRAME = struct.Struct("<4sII")  # magic, payload length, crc32 of the payload
_CRC_PIECE = 4096
# Records per frame. One frame for a whole group made strings of hundreds of KB under load, and
# the heap they fragmented kept the run's peak RSS ~20 MB higher (224 against 204 MB, 30,000
# requests at C=100); in frames of 16, one write still carries the whole group.
_FRAME_RECORDS = 16
_FORMAT = "batchrun-journal"
_VERSION = 1
_COLUMNS = tuple(f.name for f in fields(Record))
_RECORD_FIELDS = frozenset(_COLUMNS)
_values = attrgetter(*_COLUMNS)
# ensure_ascii=False keeps non-English answers at their UTF-8 size; "surrogatepass" lets a lone
# surrogate (which JSON text may carry) make the round trip instead of failing the whole group.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_SEGMENT_PREFIX, _SUFFIX = "segment-", ".log"


def _encode(value: object) -> bytes:
    return _dumps(value).encode("utf-8", "surrogatepass")


def _crc32(data: bytes) -> int:
    # In pieces under 5 KiB: on a larger buffer zlib.crc32 lets go of the GIL, and a busy thread
    # (the reader's, the writer's) then keeps the event loop waiting for it (py-spy: ~20 us per
    # answer under the overhead benchmark).
    view, crc = memoryview(data), 0
    for start in range(0, len(view), _CRC_PIECE):
        crc = zlib.crc32(view[start : start + _CRC_PIECE], crc)
    return crc


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(_MAGIC, len(payload), _crc32(payload)) + payload


def _header(tag: int | None) -> bytes:
    header: dict[str, Any] = {"format": _FORMAT, "version": _VERSION, "columns": _COLUMNS}
    if tag is not None:
        header["pass"] = tag
    return _frame(_encode(header))


def _group(records: Sequence[Record]) -> bytes:
    return _frame(_encode([_values(r) for r in records]))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _sync(fd: int) -> None:
    # fdatasync leaves out the inode's times but keeps its size, which is what makes an append
    # readable after a crash; where it does not exist (macOS), fsync.
    (os.fdatasync if hasattr(os, "fdatasync") else os.fsync)(fd)


def _payloads(f: BinaryIO) -> Iterator[bytes]:
    """The payloads of the intact frames at the start of `f`; stops at the first bad one."""
    while True:
        head = f.read(_FRAME.size)
        if len(head) < _FRAME.size:
            return
        magic, length, crc = _FRAME.unpack(head)
        if magic != _MAGIC:
            return
        payload = f.read(length)
        if len(payload) != length or _crc32(payload) != crc:
            return
        yield payload


def read_file(path: Path) -> Iterator[Record]:
    """The records of one journal file, oldest first; a torn or damaged tail is dropped."""
    for _, record in read_tagged(path):
        yield record


def read_tagged(path: Path) -> Iterator[tuple[int | None, Record]]:
    """`read_file`, each record with its segment's tag: the retry pass that sent it (None: the
    run's first pass)."""
    with path.open("rb") as f:
        payloads = _payloads(f)
        try:
            header = json.loads(next(payloads, b"null"))
            if header["format"] != _FORMAT:
                return
            columns = [str(c) for c in header["columns"]]
            tag = header.get("pass")
            if tag is not None and not isinstance(tag, int):
                return
        except (ValueError, KeyError, TypeError, AttributeError):
            return  # created, but its first frame never reached the disk whole
        known = [(i, name) for i, name in enumerate(columns) if name in _RECORD_FIELDS]
        for payload in payloads:
            try:
                rows = json.loads(payload.decode("utf-8", "surrogatepass"))
                group = [_record({name: row[i] for i, name in known}) for row in rows]
            except (ValueError, TypeError, IndexError, KeyError):
                return  # passed its crc but is not a group of ours: stop as at a torn tail
            for record in group:
                yield tag, record


def _record(values: dict[str, Any]) -> Record:
    """A Record from its journaled fields: JSON has no tuples, so the tuple fields come back
    as lists and are made tuples again (the record then equals the one written)."""
    media = values.get("media")
    if isinstance(media, list):
        values["media"] = tuple(media)
    billed = values.get("billed")
    if isinstance(billed, list):
        values["billed"] = tuple(tuple(unit) for unit in billed)
    return Record(**values)


@dataclass(slots=True)
class _Segment:
    path: Path
    rows: array[int] = field(default_factory=lambda: array("q"))  # written to this file


class Journal:
    """`OUT/journal/`: the records that arrived since the last part (see the module docstring)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.dir = out_dir / JOURNAL_DIR
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []  # oldest first; the last is open while _fd is set
        self._fd: int | None = None
        self._unsynced = False  # written since the last sync
        self._new_names = False  # a segment created since the last sync: fsync the directory
        self._next: int | None = None  # the next segment's number, found on first use
        self._tag: int | None = None  # the retry pass whose answers are written (None: none)

    def __repr__(self) -> str:
        rows = sum(len(s.rows) for s in self._segments)
        return f"Journal({self.dir}, segments={len(self._segments)}, rows={rows})"

    def files(self) -> list[Path]:
        """Every journal file on disk, in name order."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if _is_journal_file(p.name))

    def write(self, records: Sequence[Record]) -> None:
        """Put `records` in the journal: one write(2) (of a frame per 16 records), no waiting.
        Raises OSError (a full disk, say); then they are not in the journal."""
        if not records:
            return
        frames = b"".join(
            _group(records[i : i + _FRAME_RECORDS]) for i in range(0, len(records), _FRAME_RECORDS)
        )
        with self._lock:
            fd = self._fd
            if fd is None:
                fd = self._open_segment()
                frames = _header(self._tag) + frames
            try:
                _write_all(fd, frames)
            except BaseException:
                # Its tail may be torn: nothing more goes after it (the next write opens a new
                # segment), so every frame written before stays readable.
                with contextlib.suppress(OSError):
                    os.close(fd)
                self._fd = None
                raise
            self._unsynced = True
            self._segments[-1].rows.extend([r.row for r in records])

    def sync(self) -> None:
        """Make everything written so far survive a power cut: fdatasync the open segment (and
        fsync the directory after a new segment). Raises OSError (EIO, or ENOSPC that delayed
        allocation reports only now)."""
        with self._lock:
            if not (self._unsynced or self._new_names):
                return
            # A duplicate: `release` may close the segment while we wait for the disk.
            fd = os.dup(self._fd) if self._fd is not None and self._unsynced else None
            new_names, self._unsynced, self._new_names = self._new_names, False, False
        try:
            if fd is not None:
                _sync(fd)
            if new_names:
                fsync_dir(self.dir)
        except BaseException:
            with self._lock:
                self._unsynced = self._unsynced or fd is not None
                self._new_names = self._new_names or new_names
            raise
        finally:
            if fd is not None:
                os.close(fd)

    def release(self, done: RangeSet) -> None:
        """The checkpoint now counts the rows in `done`: delete the segments that hold only those.

        The open segment is synced and closed first (the next write starts a new one), so that it
        can go as soon as its rows are all counted. No directory fsync for the deletions: a
        segment that comes back after a power cut holds only counted rows, which a resume skips.
        """
        with self._lock:
            fd = self._detach()
            new_names, self._new_names = self._new_names, False
            closed = len(self._segments)  # a segment opened meanwhile is written to: it stays
        if fd is not None:
            try:
                _sync(fd)  # the rows not yet in a part must outlive the closed segment
            finally:
                os.close(fd)
        if new_names:
            fsync_dir(self.dir)
        with self._lock:
            kept = []
            for segment in self._segments[:closed]:
                if all(row in done for row in segment.rows):
                    segment.path.unlink(missing_ok=True)
                else:
                    kept.append(segment)
            self._segments = kept + self._segments[closed:]

    def tag(self, number: int | None) -> None:
        """From now on, records are answers of retry pass `number` (None: of no pass): the open
        segment is closed (synced), and the next write starts one whose header says so, so that
        a resume can tell a pass's answers from the first pass's rows it re-sends."""
        with self._lock:
            fd = self._detach()
            self._tag = number
        if fd is not None:
            try:
                _sync(fd)
            finally:
                os.close(fd)

    def read(self) -> Iterator[Record]:
        """Every intact record of every journal file (for the fold on resume)."""
        for _, record in self.read_tagged():
            yield record

    def read_tagged(self) -> Iterator[tuple[int | None, Record]]:
        """`read`, each record with the retry pass that sent it (`tag`; None: no pass)."""
        for path in self.files():
            yield from read_tagged(path)

    def clear(self) -> None:
        """Delete every journal file: their rows are all counted by the checkpoint."""
        with self._lock:
            fd = self._detach()
            self._segments.clear()
            for path in self.files():
                path.unlink(missing_ok=True)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        """Sync and close the open segment; remove the directory if nothing is left in it."""
        self.sync()
        with self._lock:
            fd = self._detach()
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(OSError):  # not empty (kept for the resume), or never made
            self.dir.rmdir()

    def _open_segment(self) -> int:
        self._make_dir()
        if self._next is None:
            self._next = 1 + max((_segment_number(p.name) for p in self.files()), default=0)
        path = self.dir / f"{_SEGMENT_PREFIX}{self._next:06d}{_SUFFIX}"
        self._next += 1
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._fd = fd
        self._new_names = True
        self._segments.append(_Segment(path))
        return fd

    def _make_dir(self) -> None:
        if not self.dir.is_dir():
            self.dir.mkdir(exist_ok=True)
            fsync_dir(self.out_dir)  # once per output directory's journal, not per answer

    def _detach(self) -> int | None:
        """Stop writing to the open segment (under the lock); the caller closes what it gets."""
        fd, self._fd = self._fd, None
        return fd


def _is_journal_file(name: str) -> bool:
    return name.startswith(_SEGMENT_PREFIX) and name.endswith(_SUFFIX)


def _segment_number(name: str) -> int:
    digits = name[len(_SEGMENT_PREFIX) : -len(_SUFFIX)]
    return int(digits) if name.startswith(_SEGMENT_PREFIX) and digits.isdigit() else 0
