"""Shared helpers of the torture suite: test_faults, test_bad_input, test_process, test_secrets.

Every test there ends by checking the results dataset row by row: each input row has exactly one
record, and each record's status, error_type and message are the expected ones.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import batchrun
from batchrun.mock import MockServer
from tests.helpers import TEST_KEY, read_results

ROOT = Path(__file__).resolve().parent.parent
CHAT = "/v1/chat/completions"


def chat_requests(server: MockServer) -> int:
    """Chat completion requests the mock has seen (the quota look-ups are not counted)."""
    return int(server.stats()["requests"]["by_path"].get(CHAT, 0))


@dataclass(frozen=True, kw_only=True, slots=True)
class Resends:
    """What the mock's recorded bodies (`MockConfig(record_bodies=True)`) say about rows sent
    more than once: each row's body is its own, so a body seen twice is a row sent twice."""

    distinct: int  # bodies: rows sent at least once
    repeated: int  # bodies sent more than once: rows sent again
    resent: int  # requests after the first of their body


def resends(server: MockServer) -> Resends:
    seen = Counter(server.bodies())
    return Resends(
        distinct=len(seen),
        repeated=sum(1 for n in seen.values() if n > 1),
        resent=sum(n - 1 for n in seen.values()),
    )


def config(input_path: Path, out: Path, base_url: str, **overrides: Any) -> batchrun.RunConfig:
    """Small, fast settings; the tests override what they are about."""
    settings: dict[str, Any] = {
        "input_path": input_path,
        "out_dir": out,
        "base_url": base_url,
        "api_key": TEST_KEY,
        "concurrency": 8,
        "max_retries": 3,
        "timeout_s": 5.0,
        "max_outage_s": 30.0,
        "flush_interval_s": 0.2,
        "grace_s": 2.0,
    }
    settings.update(overrides)
    return batchrun.RunConfig(**settings)


def one_record_per_row(out: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records, after checking that every input row has exactly one, under its own id."""
    records = read_results(out)
    assert [r["row"] for r in records] == list(range(len(rows))), "a row is missing or repeated"
    expected_ids = [row.get("custom_id", str(i)) for i, row in enumerate(rows)]
    assert [r["custom_id"] for r in records] == expected_ids
    return records


def assert_all_ok(records: list[dict[str, Any]]) -> None:
    bad = [(r["row"], r["error_type"], r["error_message"]) for r in records if r["status"] != "ok"]
    assert bad == []
    for r in records:
        assert r["error_type"] is None and r["error_message"] is None
        assert r["http_status"] == 200
        assert json.loads(r["response"])["object"] == "chat.completion"


def in_thread_when(
    condition: Callable[[], bool], action: Callable[[], None], *, timeout_s: float = 60.0
) -> threading.Thread:
    """Run `action` in a thread as soon as `condition` holds (checked every 10 ms)."""

    def wait_then_act() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                action()
                return
            time.sleep(0.01)

    thread = threading.Thread(target=wait_then_act, daemon=True)
    thread.start()
    return thread


@contextmanager
def storm(server: MockServer, faults: dict[str, float], seconds: float) -> Iterator[list[float]]:
    """`faults` from now until `seconds` after the first chat request reaches the server.

    Yields a list that receives the storm's length as it was measured when it ends.
    """
    server.set_faults(faults)
    measured: list[float] = []

    def wait_out() -> None:
        started = time.monotonic()
        time.sleep(seconds)
        server.set_faults({})
        measured.append(time.monotonic() - started)

    thread = in_thread_when(lambda: chat_requests(server) > 0, wait_out)
    try:
        yield measured
    finally:
        thread.join(timeout=seconds + 60)
        server.set_faults({})


# ------------------------------------------------------------------------------------- the CLI


def batchrun_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "batchrun", *map(str, args)]


def cli_env(key: str | None = TEST_KEY, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    if key is not None:
        env["OPENAI_API_KEY"] = key
    env.update(extra)
    return env


def run_cli(
    *args: str | Path,
    key: str | None = TEST_KEY,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        batchrun_cmd(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(key) if env is None else env,
        cwd=ROOT,
    )


def kill_9_repeatedly(
    args: list[str],
    *,
    progress: Callable[[], int],
    rng: random.Random,
    times: int,
    step: int = 1,
    within_s: float = 0.3,
) -> int:
    """Start the run `times` times and kill -9 each at a random instant (up to `within_s`) once it
    has made progress: `progress()` grew by `step` since it started. Returns the kills (a run
    that ends before its kill ends the loop). Waiting for progress, not for a fixed time, keeps
    every kill inside the run on a fast machine and a slow one alike."""
    kills = 0
    for _ in range(times):
        before = progress()
        proc = subprocess.Popen(
            args, env=cli_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while progress() < before + step and proc.poll() is None:
            assert time.monotonic() < deadline, "the run made no progress in 60 s"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, within_s))
        if proc.poll() is not None:
            break
        proc.kill()
        proc.wait()
        kills += 1
    return kills


def wait_for(condition: Callable[[], bool], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for the condition")


def parts(out: Path) -> list[Path]:
    results = out / "results"
    return sorted(results.glob("part-*.parquet")) if results.exists() else []
