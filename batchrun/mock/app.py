"""What the mock answers: routing, auth, rate limits, faults, latency and the counters.

Each API request goes through the same ladder, in the order a real provider applies it:

    route ─► api key ─► JSON body valid? ─► rate limit (429, no latency) ─► fault? ─► answer
     404        401            400                                          (after latency)

A 429 from the limiter consumes no `mock_fault_times` turn; an injected fault still uses up the
request's rate-limit budget, as a failed request does at OpenAI.

The counters are written only from the event loop's thread; `stats()` returns a plain copy.
"""

from __future__ import annotations

import hmac
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any

import batchrun.mock.batch_api as batch_api
import batchrun.mock.payloads as payloads
from batchrun.cost.tokens import count_request_tokens
from batchrun.mock.config import MockConfig
from batchrun.mock.embeddings import embeddings_job
from batchrun.mock.families import GEMINI_PATH, authorized, family_routes, gemini_route
from batchrun.mock.faults import (
    INVALID_API_KEY,
    SUCCESS_FAULTS,
    FaultPicker,
    body_fault,
    fault_reply,
)
from batchrun.mock.http import HttpRequest, Reply
from batchrun.mock.images import MEDIA_PREFIX, media_route
from batchrun.mock.jobs import Invalid as _Invalid
from batchrun.mock.jobs import Job as _Job
from batchrun.mock.jobs import model_of as _model
from batchrun.mock.jobs import optional_int as _optional_int
from batchrun.mock.multipart import parse_form
from batchrun.mock.ratelimit import RateLimiter, rate_limit_message
from batchrun.mock.tasks import TaskBook

__all__ = ["MockApp"]

# Prompts whose leading system message is at least this long (about 1,024 tokens, OpenAI's
# threshold) are "cached" from their second appearance on, so cached_tokens is not always 0.
_CACHEABLE_CHARS = 4096
_MAX_REMEMBERED_PREFIXES = 100_000
_CHAT = "/v1/chat/completions"
_EMBEDDINGS = "/v1/embeddings"
_MESSAGES = "/v1/messages"


class MockApp:
    """The handler behind `HttpProtocol` (see the module docstring)."""

    def __init__(
        self, config: MockConfig, *, clock: Callable[[], float], connections: Collection[object]
    ) -> None:
        self.config = config
        self._clock = clock
        self._connections = connections
        self._latency_s = config.latency_ms / 1000.0
        self._jitter_s = config.jitter_ms / 1000.0
        self._jitter_rng = random.Random(f"{config.seed}/jitter")
        self._faults = FaultPicker(config.faults, config.seed)
        self._limiter = (
            None
            if config.rpm is None and config.tpm is None
            else RateLimiter(
                rpm=config.rpm,
                tpm=config.tpm,
                burst_s=config.burst_s,
                now=clock(),
                cotenant_drain=config.cotenant_drain,
                cotenant_share=config.cotenant_share,
            )
        )
        self._auth = None if config.api_key is None else b"Bearer " + config.api_key.encode()
        self._ids = itertools.count(1)
        self._prefixes: set[int] = set()
        created = int(time.time())
        self._models_body = payloads.models_list(config.models, created)
        self._subscription_body = payloads.billing_subscription(config.quota_usd)
        self._usage_body = payloads.billing_usage(config.used_usd)
        self.public_url = "http://127.0.0.1"  # where this mock listens; set once it does
        self._routes: dict[tuple[str, str], Callable[[HttpRequest], Reply]] = {
            ("POST", _CHAT): self._chat,
            ("POST", _EMBEDDINGS): self._embeddings,
            ("GET", "/v1/models"): self._models,
            ("GET", "/v1/dashboard/billing/subscription"): self._subscription,
            ("GET", "/v1/dashboard/billing/usage"): self._usage,
        }
        # Where the mock is reachable, for the URLs it hands out (Anthropic's results_url); the
        # server sets it once it listens.
        self.base_url = f"http://{config.host}:{config.port}/v1"
        self._batch_offset_s = 0.0  # advance_batches(): provider batches live on ahead of time
        self._new_batch_api()
        self._routes.update(family_routes(self._api, config, self))
        self._tasks = TaskBook(
            config, api=self._api, clock=clock, public_url=lambda: self.public_url
        )
        self._routes[("POST", "/v1/responses")] = lambda request: self._api(
            request,
            lambda data: self._tasks.responses_job(
                data, echo=config.echo, reply_tokens=config.reply_tokens
            ),
        )
        self._zero()

    def _new_batch_api(self) -> None:
        config = self.config
        self._batch_api = batch_api.BatchApi(
            execute=self._batch_execute,
            execute_message=lambda url, body: self._batch_execute(_MESSAGES, body),
            clock=lambda: self._clock() + self._batch_offset_s,
            phase_s=config.batch_phase_s,
            latency_s=config.batch_latency_ms / 1000,
            faults=config.batch_faults,
            base_url=lambda: self.base_url,
        )

    def _zero(self) -> None:
        self._requests = 0
        self._paths: Counter[str] = Counter()
        self._statuses: Counter[int] = Counter()
        self._fault_counts: Counter[str] = Counter()
        self._rate_limited: Counter[str] = Counter()
        self._tokens: Counter[str] = Counter()
        self._resets = 0
        self._bodies: list[bytes] = []
        self._media: Counter[str] = Counter()

    # -- control (called on the loop's thread) ------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters since start or the last reset; `/mock/*` requests are not counted.

        `requests`: {total, by_path, by_status} (statuses as strings, as in JSON); `faults`: per
        injected kind; `rate_limited`: refusals by the limiter per reason (requests, tokens,
        too_large); `tokens`: usage reported in answers, plus `tpm_charged`, what admitted
        requests cost the TPM budget; `connections`: open now.
        """
        return {
            "requests": {
                "total": self._requests,
                "by_path": dict(self._paths),
                "by_status": {str(status): n for status, n in sorted(self._statuses.items())},
            },
            "faults": dict(self._fault_counts),
            "rate_limited": dict(self._rate_limited),
            "tokens": {
                "prompt_tokens": self._tokens["prompt_tokens"],
                "completion_tokens": self._tokens["completion_tokens"],
                "total_tokens": self._tokens["prompt_tokens"] + self._tokens["completion_tokens"],
                "tpm_charged": self._tokens["tpm_charged"],
            },
            "connections": len(self._connections),
            "batches": self._batch_api.stats(),
            # GETs of the media route: how many, their statuses, and how many carried a key
            # (an Authorization, x-api-key or x-goog-api-key header): a client must send none.
            "media": dict(self._media),
            "tasks": self._tasks.stats(),  # see batchrun.mock.tasks.TaskBook.stats
        }

    def bodies(self) -> list[bytes]:
        """The raw body of every API request since start or the last reset, in arrival order
        (empty unless `record_bodies`)."""
        return list(self._bodies)

    def reset(self) -> None:
        """Back to the just-started state: counters, limits, fault memory and random draws."""
        self._zero()
        self._faults.reset(self.config.seed)
        self._jitter_rng.seed(f"{self.config.seed}/jitter")
        self._prefixes.clear()
        self._new_batch_api()
        self._tasks.reset()
        if self._limiter is not None:
            self._limiter.reset(self._clock())

    def set_faults(self, faults: dict[str, float]) -> None:
        self._faults.set_table(faults)

    def advance_batches(self, seconds: float) -> None:
        """Move the provider batches' clock `seconds` ahead (they see the time jump at once)."""
        self._batch_offset_s += seconds

    # -- the Handler protocol -------------------------------------------------------------------

    def handle(self, request: HttpRequest) -> Reply:
        path = request.path
        if path.startswith("/mock/"):
            return self._control(request)
        if path.startswith(MEDIA_PREFIX) and request.method == "GET":
            return self._media_file(request)
        route = self._routes.get((request.method, path))
        label = path
        if route is None and request.method == "POST" and (found := GEMINI_PATH.match(path)):
            route = self._gemini(found.group("model"))
        if route is None and (task_route := self._tasks.route(request.method, path)) is not None:
            label, route = task_route  # a template (/mj/task/{id}/fetch): counters stay small
        self._requests += 1
        if route is None and path.startswith(batch_api.PREFIXES):
            label, reply = self._batches(request)
            self._paths[label] += 1
        else:
            self._paths[label if route is not None else "(unknown)"] += 1
            reply = route(request) if route is not None else self._not_found(request)
        if reply.action == "send":
            self._statuses[reply.status] += 1
        return reply

    def early(self, method: str, path: str) -> Reply | None:
        if self._routes.get((method, path)) is None:
            return None
        kind = self._faults.early()
        if kind is None:
            return None
        self._requests += 1
        self._paths[path] += 1
        self._statuses[500] += 1
        self._fault_counts[kind] += 1
        return fault_reply(kind, model="", retry_after_ms=0, headers=b"")

    def bad_request(self, status: int, message: str) -> Reply:
        self._requests += 1
        self._statuses[status] += 1
        return Reply(status, payloads.error_body(message, "invalid_request_error"), close=True)

    # -- routes ---------------------------------------------------------------------------------

    def _control(self, request: HttpRequest) -> Reply:
        if (request.method, request.path) == ("GET", "/mock/stats"):
            return Reply(200, payloads.dump(self.stats()))
        if (request.method, request.path) == ("POST", "/mock/reset"):
            self.reset()
            return Reply(200, payloads.dump(self.stats()))
        return self._not_found(request)

    def _media_file(self, request: HttpRequest) -> Reply:
        return media_route(request, self.config.media_redirect_base, self._media, time.time())

    def _not_found(self, request: HttpRequest) -> Reply:
        target = f"{request.method} {request.path}"[:200]
        body = payloads.error_body(f"Invalid URL ({target})", "invalid_request_error")
        return Reply(404, body)

    def _authorized(self, request: HttpRequest) -> bool:
        return authorized(request, self._auth, self.config.api_key)

    def _gemini(self, model: str) -> Callable[[HttpRequest], Reply]:
        return gemini_route(self._api, model, self.config)

    def seen_prefix(self, system: str) -> bool:
        """Whether this system prompt came before (and remember it): Claude's cache read."""
        key = hash(system)
        if key in self._prefixes:
            return True
        if len(self._prefixes) >= _MAX_REMEMBERED_PREFIXES:
            self._prefixes.clear()
        self._prefixes.add(key)
        return False

    def _batches(self, request: HttpRequest) -> tuple[str, Reply]:
        expected = self.config.api_key
        given = request.api_key  # Anthropic's own header; Bearer as everywhere else
        if not self._authorized(request) and not (
            expected is not None
            and given is not None
            and hmac.compare_digest(given, expected.encode())
        ):
            return "(unauthorized)", Reply(401, INVALID_API_KEY)
        found = self._batch_api.route(request)
        return found if found is not None else ("(unknown)", self._not_found(request))

    def _batch_execute(self, url: str, body: bytes) -> tuple[int, bytes]:
        """One request of a provider batch, answered as the online endpoint would answer it
        (no rate limit or latency: the batch has its own queue)."""
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise _Invalid("The request body must be a JSON object.")
            make_job = {_CHAT: self._chat_job, _EMBEDDINGS: self._embeddings_batch_job,
                        _MESSAGES: self._claude_job}.get(url)  # fmt: skip
            if make_job is None:
                message = f"Invalid URL (POST {url})"
                return 404, payloads.error_body(message, "invalid_request_error")
            job = make_job(data)
            try:
                requested = body_fault(data)
            except ValueError as exc:
                raise _Invalid(str(exc), "mock_fault") from None
        except ValueError as exc:  # _Invalid, or a body that is not JSON
            param = exc.param if isinstance(exc, _Invalid) else None
            return 400, payloads.error_body(str(exc), "invalid_request_error", param=param)
        kind = self._faults.pick(requested, body)
        if kind is not None:
            self._fault_counts[kind] += 1
        if kind is None or kind in SUCCESS_FAULTS:
            answer, prompt_tokens, completion_tokens = job.build(kind != "no_usage")
            self._tokens["prompt_tokens"] += prompt_tokens
            self._tokens["completion_tokens"] += completion_tokens
            return 200, answer
        reply = fault_reply(kind, model=job.model, retry_after_ms=0, headers=b"")
        if reply.action != "send" or reply.status < 400:  # a hang, a reset, a 200 that lies
            return 500, payloads.error_body("The server had an error processing your request.",
                                            "server_error")  # fmt: skip
        return reply.status, reply.body

    def _claude_job(self, data: dict[str, Any]) -> _Job:
        model = _model(data)
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _Invalid("messages: Field required", "messages")
        if _optional_int(data, "max_tokens", 1) is None:
            raise _Invalid("max_tokens: Field required", "max_tokens")
        prompt_tokens = payloads.estimate_chat_prompt_tokens(
            messages, data.get("tools"), model=model
        )
        system = data.get("system")
        if isinstance(system, str):
            prompt_tokens += (len(system) + 3) // 4
        reply_tokens = _optional_int(data, "mock_reply_tokens", 0)
        if reply_tokens is None:
            reply_tokens = self.config.reply_tokens

        def build(with_usage: bool) -> tuple[bytes, int, int]:
            body, completion_tokens = payloads.claude_message(
                data,
                message_id=f"msg_mock{next(self._ids):020x}",
                prompt_tokens=prompt_tokens,
                reply_tokens=reply_tokens,
            )
            return body, prompt_tokens, completion_tokens

        return _Job(model, prompt_tokens, build)

    def _models(self, request: HttpRequest) -> Reply:
        if not self.config.list_models:
            return self._not_found(request)
        if not self._authorized(request):
            return Reply(401, INVALID_API_KEY)
        return Reply(200, self._models_body)

    def _subscription(self, request: HttpRequest) -> Reply:
        if not self.config.billing:
            return self._not_found(request)
        if not self._authorized(request):
            return Reply(401, INVALID_API_KEY)
        return Reply(200, self._subscription_body)

    def _usage(self, request: HttpRequest) -> Reply:
        if not self.config.billing:
            return self._not_found(request)
        if not self._authorized(request):
            return Reply(401, INVALID_API_KEY)
        return Reply(200, self._usage_body)

    def _chat(self, request: HttpRequest) -> Reply:
        return self._api(request, self._chat_job)

    def _embeddings_batch_job(self, data: dict[str, Any]) -> _Job:
        config = self.config
        return embeddings_job(
            data, exact_tokens=config.exact_tokens, default_dim=config.embedding_dim
        )

    def _embeddings(self, request: HttpRequest) -> Reply:
        config = self.config
        return self._api(
            request,
            lambda data: embeddings_job(
                data, exact_tokens=config.exact_tokens, default_dim=config.embedding_dim
            ),
        )

    def _api(
        self,
        request: HttpRequest,
        make_job: Callable[[dict[str, Any]], _Job],
        *,
        form: bool = False,
    ) -> Reply:
        """`form`: the body is multipart/form-data (an upload), not JSON."""
        request_id = b"x-request-id: req_%024x\r\n" % next(self._ids)
        if self.config.record_bodies:
            self._bodies.append(request.body)
        if not self._authorized(request):
            return Reply(401, INVALID_API_KEY, headers=request_id)
        try:
            data = _form_data(request) if form else json.loads(request.body)
        except _Invalid as exc:
            body = payloads.error_body(str(exc), "invalid_request_error", param=exc.param)
            return Reply(400, body, headers=request_id)
        except ValueError:  # not JSON, or not UTF-8
            body = payloads.error_body(_UNPARSABLE, "invalid_request_error")
            return Reply(400, body, headers=request_id)
        try:
            if not isinstance(data, dict):
                raise _Invalid("The request body must be a JSON object.")
            job = make_job(data)
            try:
                requested = body_fault(data)
            except ValueError as exc:
                raise _Invalid(str(exc), "mock_fault") from None
        except _Invalid as exc:
            body = payloads.error_body(str(exc), "invalid_request_error", param=exc.param)
            return Reply(400, body, headers=request_id)
        headers = request_id
        if self._limiter is not None:
            verdict = self._limiter.admit(job.charge, self._clock())
            headers += verdict.headers
            if not verdict.admitted:
                self._rate_limited["too_large" if verdict.too_large else str(verdict.limit)] += 1
                message = rate_limit_message(verdict, model=job.model, charge=job.charge)
                body = payloads.error_body(message, verdict.limit, code="rate_limit_exceeded")
                return Reply(429, body, headers=headers)
        self._tokens["tpm_charged"] += job.charge
        kind = self._faults.pick(requested, request.body)
        delay_s = self._latency_s
        if self._jitter_s:
            delay_s += self._jitter_rng.random() * self._jitter_s
        if kind is None or kind in SUCCESS_FAULTS:
            with_usage = kind != "no_usage"
            body, prompt_tokens, completion_tokens = job.build(with_usage)
            if with_usage:
                self._tokens["prompt_tokens"] += prompt_tokens
                self._tokens["completion_tokens"] += completion_tokens
            reply = Reply(
                job.status,
                body,
                content_type=job.content_type,
                headers=headers,
                delay_s=delay_s,
                action="hang" if job.hang else "send",
            )
            if kind == "truncated":
                reply.declared_length = len(body) * 2
        else:
            midway = kind == "reset" and self._resets % 2 == 1
            self._resets += kind == "reset"
            reply = fault_reply(
                kind,
                model=job.model,
                retry_after_ms=self.config.fault_retry_after_ms,
                headers=headers,
                midway=midway,
            )
            reply.delay_s = delay_s
        if kind is not None:
            self._fault_counts[kind] += 1
        return reply

    # -- request bodies -------------------------------------------------------------------------

    def _chat_job(self, data: dict[str, Any]) -> _Job:
        model = _model(data)
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _Invalid("Missing required parameter: 'messages'.", "messages")
        n = _optional_int(data, "n", 1, 128) or 1
        cap = _optional_int(data, "max_completion_tokens", 1)
        if cap is None:
            cap = _optional_int(data, "max_tokens", 1)
        reply_tokens = _optional_int(data, "mock_reply_tokens", 0)
        if reply_tokens is None:
            reply_tokens = self.config.reply_tokens
        if self.config.exact_tokens:
            prompt_tokens = count_request_tokens(_CHAT, data).tokens
        else:
            prompt_tokens = payloads.estimate_chat_prompt_tokens(
                messages, data.get("tools"), model=model
            )
        echo = payloads.echo_of(messages) if self.config.echo or data.get("mock_echo") else None
        if echo is not None and data.get("mock_reply_tokens") is None:
            reply_tokens = max(1, (len(echo) + 3) // 4)
        cached_tokens = self._cached_tokens(messages[0])
        charge = prompt_tokens + (cap or 0) * n

        def build(with_usage: bool) -> tuple[bytes, int, int]:
            body, completion_tokens = payloads.chat_completion(
                data,
                completion_id=f"chatcmpl-mock{next(self._ids):020x}",
                created=int(time.time()),
                prompt_tokens=prompt_tokens,
                cached_tokens=cached_tokens,
                reply_tokens=reply_tokens,
                reasoning_tokens=self.config.reasoning_tokens,
                cap=cap,
                n=n,
                with_usage=with_usage,
                echo=echo,
            )
            return body, prompt_tokens, completion_tokens

        return _Job(model, charge, build)

    def _cached_tokens(self, first: object) -> int:
        if not isinstance(first, dict) or first.get("role") not in ("system", "developer"):
            return 0
        content = first.get("content")
        if not isinstance(content, str) or len(content) < _CACHEABLE_CHARS:
            return 0
        key = hash(content)
        if key in self._prefixes:
            # OpenAI caches in steps of 128 tokens.
            return (len(content) // 4) // 128 * 128
        if len(self._prefixes) >= _MAX_REMEMBERED_PREFIXES:
            self._prefixes.clear()
        self._prefixes.add(key)
        return 0


def _form_data(request: HttpRequest) -> dict[str, Any]:
    """A multipart body's fields; `mock_fault_times` arrives as text and is read as a number."""
    data = parse_form(request.content_type, request.body)
    times = data.get("mock_fault_times")
    if isinstance(times, str) and times.isdigit():
        data["mock_fault_times"] = int(times)
    return data


_UNPARSABLE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)
