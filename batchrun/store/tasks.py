"""The task journal: `OUT/tasks/journal.jsonl`, what was submitted for each task row.

    journal.jsonl     one header, then per task row (row number, custom_id, request_sha256):
                      intent ─► submitted (task id) ─► ended (how) ─► finished
                      (a row sent again after it finished, by a retry pass, starts anew)

A submit-then-poll task (Midjourney, Suno, video) is paid for when it is submitted, and the
gateways have no idempotency keys: a second submit is a second charge. The journal is what makes
money spent once (DESIGN invariant 3):
- `intent` is durable before the submit is sent. A row found with an intent and no task id had
  its submit in flight at a crash: it may have been accepted, so it is never resent silently.
- `submitted` (the task id) is durable before the row counts as submitted: a resume polls it.
- `ended` (`TaskEnd`: success or failure, the reason, what a follow-up row needs of the task)
  is durable before the row's record is handed to the writer, so a follow-up row (`"after"`)
  finds its parent here in any later run, whenever that run was killed.
- `finished` once the row's final record is committed: the task needs nothing more. (A submit
  the gateway refused has no `ended`: its `finished` line carries the end.)

Guarantees:
- `write` appends its lines with one write(2); `sync` (from any thread, at most one at a time
  worth calling) makes everything written before it durable. The runner groups many rows per
  sync (`batchrun.runner.groupcommit`), so a sync costs a few ms for all of them.
- A crash mid-write leaves a torn last line, cut off by `open`; every whole line before it
  stands. A crash between two lines leaves the row in the earlier state.
- Memory: one small entry per task row of this output (with a finished task's follow-up view:
  for Midjourney its buttons, about 1 KB).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from batchrun.store.checkpoint import CheckpointError, fsync_dir
from batchrun.store.jsonlines import (
    create_journal,
    cut_torn,
    encode_line,
    read_journal,
    whole_lines,
)

__all__ = [
    "TASKS_DIR",
    "TaskEnd",
    "TaskEntry",
    "TaskJournal",
    "TaskJournalError",
    "TaskLine",
]

TASKS_DIR = "tasks"
JOURNAL_NAME = "journal.jsonl"
_FORMAT = "batchrun-tasks"
_VERSION = 1

Step = Literal["intent", "submitted", "ended", "finished"]


class TaskJournalError(CheckpointError):
    """`OUT/tasks/journal.jsonl` cannot be read (another format, a damaged line)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskEnd:
    """How a row's task ended, as its follow-up rows need it: `ok`, or the failure's reason;
    `view_json` is the part of the task's JSON the family's `follow_up` reads, as compact JSON
    text (held so in memory: a third of the parsed value's size), or None."""

    ok: bool
    reason: str | None = None
    view_json: str | None = None

    @classmethod
    def of(cls, *, ok: bool, reason: str | None = None, view: Any = None) -> TaskEnd:
        text = (
            None if view is None else json.dumps(view, separators=(",", ":"))
        )  # ASCII: 1 B a char
        return cls(ok=ok, reason=reason, view_json=text)

    @property
    def view(self) -> Any:
        return None if self.view_json is None else json.loads(self.view_json)

    def entry(self) -> dict[str, Any]:
        line: dict[str, Any] = {"ok": self.ok}
        if self.reason is not None:
            line["reason"] = self.reason
        if self.view_json is not None:
            line["view"] = self.view
        return line

    @classmethod
    def parse(cls, value: Any) -> TaskEnd | None:
        if not isinstance(value, dict):
            return None  # a journal written before ends were kept
        reason = value.get("reason")
        return cls.of(
            ok=value.get("ok") is True,
            reason=str(reason) if reason is not None else None,
            view=value.get("view"),
        )


@dataclass(slots=True, kw_only=True)
class TaskEntry:
    """What the journal says about one row (the latest of its lines)."""

    row: int
    custom_id: str
    request_sha256: str
    task_id: str | None = None  # None: an intent only (the submit may have been accepted)
    submitted_at: float | None = None  # wall clock (time.time()), for the task's age and timeout
    finished: bool = False
    end: TaskEnd | None = None  # how its task ended (None: not yet, or not journaled)

    @property
    def state(self) -> Step:
        if self.finished:
            return "finished"
        return "intent" if self.task_id is None else "submitted"


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskLine:
    """One line to append (`TaskJournal.write`)."""

    step: Step
    row: int
    custom_id: str = ""
    request_sha256: str = ""
    task_id: str | None = None
    end: TaskEnd | None = None  # on an `ended` (or `finished`) line
    at: float = 0.0

    def entry(self) -> dict[str, Any]:
        line: dict[str, Any] = {"step": self.step, "row": self.row}
        if self.step == "intent":
            line.update(id=self.custom_id, sha=self.request_sha256)
        elif self.step == "submitted":
            line["task_id"] = self.task_id
        if self.end is not None:
            line["end"] = self.end.entry()
        line["at"] = round(self.at or time.time(), 3)
        return line


class TaskJournal:
    """The append-only task journal of one output (see the module docstring)."""

    def __init__(self, out_dir: Path, entries: dict[int, TaskEntry]) -> None:
        self.out_dir = out_dir
        self.path = self.path_in(out_dir)
        self.entries = entries
        self._rows = {e.custom_id: e.row for e in entries.values()}  # custom_id -> latest row
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._writable = False  # opened for writing, the file not made yet
        self._unsynced = False

    def __repr__(self) -> str:
        return f"TaskJournal({self.path}, rows={len(self.entries)})"

    @staticmethod
    def path_in(out_dir: Path) -> Path:
        return out_dir / TASKS_DIR / JOURNAL_NAME

    @classmethod
    def open(cls, out_dir: Path) -> TaskJournal:
        """The journal for appending, made if there is none; a torn last line is cut off. The
        caller holds the output lock."""
        path = cls.path_in(out_dir)
        raw = read_journal(path, TaskJournalError)
        if raw:
            lines, good = whole_lines(raw)
            journal = cls(out_dir, _parse(path, lines))
            if good < len(raw):
                cut_torn(path, good)
            journal._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            return journal
        journal = cls(out_dir, {})
        journal._writable = True  # the file is made by the first write: a run without task
        return journal  # rows leaves no OUT/tasks behind

    def _create(self) -> int:
        path = self.path
        if not path.parent.is_dir():
            path.parent.mkdir()
            fsync_dir(self.out_dir)
        create_journal(path, {"format": _FORMAT, "version": _VERSION, "created_at": time.time()})
        return os.open(path, os.O_WRONLY | os.O_APPEND)

    @classmethod
    def load(cls, out_dir: Path) -> TaskJournal | None:
        """The journal as it stands, read only; None when OUT never ran a task."""
        path = cls.path_in(out_dir)
        raw = read_journal(path, TaskJournalError)
        if raw is None:
            return None
        lines, _ = whole_lines(raw)
        return cls(out_dir, _parse(path, lines))

    def write(self, lines: Sequence[TaskLine]) -> None:
        """Append `lines` with one write(2) and apply them; not yet synced. Raises OSError."""
        if not lines:
            return
        data = b"".join(encode_line(line.entry()) for line in lines)
        with self._lock:
            if self._fd is None:
                if not self._writable:
                    raise RuntimeError("the task journal is closed or was loaded read-only")
                self._fd = self._create()
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            self._unsynced = True
            for line in lines:
                _apply(self.entries, line.entry())
                if line.step == "intent":
                    self._rows[line.custom_id] = line.row

    def sync(self) -> None:
        """Make every line written so far durable (fdatasync). Raises OSError."""
        with self._lock:
            if not self._unsynced or self._fd is None:
                return
            fd, self._unsynced = os.dup(self._fd), False
        try:
            (os.fdatasync if hasattr(os, "fdatasync") else os.fsync)(fd)
        except BaseException:
            with self._lock:
                self._unsynced = True
            raise
        finally:
            os.close(fd)

    def finish(self, rows: Iterable[int]) -> None:
        """Rows whose final record is committed: `finished` lines for those with a task, synced
        (from the writer's thread, once per part). An intent without a task id stays: its
        record says submit_unknown, and a retry pass must not take it for a new row."""
        lines = [
            TaskLine(step="finished", row=row)
            for row in rows
            if (entry := self.entries.get(row)) is not None
            and entry.task_id is not None
            and not entry.finished
        ]
        if lines:
            self.write(lines)
            self.sync()

    def by_custom_id(self, custom_id: str) -> TaskEntry | None:
        """The entry of the task row with this custom_id (its latest row), if there is one."""
        row = self._rows.get(custom_id)
        return None if row is None else self.entries.get(row)

    def unknown(self) -> list[TaskEntry]:
        """Rows with an intent and no task id: their submit may have been accepted."""
        return [e for e in self.entries.values() if e.state == "intent"]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sync()
        with self._lock:
            fd, self._fd, self._writable = self._fd, None, False
        if fd is not None:
            os.close(fd)


def _parse(path: Path, lines: list[bytes]) -> dict[int, TaskEntry]:
    try:
        header = json.loads(lines[0]) if lines else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise TaskJournalError(f"{path} is not a batchrun task journal; use a new --out")
    if header.get("version") != _VERSION:
        raise TaskJournalError(f"{path}: unsupported version {header.get('version')!r}")
    entries: dict[int, TaskEntry] = {}
    for number, line in enumerate(lines[1:], start=2):
        try:
            _apply(entries, json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            raise TaskJournalError(f"{path} line {number} is damaged ({exc!r})") from exc
    return entries


def _apply(entries: dict[int, TaskEntry], line: dict[str, Any]) -> None:
    step, row = line["step"], int(line["row"])
    if step == "intent":
        # Also over a finished entry: the row is being sent again (a retry pass).
        entries[row] = TaskEntry(row=row, custom_id=str(line["id"]), request_sha256=line["sha"])
        return
    entry = entries[row]
    if step == "submitted":
        entry.task_id = str(line["task_id"])
        entry.submitted_at = float(line["at"])
    elif step == "ended":
        entry.end = TaskEnd.parse(line.get("end"))
    elif step == "finished":
        entry.finished = True
        entry.end = TaskEnd.parse(line.get("end")) or entry.end
    else:
        raise ValueError(f"unknown step {step!r}")
