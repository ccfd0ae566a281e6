"""A newcomer's mistakes, through the `batchrun` command against the real mock (issue 16).

Each mistake stops at once with one line that names the fix. Every test checks the message, the
exit code, how long it took to stop (generous bounds: the machine is shared) and how many
requests the server saw, and that nothing was lost: a stopped run leaves every row pending.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchrun.mock import MockConfig, MockServer
from tests.helpers import chat_rows, write_jsonl
from tests.torture import chat_requests, parts, run_cli

ROWS = 200


@pytest.fixture
def mock() -> Iterator[MockServer]:
    with MockServer(MockConfig(latency_ms=1)) as server:
        yield server


def timed_run(*args: str | Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = run_cli("run", *args)
    return result, time.monotonic() - started


def requests_seen(server: MockServer) -> int:
    return int(server.stats()["requests"]["total"])


def test_https_to_a_plain_http_port_stops_at_the_first_request(
    tmp_path: Path, mock: MockServer
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(ROWS))
    out = tmp_path / "out"
    https = mock.base_url.replace("http://", "https://", 1)
    result, elapsed = timed_run(path, "--out", out, "--base-url", https, "--no-estimate")
    assert result.returncode == 3, result.stderr
    assert "stopped early: cannot send requests: the TLS handshake failed (" in result.stdout
    assert "WRONG_VERSION_NUMBER" in result.stdout
    assert "use http:// in --base-url" in result.stdout
    assert f"0 of {ROWS} rows done; resume with:" in result.stdout
    assert elapsed < 30  # it was 331 s: the outage clock waited out a handshake that cannot work
    assert chat_requests(mock) == 0  # the handshake never got as far as a request
    # One handshake per worker started at once (50), plus the quota look-up; no retries.
    assert requests_seen(mock) <= 51
    assert parts(out) == []  # nothing recorded: every row is still pending


def test_a_full_endpoint_as_base_url_is_refused_before_anything(
    tmp_path: Path, mock: MockServer
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(ROWS))
    out = tmp_path / "out"
    endpoint = f"{mock.base_url}/chat/completions"
    result, elapsed = timed_run(path, "--out", out, "--base-url", endpoint)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"batchrun: error: base_url (--base-url) {endpoint} ends with the endpoint "
        f"/chat/completions: give the API's base URL, {mock.base_url}; batchrun adds the "
        "endpoint (--endpoint, or each row's url)\n"
    )
    assert elapsed < 30
    assert requests_seen(mock) == 0
    assert not out.exists()


def test_every_row_answered_404_invalid_url_stops_after_20_and_resumes(
    tmp_path: Path, mock: MockServer
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(ROWS))
    out = tmp_path / "out"
    wrong = mock.base_url.removesuffix("/v1") + "/api/v2"  # a path the server does not serve
    result, elapsed = timed_run(path, "--out", out, "--base-url", wrong, "-q")
    assert result.returncode == 3, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("stopped early: 20 requests answered HTTP 404 (Invalid URL (POST ")
    assert f"Rows went to {wrong}/v1/chat/completions, that is --base-url {wrong}" in first
    assert "--base-url must be the API's base URL" in first
    assert elapsed < 30
    # 20 answers decide; requests already in flight (50 workers) are the most that also went.
    unknown = mock.stats()["requests"]["by_path"].get("(unknown)", 0)
    assert 20 <= unknown <= 50 + 2  # + the two quota look-ups
    assert parts(out) == []  # the 404'd rows were held back, not recorded: all pending

    resumed = run_cli("run", path, "--out", out, "--base-url", mock.base_url, "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert f"finished: {ROWS} of {ROWS} rows done" in resumed.stdout
    assert f"whole output: {ROWS} ok, 0 errors" in resumed.stdout
    assert chat_requests(mock) == ROWS  # each row sent once to the right URL
