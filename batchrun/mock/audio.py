"""The mock's audio family: speech answers with audio bytes, transcriptions read an upload.

    POST /v1/audio/speech {"model": "tts-1", "input": "Hello", "voice": "alloy"}
      -> 200, content-type audio/mpeg, an MP3 whose length follows the text
    POST /v1/audio/transcriptions (multipart: file, model, response_format)
      -> {"text": "Transcript of a.mp3: 40,872 bytes, sha256 ..."} or text / srt / vtt

A transcription checks that the file arrived intact (a WAV or MP3 of the mock's own whose
structure is broken is refused, 400, as a real server refuses a file it cannot decode) and its
text names the file's size and sha256, so a test sees that every byte arrived.

The audio is deterministic (`speech_audio`), so a test can compare a saved file byte for byte.
Its headers are real: an MP3 is ID3v2 and MPEG-1 Layer III frames (128 kbit/s, 44.1 kHz), a
WAV a RIFF header of 24 kHz 16-bit mono PCM (what OpenAI's `pcm` is), so that a reader of
durations (whisper's cost by audio minutes) can read them. No usage is reported, as OpenAI's
speech endpoint reports none.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from typing import Any

from batchrun.endpoints.audio_length import audio_seconds_of
from batchrun.mock.http import JSON
from batchrun.mock.jobs import Invalid, Job, model_of
from batchrun.mock.multipart import FormFile

__all__ = [
    "SPEECH_CONTENT_TYPES",
    "mp3_of",
    "speech_audio",
    "speech_job",
    "transcript_of",
    "transcription_job",
]

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


def mp3_of(seed: bytes, seconds: float) -> bytes:
    """An MP3 of about `seconds`: an ID3v2 tag, then MPEG-1 Layer III frames of `seed`'s bytes."""
    frames = max(1, round(seconds * _MP3_FRAMES_PER_SECOND))
    payload = _filler(seed, _MP3_FRAME_BYTES - 4)
    id3 = b"ID3\x04\x00\x00\x00\x00\x00\x00"  # ID3v2.4, no tags
    return id3 + (_MP3_FRAME_HEADER + payload) * frames


def speech_audio(text: str, voice: str, fmt: str) -> bytes:
    """The audio the mock answers for `text` in `voice` and format `fmt`."""
    seconds = speech_seconds(text)
    seed = f"{voice}\x00{fmt}\x00{text}".encode("utf-8", "surrogatepass")
    if fmt == "mp3":
        return mp3_of(seed, seconds)
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


_TRANSCRIPTION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
_TEXT_PLAIN = b"text/plain; charset=utf-8"


def _intact(data: bytes) -> float:
    """The audio's duration in seconds; `Invalid` when the file is damaged (a WAV whose data
    is shorter than its header says, an MP3 whose frames do not follow one another)."""
    if data[:4] == b"RIFF":
        if len(data) < 44 or struct.unpack_from("<I", data, 4)[0] != len(data) - 8:
            raise Invalid("The audio file could not be decoded or its format is not supported.")
    elif data[:3] == b"ID3":
        frame = len(_MP3_FRAME_HEADER) + _MP3_FRAME_BYTES - 4
        frames = data[10:]
        if len(frames) % frame or any(
            frames[at : at + 4] != _MP3_FRAME_HEADER for at in range(0, len(frames), frame)
        ):
            raise Invalid("The audio file could not be decoded or its format is not supported.")
    seconds = audio_seconds_of(data[:65536], len(data))
    return seconds if seconds is not None else len(data) / 16_000  # 128 kbit/s if unknown


def transcript_of(upload: FormFile, task: str = "transcribe") -> str:
    """The text the mock hears in `upload`: it names the file's size and sha256, so that a test
    can tell the file arrived byte for byte."""
    digest = hashlib.sha256(upload.data).hexdigest()[:16]
    what = "Translation" if task == "translate" else "Transcript"
    return f"{what} of {upload.filename}: {len(upload.data)} bytes, sha256 {digest}."


def _timestamp(seconds: float, comma: bool) -> str:
    ms = round(seconds * 1000)
    text = f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"
    return text.replace(".", ",") if comma else text


def transcription_job(form: dict[str, Any], *, task: str) -> Job:
    """`/v1/audio/transcriptions` (task "transcribe") and `/translations` ("translate")."""
    model = model_of(form)
    upload = form.get("file")
    if not isinstance(upload, FormFile):
        raise Invalid("Missing required parameter: 'file'.", "file")
    fmt = form.get("response_format", "json")
    if fmt not in _TRANSCRIPTION_FORMATS:
        raise Invalid(
            f"'response_format' must be one of {', '.join(_TRANSCRIPTION_FORMATS)}.",
            "response_format",
        )
    seconds = _intact(upload.data)
    text = transcript_of(upload, task)
    tokens = model.startswith("gpt-4o")  # gpt-4o-transcribe bills tokens; whisper-1 minutes
    prompt_tokens = round(seconds * 10) if tokens else 0
    completion_tokens = max(1, len(text) // 4) if tokens else 0

    def build(with_usage: bool) -> tuple[bytes, int, int]:
        if fmt == "text":
            return text.encode() + b"\n", 0, 0
        if fmt in ("srt", "vtt"):
            comma = fmt == "srt"
            cue = f"{_timestamp(0, comma)} --> {_timestamp(seconds, comma)}\n{text}\n"
            return (("WEBVTT\n\n" if not comma else "1\n") + cue).encode(), 0, 0
        body: dict[str, Any] = {"text": text}
        if fmt == "verbose_json":
            body = {"task": task, "language": "english", "duration": seconds, "text": text}
            body["segments"] = [{"id": 0, "start": 0.0, "end": seconds, "text": text}]
        if with_usage and tokens:
            body["usage"] = {
                "type": "tokens",
                "input_tokens": prompt_tokens,
                "output_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
        elif with_usage:
            body["usage"] = {"type": "duration", "seconds": math.ceil(seconds)}
        return json.dumps(body).encode(), prompt_tokens, completion_tokens

    content_type = JSON if fmt in ("json", "verbose_json") else _TEXT_PLAIN
    return Job(model, prompt_tokens + 1, build, content_type=content_type)
