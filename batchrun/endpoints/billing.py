"""What a row is billed by when it is not (only) tokens: characters, audio seconds, images.

    billed_units(profile, body, answer, uploads)  ->  (("characters", 1234.0),)

OpenAI and the gateways bill these families by what was asked or made, not by tokens:
- speech (tts-1, tts-1-hd): the characters of `input`;
- transcriptions and translations (whisper-1): the audio's duration, read from the uploaded
  file's header by the reader (a token-billed model, gpt-4o-transcribe, reports usage instead);
- images (dall-e-2, dall-e-3): each image of the answer at its size and quality, as one unit
  `images@{quality} {size}`; gpt-image-1 reports token usage, whose image input tokens are
  billed at their own rate, so they are named apart (`image_input_tokens`).
The units are priced by `batchrun.cost.pricebook.PriceBook.billed_cost`; a unit without a
known price makes the row's cost unknown, never zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from batchrun.endpoints.profiles import Profile
from batchrun.endpoints.usage import Usage
from batchrun.models import Upload

__all__ = ["billed_units"]

Billed = tuple[tuple[str, float], ...]


def billed_units(
    profile: Profile,
    body: Any,
    answer: Any,
    uploads: Sequence[Upload],
    usage: Usage | None = None,
) -> Billed:
    """The units of one ok answer of family `profile` (empty when tokens say it all)."""
    if not isinstance(body, dict):
        return ()
    if profile.name == "speech":
        text = body.get("input")
        return (("characters", float(len(text))),) if isinstance(text, str) else ()
    if profile.name == "transcriptions":
        if usage is not None and usage.prompt_tokens is not None:
            return ()
        seconds = [u.seconds for u in uploads if u.seconds is not None]
        return (("audio_seconds", float(sum(seconds))),) if len(seconds) == len(uploads) else ()
    if profile.name in ("images", "image_edits"):
        if usage is not None and usage.prompt_tokens is not None:
            images = usage.image_input_tokens
            return (("image_input_tokens", float(images)),) if images else ()
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or not data:
            return ()
        size = body.get("size") or "1024x1024"
        quality = body.get("quality") or "standard"
        return ((f"images@{quality} {size}", float(len(data))),)
    return ()
