"""Server faults against the real mock server: nothing lost, no retry storms, clear errors.

Each test checks the final dataset row by row (tests.torture.one_record_per_row). Most run the
library in-process (`batchrun.run_sync`) for speed; exit codes are checked through the CLI.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx2
import pytest

import batchrun
from batchrun.config import HTTP_CLIENTS
from batchrun.mock import MockConfig, MockServer
from tests.helpers import chat_rows, completion, faulty_rows, read_results, write_jsonl
from tests.torture import (
    assert_all_ok,
    chat_requests,
    config,
    in_thread_when,
    one_record_per_row,
    run_cli,
    storm,
)

RIGHT_KEY = "sk-test-right-key-0123456789abcdef"
WRONG_KEY = "sk-test-wrong-key-9876543210fedcba"


# ------------------------------------------------------------------------------------ 429 storms


@pytest.mark.parametrize(
    ("kind", "storm_s", "bound"),
    [
        # retry-after-ms 200: a probe every ~200 ms of the storm (~10), instead of 8 workers per
        # pause; some slack for a loaded machine.
        ("429", 2.0, 16),
        # No retry-after (new-api's "upstream saturated", and its empty-body IP limit): the
        # shared pause escalates 1 s, 2 s, ... so a 2 s storm costs about 3 probes.
        ("429_no_retry_after", 2.0, 6),
        ("429_empty", 2.0, 6),
    ],
)
def test_429_storm_slows_the_whole_run_and_stays_near_the_minimum(
    tmp_path: Path, kind: str, storm_s: float, bound: int
) -> None:
    rows = chat_rows(60)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    concurrency = 8
    with MockServer(MockConfig(latency_ms=10, fault_retry_after_ms=200)) as server:
        with storm(server, {kind: 1.0}, storm_s) as measured:
            started = time.monotonic()
            summary = batchrun.run_sync(
                config(path, tmp_path / "out", server.base_url, concurrency=concurrency)
            )
            elapsed = time.monotonic() - started
        requests = chat_requests(server)
        refused = server.stats()["faults"].get(kind, 0)
    assert measured and summary.exit_code == 0
    records = one_record_per_row(tmp_path / "out", rows)
    assert_all_ok(records)
    assert sum(r["attempts"] for r in records) == requests  # every request is accounted for
    # The minimum is one request per row. The storm costs the requests that were in flight when
    # it began (one per worker) and then about one probe per pause: not a worker per pause.
    print(f"{kind}: {requests} requests for {len(rows)} rows, {refused} refused")
    assert requests <= len(rows) + concurrency + bound
    assert refused <= concurrency + bound
    assert elapsed >= storm_s  # waited the storm out rather than failing rows


def test_rate_limit_headers_at_zero_pace_the_run_under_the_server_limit(tmp_path: Path) -> None:
    # The server enforces 1,200 RPM (20 a second, a bucket of 20) and says so in x-ratelimit-*;
    # the runner is told nothing and starts with 16 workers.
    rows = chat_rows(80)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    with MockServer(MockConfig(latency_ms=5, rpm=1200)) as server:
        started = time.monotonic()
        summary = batchrun.run_sync(config(path, tmp_path / "out", server.base_url, concurrency=16))
        elapsed = time.monotonic() - started
        requests = chat_requests(server)
        refused = server.stats()["rate_limited"].get("requests", 0)
    assert summary.exit_code == 0
    assert_all_ok(one_record_per_row(tmp_path / "out", rows))
    print(f"x-ratelimit: {requests} requests for {len(rows)} rows, {refused} refused")
    assert requests <= len(rows) * 1.25
    assert elapsed >= (len(rows) - 20) / 20 * 0.9  # it kept to about 20 a second


# ------------------------------------------------------------------------------ 5xx bursts


@pytest.mark.parametrize(
    ("kind", "bound"),
    [
        # Per-row retries: each of the 8 rows in flight fails at most 3 times (backoff 0.5 s, then
        # 1 s, land inside the 1.5 s burst; the next, 2 s later, does not); some slack.
        ("500", 8 * 3 + 4),
        ("502", 8 + 4),  # an outage: one probe per shared pause
        ("html", 8 + 4),  # nginx's HTML 502 page
    ],
)
def test_5xx_burst_is_retried_and_nothing_is_lost(tmp_path: Path, kind: str, bound: int) -> None:
    rows = chat_rows(40)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    with MockServer(MockConfig(latency_ms=10)) as server:
        with storm(server, {kind: 1.0}, 1.5):
            summary = batchrun.run_sync(config(path, tmp_path / "out", server.base_url))
        requests = chat_requests(server)
    assert summary.exit_code == 0
    records = one_record_per_row(tmp_path / "out", rows)
    assert_all_ok(records)
    print(f"{kind} burst: {requests} requests for {len(rows)} rows")
    assert requests <= len(rows) + bound


def test_plain_503_burst_is_an_outage_waited_out(tmp_path: Path) -> None:
    # The mock's "503" is new-api's model_not_found; a plain "Service Unavailable" needs its own
    # server: every request for the first second after the first one gets a 503.
    rows = chat_rows(30)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    first: list[float] = []
    statuses: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.method != "POST":
            return httpx2.Response(404)
        now = time.monotonic()
        if not first:
            first.append(now)
        if now - first[0] < 1.0:
            statuses.append(503)
            return httpx2.Response(503, text="Service Unavailable")
        statuses.append(200)
        return httpx2.Response(200, json=completion(json.loads(request.content)))

    summary = batchrun.run_sync(
        config(path, tmp_path / "out", "http://gateway.test/v1", max_retries=1),
        transport=httpx2.MockTransport(handler),
    )
    assert summary.exit_code == 0
    records = one_record_per_row(tmp_path / "out", rows)
    assert all(r["status"] == "ok" for r in records)  # 1 retry each would not have survived
    assert statuses.count(200) == len(rows)
    assert statuses.count(503) <= 8 + 4


# ------------------------------------------------------------------- faults row by row


_REQUEST_ID = r"\(request id: \d+\)"

# row -> (mock fault, times or None for always), then what its record must say.
_PER_ROW: dict[int, tuple[tuple[str, int | None], tuple[str, str | None, int, str | None]]] = {
    1: (("500", 2), ("ok", None, 3, None)),
    2: (
        ("500", None),
        (
            "error",
            "server_error",
            3,
            re.escape(
                "HTTP 500 server_error: The server had an error while processing your request. "
                "Sorry about that! (after 3 attempts)"
            ),
        ),
    ),
    3: (
        ("503", None),  # new-api: no channel for the model; never passes, not retried
        (
            "error",
            "invalid_request",
            1,
            "HTTP 503 model_not_found: 当前分组 default 下对于模型 gpt-4o-mini 无可用渠道 "
            + _REQUEST_ID,
        ),
    ),
    4: (
        ("400", None),
        (
            "error",
            "invalid_request",
            1,
            re.escape("HTTP 400 context_length_exceeded: This model's maximum context length"),
        ),
    ),
    5: (("reset", 1), ("ok", None, 2, None)),
    6: (
        ("reset", None),
        (
            "error",
            "connection_error",
            3,
            r"the connection was reset or closed before the answer arrived(: .+)?"
            r" \(after 3 attempts\)",
        ),
    ),
    7: (("truncated", 1), ("ok", None, 2, None)),
    8: (
        ("truncated", None),
        (
            "error",
            "connection_error",
            3,
            r"the answer was cut short: .+ \(after 3 attempts\)",
        ),
    ),
    9: (("malformed", 1), ("ok", None, 2, None)),
    10: (
        ("malformed", None),
        (
            "error",
            "bad_response",
            3,
            re.escape('HTTP 200 but the body is not valid JSON: {"id":"chatcmpl-mock"')
            + r".* \(after 3 attempts\)",
        ),
    ),
    11: (("html", 1), ("ok", None, 2, None)),
    12: (("error200", 1), ("ok", None, 2, None)),
    13: (
        ("error200", None),
        (
            "error",
            "api_error",
            3,
            "HTTP 200 do_request_failed: upstream error: do request failed "
            + _REQUEST_ID
            + r" \(after 3 attempts\)",
        ),
    ),
    14: (("no_usage", None), ("ok", None, 1, None)),
    15: (("timeout", 1), ("ok", None, 2, None)),
    16: (
        ("timeout", None),
        ("error", "timeout", 3, re.escape("no response in time (read timeout) (after 3 attempts)")),
    ),
    17: (("429", 2), ("ok", None, 3, None)),
    18: (("429_empty", 1), ("ok", None, 2, None)),
}


@pytest.mark.parametrize("http_client", HTTP_CLIENTS)
def test_faults_row_by_row(tmp_path: Path, http_client: str) -> None:
    """Every kind of broken answer, each on its own row: retried or recorded, never a crash."""
    n = 24
    rows = faulty_rows(n, {row: fault for row, (fault, _) in _PER_ROW.items()})
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    with MockServer(MockConfig(latency_ms=5, fault_retry_after_ms=100)) as server:
        summary = batchrun.run_sync(
            config(
                path,
                tmp_path / "out",
                server.base_url,
                max_retries=2,
                timeout_s=0.5,
                http_client=http_client,
            )
        )
    assert summary.exit_code == 0
    records = one_record_per_row(tmp_path / "out", rows)
    for r in records:
        status, error_type, attempts, message = _PER_ROW.get(
            r["row"], (None, ("ok", None, 1, None))
        )[1]
        where = f"row {r['row']} ({rows[r['row']]['body'].get('mock_fault')})"
        assert (r["status"], r["error_type"], r["attempts"]) == (status, error_type, attempts), (
            where
        )
        if message is None:
            assert r["error_message"] is None, where
            assert json.loads(r["response"])["choices"], where
        else:
            assert re.fullmatch(message, r["error_message"]) or re.match(
                message, r["error_message"]
            ), (where, r["error_message"])
    no_usage = records[14]
    assert no_usage["prompt_tokens"] is None and no_usage["total_tokens"] is None
    assert no_usage["cost_usd"] is None  # unknown is not free
    assert records[0]["prompt_tokens"] and records[0]["total_tokens"]
    assert summary.errors == sum(1 for _, expected in _PER_ROW.values() if expected[0] == "error")


@pytest.mark.parametrize("http_client", HTTP_CLIENTS)
def test_server_that_accepts_and_never_answers(tmp_path: Path, http_client: str) -> None:
    rows = chat_rows(6)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    with MockServer(MockConfig(faults={"timeout": 1.0})) as server:
        started = time.monotonic()
        summary = batchrun.run_sync(
            config(
                path,
                tmp_path / "out",
                server.base_url,
                max_retries=1,
                timeout_s=0.5,
                http_client=http_client,
            )
        )
        elapsed = time.monotonic() - started
        requests = chat_requests(server)
    assert summary.exit_code == 0  # finished: every row has its record
    records = one_record_per_row(tmp_path / "out", rows)
    for r in records:
        assert (r["status"], r["error_type"], r["http_status"]) == ("error", "timeout", None)
        assert r["error_message"] == "no response in time (read timeout) (after 2 attempts)"
        assert r["attempts"] == 2
    assert requests == 2 * len(rows)
    assert elapsed < 15


# ------------------------------------------------------------------------------ outages


def test_server_down_mid_run_is_waited_out_without_burning_retries(tmp_path: Path) -> None:
    # The scenario is 30 s down; 5 s keeps the suite fast and proves the same thing: with
    # max_retries=1 a naive runner gives up on a row after backing off 0.5 s, long before the
    # server is back, so every row in flight or dispatched during the outage would be an error
    # record. Here the outage pauses everyone and costs no row its retries.
    down_s = 5.0
    rows = chat_rows(80)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    with MockServer(MockConfig(latency_ms=20)) as server:
        went_down: list[float] = []

        def go_down() -> None:
            server.go_down(down_s)
            went_down.append(time.monotonic())

        watcher = in_thread_when(lambda: chat_requests(server) >= 20, go_down)
        summary = batchrun.run_sync(
            config(path, tmp_path / "out", server.base_url, concurrency=4, max_retries=1)
        )
        finished = time.monotonic()
        watcher.join()
    assert went_down, "the server never went down: the run was too quick"
    assert finished - went_down[0] >= down_s  # it waited for the server to come back
    assert summary.exit_code == 0
    records = one_record_per_row(tmp_path / "out", rows)
    assert_all_ok(records)
    # While down, one probe per pause (1 s, 2 s, 4 s, ...), not every worker: the attempts beyond
    # one per row are the 4 requests cut off when it went down plus a handful of probes.
    extra = sum(r["attempts"] for r in records) - len(rows)
    print(f"outage of {down_s} s: {extra} attempts beyond one per row")
    assert extra <= 4 + 6


@pytest.mark.parametrize("http_client", HTTP_CLIENTS)
def test_server_down_longer_than_max_outage_fails_rows_with_a_clear_error(
    tmp_path: Path, http_client: str
) -> None:
    rows = chat_rows(6)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    # Up for the check at start (GET /v1/models), then down for longer than the test: connection
    # refused, for ever. The answers' latency keeps a request that slipped in before it went down
    # in flight: cut off, then refused like the others.
    with MockServer(MockConfig(latency_ms=2000)) as server:
        watcher = in_thread_when(
            lambda: server.stats()["requests"]["by_path"].get("/v1/models", 0) > 0,
            lambda: server.go_down(600),
        )
        started = time.monotonic()
        summary = batchrun.run_sync(
            config(
                path,
                tmp_path / "out",
                server.base_url,
                max_retries=1,
                max_outage_s=1.0,
                http_client=http_client,
            )
        )
        elapsed = time.monotonic() - started
        watcher.join()
    assert summary.exit_code == 0
    records = one_record_per_row(tmp_path / "out", rows)
    for r in records:
        assert (r["status"], r["error_type"]) == ("error", "connection_error")
        assert re.fullmatch(
            r"cannot connect to the server: .+ \(after \d+ attempts\)", r["error_message"]
        )
        assert r["attempts"] >= 2
    assert elapsed < 20


# -------------------------------------------------------------------------- fatal conditions


_FATAL = {
    "401": "the API key was refused (HTTP 401 invalid_api_key: Incorrect API key provided.",
    "insufficient_quota": "out of quota or balance (HTTP 429 insufficient_quota: You exceeded "
    "your current quota",
    "user_quota": "out of quota or balance (HTTP 403 insufficient_user_quota: 用户额度不足",
}


@pytest.mark.parametrize("kind", sorted(_FATAL))
def test_fatal_condition_stops_the_run_within_a_few_requests_then_resumes(
    tmp_path: Path, kind: str
) -> None:
    rows = chat_rows(200)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    concurrency = 4
    # billing=False: no quota endpoints, so the runner itself must notice (not the pre-check).
    mock = MockConfig(latency_ms=5, api_key=RIGHT_KEY, billing=False)
    with MockServer(mock) as server:
        key = WRONG_KEY if kind == "401" else RIGHT_KEY
        if kind != "401":
            in_thread_when(
                lambda: chat_requests(server) >= 30, lambda: server.set_faults({kind: 1})
            )
        stopped = batchrun.run_sync(
            config(path, out, server.base_url, api_key=key, concurrency=concurrency)
        )
        seen = chat_requests(server)
        done_before = len(read_results(out)) if (out / "results").exists() else 0

        assert stopped.exit_code == 3 and stopped.fatal
        assert stopped.stopped is not None and stopped.stopped.startswith(_FATAL[kind])
        # Stopped within a few requests: the ones in flight when the first refusal came back. A
        # key refused from the start is found by the check at start (GET /v1/models): no row.
        refused = seen - done_before
        print(f"{kind}: stopped after {refused} refused requests")
        if kind == "401":
            assert refused == 0 and done_before == 0
        else:
            assert 1 <= refused <= concurrency + 1
        assert done_before < len(rows)

        server.set_faults({})
        resumed = batchrun.run_sync(
            config(path, out, server.base_url, api_key=RIGHT_KEY, concurrency=concurrency)
        )
        assert chat_requests(server) - seen == len(rows) - done_before  # each pending row once
    assert resumed.exit_code == 0
    assert_all_ok(one_record_per_row(out, rows))


@pytest.mark.parametrize("kind", sorted(_FATAL))
def test_fatal_condition_via_the_cli_exits_3_naming_the_cause(tmp_path: Path, kind: str) -> None:
    rows = chat_rows(20)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(latency_ms=5, api_key=RIGHT_KEY)) as server:
        args = (
            "run",
            path,
            "--out",
            out,
            "--base-url",
            server.base_url,
            "-q",
            "--concurrency",
            "4",
        )
        if kind != "401":
            server.set_faults({kind: 1})
        stopped = run_cli(*args, key=WRONG_KEY if kind == "401" else RIGHT_KEY)
        assert stopped.returncode == 3, stopped.stderr
        printed = stopped.stdout + stopped.stderr
        cause = {
            "401": "(HTTP 401",
            "insufficient_quota": "out of quota or balance (HTTP 429 insufficient_quota",
            "user_quota": "out of quota or balance (HTTP 403 insufficient_user_quota",
        }[kind]
        assert cause in printed, printed
        assert chat_requests(server) <= 4 + 1

        server.set_faults({})
        resumed = run_cli(*args, key=RIGHT_KEY)
        assert resumed.returncode == 0, resumed.stderr
        assert "finished: 20 of 20 rows done" in resumed.stdout
    assert_all_ok(one_record_per_row(out, rows))
