"""OUT on shared storage: a local directory, or an object store through a pyarrow filesystem.

A cluster run keeps one small plan object (`OUT/cluster.json`) and, per shard, an output like a
local run's (`OUT/shards/<id>/checkpoint.json`, `results/part-NNNNNN.parquet`).

Guarantees:
- `write_whole` replaces an object so that a reader sees the old bytes or the new, never part:
  locally by `atomic_write_bytes` (rename), on an object store by one upload, which the store
  makes visible only once it is complete (there is no rename there).
- `ShardMirror` stages a shard's output in a local directory, where the writer commits as it
  does for a local run, and copies each commit out in the same order: every new part object
  written whole first, then the checkpoint object that counts it. A part object the checkpoint
  does not count yet (a crash between the two) is pulled back on resume and adopted by the
  writer's `recover`, as a local orphan part is: its rows are neither lost nor sent twice.
- `pull` starts from an empty staging directory: the object store is the truth.
"""

from __future__ import annotations

import posixpath
import shutil
from pathlib import Path

import pyarrow.fs as pafs

from batchrun.store.checkpoint import CHECKPOINT_NAME, atomic_write_bytes
from batchrun.store.writer import RESULTS_DIR

__all__ = ["OutputLocation", "ShardMirror", "is_remote"]

_COPY_BLOCK = 1 << 20


def is_remote(uri: str) -> bool:
    """An object-store URI (`s3://...`, `gs://...`), as opposed to a local path."""
    return "://" in uri and not uri.startswith("file://")


class OutputLocation:
    """Where OUT is. Paths inside it are '/'-separated and relative (`shards/x/checkpoint.json`)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        if is_remote(uri):
            fs, base = pafs.FileSystem.from_uri(uri)
            self.fs: pafs.FileSystem = fs
            self.base = base.rstrip("/")
        else:
            self.fs = pafs.LocalFileSystem()
            self.base = str(Path(uri.removeprefix("file://")).resolve())

    @property
    def local(self) -> Path | None:
        """OUT as a local directory, or None on an object store."""
        return None if is_remote(self.uri) else Path(self.base)

    def _path(self, rel: str) -> str:
        return posixpath.join(self.base, rel) if rel else self.base

    def read_bytes(self, rel: str) -> bytes | None:
        """The object's bytes, None when there is none."""
        path = self._path(rel)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            data: bytes = f.read()
            return data

    def write_whole(self, rel: str, data: bytes) -> None:
        local = self.local
        if local is not None:
            target = local / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, data)
            return
        with self.fs.open_output_stream(self._path(rel)) as f:
            f.write(data)

    def names(self, rel_dir: str) -> list[str]:
        """The file names directly inside `rel_dir` (none when it does not exist)."""
        path = self._path(rel_dir)
        if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
            return []
        selector = pafs.FileSelector(path, allow_not_found=True)
        return sorted(
            i.base_name for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.File
        )

    def download(self, rel: str, target: Path) -> None:
        with self.fs.open_input_stream(self._path(rel)) as src, target.open("wb") as dst:
            while block := src.read(_COPY_BLOCK):
                dst.write(block)

    def upload(self, source: Path, rel: str) -> None:
        with source.open("rb") as src, self.fs.open_output_stream(self._path(rel)) as dst:
            while block := src.read(_COPY_BLOCK):
                dst.write(block)


class ShardMirror:
    """A shard's output staged locally and copied, commit by commit, to an object store."""

    def __init__(self, location: OutputLocation, prefix: str, staging: Path) -> None:
        self.location = location
        self.prefix = prefix.rstrip("/")
        self.staging = staging
        self._pushed: set[str] = set()

    def pull(self) -> None:
        """A fresh staging directory holding what the object store has of this shard."""
        shutil.rmtree(self.staging, ignore_errors=True)
        (self.staging / RESULTS_DIR).mkdir(parents=True)
        results = f"{self.prefix}/{RESULTS_DIR}"
        for name in self.location.names(results):
            if name.startswith("part-"):
                self.location.download(f"{results}/{name}", self.staging / RESULTS_DIR / name)
                self._pushed.add(name)
        for name in self.location.names(self.prefix):
            if not name.startswith("."):
                self.location.download(f"{self.prefix}/{name}", self.staging / name)

    def push(self) -> None:
        """Copy what the writer committed since the last push: parts first, then the rest
        (the checkpoint, the estimate)."""
        results = self.staging / RESULTS_DIR
        for path in sorted(results.glob("part-*.parquet")):
            if path.name not in self._pushed:
                self.location.upload(path, f"{self.prefix}/{RESULTS_DIR}/{path.name}")
                self._pushed.add(path.name)
        for path in sorted(self.staging.iterdir()):
            if path.is_file() and not path.name.startswith(".") and path.name != CHECKPOINT_NAME:
                self.location.upload(path, f"{self.prefix}/{path.name}")
        checkpoint = self.staging / CHECKPOINT_NAME
        if checkpoint.exists():
            self.location.write_whole(f"{self.prefix}/{CHECKPOINT_NAME}", checkpoint.read_bytes())
