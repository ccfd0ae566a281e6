"""The routes of every endpoint family beyond chat and embeddings, and whose key they take.

Each family's module builds its `Job` (`audio`, `images`, `native`, and `moderations`, a path
batchrun has no profile for: JSON in, JSON out); here they are mounted on the paths new-api
serves them at, all through the app's one ladder (auth, rate limit, faults, latency), so faults
apply to every family as to chat.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any, Protocol

from batchrun.mock.audio import speech_job, transcription_job
from batchrun.mock.config import MockConfig
from batchrun.mock.http import HttpRequest, Reply
from batchrun.mock.images import image_job
from batchrun.mock.jobs import Job
from batchrun.mock.moderations import moderation_job
from batchrun.mock.native import (
    GEMINI_PATH,
    claude_job,
    completions_job,
    gemini_job,
    responses_job,
)

__all__ = ["GEMINI_PATH", "authorized", "family_routes", "gemini_route"]

Route = Callable[[HttpRequest], Reply]


class Api(Protocol):
    def __call__(
        self, request: HttpRequest, make_job: Callable[[dict[str, Any]], Job], *, form: bool = False
    ) -> Reply: ...


class App(Protocol):
    public_url: str

    def seen_prefix(self, system: str) -> bool: ...


def family_routes(api: Api, config: MockConfig, app: App) -> dict[tuple[str, str], Route]:
    ttl_s = config.media_url_ttl_s

    def claude(data: dict[str, Any]) -> Job:
        return claude_job(
            data, echo=config.echo, reply_tokens=config.reply_tokens, seen_prefix=app.seen_prefix
        )

    return {
        ("POST", "/v1/audio/speech"): lambda request: api(request, speech_job),
        ("POST", "/v1/audio/transcriptions"): lambda request: api(
            request, lambda form: transcription_job(form, task="transcribe"), form=True
        ),
        ("POST", "/v1/audio/translations"): lambda request: api(
            request, lambda form: transcription_job(form, task="translate"), form=True
        ),
        ("POST", "/v1/messages"): lambda request: api(request, claude),
        ("POST", "/v1/moderations"): lambda request: api(request, moderation_job),
        ("POST", "/v1/completions"): lambda request: api(
            request,
            lambda data: completions_job(data, echo=config.echo, reply_tokens=config.reply_tokens),
        ),
        ("POST", "/v1/responses"): lambda request: api(
            request,
            lambda data: responses_job(data, echo=config.echo, reply_tokens=config.reply_tokens),
        ),
        ("POST", "/v1/images/generations"): lambda request: api(
            request, lambda data: image_job(data, public_url=app.public_url, ttl_s=ttl_s)
        ),
        ("POST", "/v1/images/edits"): lambda request: api(
            request,
            lambda form: image_job(form, public_url=app.public_url, ttl_s=ttl_s, edit=True),
            form=True,
        ),
    }


def gemini_route(api: Api, model: str, config: MockConfig) -> Route:
    """`POST /v1beta/models/{model}:generateContent`: the model is in the path."""

    def route(request: HttpRequest) -> Reply:
        return api(
            request,
            lambda data: gemini_job(
                data, model=model, echo=config.echo, reply_tokens=config.reply_tokens
            ),
        )

    return route


def authorized(request: HttpRequest, bearer: bytes | None, key: str | None) -> bool:
    """Bearer everywhere; also each provider's own header on its routes, as new-api takes them
    (`x-api-key` for /v1/messages; `x-goog-api-key` or `?key=` for /v1beta)."""
    if bearer is None:
        return True
    if request.authorization is not None:
        return hmac.compare_digest(request.authorization, bearer)
    wanted = (key or "").encode()
    if request.path == "/v1/messages" and request.x_api_key is not None:
        return hmac.compare_digest(request.x_api_key, wanted)
    if request.path.startswith("/v1beta/"):
        other = request.x_goog_api_key
        if other is None and request.query.startswith("key="):
            other = request.query[4:].partition("&")[0].encode()
        return other is not None and hmac.compare_digest(other, wanted)
    return False
