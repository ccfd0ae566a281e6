"""The mock's audio family: `/v1/audio/speech` answers with audio bytes, as OpenAI does.

    POST /v1/audio/speech {"model": "tts-1", "input": "Hello", "voice": "alloy"}
      -> 200, content-type audio/mpeg, an MP3 whose length follows the text

The audio is deterministic (`speech_audio`), so a test can compare a saved file byte for byte.
Its headers are real: an MP3 is ID3v2 and MPEG-1 Layer III frames (128 kbit/s, 44.1 kHz), a
WAV a RIFF header of 24 kHz 16-bit mono PCM (what OpenAI's `pcm` is), so that a reader of
durations (whisper's cost by audio minutes) can read them. No usage is reported, as OpenAI's
speech endpoint reports none.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from batchrun.mock.jobs import Invalid, Job, model_of

__all__ = ["SPEECH_CONTENT_TYPES", "speech_audio", "speech_job"]

SPEECH_CONTENT_TYPES: dict[str, bytes] = {
    "mp3": b"audio/mpeg",
    "opus": b"audio/opus",
    "aac": b"audio/aac",
    "flac": b"audio/flac",
    "wav": b"audio/wav",
    "pcm": b"audio/pcm",
}
_MAX_INPUT_CHARS = 4096  # OpenAI's limit for `input`
_CHARS_PER_SECOND = 15.0  # about how fast TTS voices speak
_PCM_RATE = 24_000
_MP3_FRAME_HEADER = b"\xff\xfb\x90\x64"  # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, no padding
_MP3_FRAME_BYTES = 417  # 144 * 128000 / 44100
_MP3_FRAMES_PER_SECOND = 44_100 / 1152
_MAGIC = {"opus": b"OggS", "flac": b"fLaC", "aac": b"\xff\xf1"}


def _filler(seed: bytes, size: int) -> bytes:
    """`size` deterministic bytes (a blake2b stream of `seed`)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.blake2b(seed + counter.to_bytes(8, "little"), digest_size=64).digest()
        counter += 1
    return bytes(out[:size])


def speech_seconds(text: str) -> float:
    return max(0.5, len(text) / _CHARS_PER_SECOND)


def speech_audio(text: str, voice: str, fmt: str) -> bytes:
    """The audio the mock answers for `text` in `voice` and format `fmt`."""
    seconds = speech_seconds(text)
    seed = f"{voice}\x00{fmt}\x00{text}".encode("utf-8", "surrogatepass")
    if fmt == "mp3":
        frames = max(1, round(seconds * _MP3_FRAMES_PER_SECOND))
        payload = _filler(seed, _MP3_FRAME_BYTES - 4)
        id3 = b"ID3\x04\x00\x00\x00\x00\x00\x00"  # ID3v2.4, no tags
        return id3 + (_MP3_FRAME_HEADER + payload) * frames
    samples = _filler(seed, int(seconds * _PCM_RATE) * 2)
    if fmt == "pcm":
        return samples
    if fmt == "wav":
        header = b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVE"
        header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, _PCM_RATE, _PCM_RATE * 2, 2, 16)
        return header + b"data" + struct.pack("<I", len(samples)) + samples
    return _MAGIC[fmt] + samples[: len(samples) // 8]  # compressed formats: smaller


def speech_job(data: dict[str, Any]) -> Job:
    model = model_of(data)
    text = data.get("input")
    if not isinstance(text, str) or not text:
        raise Invalid("Missing required parameter: 'input'.", "input")
    if len(text) > _MAX_INPUT_CHARS:
        raise Invalid(
            f"'input' is {len(text)} characters, over the limit of {_MAX_INPUT_CHARS}.", "input"
        )
    voice = data.get("voice")
    if not isinstance(voice, str) or not voice:
        raise Invalid("Missing required parameter: 'voice'.", "voice")
    fmt = data.get("response_format", "mp3")
    if fmt not in SPEECH_CONTENT_TYPES:
        raise Invalid(
            f"'response_format' must be one of {', '.join(SPEECH_CONTENT_TYPES)}.",
            "response_format",
        )

    def build(with_usage: bool) -> tuple[bytes, int, int]:
        return speech_audio(text, voice, fmt), 0, 0

    return Job(model, len(text) // 4 + 1, build, content_type=SPEECH_CONTENT_TYPES[fmt])
