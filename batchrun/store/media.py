"""Media files under `OUT/media/`: audio, images and video a row produced, one file each.

    media = MediaStore(out_dir)
    with media.open("row-7", 0, "audio/mpeg") as f:    # streamed: any size, flat memory
        for chunk in body: f.write(chunk)
    f.relative_path                                   # "media/3f/row-7-3f2a9c0d11-0.mp3"

Guarantees:
- Names are derived from the row, never taken from it: the custom_id made safe (letters, digits,
  `._-`; at most 64 characters; no leading dot), then 10 hex digits of its sha256, then the index
  and an extension chosen from the content type. No custom_id (`../../x`, `/etc/passwd`, NUL,
  300 characters, two ids that differ only in case) can put a file outside `OUT/media` or make
  two rows share a file. Files sit in 256 folders by hash, so a folder never holds them all.
- A file is written under a hidden temporary name, fsynced, then renamed into place and its
  folder fsynced: a reader never sees half a file. The same row always gets the same name, so a
  row sent again after a crash replaces its file instead of leaving an orphan beside it.
- `sweep` removes temporary files a killed run left behind; call it before a resumed run sends.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from types import TracebackType
from typing import Self

from batchrun.store.checkpoint import fsync_dir

__all__ = ["MEDIA_DIR", "MediaFile", "MediaStore", "extension_for"]

MEDIA_DIR = "media"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM = 64
_TMP_SUFFIX = ".tmp"

_EXTENSIONS = {
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "audio/ogg": ".ogg",
    "audio/opus": ".opus",
    "audio/aac": ".aac",
    "audio/flac": ".flac",
    "audio/x-flac": ".flac",
    "audio/pcm": ".pcm",
    "audio/l16": ".pcm",
    "audio/mp4": ".m4a",
    "audio/webm": ".webm",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "text/plain": ".txt",
    "text/vtt": ".vtt",
    "application/x-subrip": ".srt",
    "application/json": ".json",
}


def extension_for(content_type: str | None) -> str:
    """The file extension of a content type (`audio/mpeg; charset=x` -> `.mp3`); `.bin` when
    it is unknown or absent."""
    if not content_type:
        return ".bin"
    base = content_type.split(";", 1)[0].strip().lower()
    return _EXTENSIONS.get(base, ".bin")


def _safe_stem(custom_id: str) -> str:
    stem = _UNSAFE.sub("_", custom_id).lstrip(".")[:_MAX_STEM]
    return stem or "row"


class MediaFile:
    """One media file being written; `commit` puts it in place, leaving the block aborts it."""

    def __init__(self, final: Path, relative_path: str) -> None:
        self.final = final
        self.relative_path = relative_path
        self.size = 0
        self._tmp = final.with_name(f".{final.name}{_TMP_SUFFIX}")
        final.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._tmp.open("wb")
        self._done = False

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.size += len(data)

    def commit(self) -> str:
        """Durable and in place; returns the path relative to OUT."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._tmp.replace(self.final)
        fsync_dir(self.final.parent)
        self._done = True
        return self.relative_path

    def abort(self) -> None:
        if not self._done:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            self._done = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and not self._done:
            self.commit()
        else:
            self.abort()


class MediaStore:
    """Owns `OUT/media/`. Any number of files may be open at once (one per row in flight)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.root = out_dir / MEDIA_DIR

    def relative_path(self, custom_id: str, index: int, content_type: str | None) -> str:
        digest = hashlib.sha256(custom_id.encode("utf-8", "surrogatepass")).hexdigest()
        name = f"{_safe_stem(custom_id)}-{digest[:10]}-{index}{extension_for(content_type)}"
        return f"{MEDIA_DIR}/{digest[:2]}/{name}"

    def open(self, custom_id: str, index: int, content_type: str | None) -> MediaFile:
        if index < 0:
            raise ValueError(f"index must be zero or more, got {index}")
        relative = self.relative_path(custom_id, index, content_type)
        return MediaFile(self.out_dir / relative, relative)

    def write(self, custom_id: str, index: int, content_type: str | None, data: bytes) -> str:
        """A whole file at once (a decoded b64_json image, say); the path relative to OUT."""
        with self.open(custom_id, index, content_type) as f:
            f.write(data)
        return f.relative_path

    def sweep(self) -> int:
        """Remove the temporary files of writes a crash interrupted; how many there were."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for path in self.root.glob(f"*/.*{_TMP_SUFFIX}"):
            path.unlink(missing_ok=True)
            removed += 1
        return removed
