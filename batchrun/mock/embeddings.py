"""The mock's embeddings family: `/v1/embeddings`, one deterministic vector per input."""

from __future__ import annotations

from typing import Any

import batchrun.mock.payloads as payloads
from batchrun.cost.tokens import count_request_tokens
from batchrun.mock.jobs import Invalid, Job, model_of, optional_int

__all__ = ["embeddings_job"]

_EMBEDDINGS = "/v1/embeddings"


def embeddings_job(data: dict[str, Any], *, exact_tokens: bool, default_dim: int) -> Job:
    """`/v1/embeddings`: one deterministic vector per input."""
    model = model_of(data)
    raw = data.get("input")
    inputs: list[Any]
    if isinstance(raw, str) or (
        isinstance(raw, list) and raw and all(isinstance(i, int) for i in raw)
    ):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(i, str | list) for i in raw):
        inputs = raw
    else:
        raise Invalid("'input' must be a string, a list of strings or token arrays", "input")
    dim = optional_int(data, "dimensions", 1, 4096) or default_dim
    encoding = data.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise Invalid("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    if exact_tokens:
        prompt_tokens = count_request_tokens(_EMBEDDINGS, data).tokens
    else:
        prompt_tokens = payloads.estimate_embedding_tokens(inputs)

    def build(with_usage: bool) -> tuple[bytes, int, int]:
        body = payloads.embeddings(
            inputs,
            model=model,
            dim=dim,
            base64_floats=encoding == "base64",
            prompt_tokens=prompt_tokens,
            with_usage=with_usage,
        )
        return body, prompt_tokens, 0

    return Job(model, prompt_tokens, build)
