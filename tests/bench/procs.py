"""Child processes of the benchmarks: pinned to a core, timed, measured, always cleaned up.

    Child(argv, cpus=...) ──► wait(timeout_s, tick=...) ──► Exit (wall, CPU, peak RSS of that child)
    MockServer(flags)     ──► base_url, stats(), reset()    (its own process, its own core)

Guarantees:
- Each child's CPU time and peak RSS come from `os.wait4` on that child alone, so neither the mock
  server nor an earlier child is ever counted (RUSAGE_CHILDREN would mix them up).
- Every child gets SIGKILL from the kernel if this process dies (PR_SET_PDEATHSIG), runs in its own
  session (a Ctrl-C reaches only us, and we stop the children in order), and is registered until
  reaped, so `stop_all()` in a `finally` leaves nothing behind.
- Children talk to 127.0.0.1 only: proxy variables and API keys are removed from their environment.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = [
    "BenchError",
    "Child",
    "Exit",
    "MockServer",
    "child_env",
    "stop_all",
]

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)
_LIVE: dict[int, Child] = {}
_DROPPED_ENV = {
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "openai_api_key",
    "openai_base_url",
}
_LISTENING = re.compile(r"listening on (http://\S+)")
# Loopback only, and never through a proxy, whatever the environment says.
_URL_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BenchError(Exception):
    """A benchmark could not be carried out (a child failed, timed out, or answered wrongly)."""


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in _DROPPED_ENV}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass(frozen=True, slots=True, kw_only=True)
class Exit:
    """How a child ended. `code` is negative for a signal (as in subprocess)."""

    code: int
    wall_s: float
    cpu_s: float
    max_rss_kb: int
    timed_out: bool = False


def _preexec(cpus: frozenset[int] | None) -> Callable[[], None]:
    def setup() -> None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


class Child:
    """One child process; reaped only by `wait`/`stop`, which record its own resource usage."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cpus: frozenset[int] | None,
        env: dict[str, str],
        stdout: IO[bytes] | int | None = subprocess.DEVNULL,
        stderr: IO[bytes] | int | None = subprocess.DEVNULL,
        name: str = "",
    ) -> None:
        self.name = name or Path(argv[0]).name
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env,
            preexec_fn=_preexec(cpus),
            start_new_session=True,
        )
        _LIVE[self.proc.pid] = self
        self.result: Exit | None = None
        self._pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self._pidfd = os.pidfd_open(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _reap(self, options: int, *, timed_out: bool = False) -> Exit | None:
        if self.result is not None:
            return self.result
        pid, status, usage = os.wait4(self.proc.pid, options)
        if pid == 0:
            return None
        ended = time.perf_counter()
        code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = code
        _LIVE.pop(self.proc.pid, None)
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self.result = Exit(
            code=code,
            wall_s=ended - self.started_at,
            cpu_s=usage.ru_utime + usage.ru_stime,
            max_rss_kb=usage.ru_maxrss,
            timed_out=timed_out,
        )
        return self.result

    def poll(self) -> Exit | None:
        return self._reap(os.WNOHANG)

    def wait(
        self,
        timeout_s: float,
        *,
        tick: Callable[[], None] | None = None,
        interval_s: float = 0.05,
    ) -> Exit:
        """Wait for the end (stopping the child at `timeout_s`), calling `tick` meanwhile.

        With a pidfd the exit is seen the instant it happens, not at the next tick.
        """
        deadline = time.monotonic() + timeout_s
        while (result := self.poll()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return self.stop(timed_out=True)
            if tick is not None:
                tick()
            pause = min(interval_s, left)
            if self._pidfd is not None:
                select.select([self._pidfd], [], [], pause)
            else:
                time.sleep(pause)
        return result

    def send_signal(self, signum: int) -> None:
        if self.result is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signum)

    def stop(self, *, grace_s: float = 3.0, timed_out: bool = False) -> Exit:
        """SIGTERM, then SIGKILL after `grace_s`; returns how it ended."""
        self.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if (result := self._reap(os.WNOHANG, timed_out=timed_out)) is not None:
                return result
            time.sleep(0.02)
        self.send_signal(signal.SIGKILL)
        result = self._reap(0, timed_out=timed_out)
        assert result is not None
        return result

    def kill(self) -> Exit:
        self.send_signal(signal.SIGKILL)
        result = self._reap(0)
        assert result is not None
        return result


def stop_all() -> None:
    """Stop every child still running (newest first): for `finally` blocks and Ctrl-C."""
    for child in reversed(list(_LIVE.values())):
        with contextlib.suppress(OSError):
            child.stop(grace_s=2.0)


class MockServer:
    """`python -m batchrun.mock --port 0 FLAGS` in its own process, pinned to `cpus`."""

    def __init__(
        self,
        flags: Sequence[str],
        *,
        cpus: frozenset[int] | None,
        env: dict[str, str],
        log_path: Path,
        start_timeout_s: float = 30.0,
    ) -> None:
        self._log = log_path.open("ab")
        argv = [sys.executable, "-m", "batchrun.mock", "--port", "0", *flags]
        self.flags = list(flags)
        self.child = Child(
            argv, cpus=cpus, env=env, stdout=subprocess.PIPE, stderr=self._log, name="mock"
        )
        self.base_url = self._read_url(start_timeout_s)
        self.root = self.base_url.removesuffix("/v1")

    def _read_url(self, timeout_s: float) -> str:
        stdout = self.child.proc.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout_s)
        line = stdout.readline().decode(errors="replace") if ready else ""
        match = _LISTENING.search(line)
        if match is None:
            self.close()
            raise BenchError(f"the mock server did not start (said {line.strip()!r})")
        return match.group(1)

    def _call(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(self.root + path, method=method)
        with _URL_OPENER.open(request, timeout=10) as response:
            data: dict[str, Any] = json.loads(response.read())
        return data

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/mock/stats")

    def reset(self) -> None:
        self._call("POST", "/mock/reset")

    def close(self) -> None:
        self.child.stop()
        if self.child.proc.stdout is not None:
            self.child.proc.stdout.close()
        self._log.close()

    def __enter__(self) -> MockServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
