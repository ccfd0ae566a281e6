"""The HTTP engines keep one contract: `AiohttpEngine` and `Httpx2Engine` answer alike.

Proved through the public API only, every test run on both engines, all on 127.0.0.1:
- a 200 from the real mock comes back as a `Reply` with case-insensitive headers, and every
  request says `user-agent: batchrun/<version>`; a 307 is an answer, never followed;
- each failure with no HTTP answer (refused, timeout, closed, garbage, cut short, bad gzip,
  unsupported scheme, https to a port that speaks plain http) raises `TransportError` with the
  same kind, `looks_down` and message shape whichever engine sent the request;
- `env_proxy` reads HTTP(S)_PROXY and NO_PROXY as curl does;
- `get` (the cheap look-ups such as GET /v1/models) keeps the same contract, with its own timeout;
- `aclose` is safe before any request, and twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import trustme

from batchrun import __version__
from batchrun.mock import MockConfig, MockServer
from batchrun.send.http import (
    AiohttpEngine,
    HttpEngine,
    Httpx2Engine,
    StreamTo,
    TransportError,
    env_proxy,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

ENGINES = ["aiohttp", "httpx2"]
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
JSON_HEADERS = {"content-type": "application/json"}
PROXY_VARIABLES = ["http_proxy", "https_proxy", "no_proxy", "all_proxy"]


@pytest.fixture(autouse=True)
def no_proxy_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback requests go direct whatever proxy the machine running the tests names."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def new_engine(name: str, *, timeout_s: float = 2.0) -> HttpEngine:
    if name == "aiohttp":
        return AiohttpEngine(connections=4, timeout_s=timeout_s)
    return Httpx2Engine.create(connections=4, timeout_s=timeout_s)


@asynccontextmanager
async def engine_for(name: str, *, timeout_s: float = 2.0) -> AsyncIterator[HttpEngine]:
    engine = new_engine(name, timeout_s=timeout_s)
    try:
        yield engine
    finally:
        await engine.aclose()


# -- raw servers --------------------------------------------------------------------------------


@asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """A URL on 127.0.0.1 whose connections `handler` serves; every connection closed on exit."""
    open_connections: dict[asyncio.StreamWriter, asyncio.Task[object]] = {}

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        open_connections[writer] = task
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}/v1/chat/completions"
    finally:
        server.close()
        await server.wait_closed()
        for writer in open_connections:
            writer.close()  # a handler still reading sees the end of its stream and returns
        await asyncio.gather(*open_connections.values())


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next((int(line[15:]) for line in lines if line.startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


def answering(response: bytes, requests: list[bytes] | None = None) -> Handler:
    """Reads one request (recorded in `requests`), writes `response` and closes."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        if requests is not None:
            requests.append(request)
        writer.write(response)
        await writer.drain()

    return handler


async def never_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until the client gives up


@asynccontextmanager
async def https_to_plain_http() -> AsyncIterator[str]:
    """An https URL on a port that speaks plain http: it answers the TLS hello with HTTP text."""

    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the client's TLS hello has begun
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()

    async with serving(plain) as url:
        yield url.replace("http://", "https://", 1)


def refusing() -> AbstractAsyncContextManager[str]:
    """A URL on a port that was free a moment ago: nothing listens there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return contextlib.nullcontext(f"http://127.0.0.1:{port}/v1/chat/completions")


# -- answers ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_200_from_the_mock_is_a_reply(engine_name: str) -> None:
    with MockServer(MockConfig()) as server:
        async with engine_for(engine_name) as engine:
            url = f"{server.base_url}/chat/completions"
            reply = await engine.post(url, json.dumps(CHAT).encode(), JSON_HEADERS)
    assert reply.status == 200
    assert json.loads(reply.content)["object"] == "chat.completion"
    assert reply.headers.get("Content-Type") == "application/json"
    assert reply.headers.get("content-type") == "application/json"
    assert reply.headers["X-Request-ID"] == reply.headers["x-request-id"]


@pytest.mark.anyio
async def test_every_request_names_batchrun_as_its_user_agent(engine_name: str) -> None:
    requests: list[bytes] = []
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    async with serving(answering(ok, requests)) as url, engine_for(engine_name) as engine:
        reply = await engine.post(url, b'{"x": 1}', JSON_HEADERS)
    assert (reply.status, reply.content) == (200, b"{}")
    [request] = requests
    assert request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert request.endswith(b'\r\n\r\n{"x": 1}')
    header_lines = request.lower().split(b"\r\n")
    assert [h for h in header_lines if h.startswith(b"user-agent:")] == [
        f"user-agent: batchrun/{__version__}".encode()
    ]


@pytest.mark.anyio
async def test_a_redirect_is_an_answer_and_is_not_followed(engine_name: str) -> None:
    requests: list[bytes] = []
    redirect = b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /next\r\nContent-Length: 0\r\n\r\n"
    async with serving(answering(redirect, requests)) as url, engine_for(engine_name) as engine:
        reply = await engine.post(url, b"{}", JSON_HEADERS)
    assert reply.status == 307
    assert reply.headers["location"] == "/next"
    assert len(requests) == 1


@pytest.mark.anyio
async def test_a_get_is_a_reply_and_says_get(engine_name: str) -> None:
    with MockServer(MockConfig()) as server:
        async with engine_for(engine_name) as engine:
            reply = await engine.get(f"{server.base_url}/models", {"authorization": "Bearer x"})
    assert reply.status == 200
    assert "gpt-4o-mini" in [m["id"] for m in json.loads(reply.content)["data"]]
    requests: list[bytes] = []
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    async with serving(answering(ok, requests)) as url, engine_for(engine_name) as engine:
        await engine.get(url.replace("/chat/completions", "/models"), {})
    assert requests[0].startswith(b"GET /v1/models HTTP/1.1\r\n")


@pytest.mark.anyio
async def test_a_get_times_out_on_its_own_timeout_not_the_engines(engine_name: str) -> None:
    async with serving(never_answering) as url, engine_for(engine_name, timeout_s=60) as engine:
        with anyio.fail_after(20):  # far below the engine's 60 s: only the 0.3 s can end it
            with pytest.raises(TransportError) as raised:
                await engine.get(url, {}, timeout_s=0.3)
    assert (raised.value.kind, raised.value.message) == ("timeout", TIMEOUT)


# -- failures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    target: Callable[[], AbstractAsyncContextManager[str]]
    kind: str
    prefix: str  # what the message starts with
    looks_down: bool = False


def answers(response: bytes) -> Callable[[], AbstractAsyncContextManager[str]]:
    return lambda: serving(answering(response))


CUT_SHORT = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
BAD_GZIP = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!"
FTP_URL = "ftp://127.0.0.1/x"
TIMEOUT = "no response in time (read timeout)"
CLOSED = "the connection was reset or closed before the answer arrived"
FAILURES = {
    "refused": Failure(refusing, "connection", "cannot connect to the server: ", looks_down=True),
    "timeout": Failure(lambda: serving(never_answering), "timeout", TIMEOUT),
    "closed": Failure(answers(b""), "connection", CLOSED),
    "garbage": Failure(answers(b"NOT HTTP\r\n\r\n"), "connection", "HTTP protocol error: "),
    "cut-short": Failure(answers(CUT_SHORT), "connection", "the answer was cut short: "),
    "bad-gzip": Failure(answers(BAD_GZIP), "decoding", "undecodable response body: "),
    "ftp": Failure(lambda: contextlib.nullcontext(FTP_URL), "config", "cannot send requests: "),
    # Not an outage to wait out (it used to be: 331 s of silence, then every row in error).
    "https-to-http": Failure(
        https_to_plain_http, "config", "cannot send requests: the TLS handshake failed ("
    ),
}


async def failure_of(engine_name: str, failure: Failure) -> TransportError:
    async with failure.target() as url, engine_for(engine_name, timeout_s=0.3) as engine:
        with pytest.raises(TransportError) as raised:
            await engine.post(url, b"{}", JSON_HEADERS)
    return raised.value


def shape(message: str) -> str:
    """A message without its detail (what follows the first ': '), which names ports and bytes."""
    return message.split(": ", 1)[0]


@pytest.mark.anyio
@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
async def test_a_failure_with_no_answer_is_a_transport_error(
    engine_name: str, failure: Failure
) -> None:
    error = await failure_of(engine_name, failure)
    assert (error.kind, error.looks_down) == (failure.kind, failure.looks_down)
    assert str(error) == error.message
    assert error.message.startswith(failure.prefix), error.message


@pytest.mark.anyio
@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
async def test_a_failure_reads_the_same_whichever_engine_sent_it(failure: Failure) -> None:
    errors = {name: await failure_of(name, failure) for name in ENGINES}
    seen = {name: (e.kind, e.looks_down, shape(e.message)) for name, e in errors.items()}
    assert seen["aiohttp"] == seen["httpx2"], {name: e.message for name, e in errors.items()}


# -- bodies streamed to a sink ------------------------------------------------------------------


class ListSink:
    """A sink that keeps what it was given, and whether it was committed or aborted."""

    def __init__(self, content_type: str | None, opened: list[ListSink]) -> None:
        self.content_type = content_type
        self.chunks: list[bytes] = []
        self.state = "open"
        opened.append(self)

    def write(self, data: bytes) -> None:
        assert self.state == "open"
        self.chunks.append(data)

    def commit(self) -> str:
        self.state = "committed"
        return f"media/{len(b''.join(self.chunks))}.bin"

    def abort(self) -> None:
        self.state = "aborted"


def sink_to(opened: list[ListSink], *, binary: bool = False) -> StreamTo:
    return StreamTo(open=lambda content_type: ListSink(content_type, opened), binary=binary)


AUDIO = bytes(range(256)) * 1024  # 256 KiB: several chunks
AUDIO_REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nContent-Length: %d\r\n\r\n" % len(AUDIO)
    + AUDIO
)


@pytest.mark.anyio
async def test_a_media_body_streams_into_the_sink_not_into_memory(engine_name: str) -> None:
    opened: list[ListSink] = []
    async with serving(answering(AUDIO_REPLY)) as url, engine_for(engine_name) as engine:
        reply = await engine.post(url, b"{}", JSON_HEADERS, stream_to=sink_to(opened))
    (sink,) = opened
    assert (reply.status, reply.content, reply.media) == (200, b"", f"media/{len(AUDIO)}.bin")
    assert (sink.state, sink.content_type, b"".join(sink.chunks)) == (
        "committed",
        "audio/mpeg",
        AUDIO,
    )
    assert len(sink.chunks) > 1  # chunk by chunk, never the whole body at once


def reply_of(status: str, content_type: str | None, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode() + b"\r\n" + body


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("response", "binary", "streamed"),
    [
        (reply_of("200 OK", "application/json", b"{}"), True, False),
        (reply_of("500 Oops", "audio/mpeg", b"no"), True, False),
        (reply_of("200 OK", "text/plain", b"hi"), True, False),
        (reply_of("200 OK", None, b"\x00\x01"), True, True),
        (reply_of("200 OK", None, b"\x00\x01"), False, False),
        (reply_of("200 OK", "image/png", b"\x89P"), False, True),
        (reply_of("200 OK", "application/octet-stream", b"\x00"), False, True),
    ],
    ids=["json", "500-audio", "text", "binary-no-type", "json-no-type", "png", "octet"],
)
async def test_only_a_2xx_media_body_is_streamed(
    engine_name: str, response: bytes, binary: bool, streamed: bool
) -> None:
    opened: list[ListSink] = []
    async with serving(answering(response)) as url, engine_for(engine_name) as engine:
        reply = await engine.post(
            url, b"{}", JSON_HEADERS, stream_to=sink_to(opened, binary=binary)
        )
    assert (reply.media is not None, len(opened)) == (streamed, int(streamed))
    assert (reply.content == b"") == streamed


@pytest.mark.anyio
async def test_a_media_body_cut_short_aborts_the_sink_and_reads_as_any_cut(
    engine_name: str,
) -> None:
    opened: list[ListSink] = []
    cut = AUDIO_REPLY[: len(AUDIO_REPLY) - 1000]
    async with serving(answering(cut)) as url, engine_for(engine_name) as engine:
        with pytest.raises(TransportError) as raised:
            await engine.post(url, b"{}", JSON_HEADERS, stream_to=sink_to(opened))
    assert [s.state for s in opened] == ["aborted"]
    assert (raised.value.kind, shape(raised.value.message)) == (
        "connection",
        "the answer was cut short",
    )


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 signed by a throwaway CA, and that CA's PEM file."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server, ca_file


@pytest.mark.anyio
async def test_https_trusts_the_ca_that_ssl_cert_file_names(
    engine_name: str, tls_server: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca_file = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    async with serving(answering(ok), tls=server) as url, engine_for(engine_name) as engine:
        reply = await engine.post(url, b"{}", JSON_HEADERS)
    assert (reply.status, reply.content) == (200, b"{}")


@pytest.mark.anyio
async def test_an_untrusted_certificate_is_a_configuration_error_not_an_outage(
    engine_name: str, tls_server: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = tls_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    async with serving(answering(b""), tls=server) as url, engine_for(engine_name) as engine:
        with pytest.raises(TransportError) as raised:
            await engine.post(url, b"{}", JSON_HEADERS)
    error = raised.value
    assert (error.kind, error.looks_down) == ("config", False)
    assert error.message.startswith("cannot send requests: the server's TLS certificate"), error
    assert "CERTIFICATE_VERIFY_FAILED" in error.message or "verify failed" in error.message


# -- proxies and closing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "url", "proxy"),
    [
        ({"HTTP_PROXY": "http://127.0.0.1:9"}, "http://127.0.0.1:8000/v1", "http://127.0.0.1:9"),
        ({"http_proxy": "http://127.0.0.1:9"}, "http://127.0.0.1:8000/v1", "http://127.0.0.1:9"),
        ({"HTTP_PROXY": "http://127.0.0.1:9"}, "https://127.0.0.1:8000/v1", None),
        ({"HTTPS_PROXY": "http://127.0.0.1:9"}, "https://127.0.0.1/v1", "http://127.0.0.1:9"),
        ({"HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1"}, "http://127.0.0.1/", None),
        ({"http_proxy": "http://127.0.0.1:9", "no_proxy": "127.0.0.1"}, "http://127.0.0.1/", None),
        ({}, "http://127.0.0.1:8000/v1", None),
    ],
)
def test_env_proxy_reads_the_proxy_variables(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str, proxy: str | None
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert env_proxy(url) == proxy


@pytest.mark.anyio
async def test_aclose_is_safe_before_any_request_and_twice_after_one(engine_name: str) -> None:
    await new_engine(engine_name).aclose()
    ok = b"HTTP/1.1 204 No Content\r\n\r\n"
    async with serving(answering(ok)) as url:
        engine = new_engine(engine_name)
        assert (await engine.post(url, b"{}", JSON_HEADERS)).status == 204
        await engine.aclose()
        await engine.aclose()
