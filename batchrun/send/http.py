"""One POST and its answer as plain data: the HTTP engines under the `Sender`.

    engine.post(url, body, headers) -> Reply(status, headers, content) | raises TransportError
    engine.post(url, body, headers, stream_to=StreamTo(...)) -> a media answer streamed to disk
    engine.get(url, headers, timeout_s=...) -> the same, for the cheap look-ups (GET /v1/models)

Two engines keep one contract:
- `AiohttpEngine`, the default of `batchrun run`. Measured on this project's 2-core machine with
  2,000 requests in flight against the mock (1 s latency), a bare aiohttp loop spent ~400 us of
  client CPU per request and reached ~1,500 req/s; a bare httpx2 loop spent 2.9-8.6 ms and reached
  114-163 req/s, because httpcore2's pool looks at every connection on each request; httpx2's
  Request and Response objects alone cost ~200 us per request over a transport built on aiohttp.
- `Httpx2Engine`, over an `httpx2.AsyncClient`: `--http-client httpx2`, and whenever a caller
  passes an httpx2 transport (`httpx2.MockTransport` in tests). Runs on trio too.

Guarantees:
- Each engine translates its own exceptions, and only those, into `TransportError`. Its kind and
  `looks_down`, and its message up to the first colon, do not depend on the engine; the detail
  after the colon is the engine's own, on one line. Anything else (a bug) propagates.
- A TLS failure no wait can fix (a certificate that does not verify, https to a port that speaks
  plain http) is a `config` error, which stops the run, not an outage to wait out.
- Redirects are not followed: a 3xx is an answer, classified like any other.
- `Reply.headers` looks names up case-insensitively.
- With `stream_to`, a 2xx body that is media (`StreamTo.wants`) goes chunk by chunk into a sink
  and never whole into memory; the sink is committed (`Reply.media` names the file) only once
  the last byte arrived, and aborted on any failure, so no half answer is ever in place.
"""

from __future__ import annotations

import ssl
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import aiohttp
import httpx2

from batchrun.common.version import __version__
from batchrun.send.bodies import (
    CHUNK_BYTES,
    BodySink,
    StreamBody,
    StreamTo,
    body_and_headers,
    stream_into,
)

__all__ = [
    "USER_AGENT",
    "AiohttpEngine",
    "BodySink",
    "HttpEngine",
    "Httpx2Engine",
    "Reply",
    "StreamBody",
    "StreamTo",
    "TransportError",
    "TransportErrorKind",
    "env_proxy",
    "httpx2_transport_error",
]

USER_AGENT = f"batchrun/{__version__}"

TransportErrorKind = Literal["config", "decoding", "redirects", "timeout", "connection"]

_CLOSED_READING = "the connection was reset or closed before the answer arrived"
_CLOSED_WRITING = "the connection was reset or closed while the request was sent"
_CUT_SHORT = "the answer was cut short"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    content: bytes  # empty when the body went to a sink
    media: str | None = None  # what the committed sink returned (a path relative to OUT)


class TransportError(Exception):
    """No HTTP answer. `looks_down`: the server may be down for everyone (refused, no connect)."""

    def __init__(self, kind: TransportErrorKind, message: str, *, looks_down: bool = False) -> None:
        super().__init__(message)
        self.kind: TransportErrorKind = kind
        self.message = message
        self.looks_down = looks_down


class HttpEngine(Protocol):
    async def post(
        self,
        url: str,
        body: bytes | StreamBody,
        headers: Mapping[str, str],
        *,
        stream_to: StreamTo | None = None,
    ) -> Reply: ...

    async def get(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout_s: float | None = None,
        stream_to: StreamTo | None = None,
    ) -> Reply:
        """`timeout_s` bounds this exchange instead of the engine's own timeout."""
        ...

    async def aclose(self) -> None: ...


def _timed_out(phase: str, *, looks_down: bool = False) -> TransportError:
    return TransportError("timeout", f"no response in time ({phase})", looks_down=looks_down)


def _cannot_connect(detail: str) -> TransportError:
    return TransportError(
        "connection", f"cannot connect to the server: {detail or 'no detail'}", looks_down=True
    )


def _closed(what: str, detail: str) -> TransportError:
    return TransportError("connection", f"{what}: {detail}" if detail else what)


def _one_line(text: str) -> str:
    """An exception's text for a one-line error column (aiohttp's span several lines)."""
    return " ".join(text.split())


def _config(exc: Exception) -> TransportError:
    return TransportError("config", f"cannot send requests: {_one_line(str(exc))}")


def _untrusted(error: BaseException) -> TransportError:
    """A certificate that does not verify: no retry or wait will change it, so the run stops."""
    detail = _one_line(str(error))
    return TransportError(
        "config",
        f"cannot send requests: the server's TLS certificate is not trusted ({detail}); "
        "if a proxy or a private CA signs it, point SSL_CERT_FILE at that CA's PEM file",
    )


# OpenSSL's reasons for a handshake that cannot work with this server on this port, whatever the
# wait: https to a port that speaks plain http (WRONG_VERSION_NUMBER, PACKET_LENGTH_TOO_LONG,
# RECORD_LAYER_FAILURE, by OpenSSL version), or no TLS version or cipher both sides accept.
# A handshake cut short (SSLEOFError, ECONNRESET) is not among them: a busy server does that.
_TLS_MISMATCH_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LAYER_FAILURE",
        "UNKNOWN_PROTOCOL",
        "UNSUPPORTED_PROTOCOL",
        "NO_PROTOCOLS_AVAILABLE",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
    }
)


def _tls_mismatch(error: ssl.SSLError) -> TransportError:
    """A handshake that cannot succeed (https to an http port, say): fatal, as a bad certificate."""
    detail = _one_line(str(error))
    return TransportError(
        "config",
        f"cannot send requests: the TLS handshake failed ({detail}); the server does not speak "
        "https on this port, or no TLS version both sides accept: if it serves plain http, "
        "use http:// in --base-url",
    )


def _tls_error(exc: BaseException) -> TransportError | None:
    """The fatal TLS failure behind an engine's connect error, if that is what it is."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return _untrusted(seen)
        # aiohttp's ClientConnectorSSLError is an SSLError without a reason: look behind it.
        if (
            isinstance(seen, ssl.SSLError)
            and getattr(seen, "reason", None) in _TLS_MISMATCH_REASONS
        ):
            return _tls_mismatch(seen)
        seen = seen.__cause__ or seen.__context__
    return None


# ---------------------------------------------------------------------------------- aiohttp


class AiohttpEngine:
    """aiohttp on the running asyncio loop: `connections` keep-alive connections, one session.

    `timeout_s` bounds a whole exchange (connect, send, wait, read), as `--timeout` says.
    Proxies come from the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), looked up once per
    URL: aiohttp's own `trust_env` reads ~/.netrc in a thread on every request (measured: a third
    of the client's CPU at 2,000 in flight). TLS trusts what httpx2 trusts (its SSL context: the
    system's certificates, or SSL_CERT_FILE / SSL_CERT_DIR).
    """

    def __init__(self, *, connections: int, timeout_s: float) -> None:
        self._connections = connections
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, str | None] = {}

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop that is running then.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._connections, limit_per_host=0, ssl=httpx2.create_ssl_context()
            ),
            timeout=self._timeout,
            headers={"user-agent": USER_AGENT},
        )
        return self._session

    async def post(
        self,
        url: str,
        body: bytes | StreamBody,
        headers: Mapping[str, str],
        *,
        stream_to: StreamTo | None = None,
    ) -> Reply:
        data, headers = body_and_headers(body, headers)
        return await self._send("POST", url, data, headers, None, stream_to)

    async def get(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout_s: float | None = None,
        stream_to: StreamTo | None = None,
    ) -> Reply:
        limit = None if timeout_s is None else aiohttp.ClientTimeout(total=timeout_s)
        return await self._send("GET", url, None, headers, limit, stream_to)

    async def _send(
        self,
        method: str,
        url: str,
        body: bytes | AsyncIterator[bytes] | None,
        headers: Mapping[str, str],
        limit: aiohttp.ClientTimeout | None,
        stream_to: StreamTo | None,
    ) -> Reply:
        session = self._session or self._open()
        try:
            proxy = self._proxies[url]
        except KeyError:
            proxy = self._proxies[url] = env_proxy(url)
        try:
            async with session.request(
                method,
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                proxy=proxy,
                timeout=limit or self._timeout,
            ) as response:
                content_type = response.headers.get("content-type")
                if stream_to is not None and stream_to.wants(response.status, content_type):
                    chunks = response.content.iter_chunked
                    media = await stream_into(stream_to, content_type, lambda: chunks(CHUNK_BYTES))
                    return Reply(response.status, response.headers, b"", media)
                content = await response.read()
                return Reply(response.status, response.headers, content)
        except aiohttp.ClientError as exc:
            raise _aiohttp_error(exc) from exc
        except TimeoutError as exc:  # the whole-exchange timeout
            raise _timed_out("read timeout") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (None: go direct), as curl and httpx2 read it."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies_environment().get(parts.scheme)


_AIOHTTP_CONFIG_ERRORS = (
    aiohttp.InvalidURL,
    aiohttp.NonHttpUrlClientError,
    aiohttp.ClientProxyConnectionError,
    aiohttp.ClientHttpProxyError,
)


def _aiohttp_error(exc: aiohttp.ClientError) -> TransportError:
    """aiohttp's exceptions in batchrun's words (the most specific classes first)."""
    detail = _one_line(str(exc))
    if isinstance(exc, _AIOHTTP_CONFIG_ERRORS):
        return _config(exc)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _untrusted(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientSSLError) and (tls := _tls_error(exc)) is not None:
        return tls
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return _timed_out("connect timeout", looks_down=True)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return _timed_out("read timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _cannot_connect(str(exc.os_error) if exc.os_error else detail)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return _closed(_CLOSED_READING, "")
    if isinstance(exc, aiohttp.ClientPayloadError):
        if "encoding" in detail.lower():  # e.g. "Can not decode content-encoding: gzip"
            return TransportError("decoding", f"undecodable response body: {detail}")
        return _closed(_CUT_SHORT, detail)
    if isinstance(exc, aiohttp.ClientResponseError):  # a malformed status line or headers
        message = _one_line(exc.message) or detail
        return TransportError("connection", f"HTTP protocol error: {message}")
    if isinstance(exc, aiohttp.ClientOSError):
        return _closed(_CLOSED_READING, detail)
    return TransportError("connection", f"{type(exc).__name__}: {detail or 'no detail'}")


# ----------------------------------------------------------------------------------- httpx2


class Httpx2Engine:
    """The same contract over an `httpx2.AsyncClient` (owned: `aclose` closes it)."""

    def __init__(self, client: httpx2.AsyncClient) -> None:
        self._client = client

    @classmethod
    def create(
        cls,
        *,
        connections: int,
        timeout_s: float,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> Httpx2Engine:
        return cls(
            httpx2.AsyncClient(
                timeout=httpx2.Timeout(timeout_s),
                transport=transport,
                limits=httpx2.Limits(
                    max_connections=connections, max_keepalive_connections=connections
                ),
                headers={"user-agent": USER_AGENT},
            )
        )

    async def post(
        self,
        url: str,
        body: bytes | StreamBody,
        headers: Mapping[str, str],
        *,
        stream_to: StreamTo | None = None,
    ) -> Reply:
        content, headers = body_and_headers(body, headers)
        try:
            if stream_to is None:
                response = await self._client.post(url, content=content, headers=headers)
                return Reply(response.status_code, response.headers, response.content)
            async with self._client.stream(
                "POST", url, content=content, headers=headers
            ) as response:
                return await _streamed(response, stream_to)
        except httpx2.RequestError as exc:
            raise _httpx2_error(exc) from exc

    async def get(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout_s: float | None = None,
        stream_to: StreamTo | None = None,
    ) -> Reply:
        timeout = httpx2.USE_CLIENT_DEFAULT if timeout_s is None else timeout_s
        try:
            if stream_to is None:
                response = await self._client.get(url, headers=headers, timeout=timeout)
                return Reply(response.status_code, response.headers, response.content)
            async with self._client.stream(
                "GET", url, headers=headers, timeout=timeout
            ) as response:
                return await _streamed(response, stream_to)
        except httpx2.RequestError as exc:
            raise _httpx2_error(exc) from exc

    async def aclose(self) -> None:
        await self._client.aclose()


async def _streamed(response: httpx2.Response, stream_to: StreamTo) -> Reply:
    content_type = response.headers.get("content-type")
    if stream_to.wants(response.status_code, content_type):
        media = await stream_into(stream_to, content_type, response.aiter_bytes)
        return Reply(response.status_code, response.headers, b"", media)
    return Reply(response.status_code, response.headers, await response.aread())


_HTTPX2_TIMEOUT_PHASES: tuple[tuple[type[httpx2.TimeoutException], str], ...] = (
    (httpx2.ConnectTimeout, "connect timeout"),
    (httpx2.ReadTimeout, "read timeout"),
    (httpx2.WriteTimeout, "write timeout"),
    (httpx2.PoolTimeout, "pool timeout"),
)


def httpx2_transport_error(exc: httpx2.RequestError) -> TransportError:
    """httpx2's exceptions in batchrun's words: the one translation, also for the few calls
    made on httpx2 directly (the provider Batch APIs, `batchrun.send.batch_http`)."""
    return _httpx2_error(exc)


def _httpx2_error(exc: httpx2.RequestError) -> TransportError:
    """httpx2's exceptions in batchrun's words."""
    detail = _one_line(str(exc))
    if isinstance(exc, (httpx2.UnsupportedProtocol, httpx2.InvalidURL, httpx2.ProxyError)):
        return _config(exc)
    if isinstance(exc, httpx2.DecodingError):  # a body its Content-Encoding does not decode
        return TransportError("decoding", f"undecodable response body: {detail}")
    if isinstance(exc, httpx2.TooManyRedirects):
        return TransportError("redirects", f"too many redirects: {detail}")
    if isinstance(exc, httpx2.TimeoutException):
        phase = next((p for kind, p in _HTTPX2_TIMEOUT_PHASES if isinstance(exc, kind)), "timeout")
        return _timed_out(phase, looks_down=isinstance(exc, httpx2.ConnectTimeout))
    if isinstance(exc, httpx2.ConnectError):
        tls = _tls_error(exc)
        return tls if tls is not None else _cannot_connect(detail)
    if isinstance(exc, httpx2.ReadError):
        return _closed(_CLOSED_READING, detail)
    if isinstance(exc, httpx2.WriteError):
        return _closed(_CLOSED_WRITING, detail)
    if isinstance(exc, httpx2.RemoteProtocolError):
        # httpx2 has one class for these three; its wording tells them apart.
        if detail.startswith("Server disconnected"):
            return _closed(_CLOSED_READING, "")
        if detail.startswith("peer closed connection without sending complete message body"):
            return _closed(_CUT_SHORT, detail)
        return TransportError("connection", f"HTTP protocol error: {detail or 'no detail'}")
    return TransportError("connection", f"{type(exc).__name__}: {detail or 'no detail'}")
