"""Invariant 6: the API key never appears in anything the run writes or prints.

Each scenario runs the CLI against a mock that requires the key, then greps every file under OUT
(Parquet decoded, since its pages are compressed; everything else as raw bytes), the checkpoint,
and stdout and stderr, for the key.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pyarrow.parquet as pq
import pytest

import batchrun
from batchrun.mock import MockConfig, MockServer
from batchrun.store.journal import Journal
from tests.helpers import chat_rows, completion, faulty_rows, write_jsonl
from tests.torture import (
    ROOT,
    batchrun_cmd,
    chat_requests,
    cli_env,
    config,
    in_thread_when,
    one_record_per_row,
    run_cli,
    wait_for,
)

KEY = "sk-test-secret-Zq7Xw2Lm9Pk4"
OTHER_KEY = "sk-test-another-Hh5Jj6Kk7"


def leaks(secret: str, out: Path, *printed: str) -> list[str]:
    """Where `secret` (or its distinctive part without the "sk-" prefix) shows up."""
    needles = [secret, secret[len("sk-test-") :]]
    found = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            text = json.dumps(pq.read_table(path).to_pylist(), ensure_ascii=False)
        else:
            text = path.read_bytes().decode("utf-8", "replace")
        found += [f"{path}: {n}" for n in needles if n in text]
    for i, stream in enumerate(printed):
        found += [f"printed stream {i}: {n}" for n in needles if n in stream]
    return found


_EVERY_ROW_FAULT = {
    i: (kind, times)
    for i, (kind, times) in enumerate(
        [
            ("429", 1),
            ("429_no_retry_after", 1),
            ("429_empty", 1),
            ("400", None),
            ("500", None),
            ("502", 1),
            ("503", None),
            ("timeout", None),
            ("reset", None),
            ("malformed", None),
            ("html", 1),
            ("error200", None),
            ("no_usage", None),
            ("truncated", None),
        ]
    )
}

Scenario = Callable[[Path, MockServer, Path], tuple[str, str, str]]


def _run(path: Path, out: Path, server: MockServer, *extra: str, key: str = KEY) -> Any:
    return run_cli(
        "run", path, "--out", out, "--base-url", server.base_url, "-q",
        "--concurrency", "4", "--max-retries", "1", "--timeout", "0.5", *extra, key=key,
    )  # fmt: skip


def normal(tmp: Path, server: MockServer, out: Path) -> tuple[str, str, str]:
    done = _run(write_jsonl(tmp / "in.jsonl", chat_rows(20)), out, server)
    assert done.returncode == 0, done.stderr
    return KEY, done.stdout, done.stderr


def every_row_fault(tmp: Path, server: MockServer, out: Path) -> tuple[str, str, str]:
    done = _run(write_jsonl(tmp / "in.jsonl", faulty_rows(20, _EVERY_ROW_FAULT)), out, server)
    assert done.returncode == 0, done.stderr
    assert "errors by type" in done.stdout
    return KEY, done.stdout, done.stderr


def storm_429(tmp: Path, server: MockServer, out: Path) -> tuple[str, str, str]:
    server.set_faults({"429": 0.4})
    done = _run(write_jsonl(tmp / "in.jsonl", chat_rows(20)), out, server, "--max-retries", "8")
    assert done.returncode == 0, done.stderr
    return KEY, done.stdout, done.stderr


def outage(tmp: Path, server: MockServer, out: Path) -> tuple[str, str, str]:
    in_thread_when(lambda: chat_requests(server) >= 5, lambda: server.go_down(1.0))
    done = _run(write_jsonl(tmp / "in.jsonl", chat_rows(40)), out, server)
    assert done.returncode == 0, done.stderr
    return KEY, done.stdout, done.stderr


def bad_input(tmp: Path, server: MockServer, out: Path) -> tuple[str, str, str]:
    path = tmp / "in.jsonl"
    path.write_bytes(b'{bad\n[1]\n{"model": "m"}\n\xff\n' + json.dumps(chat_rows(1)[0]).encode())
    done = _run(path, out, server)
    assert done.returncode == 0, done.stderr
    return KEY, done.stdout, done.stderr


def wrong_key(tmp: Path, server: MockServer, out: Path) -> tuple[str, str, str]:
    # The key the user gave is refused: that key is the one that must not be shown.
    done = _run(write_jsonl(tmp / "in.jsonl", chat_rows(20)), out, server, key=OTHER_KEY)
    assert done.returncode == 3, done.stderr
    return OTHER_KEY, done.stdout, done.stderr


def no_quota(kind: str) -> Scenario:
    def scenario(tmp: Path, server: MockServer, out: Path) -> tuple[str, str, str]:
        server.set_faults({kind: 1.0})
        done = _run(write_jsonl(tmp / "in.jsonl", chat_rows(20)), out, server)
        assert done.returncode == 3, done.stderr
        return KEY, done.stdout, done.stderr

    scenario.__name__ = kind
    return scenario


def interrupted(tmp: Path, server: MockServer, out: Path) -> tuple[str, str, str]:
    path = write_jsonl(tmp / "in.jsonl", chat_rows(400))
    proc = subprocess.Popen(
        batchrun_cmd(
            "run", path, "--out", out, "--base-url", server.base_url,
            "--concurrency", "2", "--flush-interval", "0.1",
        ),
        env=cli_env(KEY), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: chat_requests(server) >= 20, timeout=30)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 3, stderr
    return KEY, stdout, stderr


def killed(tmp: Path, server: MockServer, out: Path) -> tuple[str, str, str]:
    """kill -9 between two parts: what arrived is in the journal only, and is scanned there."""
    path = write_jsonl(tmp / "in.jsonl", faulty_rows(400, _EVERY_ROW_FAULT))
    proc = subprocess.Popen(
        batchrun_cmd(
            "run", path, "--out", out, "--base-url", server.base_url, "-q",
            "--concurrency", "4", "--max-retries", "1", "--timeout", "0.5",
        ),
        env=cli_env(KEY), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: len(list(Journal(out).read())) >= 40, timeout=60)
    proc.kill()
    stdout, stderr = proc.communicate(timeout=30)
    assert Journal(out).files(), "nothing in the journal: the scan would prove nothing"
    return KEY, stdout, stderr


_SCENARIOS: list[Scenario] = [
    normal,
    every_row_fault,
    storm_429,
    outage,
    bad_input,
    wrong_key,
    no_quota("insufficient_quota"),
    no_quota("user_quota"),
    interrupted,
    killed,
]


@pytest.mark.parametrize("scenario", _SCENARIOS, ids=lambda s: s.__name__)
def test_the_key_is_in_nothing_written_or_printed(tmp_path: Path, scenario: Scenario) -> None:
    out = tmp_path / "out"
    mock = MockConfig(latency_ms=2, api_key=KEY, fault_retry_after_ms=50)
    with MockServer(mock) as server:
        secret, stdout, stderr = scenario(tmp_path, server, out)
    # A key refused from the start is found by the check at start: nothing is written then.
    assert (out / "checkpoint.json").exists() or scenario is wrong_key
    assert leaks(secret, out, stdout, stderr) == []


def test_a_server_that_echoes_the_key_does_not_leak_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Some gateways and debugging proxies echo the Authorization header back, in error messages
    # and even in a successful answer. Whatever they echo is scrubbed before it is stored.
    rows = chat_rows(5)
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.method != "POST":
            return httpx2.Response(404)
        echoed = request.headers["authorization"]
        body = json.loads(request.content)
        row = int(body["messages"][0]["content"].rsplit(" ", 1)[1])
        if row == 0:
            return httpx2.Response(400, json={"error": {"message": f"bad request from {echoed}"}})
        if row == 1:
            return httpx2.Response(200, json={"error": {"message": f"upstream said {echoed}"}})
        if row == 2:
            return httpx2.Response(502, text=f"<html>proxy error for {echoed}</html>")
        answer = completion(body)
        answer["debug"] = {"authorization": echoed}
        return httpx2.Response(200, json=answer)

    summary = batchrun.run_sync(
        config(
            path,
            tmp_path / "out",
            "http://echo.test/v1",
            api_key=KEY,
            max_retries=0,
            max_outage_s=0,
        ),
        transport=httpx2.MockTransport(handler),
    )
    assert summary.exit_code == 0
    records = one_record_per_row(tmp_path / "out", rows)
    assert [r["status"] for r in records] == ["error", "error", "error", "ok", "ok"]
    assert leaks(KEY, tmp_path / "out", caplog.text) == []


def test_an_echoed_key_never_reaches_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a crash would leave it: the journal is never released, so every record the run
    # journaled is still there to be scanned (raw bytes: the journal is JSON, not compressed).
    monkeypatch.setattr(Journal, "release", lambda self, done: None)
    rows = chat_rows(5)
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.method != "POST":
            return httpx2.Response(404)
        echoed = request.headers["authorization"]
        body = json.loads(request.content)
        row = int(body["messages"][0]["content"].rsplit(" ", 1)[1])
        if row == 0:
            return httpx2.Response(400, json={"error": {"message": f"bad request from {echoed}"}})
        if row == 1:
            return httpx2.Response(200, json={"error": {"message": f"upstream said {echoed}"}})
        if row == 2:
            return httpx2.Response(502, text=f"<html>proxy error for {echoed}</html>")
        answer = completion(body)
        answer["debug"] = {"authorization": echoed}
        return httpx2.Response(200, json=answer)

    summary = batchrun.run_sync(
        config(
            path,
            tmp_path / "out",
            "http://echo.test/v1",
            api_key=KEY,
            max_retries=0,
            max_outage_s=0,
        ),
        transport=httpx2.MockTransport(handler),
    )
    assert summary.exit_code == 0
    journaled = sorted(r.row for r in Journal(tmp_path / "out").read())
    assert journaled == list(range(5)), "the scan would not cover the journal"
    assert leaks(KEY, tmp_path / "out") == []
