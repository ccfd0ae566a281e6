"""How many prompt tokens an image costs, by the rules in OpenAI's vision guide.

Two published rules, chosen per model family by `batchrun.cost.tokens`:

- tiles (gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1, o3, gpt-4-turbo): `detail: "low"` costs the base
  tokens alone. Otherwise the image is scaled down to fit in 2048x2048, then scaled down so that its
  shortest side is 768px (never up), sides rounded to whole pixels; it costs the base tokens plus
  the tile tokens for every 512px tile needed to cover it. gpt-4o: 85 + 170 per tile.
- patches (gpt-4.1-mini/nano, gpt-5-mini/nano, o4-mini): the number of 32px patches needed to cover
  the image, capped at 1536 by scaling the image down, times a per-model multiplier, rounded up.
  The guide gives no low-detail discount for these models, so `detail` is ignored.

When the size is unknown (a remote URL), the caller uses `DEFAULT_IMAGE_SIZE` and says so, or, for
a bound, `largest_image_tokens`: what the rule bills for the largest image (tiles: 8 of them, a
768x2048 image after scaling; patches: 1536). For a `data:` URL the size is read from the PNG,
GIF, WebP or JPEG header, decoding only the few bytes that hold it.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "PatchRule",
    "TileRule",
    "image_size_from_data_url",
    "image_tokens",
    "largest_image_tokens",
]

DEFAULT_IMAGE_SIZE = (1024, 1024)
"""Assumed size of an image whose size cannot be read offline (765 tokens on gpt-4o)."""

_MAX_PATCHES = 1536
_MAX_TILES = 8


@dataclass(frozen=True, slots=True)
class TileRule:
    base_tokens: int
    tile_tokens: int


@dataclass(frozen=True, slots=True)
class PatchRule:
    multiplier: float


def image_tokens(width: int, height: int, detail: str, rule: TileRule | PatchRule) -> int:
    """Prompt tokens for one image of `width` x `height` pixels sent with `detail`."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if isinstance(rule, PatchRule):
        return math.ceil(_patches(width, height) * rule.multiplier)
    if detail == "low":
        return rule.base_tokens
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = round(w * scale), round(h * scale)
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = round(w * scale), round(h * scale)
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return rule.base_tokens + rule.tile_tokens * tiles


def largest_image_tokens(detail: str, rule: TileRule | PatchRule) -> int:
    """The most prompt tokens one image sent with `detail` can cost, whatever its size."""
    if isinstance(rule, PatchRule):
        return math.ceil(_MAX_PATCHES * rule.multiplier)
    if detail == "low":
        return rule.base_tokens
    # Scaled to fit 2048x2048, then to a shortest side of at most 768: 2 x 4 tiles at most.
    return rule.base_tokens + rule.tile_tokens * _MAX_TILES


def _patches(width: int, height: int) -> int:
    patches = math.ceil(width / 32) * math.ceil(height / 32)
    if patches <= _MAX_PATCHES:
        return patches
    shrink = math.sqrt(32 * 32 * _MAX_PATCHES / (width * height))
    w_patches, h_patches = width * shrink / 32, height * shrink / 32
    shrink *= min(math.floor(w_patches) / w_patches, math.floor(h_patches) / h_patches)
    patches = math.ceil(width * shrink / 32) * math.ceil(height * shrink / 32)
    return min(patches, _MAX_PATCHES)


def image_size_from_data_url(url: str) -> tuple[int, int] | None:
    """(width, height) of a base64 `data:` URL image in PNG, GIF, WebP or JPEG; None if unknown."""
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        return None
    read = _Base64Reader(payload).read
    try:
        start = read(0, 12)
        if start.startswith(b"\x89PNG\r\n\x1a\n"):
            return _be_pair(read(16, 8), ">II")
        if start[:6] in (b"GIF87a", b"GIF89a"):
            return _be_pair(start[6:10], "<HH")
        if start[:4] == b"RIFF" and start[8:12] == b"WEBP":
            return _webp_size(read)
        if start[:2] == b"\xff\xd8":
            return _jpeg_size(read)
    except (binascii.Error, ValueError, struct.error):
        return None
    return None


def _be_pair(data: bytes, fmt: str) -> tuple[int, int] | None:
    width, height = struct.unpack(fmt, data)
    return (int(width), int(height)) if width > 0 and height > 0 else None


def _webp_size(read: Callable[[int, int], bytes]) -> tuple[int, int] | None:
    chunk = read(12, 18)
    kind, body = chunk[:4], chunk[8:]
    if kind == b"VP8 ":  # lossy: 14-bit sizes after the frame tag and start code
        width, height = struct.unpack("<HH", body[6:10])
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L":  # lossless: 14 bits each, minus one, after a signature byte
        bits = int.from_bytes(body[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X":  # extended: 24 bits each, minus one
        return int.from_bytes(body[4:7], "little") + 1, int.from_bytes(body[7:10], "little") + 1
    return None


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(read: Callable[[int, int], bytes]) -> tuple[int, int] | None:
    position = 2
    for _ in range(512):  # a real JPEG reaches its frame header within a few segments
        marker = read(position, 4)
        if len(marker) < 4 or marker[0] != 0xFF:
            return None
        if marker[1] == 0xFF:  # fill byte
            position += 1
            continue
        if marker[1] in _JPEG_SOF:
            height, width = struct.unpack(">HH", read(position + 5, 4))
            return (width, height) if width > 0 and height > 0 else None
        position += 2 + int.from_bytes(marker[2:4], "big")
    return None


class _Base64Reader:
    """Random access to the bytes of base64 text, decoding only the 4-character groups asked for."""

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        self._text = text

    def read(self, offset: int, length: int) -> bytes:
        first_group, end_group = offset // 3, -(-(offset + length) // 3)
        chunk = self._text[first_group * 4 : end_group * 4]
        raw = base64.b64decode(chunk + "=" * (-len(chunk) % 4))
        skip = offset - first_group * 3
        return raw[skip : skip + length]
