"""Files a row names for upload (audio to transcribe, images to edit), checked before sending.

    root = FilesRoot(Path("data"))            # --files-root, default: the input file's folder
    root.resolve("clips/a.mp3", limit_bytes=25 * 2**20)   # Path, or raises UploadProblem

Guarantees (DESIGN invariant 7: files stay where they belong):
- A file is read only from inside the root: the name is resolved with every symlink followed
  and must land inside the resolved root. `../x`, an absolute path elsewhere, a symlink that
  points out, NUL bytes and the like are refused with a reason, never opened.
- A missing file, a directory, an unreadable file, or one over the endpoint's limit is refused
  with a reason; the caller turns it into a `bad_input` record with the row's line number.
- Nothing is read here but the file's metadata: uploads are streamed from disk when sent.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FilesRoot", "UploadProblem"]


class UploadProblem(ValueError):
    """A file a row names cannot be uploaded; the message says why, naming the file."""


class FilesRoot:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._resolved = root.resolve()

    def resolve(self, name: object, *, limit_bytes: int | None = None) -> Path:
        if not isinstance(name, str) or not name:
            raise UploadProblem(f"a file name must be a non-empty string, got {name!r}")
        if "\x00" in name:
            raise UploadProblem(f"the file name {name!r} holds a NUL byte")
        candidate = Path(name)
        path = (candidate if candidate.is_absolute() else self._resolved / candidate).resolve()
        if not path.is_relative_to(self._resolved):
            raise UploadProblem(
                f"{name!r} is outside the files root {self.root} (--files-root); files are "
                "read only from inside it"
            )
        try:
            info = path.stat()
        except FileNotFoundError:
            raise UploadProblem(f"file not found: {name!r} (looked in {self.root})") from None
        except OSError as exc:
            raise UploadProblem(f"cannot read {name!r}: {exc.strerror or exc}") from None
        if not path.is_file():
            raise UploadProblem(f"{name!r} is not a regular file")
        if not os.access(path, os.R_OK):
            raise UploadProblem(f"cannot read {name!r}: permission denied")
        if limit_bytes is not None and info.st_size > limit_bytes:
            raise UploadProblem(
                f"{name!r} is {info.st_size:,} bytes, over this endpoint's limit of "
                f"{limit_bytes:,} bytes"
            )
        return path
