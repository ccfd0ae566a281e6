"""batchrun.send.download: media URLs fetched without the key, capped, retried, redirected."""

from __future__ import annotations

import asyncio

import pytest

from batchrun.send.download import DownloadFailed, download
from tests.test_http import ListSink, engine_for, read_request, serving


def server_of(*responses: bytes, seen: list[bytes]):  # type: ignore[no-untyped-def]
    """Answers each connection with the next response (the last one repeats)."""
    queue = list(responses)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(queue.pop(0) if len(queue) > 1 else queue[0])
        await writer.drain()

    return serving(handler)


PNG = b"\x89PNG" + b"p" * 5000
OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n"
    + b"Content-Length: %d\r\n\r\n" % len(PNG)
    + PNG
)
BUSY = b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


async def no_sleep(seconds: float) -> None:
    return None


@pytest.mark.anyio
@pytest.mark.parametrize("engine_name", ["aiohttp", "httpx2"])
async def test_a_download_sends_no_header_of_the_api_request_and_retries_a_503(
    engine_name: str,
) -> None:
    seen: list[bytes] = []
    opened: list[ListSink] = []
    async with server_of(BUSY, OK, seen=seen) as url, engine_for(engine_name) as engine:
        path = await download(
            engine, url, lambda ct: ListSink(ct, opened), sleep=no_sleep, timeout_s=5
        )
    assert path == f"media/{len(PNG)}.bin"
    assert b"".join(opened[-1].chunks) == PNG
    assert len(seen) == 2
    for request in seen:
        head = request.lower()
        assert request.startswith(b"GET ")
        for header in (b"authorization", b"x-api-key", b"x-goog-api-key", b"content-type"):
            assert b"\r\n" + header + b":" not in head


@pytest.mark.anyio
@pytest.mark.parametrize("engine_name", ["aiohttp", "httpx2"])
async def test_a_download_over_the_cap_is_refused_and_its_file_aborted(engine_name: str) -> None:
    seen: list[bytes] = []
    opened: list[ListSink] = []
    async with server_of(OK, seen=seen) as url, engine_for(engine_name) as engine:
        with pytest.raises(DownloadFailed, match="larger than 1,000 bytes"):
            await download(engine, url, lambda ct: ListSink(ct, opened), max_bytes=1000)
    assert [s.state for s in opened] == ["aborted"]
    assert len(seen) == 1  # not retried


@pytest.mark.anyio
async def test_a_redirect_loop_ends() -> None:
    seen: list[bytes] = []
    loop = (
        b"HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    async with server_of(loop, seen=seen) as url, engine_for("aiohttp") as engine:
        with pytest.raises(DownloadFailed, match="more than 5 redirects"):
            await download(engine, url, lambda ct: ListSink(ct, []), sleep=no_sleep)
    assert len(seen) == 6
