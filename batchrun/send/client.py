"""Sending one request, with retries, and turning whatever comes back into a `Record`.

Inputs: a `Request`. Output: its final `Record` (status "ok" or "error"), or `FatalRunError`
when the failure concerns the whole run (bad key, no quota); that row then stays pending.

Guarantees:
- Only the engine's `TransportError` (see `batchrun.send.http`) counts as a failed exchange;
  anything else (a bug) propagates instead of being retried as if it were a network error.
- Retries follow `batchrun.send.retry`; 429s and `retry-after` pause every worker through the
  limiter, and after such a pause one request goes first as a probe (see `batchrun.send.limiter`).
- An outage (connection refused, 502/503/504 from every request) pauses every worker and does not
  use up rows' retries, for up to `max_outage_s`; then rows fail as usual. A row's failure counts
  as an outage only while no request sent since that row's trouble began has succeeded: a row
  that alone keeps getting 502 uses up its own retries.
- Once one request has hit a whole-run failure, no further request is sent: every later `send`
  raises the same `FatalRunError`.
- A wrong URL stops the run instead of burning through the input: until a request is accepted,
  rows answered 404 "not found" are held back, and 20 of them stop the run with a hint about
  `--base-url`, those rows pending (`batchrun.send.wrongurl`).
- The API key is sent only in the header its provider wants (`endpoints.profiles.auth_headers`)
  and is scrubbed from every error message and error body that is recorded (`redact`), and from
  an ok answer that echoes it.
- A 2xx media answer (speech, or any audio / image / video / octet-stream body) is streamed into
  a file of `media` and is ok at once, never retried as "not JSON"; the file is durable and in
  place before the record is returned, so before any part that references it is committed. A
  resend of the row writes the same name (`batchrun.store.media`), replacing rather than adding.
- A paid task's submit (`send(..., once=OnceOnly(...))`) is retried only where the gateway
  cannot have taken it: a refused connection or a connect timeout, a 429, a 5xx. A timeout or
  a dropped connection after the request went, or a 2xx it cannot read, ends the row
  `submit_unknown`; an answer the family calls a rejection ends it `invalid_request` at once,
  whatever its HTTP status (Midjourney's code 24 on HTTP 200).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from batchrun.common.errors import FatalRunError
from batchrun.common.secrets import redact
from batchrun.common.urls import join_url
from batchrun.endpoints.profiles import Profile, auth_headers, is_textual_type, profile_for
from batchrun.endpoints.usage import Usage
from batchrun.models import ErrorType, Record, Request
from batchrun.send.download import save_json_media
from batchrun.send.http import (
    BodySink,
    HttpEngine,
    Reply,
    StreamBody,
    StreamTo,
    TransportError,
    TransportErrorKind,
)
from batchrun.send.limiter import Limiter
from batchrun.send.multipart import multipart_body
from batchrun.send.records import json_or_none, json_record, media_record, text_record
from batchrun.send.retry import (
    FATAL,
    RETRY,
    STOP,
    Verdict,
    backoff_s,
    classify_response,
    parse_retry_after_s,
)
from batchrun.send.wrongurl import WrongUrlGuard

__all__ = ["MAY_BE_ACCEPTED", "CostFn", "MediaFiles", "OnceOnly", "Sender"]

CostFn = Callable[[str | None, Usage], float | None]


class MediaFiles(Protocol):
    """Where media answers go: `batchrun.store.media.MediaStore` (send/ cannot import store/)."""

    def open(self, custom_id: str, index: int, content_type: str | None) -> BodySink: ...


_OUTAGE_STATUSES = {502, 503, 504}

MAY_BE_ACCEPTED = "the submit may have been accepted; --resubmit-unknown sends it again"


@dataclass(frozen=True, slots=True)
class OnceOnly:
    """A request that must not reach the gateway twice (it starts a paid task).

    `rejected(status, body)`: the gateway's refusal in a JSON answer (its words), or None."""

    rejected: Callable[[int, Any], str | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Failure:
    """An attempt that did not give an ok record."""

    verdict: Verdict
    sent_at: float  # on the limiter's clock
    latency_ms: float
    looks_down: bool  # refused, or a retryable 502/503/504: the server may be down for everyone
    status: int | None = None
    headers: Mapping[str, str] | None = None
    text: str | None = None


class Sender:
    """Sends requests for every worker; holds the state that spans them (the outage clock).

    `workers`: how many call `send` at once (the run's concurrency); `input_done()` once no
    request will come but those in flight. Both let a wrong URL be told before 20 answers.
    """

    def __init__(
        self,
        http: HttpEngine,
        limiter: Limiter,
        *,
        base_url: str,
        api_key: str | None,
        max_retries: int,
        max_outage_s: float = 300.0,
        cost_fn: CostFn | None = None,
        clock: Callable[[], float] = time.monotonic,
        workers: int = 1,
        media: MediaFiles | None = None,
        download_media: bool = True,
        media_timeout_s: float = 300.0,
    ) -> None:
        """Without `media`, no answer is streamed to disk: every body is read as JSON.
        `download_media`: fetch the media URLs of answers (images); False keeps the URLs."""
        self._http = http
        self._media = media
        self._download_media = download_media
        self._media_timeout_s = media_timeout_s
        self._limiter = limiter
        self._base_url = base_url
        self._api_key = api_key
        self._headers: dict[str, dict[str, str]] = {}  # per profile name
        self._max_retries = max_retries
        self._max_outage_s = max_outage_s
        self._cost_fn = cost_fn
        self._clock = clock
        self._urls: dict[str, str] = {}
        self._outage_since: float | None = None
        self._outage_cause = ""  # what the latest "looks down" failure was
        self._outage_detail = ""  # and in the engine's or the server's words
        self._host = urllib.parse.urlsplit(base_url).netloc or base_url
        # When the latest request that got an ok answer was sent (limiter clock): tells an outage
        # from one row's bad luck.
        self._last_ok_sent_at = -math.inf
        self._fatal: FatalRunError | None = None
        self.retries = 0
        self._wrong_url = WrongUrlGuard(base_url=base_url, workers=workers)
        self._in_flight = 0

    def _headers_for(self, profile: Profile) -> dict[str, str]:
        """The API request's headers: JSON, and the key as the endpoint's provider wants it."""
        headers = self._headers.get(profile.name)
        if headers is None:
            headers = {"content-type": "application/json"}
            headers.update(auth_headers(profile, self._base_url, self._api_key))
            self._headers[profile.name] = headers
        return headers

    def _url(self, path: str) -> str:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = join_url(self._base_url, path)
        return url

    def input_done(self) -> None:
        """No request will be sent but those in flight now (the input is used up)."""
        self._wrong_url.input_done(self._in_flight)

    async def send(self, request: Request, *, once: OnceOnly | None = None) -> Record:
        """The row's final record; raises `FatalRunError` when the run must stop (the row stays
        pending). `once`: a task's submit (see the module docstring)."""
        self._in_flight += 1
        try:
            record = await self._send(request, once)
        finally:
            self._in_flight -= 1
            self._wrong_url.left(self._in_flight)
        if record.ok and self._media is not None and profile_for(request.url).media_in_json:
            record = await self._save_media(request, record, self._media)
        return record

    async def fetch(self, method: str, path: str, body: Any | None = None) -> tuple[int, Any]:
        """One exchange of a task poll (`GET path`, or `POST path` with `body` as JSON): its
        status and its JSON (None when it is not JSON). The shared pause is waited out first,
        but no request budget is taken (polls have their own); a 429 or a retry-after pauses
        every worker as a send's does. Raises `TransportError`; never retries."""
        await self._limiter.wait_unpaused()
        headers = self._headers_for(profile_for(path))
        url = self._url(path)
        if method == "GET":
            reply = await self._http.get(url, headers)
        else:
            reply = await self._http.post(url, json.dumps(body).encode(), headers)
        retry_after = parse_retry_after_s(reply.headers)
        if reply.status == 429 or (reply.status in _OUTAGE_STATUSES and retry_after):
            self._limiter.back_off(retry_after, f"rate limited (HTTP {reply.status} on a poll)")
        return reply.status, json_or_none(reply.content)

    async def _save_media(self, request: Request, record: Record, media: MediaFiles) -> Record:
        """An answer with media inside (images): `b64_json` to files, URLs downloaded. A
        download that fails for good leaves the row ok (the paid work is done) with the URL
        in `response` and the failure in `error_message`; `batchrun media` can fetch it later."""
        body = json_or_none((record.response or "").encode())
        if not isinstance(body, dict):
            return record
        saved = await save_json_media(
            body,
            open_file=lambda index, content_type: media.open(
                request.custom_id, index, content_type
            ),
            http=self._http,
            download_urls=self._download_media,
            timeout_s=self._media_timeout_s,
        )
        if not saved.changed and not saved.problems:
            return record
        response = json.dumps(saved.body, ensure_ascii=False) if saved.changed else record.response
        return dataclasses.replace(
            record,
            response=response,
            media=tuple(saved.media) or None,
            error_message="; ".join(saved.problems) or None,
        )

    async def _send(self, request: Request, once: OnceOnly | None) -> Record:
        charge = request.token_charge
        attempts = 0
        counted = 0
        trouble_since: float | None = None  # when this row's first "looks down" attempt was sent
        while True:
            attempts += 1
            counted += 1
            probe = await self._limiter.acquire(charge)
            pushed_back = True  # until an answer says otherwise
            try:
                if self._fatal is not None:  # found by another worker: send nothing more
                    raise FatalRunError(self._fatal.kind, self._fatal.message)
                outcome = await self._attempt(request, attempts, once)
                if isinstance(outcome, Record):
                    pushed_back = False
                    return outcome
                failure, verdict = outcome, outcome.verdict
                if verdict.action == FATAL:
                    self._stop(FatalRunError(verdict.error_type, verdict.message))
                    assert self._fatal is not None
                    raise self._fatal
                outage = False
                if failure.looks_down:
                    self._outage_cause = self._cause(failure)
                    self._outage_detail = failure.verdict.message.split(": ", 1)[-1]
                    if trouble_since is None:
                        trouble_since = failure.sent_at
                    # Down for everyone only if nothing sent since this row's trouble began got
                    # an answer: else the server is up, and this row's failures are its own (a
                    # row that alone keeps getting 502 must not retry for ever). Past
                    # max_outage_s, rows fail as usual, each on its own backoff.
                    outage = self._last_ok_sent_at < trouble_since and self._in_outage()
                else:
                    self._outage_since = None
                if outage:
                    counted -= 1  # the server is down for everyone: this row is not to blame
                pushed_back = verdict.rate_limited or outage
                # A failed attempt produced no tokens: give its charge back to the budget. Not
                # after a 429: the server's window is full, and the tokens given back would send
                # the next request into it at once (measured at --tpm 60000: one 429 set off a
                # chain of them, 47.7% of all requests, and 6 rows failed).
                if not verdict.rate_limited:
                    self._limiter.settle(charge, 0)
                headers = failure.headers
                retry_after = parse_retry_after_s(headers) if headers is not None else None
                if pushed_back:
                    # Before the probe (if this was one) is reported: its successor waits this out.
                    reason = "rate limited (429)" if verdict.rate_limited else "server unavailable"
                    self._limiter.back_off(retry_after, reason, sent_at=failure.sent_at)
            finally:
                if probe:
                    self._limiter.probe_done(passed=not pushed_back)
            if verdict.action != RETRY or counted > self._max_retries:
                record = self._error_record(
                    request, verdict, failure.status, failure.text, attempts, failure.latency_ms
                )
                if self._wrong_url.suspect(failure.status, failure.text):
                    try:
                        await self._wrong_url.hold(
                            url=self._url(request.url),
                            endpoint=request.url,
                            text=failure.text,
                            in_flight=self._in_flight,
                        )
                    except FatalRunError as exc:
                        self._stop(exc)
                        raise
                    if self._fatal is not None:  # released by another whole-run failure
                        raise FatalRunError(self._fatal.kind, self._fatal.message)
                return record
            self.retries += 1
            if pushed_back:
                continue  # the shared pause is the wait
            if retry_after:  # "retry-after: 0" is no reason to skip the backoff
                self._limiter.pause(retry_after, f"retry-after on HTTP {failure.status}")
            else:
                await anyio.sleep(backoff_s(counted))

    async def _attempt(
        self, request: Request, attempts: int, once: OnceOnly | None = None
    ) -> Record | _Failure:
        """One HTTP exchange: the ok record, or what went wrong."""
        sent = self._limiter.mark()
        sent_at = sent.at
        started = time.perf_counter()
        profile = profile_for(request.url)
        stream_to = None
        if self._media is not None:
            media, custom_id = self._media, request.custom_id
            stream_to = StreamTo(
                open=lambda content_type: media.open(custom_id, 0, content_type),
                binary=profile.reply == "binary",
            )
        try:
            body: bytes | StreamBody = request.body
            if profile.multipart:
                fields = json.loads(request.body)
                body = multipart_body(fields, request.uploads, file_fields=profile.files)
            reply = await self._http.post(
                self._url(request.url), body, self._headers_for(profile), stream_to=stream_to
            )
        except OSError as exc:  # an upload that vanished or changed since the row was read
            latency_ms = (time.perf_counter() - started) * 1000
            unreadable = Verdict(STOP, ErrorType.BAD_INPUT, f"cannot upload the file: {exc}")
            return _Failure(
                verdict=unreadable, sent_at=sent_at, latency_ms=latency_ms, looks_down=False
            )
        except TransportError as exc:
            latency_ms = (time.perf_counter() - started) * 1000
            failed = _transport_verdict(exc)
            if once is not None and not exc.looks_down and failed.action == RETRY:
                failed = Verdict(
                    STOP, ErrorType.SUBMIT_UNKNOWN, f"{exc.message}; {MAY_BE_ACCEPTED}"
                )
            return _Failure(
                verdict=failed,
                sent_at=sent_at,
                latency_ms=latency_ms,
                looks_down=exc.looks_down,
            )
        latency_ms = (time.perf_counter() - started) * 1000
        status, headers = reply.status, reply.headers
        if reply.media is not None:  # a 2xx media body, in place on disk: the answer itself
            text, answer, verdict = "", {}, None
        else:
            text = reply.content.decode("utf-8", errors="replace")
            answer = json_or_none(reply.content)
            if answer is None and _text_answer(profile, status, headers):
                # A transcription as text / srt / vtt: the body is the answer.
                self._wrong_url.answered(status)
                self._answered(status, sent_at)
                return text_record(
                    request,
                    profile,
                    status=status,
                    text=redact(text, self._api_key) or "",
                    content_type=headers.get("content-type"),
                    attempts=attempts,
                    latency_ms=latency_ms,
                    cost_fn=self._cost_fn,
                )
            verdict = classify_response(status, headers, answer, text)  # None: an object
            if once is not None:
                verdict = _once_verdict(once, status, answer, verdict)
        self._wrong_url.answered(status)
        refused = verdict is not None and verdict.rate_limited
        self._limiter.observe_headers(headers, sent=sent, refused=refused)
        if verdict is None:
            self._answered(status, sent_at)
            if reply.media is not None:
                return media_record(
                    request,
                    profile,
                    status=status,
                    media=(reply.media,),
                    content_type=headers.get("content-type"),
                    attempts=attempts,
                    latency_ms=latency_ms,
                    cost_fn=self._cost_fn,
                )
            return self._ok_record(request, profile, reply, text, answer, attempts, latency_ms)
        return _Failure(
            verdict=verdict,
            sent_at=sent_at,
            latency_ms=latency_ms,
            status=status,
            headers=headers,
            text=text,
            # A 503 that is not retried (model_not_found) says nothing about an outage.
            looks_down=status in _OUTAGE_STATUSES and verdict.action == RETRY,
        )

    def _stop(self, fatal: FatalRunError) -> None:
        """A whole-run failure: no other request goes, and rows held by the guard learn it."""
        if self._fatal is None:
            self._fatal = FatalRunError(fatal.kind, redact(fatal.message, self._api_key))
        self._wrong_url.release()

    def outage_note(self, *, detail: bool = False) -> str | None:
        """While the server looks down for everyone, one line saying so (with the engine's or
        the server's words if `detail`); None otherwise."""
        if self._outage_since is None:
            return None
        cause = self._outage_cause
        if detail and self._outage_detail:
            cause += f" ({redact(self._outage_detail, self._api_key)})"
        limit = f"{self._max_outage_s:g} s (--max-outage)"
        if self._clock() - self._outage_since < self._max_outage_s:
            return f"{cause}, waiting up to {limit}"
        return f"{cause} for over {limit}: rows now fail as their retries run out"

    def _cause(self, failure: _Failure) -> str:
        if failure.status is not None:
            return f"{self._host} answers HTTP {failure.status}"
        if failure.verdict.error_type == ErrorType.TIMEOUT:
            return f"cannot connect to {self._host} in time"
        return f"cannot connect to {self._host}"

    def _in_outage(self) -> bool:
        now = self._clock()
        if self._outage_since is None:
            self._outage_since = now
        return now - self._outage_since < self._max_outage_s

    def _ok_record(
        self,
        request: Request,
        profile: Profile,
        reply: Reply,
        text: str,
        body: dict[str, Any],
        attempts: int,
        latency_ms: float,
    ) -> Record:
        if self._api_key and self._api_key in text:  # a proxy that echoes the headers back
            text = text.replace(self._api_key, "[redacted]")
            body = json_or_none(text.encode()) or {}
        record = json_record(
            request,
            profile,
            status=reply.status,
            text=text,
            body=body,
            content_type=reply.headers.get("content-type"),
            attempts=attempts,
            latency_ms=latency_ms,
            cost_fn=self._cost_fn,
        )
        # OpenAI-style limits charge prompt + max output up front and do not give back unused
        # output: correct the prompt estimate only, or the budget would run ahead of the
        # server's and earn 429s (measured: 79% of requests at --tpm 60000 before this).
        if record.prompt_tokens is not None:
            actual_charge = record.prompt_tokens + request.max_output_tokens
            self._limiter.settle(request.token_charge, actual_charge)
        return record

    def _answered(self, status: int, sent_at: float) -> None:
        """An ok answer arrived: the server is up, and a probe (if this was one) passed."""
        self._outage_since = None
        self._last_ok_sent_at = max(self._last_ok_sent_at, sent_at)
        self._limiter.succeeded()

    def _error_record(
        self,
        request: Request,
        verdict: Verdict,
        status: int | None,
        text: str | None,
        attempts: int,
        latency_ms: float,
    ) -> Record:
        return Record(
            custom_id=request.custom_id,
            row=request.row,
            status="error",
            endpoint=request.url,
            http_status=status,
            response=redact(text, self._api_key) if text else None,
            error_type=verdict.error_type,
            error_message=redact(verdict.message, self._api_key)
            + (f" (after {attempts} attempts)" if attempts > 1 else ""),
            model=request.model,
            attempts=attempts,
            latency_ms=round(latency_ms, 3),
        )


_TRANSPORT_VERDICTS: dict[TransportErrorKind, tuple[str, str]] = {
    "config": (FATAL, "config"),
    "decoding": (RETRY, ErrorType.BAD_RESPONSE),
    "redirects": (STOP, ErrorType.INVALID_REQUEST),
    "timeout": (RETRY, ErrorType.TIMEOUT),
    "connection": (RETRY, ErrorType.CONNECTION_ERROR),
}


def _transport_verdict(exc: TransportError) -> Verdict:
    action, error_type = _TRANSPORT_VERDICTS[exc.kind]
    return Verdict(action, error_type, exc.message)


def _once_verdict(
    once: OnceOnly, status: int, answer: Any, verdict: Verdict | None
) -> Verdict | None:
    """A submit's answer judged: the family's rejection first (on any status), then a 2xx that
    cannot be read is no reason to send it again."""
    rejected = once.rejected(status, answer) if answer is not None else None
    if rejected is not None:
        return Verdict(STOP, ErrorType.INVALID_REQUEST, rejected)
    if verdict is not None and 200 <= status < 300:
        return Verdict(STOP, ErrorType.SUBMIT_UNKNOWN, f"{verdict.message}; {MAY_BE_ACCEPTED}")
    return verdict


def _text_answer(profile: Profile, status: int, headers: Mapping[str, str]) -> bool:
    """A 2xx plain-text body is the answer itself where the family has text formats."""
    return (
        profile.reply == "text_or_json"
        and 200 <= status < 300
        and is_textual_type(headers.get("content-type"))
        and not (headers.get("content-type") or "").lower().startswith("application/json")
    )
