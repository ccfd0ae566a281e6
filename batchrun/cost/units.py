"""What a row will be billed by besides tokens, known before it is sent (for the estimate).

    row_units(url, body, files_root)  ->  {"characters": 42.0} | None

The same units the answers are priced by (`batchrun.endpoints.billing`), from the request alone:
- speech: the characters of `input`;
- transcriptions and translations: the audio's duration, from the header of the file the row
  names (inside `files_root`, as the run would read it); a file that cannot be read or whose
  format is not known makes the row's cost unknown;
- images of a per-image model (dall-e-2/3): `n` images at the row's size and quality. Token
  billed models (gpt-image-1) are counted as tokens instead.
None: the row is billed by tokens alone (gpt-4o-transcribe and gpt-image-1 among them).
`{"unknown": 1.0}`: its units cannot be known (an audio file that cannot be read), so that its
price is unknown, never a guess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchrun.endpoints.audio_length import HEAD_BYTES, audio_seconds_of
from batchrun.endpoints.profiles import profile_for
from batchrun.inputs.files import FilesRoot, UploadProblem
from batchrun.models import Request

__all__ = ["request_units", "row_units"]

_TOKEN_IMAGE_MODELS = ("gpt-image",)


def row_units(url: str, body: dict[str, Any], files_root: Path) -> dict[str, float] | None:
    """For the estimate: a whisper row's file is read from `files_root`."""
    profile = profile_for(url)
    if profile.name == "transcriptions" and not str(body.get("model", "")).startswith("gpt-"):
        seconds = _seconds(body.get("file"), files_root, profile.max_upload_bytes)
        return {"audio_seconds": seconds} if seconds is not None else {"unknown": 1.0}
    return _units(profile.name, body)


def request_units(request: Request, body: Any) -> dict[str, float] | None:
    """For `--max-cost`: the same from a request ready to send, whose uploads the reader has
    already read the durations of. Exact: these families cost what they ask for."""
    if not isinstance(body, dict):
        return None
    profile = profile_for(request.url)
    if profile.name == "transcriptions" and not str(body.get("model", "")).startswith("gpt-"):
        seconds = [u.seconds for u in request.uploads]
        if not seconds or None in seconds:
            return {"unknown": 1.0}
        return {"audio_seconds": float(sum(s for s in seconds if s is not None))}
    return _units(profile.name, body)


def _units(family: str, body: dict[str, Any]) -> dict[str, float] | None:
    if family == "speech":
        text = body.get("input")
        return {"characters": float(len(text))} if isinstance(text, str) else None
    if family in ("images", "image_edits"):
        if str(body.get("model", "")).startswith(_TOKEN_IMAGE_MODELS):
            return None
        n = body.get("n")
        count = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
        size = body.get("size") or "1024x1024"
        quality = body.get("quality") or "standard"
        return {f"images@{quality} {size}": float(count)}
    return None


def _seconds(name: object, root: Path, limit: int | None) -> float | None:
    try:
        path = FilesRoot(root).resolve(name, limit_bytes=limit)
        with path.open("rb") as f:
            head = f.read(HEAD_BYTES)
        return audio_seconds_of(head, path.stat().st_size)
    except (UploadProblem, OSError):
        return None
