"""A small, fast HTTP/1.1 server protocol: the only part of the mock that touches sockets.

    bytes ──► HttpProtocol ──► HttpRequest ──► handler.handle() ──► Reply ──► bytes (now or later)

Guarantees:
- keep-alive by default (HTTP/1.1), `Connection: close` and HTTP/1.0 honoured;
- requests may arrive in any number of pieces, or several in one read (pipelining); the replies
  go out in request order because a connection works on one request at a time and buffers the
  rest (reading pauses when that buffer grows large);
- only `Content-Length` bodies are accepted; anything that is not HTTP gets a 400 and the
  connection is closed, because there is no way to find the next request after garbage;
- a reply can be delayed with a loop timer, never by blocking, and can also misbehave on purpose
  (hang, reset, lie about its length, answer an upload before it has arrived) so that clients
  can be tested against broken servers;
- a reply whose body is a `stream` of chunks goes out chunked (`Transfer-Encoding: chunked`),
  each chunk made only when the socket has room (the transport's write flow control), so that an
  answer of any size (a 200 MB audio file) costs the server a chunk of memory, not the answer.

It knows nothing about OpenAI: the handler decides what each reply says.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal, Protocol

__all__ = ["JSON", "Action", "Handler", "HttpProtocol", "HttpRequest", "Reply", "encode_reply"]

JSON = b"application/json"

# Past these sizes a peer is either broken or hostile; a real API rejects such requests too.
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 32 * 1024 * 1024
# While a reply is pending, pipelined input is buffered; past this much, stop reading the socket.
MAX_PENDING_BYTES = 1024 * 1024

_STATUS_LINES: dict[int, bytes] = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("latin-1") for s in HTTPStatus
}
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_HEADER_LINES = re.compile(_TOKEN + rb":[^\r\n]*(?:\r\n" + _TOKEN + rb":[^\r\n]*)*\Z")
_METHOD = re.compile(rb"[A-Z]+\Z")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LINGER_RESET = struct.pack("ii", 1, 0)

Action = Literal["send", "hang", "reset", "reset_midway"]


@dataclass(slots=True)
class HttpRequest:
    """One parsed request. Only the headers the mock needs are kept: `authorization`, Anthropic's
    `x-api-key`, and `content_type` (a multipart upload's boundary)."""

    method: str
    path: str
    query: str
    body: bytes
    authorization: bytes | None
    keep_alive: bool
    api_key: bytes | None = None
    content_type: bytes | None = None
    x_api_key: bytes | None = None  # Anthropic's key header
    x_goog_api_key: bytes | None = None  # Google's


@dataclass(slots=True)
class Reply:
    """What to answer, and how.

    `action`: "send" writes the reply; "hang" writes nothing and keeps the connection open until
    the peer gives up; "reset" closes with a TCP RST without answering; "reset_midway" writes part
    of the head first. `declared_length` sends a Content-Length other than the body's, and is
    always followed by a close (the truncated-body fault).

    `stream`: the body's chunks, made as the socket takes them and sent chunked (`body` is then
    unused); `cut` ends such a body after its first chunk with a close, without the last chunk
    (the truncated fault of a streamed body).
    """

    status: int
    body: bytes = b""
    content_type: bytes | None = JSON
    headers: bytes = b""
    action: Action = "send"
    delay_s: float = 0.0
    declared_length: int | None = None
    close: bool = False
    stream: Iterator[bytes] | None = None
    cut: bool = False


class Handler(Protocol):
    """The application behind the protocol."""

    def handle(self, request: HttpRequest) -> Reply: ...

    def bad_request(self, status: int, message: str) -> Reply: ...

    def early(self, method: str, path: str) -> Reply | None:
        """Asked when an upload's head has arrived and its body has not: a reply to send at
        once, closing the connection on the rest of the upload (a 500 mid-upload), or None."""
        ...


def encode_reply(reply: Reply, *, close: bool) -> bytes:
    """The bytes of a reply's head and body."""
    length = len(reply.body) if reply.declared_length is None else reply.declared_length
    parts = [_STATUS_LINES[reply.status]]
    if reply.content_type is not None:
        parts.append(b"content-type: " + reply.content_type + b"\r\n")
    if reply.stream is None:
        parts.append(b"content-length: %d\r\n" % length)
    else:
        parts.append(b"transfer-encoding: chunked\r\n")
    if reply.headers:
        parts.append(reply.headers)
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if reply.stream is None:
        parts.append(reply.body)
    return b"".join(parts)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Head:
    __slots__ = (
        "api_key",
        "authorization",
        "body_start",
        "content_length",
        "content_type",
        "keep_alive",
        "method",
        "target",
        "x_api_key",
        "x_goog_api_key",
    )

    def __init__(
        self,
        method: str,
        target: str,
        authorization: bytes | None,
        keep_alive: bool,
        content_length: int,
        body_start: int,
        api_key: bytes | None = None,
        content_type: bytes | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.authorization = authorization
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.body_start = body_start
        self.api_key = api_key
        self.content_type = content_type
        self.x_api_key: bytes | None = None
        self.x_goog_api_key: bytes | None = None


def _header(head: bytes, lower: bytes, marker: bytes) -> bytes | None:
    """The value of the header whose `marker` (b"\\r\\nname:") is in `lower`, else None."""
    at = lower.find(marker)
    if at < 0:
        return None
    start = at + len(marker)
    stop = head.find(b"\r\n", start)
    return head[start : stop if stop >= 0 else len(head)].strip(b" \t")


def _parse_head(buf: bytearray, end: int) -> tuple[_Head, bool]:
    """Parse the head that ends at `end`; also says whether the peer asked for 100-continue.

    One regex checks that every header line is `token: value`; then only the headers the mock
    needs are looked up, which is cheaper than splitting every line.
    """
    head = bytes(buf[:end])
    line_end = head.find(b"\r\n")
    request_line = head if line_end < 0 else head[:line_end]
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise _BadRequest(400, "malformed request line")
    method, target, version = parts
    if not _METHOD.match(method) or not target.startswith(b"/"):
        raise _BadRequest(400, "malformed request line")
    if version == b"HTTP/1.1":
        keep_alive = True
    elif version == b"HTTP/1.0":
        keep_alive = False
    else:
        raise _BadRequest(400, "unsupported HTTP version")
    if line_end >= 0 and not _HEADER_LINES.match(head, line_end + 2):
        raise _BadRequest(400, "malformed header line")
    lower = head.lower()
    if b"\r\ntransfer-encoding:" in lower:
        raise _BadRequest(501, "Transfer-Encoding is not supported; send Content-Length")
    length = 0
    raw_length = _header(head, lower, b"\r\ncontent-length:")
    if raw_length is not None:
        if not raw_length.isdigit() or lower.count(b"\r\ncontent-length:") > 1:
            raise _BadRequest(400, "invalid Content-Length")
        length = int(raw_length)
        if length > MAX_BODY_BYTES:
            raise _BadRequest(413, "request body too large")
    connection = _header(lower, lower, b"\r\nconnection:")
    if connection is not None:
        if b"close" in connection:
            keep_alive = False
        elif b"keep-alive" in connection:
            keep_alive = True
    expect = _header(lower, lower, b"\r\nexpect:")
    head_ = _Head(
        method.decode("ascii"),
        target.decode("latin-1"),
        _header(head, lower, b"\r\nauthorization:"),
        keep_alive,
        length,
        end + 4,
        _header(head, lower, b"\r\nx-api-key:"),
        _header(head, lower, b"\r\ncontent-type:"),
    )
    if b"\r\nx-" in lower:  # the provider-specific key headers; most requests have none
        head_.x_api_key = _header(head, lower, b"\r\nx-api-key:")
        head_.x_goog_api_key = _header(head, lower, b"\r\nx-goog-api-key:")
    return head_, expect == b"100-continue"


class HttpProtocol(asyncio.Protocol):
    """One client connection. Register it in `connections` so that the server can drop it."""

    def __init__(self, handler: Handler, connections: set[HttpProtocol]) -> None:
        self._handler = handler
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._head: _Head | None = None
        self._busy = False  # a reply is pending: later requests wait in the buffer
        self._paused = False
        self._hung = False
        self._eof = False
        self._timer: asyncio.TimerHandle | None = None
        self._stream: Iterator[bytes] | None = None  # a chunked body being sent
        self._stream_reply: Reply | None = None
        self._stream_close = False
        self._write_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stream = self._stream_reply = None
        self._buf.clear()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._stream is not None:
            # Not from inside the transport's own write callback: a close there makes asyncio
            # call connection_lost twice.
            asyncio.get_running_loop().call_soon(self._resume_stream)

    def _resume_stream(self) -> None:
        if self._stream is not None and not self._write_paused and self._pump():
            self._next_request()

    def data_received(self, data: bytes) -> None:
        if self._hung:
            return
        self._buf += data
        if self._busy:
            if len(self._buf) > MAX_PENDING_BYTES and self._transport is not None:
                self._transport.pause_reading()
                self._paused = True
            return
        self._process()

    def eof_received(self) -> bool | None:
        # A half-closed peer still gets the answers to what it sent (see _deliver_later).
        self._eof = True
        return self._busy and not self._hung

    def abort(self) -> None:
        """Drop the connection at once (the server is going down)."""
        if self._transport is not None:
            self._transport.abort()

    def _process(self) -> None:
        buf = self._buf
        while self._transport is not None and not self._busy and buf:
            head = self._head
            if head is None:
                if buf[0] in (13, 10):  # CR, LF
                    # RFC 9112 2.2: stray line breaks between requests are to be ignored.
                    del buf[: len(buf) - len(buf.lstrip(b"\r\n"))]
                    continue
                if not 65 <= buf[0] <= 90:
                    # Every method starts with an upper-case letter: fail fast on TLS and junk.
                    self._reject(400, "not an HTTP request")
                    return
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD_BYTES:
                        self._reject(400, "request head too large")
                    return
                try:
                    head, expect_continue = _parse_head(buf, end)
                except _BadRequest as exc:
                    self._reject(exc.status, exc.message)
                    return
                self._head = head
                incomplete = len(buf) < head.body_start + head.content_length
                if incomplete and (head.content_type or b"").startswith(b"multipart/"):
                    path = head.target.partition("?")[0]
                    early = self._handler.early(head.method, path)
                    if early is not None:
                        self._hung = True  # the rest of the upload is not read
                        self._deliver(early, close=True)
                        return
                if expect_continue and incomplete:
                    self._transport.write(_CONTINUE)
            stop = head.body_start + head.content_length
            if len(buf) < stop:
                return
            body = bytes(buf[head.body_start : stop])
            del buf[:stop]
            self._head = None
            path, _, query = head.target.partition("?")
            request = HttpRequest(
                head.method,
                path,
                query,
                body,
                head.authorization,
                head.keep_alive,
                head.api_key,
                head.content_type,
                head.x_api_key,
                head.x_goog_api_key,
            )
            reply = self._handler.handle(request)
            close = reply.close or not head.keep_alive
            if reply.delay_s > 0:
                self._busy = True
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(reply.delay_s, self._deliver_later, reply, close)
                return
            self._deliver(reply, close)

    def _deliver_later(self, reply: Reply, close: bool) -> None:
        self._timer = None
        self._busy = False
        self._deliver(reply, close)
        self._next_request()

    def _next_request(self) -> None:
        """The reply went out whole: read on, and answer what was buffered meanwhile."""
        if self._busy:  # a streamed body is still going out
            return
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        self._process()
        if self._eof and not self._busy:
            # The peer half-closed earlier and everything it sent is answered: nothing can follow.
            self._close()

    def _deliver(self, reply: Reply, close: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        action = reply.action
        if action == "send" and reply.stream is not None:
            transport.write(encode_reply(reply, close=close))
            self._busy = True
            self._stream, self._stream_reply, self._stream_close = reply.stream, reply, close
            self._pump()
        elif action == "send":
            lying = reply.declared_length is not None
            transport.write(encode_reply(reply, close=close and not lying))
            if close or lying:
                self._close()
        elif action == "hang":
            self._busy = True
            self._hung = True
            self._buf.clear()
        else:
            if action == "reset_midway":
                data = encode_reply(reply, close=False)
                transport.write(data[: max(1, data.find(b"\r\n") + 12)])
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # Linger 0 turns the close into a TCP RST, as a crashed proxy would send.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            transport.abort()
            self._transport = None

    def _pump(self) -> bool:
        """Send the stream's chunks while the socket takes them (`resume_writing` calls again);
        whether the stream is over (the connection then reads on, or is closed)."""
        stream, reply = self._stream, self._stream_reply
        assert stream is not None and reply is not None
        while (transport := self._transport) is not None:
            if self._write_paused:
                return False  # the rest once the socket has drained
            chunk = next(stream, None)
            if chunk is None:
                break
            if chunk:
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            if reply.cut:
                break
        self._stream = self._stream_reply = None
        self._busy = False
        if self._transport is not None and not reply.cut:
            self._transport.write(b"0\r\n\r\n")
        if reply.cut or self._stream_close:
            self._close()
        return True

    def _reject(self, status: int, message: str) -> None:
        reply = self._handler.bad_request(status, message)
        self._deliver(reply, close=True)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
