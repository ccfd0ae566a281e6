"""The models a server lists: `GET {base}/models` with the run's key, the cheap first request.

    list_models(engine, base_url, api_key) ──► ModelList(url, models)   models None: not listed
                                          └──► FatalRunError (the key refused), TransportError

Guarantees:
- One GET through the engine the run sends with, so the key and the server are checked before
  anything long starts, on the same connection pool as the requests that follow.
- A server that does not list its models is normal: 404 / 405, any other answer that no retry
  could turn into a whole-run failure, or a body without a `data` list of `{"id": ...}` gives
  `models=None`, never an exception.
- A whole-run failure by the rules of `batchrun.send.retry` (401; out of quota or balance)
  raises `FatalRunError` with the key scrubbed from it; no answer at all raises the engine's
  `TransportError` (the caller says what that means for it).
- `closest` suggests listed names for a model the list lacks (difflib), best first.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from batchrun.common.errors import FatalRunError
from batchrun.common.secrets import redact
from batchrun.common.urls import join_url
from batchrun.send.http import AiohttpEngine, HttpEngine, Httpx2Engine
from batchrun.send.retry import FATAL, classify_response

if TYPE_CHECKING:
    import httpx2

__all__ = [
    "MODELS_PATH",
    "ModelList",
    "closest",
    "describe_missing",
    "list_models",
    "list_models_sync",
    "missing_models",
]

MODELS_PATH = "/v1/models"
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class ModelList:
    url: str
    models: tuple[str, ...] | None  # None: the server does not list its models
    status: int  # the HTTP status of the answer

    @property
    def listed(self) -> bool:
        return self.models is not None


async def list_models(
    engine: HttpEngine,
    base_url: str,
    api_key: str | None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ModelList:
    """`GET {base_url}/models`; see the module docstring for what each outcome gives."""
    url = join_url(base_url, MODELS_PATH)
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    reply = await engine.get(url, headers, timeout_s=timeout_s)
    text = reply.content.decode("utf-8", errors="replace")
    body = _json_or_none(reply.content)
    verdict = classify_response(reply.status, reply.headers, body, text)
    if verdict is not None and verdict.action == FATAL:
        raise FatalRunError(verdict.error_type, redact(f"{verdict.message} at GET {url}", api_key))
    models = _model_ids(body) if verdict is None else None
    return ModelList(url=url, models=models, status=reply.status)


def list_models_sync(
    base_url: str,
    api_key: str | None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> ModelList:
    """`list_models` with its own engine, for callers without an event loop (the CLI)."""

    async def fetch() -> ModelList:
        engine: HttpEngine
        if transport is not None:
            engine = Httpx2Engine.create(connections=1, timeout_s=timeout_s, transport=transport)
        else:
            engine = AiohttpEngine(connections=1, timeout_s=timeout_s)
        try:
            return await list_models(engine, base_url, api_key, timeout_s=timeout_s)
        finally:
            await engine.aclose()

    return anyio.run(fetch, backend="asyncio")


def missing_models(named: Iterable[str], listed: Iterable[str]) -> dict[str, list[str]]:
    """The models in `named` that `listed` lacks, each with the closest listed names."""
    choices = sorted(set(listed))
    known = set(choices)
    return {model: closest(model, choices) for model in sorted(set(named) - known)}


def closest(model: str, listed: list[str], *, n: int = 3) -> list[str]:
    return difflib.get_close_matches(model, listed, n=n, cutoff=0.6)


def _model_ids(body: Any) -> tuple[str, ...] | None:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    ids = [item.get("id") for item in data if isinstance(item, dict)]
    return tuple(i for i in ids if isinstance(i, str) and i)


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content) if content else None
    except ValueError:
        return None


def describe_missing(missing: dict[str, list[str]]) -> str:
    """One line naming each missing model and its closest listed names."""
    parts = []
    for model, near in missing.items():
        hint = ", ".join(repr(n) for n in near) if near else "none close"
        parts.append(f"{model!r} (closest listed: {hint})")
    return "; ".join(parts)
