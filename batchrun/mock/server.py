"""Running the mock: `serve()` inside an asyncio loop, or `MockServer` in a background thread.

    MockServer (any thread) ──call_soon_threadsafe──► _Service (loop thread) ──► MockApp
                                                        │ listening socket, open connections
                                                        └ go_down(): close both, listen again later

`MockServer` suits tests and demos whatever their own concurrency (sync code, anyio, trio...):
the mock gets its own thread and event loop, and every control call waits until the loop has
carried it out, so that `go_down()` has closed the port by the time it returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from batchrun.mock.app import MockApp
from batchrun.mock.config import MockConfig
from batchrun.mock.faults import validate_fault_table
from batchrun.mock.http import HttpProtocol

__all__ = ["MockServer", "serve"]

T = TypeVar("T")

# The default listen backlog (100) drops connections when a benchmark opens thousands at once.
_BACKLOG = 4096
_RELISTEN_RETRY_S = 0.05


class _Service:
    """The mock on the current event loop: the app, its listening socket and its connections."""

    def __init__(self, config: MockConfig) -> None:
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.connections: set[HttpProtocol] = set()
        self.app = MockApp(config, clock=self.loop.time, connections=self.connections)
        self.port = config.port
        self._server: asyncio.Server | None = None
        self._relisten: asyncio.TimerHandle | None = None
        self._relisten_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def base_url(self) -> str:
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/v1"

    async def start(self) -> None:
        server = await self.loop.create_server(
            lambda: HttpProtocol(self.app, self.connections),
            self.config.host,
            self.port,
            backlog=_BACKLOG,
            reuse_address=True,
        )
        self._server = server
        # With port 0 the kernel chose; later restarts (go_down) must come back on this one.
        self.port = server.sockets[0].getsockname()[1]
        self.app.base_url = self.base_url
        self.app.public_url = self.base_url.removesuffix("/v1")  # for the image URLs it gives

    def go_down(self, seconds: float) -> None:
        """Refuse connections for `seconds`: stop listening, drop every connection, come back."""
        if self._relisten is not None:
            self._relisten.cancel()
        self._stop_listening()
        self._relisten = self.loop.call_later(seconds, self._come_back)

    def _come_back(self) -> None:
        self._relisten = None
        if not self._closed and self._server is None:
            # Owned here: aclose() cancels it if the server stops while it runs.
            self._relisten_task = self.loop.create_task(self._try_listen())

    async def _try_listen(self) -> None:
        try:
            await self.start()
        except OSError:
            # Someone else took the port meanwhile; keep trying, as a restarting service would.
            if not self._closed:
                self._relisten = self.loop.call_later(_RELISTEN_RETRY_S, self._come_back)

    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for connection in list(self.connections):
            connection.abort()

    async def aclose(self) -> None:
        self._closed = True
        if self._relisten is not None:
            self._relisten.cancel()
        task = self._relisten_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server = self._server
        self._stop_listening()
        if server is not None:
            await server.wait_closed()
        # Let the aborted transports run connection_lost before the loop goes away.
        await asyncio.sleep(0)


async def serve(config: MockConfig, *, ready: Callable[[str], None] | None = None) -> None:
    """Serve on the running loop until cancelled; `ready(base_url)` is called once listening."""
    service = _Service(config)
    await service.start()
    try:
        if ready is not None:
            ready(service.base_url)
        await asyncio.get_running_loop().create_future()
    finally:
        await service.aclose()


class MockServer:
    """The mock in a background thread with its own event loop; a context manager.

    >>> with MockServer(MockConfig(latency_ms=5)) as server:
    ...     client = httpx2.Client(base_url=server.base_url)
    """

    def __init__(self, config: MockConfig | None = None) -> None:
        self.config = config if config is not None else MockConfig()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._service: _Service | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        state = "running" if self._service is not None else "stopped"
        where = f" {self.base_url}" if self._service is not None else ""
        return f"<MockServer {state}{where}>"

    def __enter__(self) -> MockServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """`http://HOST:PORT/v1`, what an OpenAI client takes as its base URL."""
        return self._running().base_url

    @property
    def port(self) -> int:
        return self._running().port

    def start(self) -> None:
        """Listen; returns once the port is open, raises OSError if it cannot be."""
        if self._thread is not None:
            raise RuntimeError("MockServer already started")
        self._started = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="batchrun-mock", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error

    def stop(self) -> None:
        """Close every connection and the port, and end the thread. Safe to call twice."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join()
        self._thread = None

    def stats(self) -> dict[str, Any]:
        """The counters, as `GET /mock/stats` returns them."""
        return self._call(lambda: self._running().app.stats())

    def bodies(self) -> list[bytes]:
        """The raw API request bodies received, in order (`MockConfig(record_bodies=True)`)."""
        return self._call(lambda: self._running().app.bodies())

    def reset(self) -> None:
        """Zero the counters and return to the just-started state (as `POST /mock/reset`)."""
        self._call(lambda: self._running().app.reset())

    def set_faults(self, faults: dict[str, float]) -> None:
        """Replace the probabilistic fault table; ValueError for an unknown kind or probability."""
        table = validate_fault_table(faults, field="faults")
        self._call(lambda: self._running().app.set_faults(table))

    def advance_batches(self, seconds: float) -> None:
        """Move the clock the provider batches live on `seconds` ahead: a test sets
        `batch_phase_s` long and decides exactly when each batch moves on."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        self._call(lambda: self._running().app.advance_batches(seconds))

    def go_down(self, seconds: float) -> None:
        """Refuse connections for `seconds`, then listen again on the same port.

        On return the listening socket is closed and every open connection has been dropped.
        """
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        self._call(lambda: self._running().go_down(seconds))

    def _running(self) -> _Service:
        if self._service is None:
            raise RuntimeError("MockServer is not running; use it as a context manager")
        return self._service

    def _call(self, fn: Callable[[], T]) -> T:
        loop = self._loop
        if loop is None or self._service is None:
            raise RuntimeError("MockServer is not running; use it as a context manager")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the calling thread, not swallowed
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        try:
            service = _Service(self.config)
            await service.start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._stop = asyncio.Event()
        self._service = service
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            self._service = None
            await service.aclose()
