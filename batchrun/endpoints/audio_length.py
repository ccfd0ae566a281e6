"""How long an audio file is, read from its header: what whisper bills (by the minute).

    audio_seconds_of(head, size)   # 12.5, or None when the format is not one read here

A pure function of the file's first bytes (`HEAD_BYTES` of them are enough) and its size; the
caller reads them (the reader, as it checks a row's upload). Formats: WAV (RIFF `fmt ` and
`data` chunks), MP3 (an ID3v2 tag skipped, then the first MPEG audio frame's bitrate: exact
for constant-bitrate files, which TTS and most encoders write; a Xing/VBR header is not read,
so a VBR file is an estimate) and FLAC (STREAMINFO). Anything else is None: its cost is then
unknown, never guessed as zero.
"""

from __future__ import annotations

import struct

__all__ = ["HEAD_BYTES", "audio_seconds_of"]

HEAD_BYTES = 64 * 1024
# MPEG-1 Layer III bitrates (kbit/s) by index; MPEG-2/2.5 Layer III below.
_MPEG1_L3 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0)
_MPEG2_L3 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0)


def audio_seconds_of(head: bytes, size: int) -> float | None:
    """The duration of an audio file from its first bytes and its size, if its header says."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return _wav(head, size)
    if head[:4] == b"fLaC":
        return _flac(head)
    return _mp3(head, size)


def _wav(head: bytes, size: int) -> float | None:
    at, byte_rate = 12, None
    while at + 8 <= len(head):
        chunk, length = head[at : at + 4], struct.unpack_from("<I", head, at + 4)[0]
        if chunk == b"fmt " and at + 16 <= len(head):
            byte_rate = struct.unpack_from("<I", head, at + 16)[0]
        elif chunk == b"data":
            if not byte_rate:
                return None
            data = min(length, size - at - 8)
            return float(max(0, data) / byte_rate)
        at += 8 + length + (length & 1)
    return None


def _flac(head: bytes) -> float | None:
    if len(head) < 26:
        return None
    bits = int.from_bytes(head[18:26], "big")  # STREAMINFO: rate 20 bits, ..., samples 36 bits
    rate = bits >> 44
    samples = bits & ((1 << 36) - 1)
    return samples / rate if rate else None


def _mp3(head: bytes, size: int) -> float | None:
    start = 0
    if head[:3] == b"ID3" and len(head) >= 10:
        tag = head[6:10]
        start = 10 + ((tag[0] << 21) | (tag[1] << 14) | (tag[2] << 7) | tag[3])
    for at in range(start, min(len(head) - 3, start + 4096)):
        if head[at] != 0xFF or head[at + 1] & 0xE0 != 0xE0:
            continue
        version = (head[at + 1] >> 3) & 0x3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
        layer = (head[at + 1] >> 1) & 0x3  # 1: Layer III
        if layer != 1 or version == 1:
            continue
        table = _MPEG1_L3 if version == 3 else _MPEG2_L3
        kbps = table[head[at + 2] >> 4]
        if kbps:
            return (size - at) * 8 / (kbps * 1000)
    return None
