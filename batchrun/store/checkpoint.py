"""What a run has finished, kept so that a run killed at any instant can resume.

`OUT/checkpoint.json` holds:
- the input's fingerprint (a changed input file is refused on resume),
- the settings that change what a row means (the endpoint, the template's digest),
- `parts`: how many result part files are committed (`part-000000.parquet` .. `parts - 1`),
- `done`: the finished input row numbers as sorted, merged `[start, end)` ranges,
- `total_rows`: None until the first pass has counted the rows (it runs alongside sending, so
  parts can be committed before it is known),
- `duplicates`: None until the first pass has judged every row's custom_id; then how many rows
  repeat an earlier row's id (listed in `OUT/duplicates.bin`, see `batchrun.store.duplicates`).
  A resume with it unknown judges the ids again.
- `first_part`: parts below it are gone (a compaction replaced them); committed parts are
  `first_part .. parts - 1`.
- `passes`: the passes that re-sent rows (`--retry-errors`), oldest first; the last may be open
  (`RerunPass.finished` False), its rows to send listed in `OUT/pass-N.rows`
  (`batchrun.store.rerun`). A row's current record is the one in its latest committed part.
- `stale_records`: how many records in the committed parts a later record has superseded (0 after
  `batchrun compact`): while it is not 0, plain Parquet readers of `OUT/results` see them too.
- `results_schema`: which columns the part files have (`batchrun.store.writer`); 1 for an output
  started before the answer columns existed, whose checkpoint does not say.

Guarantees:
- `save` is atomic: write a temporary file, fsync, rename, fsync the directory. A reader sees the
  old checkpoint or the new one, never half of one.
- The writer commits a part file before the checkpoint that counts it, so the checkpoint never
  names a part that is not complete on disk. A part committed after the last checkpoint (a crash
  between the two steps) is adopted on resume by the writer, not sent again.
- `RangeSet` stays small: rows finish roughly in order, so ranges merge and their number is bounded
  by what was in flight, not by the size of the input.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from batchrun.common.ranges import RangeSet

__all__ = [
    "CHECKPOINT_NAME",
    "RESULTS_DIR",
    "RESULTS_SCHEMA_VERSION",
    "Checkpoint",
    "CheckpointError",
    "Fingerprint",
    "OutputLock",
    "OutputLockedError",
    "RerunPass",
    "atomic_write_bytes",
    "discard_unused_output",
    "fingerprint_file",
]

RESULTS_DIR = "results"  # the part files, under OUT
RESULTS_SCHEMA_VERSION = 2  # the columns a new output's parts have (batchrun.store.writer)

CHECKPOINT_NAME = "checkpoint.json"
_FORMAT_VERSION = 1
# Files up to this size are hashed whole; larger ones by sampled blocks, so that resuming a
# 100 GB input does not cost minutes of hashing.
_FULL_HASH_LIMIT = 1 << 30
_SAMPLE_BLOCK = 1 << 20
_SAMPLE_COUNT = 64


class CheckpointError(Exception):
    """The output directory cannot be resumed as asked (changed input, damaged checkpoint...)."""


class OutputLockedError(CheckpointError):
    """Another batchrun process is writing to the same output directory."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fingerprint:
    size: int
    digest: str
    method: str  # "sha256" (whole file) or "sha256-sampled"

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "digest": self.digest, "method": self.method}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fingerprint:
        return cls(size=int(data["size"]), digest=str(data["digest"]), method=str(data["method"]))


def fingerprint_file(path: Path) -> Fingerprint:
    """Identify the input's content: whole-file sha256 up to 1 GiB, sampled blocks beyond.

    An input that cannot be read at all (a directory, no permission) is a `CheckpointError`
    with the reason, not a traceback: it is the first thing a run reads.
    """
    if path.is_dir():
        raise CheckpointError(f"input is a directory, not a file: {path}")
    try:
        return _fingerprint(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read the input file {path}: {exc.strerror or exc}") from exc


def _fingerprint(path: Path) -> Fingerprint:
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size <= _FULL_HASH_LIMIT:
            while chunk := f.read(1 << 20):
                h.update(chunk)
            return Fingerprint(size=size, digest=h.hexdigest(), method="sha256")
        # Evenly spaced from the first block to one ending exactly at the last byte.
        for i in range(_SAMPLE_COUNT):
            f.seek(i * (size - _SAMPLE_BLOCK) // (_SAMPLE_COUNT - 1))
            h.update(f.read(_SAMPLE_BLOCK))
    return Fingerprint(size=size, digest=h.hexdigest(), method="sha256-sampled")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True, kw_only=True)
class RerunPass:
    """One pass that re-sends rows of a finished output. Mutable: only the writer changes it.

    `done` holds positions in the pass's list of rows (`OUT/pass-N.rows`), not row numbers:
    rows are handed out in list order, so the positions merge into few ranges even when the
    rows are scattered over the whole input."""

    number: int  # 1, 2, ... (the output's first pass over the input is not counted)
    kind: str  # "retry"
    error_types: list[str]
    rows: int  # how many rows the pass sends
    done: RangeSet = field(default_factory=RangeSet)
    fixed: int = 0  # rows whose new record is ok
    finished: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "kind": self.kind,
            "error_types": self.error_types,
            "rows": self.rows,
            "done": [[s, e] for s, e in self.done.ranges()],
            "fixed": self.fixed,
            "finished": self.finished,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RerunPass:
        return cls(
            number=int(data["number"]),
            kind=str(data["kind"]),
            error_types=[str(t) for t in data["error_types"]],
            rows=int(data["rows"]),
            done=RangeSet((int(s), int(e)) for s, e in data["done"]),
            fixed=int(data.get("fixed", 0)),
            finished=bool(data["finished"]),
        )


@dataclass(slots=True, kw_only=True)
class Checkpoint:
    """The resumable state of one output directory. Mutable: only the writer changes it."""

    input_path: str
    fingerprint: Fingerprint
    settings: dict[str, Any]
    parts: int = 0
    done: RangeSet = field(default_factory=RangeSet)
    total_rows: int | None = None
    duplicates: int | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0})
    cost_usd: float = 0.0  # spent on the committed records whose price is known
    first_part: int = 0
    passes: list[RerunPass] = field(default_factory=list)
    stale_records: int = 0

    @property
    def open_pass(self) -> RerunPass | None:
        """The pass that re-sends rows and has not finished, if there is one."""
        if self.passes and not self.passes[-1].finished:
            return self.passes[-1]
        return None

    results_schema: int = RESULTS_SCHEMA_VERSION

    @classmethod
    def path_in(cls, out_dir: Path) -> Path:
        return out_dir / CHECKPOINT_NAME

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _FORMAT_VERSION,
            "input_path": self.input_path,
            "fingerprint": self.fingerprint.to_json(),
            "settings": self.settings,
            "parts": self.parts,
            "total_rows": self.total_rows,
            "duplicates": self.duplicates,
            "counts": self.counts,
            "cost_usd": self.cost_usd,
            "results_schema": self.results_schema,
            "done": [[s, e] for s, e in self.done.ranges()],
            "first_part": self.first_part,
            "passes": [p.to_json() for p in self.passes],
            "stale_records": self.stale_records,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        if data.get("version") != _FORMAT_VERSION:
            raise CheckpointError(f"unsupported checkpoint version {data.get('version')!r}")
        total_rows = data.get("total_rows")
        # Written before the first pass ran alongside sending: the ids were all checked first,
        # and an input with a repeated id was refused, so a known total means none repeats.
        duplicates = data.get("duplicates", 0 if total_rows is not None else None)
        return cls(
            input_path=str(data["input_path"]),
            fingerprint=Fingerprint.from_json(data["fingerprint"]),
            settings=dict(data["settings"]),
            parts=int(data["parts"]),
            done=RangeSet((int(s), int(e)) for s, e in data["done"]),
            total_rows=None if total_rows is None else int(total_rows),
            duplicates=None if duplicates is None else int(duplicates),
            counts={str(k): int(v) for k, v in data.get("counts", {}).items()},
            cost_usd=float(data.get("cost_usd", 0.0)),
            # Absent from outputs made before passes and compaction existed.
            first_part=int(data.get("first_part", 0)),
            passes=[RerunPass.from_json(p) for p in data.get("passes", [])],
            stale_records=int(data.get("stale_records", 0)),
            # Absent: written before the answer columns, so its parts have the first schema.
            results_schema=int(data.get("results_schema", 1)),
        )

    def save(self, out_dir: Path) -> None:
        data = json.dumps(self.to_json(), separators=(",", ":")).encode() + b"\n"
        atomic_write_bytes(self.path_in(out_dir), data)

    @classmethod
    def load(cls, out_dir: Path) -> Checkpoint | None:
        path = cls.path_in(out_dir)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return cls.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # valid JSON, wrong shape
            raise CheckpointError(f"{path} is damaged ({exc}); use a new --out directory") from exc

    def differs(self, fingerprint: Fingerprint, settings: dict[str, Any]) -> bool:
        """Whether the input or a setting that changes what a row means is not as it was."""
        if fingerprint != self.fingerprint:
            return True
        return any(self.settings.get(k) != settings.get(k) for k in {**self.settings, **settings})

    def check_resumable(self, fingerprint: Fingerprint, settings: dict[str, Any]) -> None:
        """Refuse to continue a run whose input or meaning has changed."""
        if fingerprint != self.fingerprint:
            raise CheckpointError(
                f"the input file has changed since this output was started "
                f"(was {self.fingerprint.size} bytes, sha256 {self.fingerprint.digest[:12]}; "
                f"now {fingerprint.size} bytes, sha256 {fingerprint.digest[:12]}). "
                "Add --update to send only its changed and new rows (rows are matched by "
                "custom_id, or by row number where they have none), or use a new --out "
                "directory for a different input."
            )
        # A setting the checkpoint lacks was not set then (an output older than the setting):
        # resuming it with the setting given would change what its rows mean.
        for key in {**self.settings, **settings}:
            old, new = self.settings.get(key), settings.get(key)
            if new != old:
                raise CheckpointError(
                    f"--{key.replace('_', '-')} was {_shown(key, old)} when this output was "
                    f"started and is {_shown(key, new)} now; use the same value to resume, "
                    "--update to re-send the rows whose requests it changes, or a new --out "
                    "directory"
                )


def _shown(key: str, value: Any) -> str:
    if value is None:
        return "not set"
    if key == "template" and isinstance(value, str):
        return f"a template with sha256 {value[:12]}"  # the digest of what it sends
    return repr(value)


class OutputLock:
    """An exclusive lock on an output directory, held for the life of a run.

    flock is released by the kernel when the process dies, even by kill -9, so a crashed run never
    leaves a stale lock behind.
    """

    def __init__(self, out_dir: Path) -> None:
        self._path = out_dir / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # read-only file system, no permission, no space
            raise CheckpointError(
                f"cannot write to the output directory {self._path.parent}: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputLockedError(
                f"another batchrun process is already writing to {self._path.parent}; "
                "wait for it to finish or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def discard_unused_output(out_dir: Path) -> None:
    """Remove an output directory that a refused run created and left holding only its lock (and
    an empty results folder): a refusal leaves nothing behind. Anything else in it stays, and so
    does the directory."""
    with contextlib.suppress(OSError):
        results = out_dir / RESULTS_DIR
        if {entry.name for entry in out_dir.iterdir()} <= {".lock", RESULTS_DIR} and not (
            results.is_dir() and any(results.iterdir())
        ):
            with contextlib.suppress(FileNotFoundError):
                results.rmdir()
            (out_dir / ".lock").unlink(missing_ok=True)
            out_dir.rmdir()
