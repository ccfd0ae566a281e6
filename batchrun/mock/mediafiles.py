"""The audio and video files the mock's task families hand out, made from their names alone.

    <16 hex>-<seconds>s-<n>.mp3   an MP3 of that many seconds (`batchrun.mock.audio.mp3_of`)
    <16 hex>-<n>.mp4              an MP4 container: an `ftyp` box and an `mdat` of filler

Like the PNGs of `batchrun.mock.images`, a name is all the media route needs: it keeps no state.
The MP4 is not a playable film (no `moov` box): it is what a downloader sees, a file whose
first bytes say MP4 and whose length is fixed by its name.
"""

from __future__ import annotations

import hashlib
import re
import struct

from batchrun.mock.audio import mp3_of

__all__ = ["media_file", "mp3_name", "mp4_name", "mp4_of"]

_MP3 = re.compile(r"^([0-9a-f]{16})-(\d{1,3})s-(\d+)\.mp3$")
_MP4 = re.compile(r"^([0-9a-f]{16})-(\d+)\.mp4$")
_MP4_BYTES = 16 * 1024


def _seed(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def mp3_name(text: str, seconds: int, n: int) -> str:
    return f"{_seed(text)}-{seconds}s-{n}.mp3"


def mp4_name(text: str, n: int) -> str:
    return f"{_seed(text)}-{n}.mp4"


def mp4_of(name: str) -> bytes:
    ftyp = b"ftyp" + b"isom" + struct.pack(">I", 512) + b"isomiso2mp41"
    filler = hashlib.shake_256(name.encode()).digest(_MP4_BYTES)
    return (
        struct.pack(">I", 4 + len(ftyp))
        + ftyp
        + struct.pack(">I", 8 + len(filler))
        + b"mdat"
        + filler
    )


def media_file(name: str) -> tuple[bytes, bytes] | None:
    """(bytes, content type) of an audio or video name the mock hands out, else None."""
    if (match := _MP3.match(name)) is not None:
        return mp3_of(name.encode(), int(match.group(2))), b"audio/mpeg"
    if _MP4.match(name) is not None:
        return mp4_of(name), b"video/mp4"
    return None
