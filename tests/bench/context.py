"""What every benchmark needs: settings, the temp directory, core layout, and how to start things.

The mock server gets one core and the client under test another (`os.sched_setaffinity` in the
child), so that they do not fight for a core; this process sits with the mock, since all it does
while a client runs is read the mock's counters now and then. Inputs, outputs and logs go into
one temp directory that `__main__` removes at the end, whatever happens.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.bench.inputs import write_chat_rows
from tests.bench.procs import BenchError, Child, Exit, MockServer, child_env

__all__ = ["Context", "Settings"]

_LOG_TAIL_CHARS = 1500


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    quick: bool = False
    repeat: int = 3
    concurrency: int = 100
    overhead_rows: int = 50_000


class Context:
    def __init__(self, settings: Settings, tmp: Path, *, log: Callable[[str], None]) -> None:
        self.settings = settings
        self.tmp = tmp
        self.log = log
        cores = sorted(os.sched_getaffinity(0))
        self.server_cpus: frozenset[int] | None = None
        self.client_cpus: frozenset[int] | None = None
        if len(cores) >= 2:
            self.server_cpus = frozenset({cores[0]})
            self.client_cpus = frozenset({cores[1]})
        self.env = child_env({})  # o200k_base comes with the tokenizers extra, as for a user
        self._inputs: dict[tuple[int, int, int], Path] = {}
        self._names: dict[str, int] = {}
        self._logs: dict[int, Path] = {}
        (tmp / "logs").mkdir(exist_ok=True)

    def pin_self(self) -> None:
        if self.server_cpus:
            os.sched_setaffinity(0, self.server_cpus)

    def layout(self) -> str:
        if self.server_cpus is None or self.client_cpus is None:
            return "one core: mock server and client share it"
        return f"mock server on CPU {min(self.server_cpus)}, client on CPU {min(self.client_cpus)}"

    def fresh(self, name: str) -> str:
        """A name not used before in this run (for output directories and logs)."""
        n = self._names.get(name, 0) + 1
        self._names[name] = n
        return f"{name}-{n}"

    def out_dir(self, name: str) -> Path:
        return self.tmp / "out" / self.fresh(name)

    def chat_input(self, rows: int, *, content_chars: int = 60, max_tokens: int = 16) -> Path:
        key = (rows, content_chars, max_tokens)
        path = self._inputs.get(key)
        if path is None:
            path = self.tmp / f"chat-{rows}-{content_chars}c-{max_tokens}t.jsonl"
            self.log(f"  writing {rows:,} input rows to {path.name}")
            write_chat_rows(path, rows, content_chars=content_chars, max_tokens=max_tokens)
            self._inputs[key] = path
        return path

    def forget_input(self, path: Path) -> None:
        """Remove an input written by `chat_input` now (a big one), not with the temp dir."""
        for key, known in list(self._inputs.items()):
            if known == path:
                del self._inputs[key]
        path.unlink(missing_ok=True)

    def mock(self, *flags: str) -> MockServer:
        """The mock server, without billing endpoints (as OpenAI itself, vLLM, llama.cpp)."""
        return MockServer(
            ["--no-billing", *flags],
            cpus=self.server_cpus,
            env=self.env,
            log_path=self.tmp / "logs" / "mock.log",
        )

    def _start(self, name: str, argv: list[str]) -> Child:
        base = self.tmp / "logs" / self.fresh(name)
        out, err = base.with_suffix(".out"), base.with_suffix(".err")
        # The child keeps its own copies of the descriptors.
        with out.open("wb") as stdout, err.open("wb") as stderr:
            child = Child(
                argv, cpus=self.client_cpus, env=self.env, stdout=stdout, stderr=stderr, name=name
            )
        self._logs[child.pid] = base
        return child

    def batchrun_run(self, input_path: Path, out: Path, base_url: str, *flags: str) -> Child:
        argv = [sys.executable, "-m", "batchrun", "run", str(input_path), "--out", str(out)]
        argv += ["--base-url", base_url, "-q", *flags]
        return self._start("batchrun", argv)

    def bare_run(
        self,
        input_path: Path,
        base_url: str,
        concurrency: int,
        *,
        client: str = "aiohttp",
        clients: int = 1,
    ) -> Child:
        argv = [sys.executable, "-m", "tests.bench.bare", str(input_path), base_url]
        argv += ["--concurrency", str(concurrency), "--client", client, "--clients", str(clients)]
        return self._start("bare", argv)

    def bench_module(self, module: str, *args: str) -> Child:
        """`python -m MODULE ARGS` on the client's core (a benchmark's own measuring child)."""
        return self._start(module.rsplit(".", 1)[-1], [sys.executable, "-m", module, *args])

    def batchrun(self, *args: str) -> Child:
        """`python -m batchrun ARGS` (estimate, report...)."""
        return self._start("batchrun-cmd", [sys.executable, "-m", "batchrun", *args])

    def finish(
        self,
        child: Child,
        timeout_s: float,
        *,
        tick: Callable[[], None] | None = None,
        interval_s: float = 0.05,
        expect: int = 0,
    ) -> Exit:
        """Wait for `child`; BenchError (with its output's tail) unless it exits `expect`."""
        result = child.wait(timeout_s, tick=tick, interval_s=interval_s)
        if result.timed_out:
            raise BenchError(f"{child.name} did not finish in {timeout_s:.0f} s; stopped it")
        if result.code != expect:
            raise BenchError(
                f"{child.name} exited {result.code} (expected {expect}): {self.log_tail(child)}"
            )
        return result

    def _read(self, child: Child, suffix: str) -> str:
        base = self._logs.get(child.pid)
        if base is None or not base.with_suffix(suffix).exists():
            return ""
        return base.with_suffix(suffix).read_text(errors="replace")

    def output(self, child: Child) -> str:
        """What `child` wrote to stdout."""
        return self._read(child, ".out")

    def log_tail(self, child: Child) -> str:
        text = (self._read(child, ".err") + "\n" + self._read(child, ".out")).strip()
        return " ".join(text[-_LOG_TAIL_CHARS:].split())

    def remove(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
