"""The mock's `/v1/moderations`: an endpoint batchrun has no profile for (JSON in, JSON out).

    {"input": "text" | ["a", "b"], "model"?: ...}
      -> {"id": "modr-...", "model": ..., "results": [{"flagged", "categories", "category_scores"}]}

A text is flagged in a category when it names it ("violence", "harassment"...): deterministic,
so a test knows the answer. There is no usage in the answer, as in OpenAI's.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from batchrun.mock.jobs import Invalid, Job

__all__ = ["CATEGORIES", "moderation_job"]

CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence")
_DEFAULT_MODEL = "omni-moderation-latest"


def _result(text: str) -> dict[str, Any]:
    lowered = text.lower()
    flags = {name: name in lowered for name in CATEGORIES}
    return {
        "flagged": any(flags.values()),
        "categories": flags,
        "category_scores": {name: 0.97 if hit else 0.0001 for name, hit in flags.items()},
    }


def moderation_job(data: dict[str, Any]) -> Job:
    raw = data.get("input")
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
        texts = raw
    else:
        raise Invalid("'input' must be a string or a list of strings", "input")
    model = data.get("model") or _DEFAULT_MODEL
    if not isinstance(model, str):
        raise Invalid("'model' must be a string", "model")
    digest = hashlib.blake2b("\x00".join(texts).encode(), digest_size=12).hexdigest()

    def build(with_usage: bool) -> tuple[bytes, int, int]:
        body = {"id": f"modr-{digest}", "model": model, "results": [_result(t) for t in texts]}
        return json.dumps(body).encode(), 0, 0

    return Job(model, sum(len(t) for t in texts) // 4 + 1, build)
