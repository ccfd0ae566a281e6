"""`batchrun run --backend openai-batch | anthropic-batch` through the CLI against the mock.

The mock's batches live on a clock the tests move (`MockServer.advance_batches`) or make fast
(`batch_phase_s`), so nothing waits for real time. Every test ends by checking the results row
by row, and the mock's count of batches: no row is ever sent in two live batches. The first
lifecycle runs `batchrun` as a subprocess, as a user does; the others call the same `main` in
this process (`cli`), which saves the interpreter's start-up for each of the many runs; the
kill -9 tests are in tests/test_batch_kill.py.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batchrun.cli import main
from batchrun.cost.pricebook import PriceBook
from batchrun.mock import MockConfig, MockServer
from tests.helpers import TEST_KEY, chat_rows, read_results, write_jsonl
from tests.torture import chat_requests, one_record_per_row, run_cli

SLOW = 1000.0  # a phase nobody waits for: the tests move the clock


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


Cli = Callable[..., Result]
_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL")


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    """`batchrun ARGS` run by `main` in this process, with only the given keys set."""
    logger = logging.getLogger("batchrun")
    handlers, level, thresholds = list(logger.handlers), logger.level, gc.get_threshold()

    def call(*args: str | Path, env: dict[str, str] | None = None) -> Result:
        for name in _KEYS:
            monkeypatch.delenv(name, raising=False)
        for name, value in (env if env is not None else {"OPENAI_API_KEY": TEST_KEY}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        finally:
            for handler in logger.handlers[len(handlers) :]:
                logger.removeHandler(handler)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    yield call
    logger.setLevel(level)
    gc.set_threshold(*thresholds)


def batch_stats(server: MockServer, provider: str = "openai") -> dict[str, int]:
    return dict(server.stats()["batches"][provider])


def run_batch(
    cli: Cli, path: Path, out: Path, server: MockServer, *extra: str, **options: Any
) -> Result:
    backend = options.pop("backend", "openai-batch")
    return cli(
        "run", path, "--out", out, "--base-url", server.base_url, "--backend", backend, *extra,
        **options,
    )  # fmt: skip


def journal_files(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "batches").iterdir())


# ---------------------------------------------------------------------------------- OpenAI


def run_batch_process(path: Path, out: Path, server: MockServer, *extra: str) -> Result:
    done = run_cli("run", path, "--out", out, "--base-url", server.base_url,
                   "--backend", "openai-batch", *extra)  # fmt: skip
    return Result(done.returncode, done.stdout, done.stderr)


def test_submit_then_collect_gives_the_results_of_an_online_run(tmp_path: Path) -> None:
    rows: list[Any] = chat_rows(25)
    rows[3]["body"]["mock_fault"] = "400"
    path = write_jsonl(tmp_path / "in.jsonl", [*rows, "{not json"])
    out = tmp_path / "out"
    with MockServer(MockConfig(batch_phase_s=SLOW, api_key=TEST_KEY)) as server:
        first = run_batch_process(path, out, server, "--batch-size", "10")
        assert first.returncode == 3, first.stderr
        assert first.stdout.startswith(
            "submitted: 3 openai-batch batches submitted and not finished yet; run the same "
            "command to collect their results (or add --wait)"
        )
        assert "collect with:" in first.stdout and "--backend openai-batch" in first.stdout
        assert "chunk 2: 5 rows submitted as batch batch_mock" in first.stderr
        assert [r["error_type"] for r in read_results(out)] == ["bad_input"]  # only the bad row
        status = run_cli("status", out)
        assert status.returncode == 0, status.stderr
        assert status.stdout.count(" submitted ") == 3 and "validating" in status.stdout

        server.advance_batches(3 * SLOW)  # validating, in_progress, finalizing: all completed
        second = run_batch_process(path, out, server, "--batch-size", "10")
        assert second.returncode == 0, second.stderr
        assert "finished: 26 of 26 rows done" in second.stdout
        assert "this run: 25 rows (24 ok, 1 errors), 25 requests" in second.stdout
        again = run_batch_process(path, out, server, "--batch-size", "10")
        assert again.returncode == 0 and "this run: 0 rows" in again.stdout
        assert batch_stats(server) == {
            "created": 3, "cancel_requests": 0, "requests": 25, "custom_ids_in_two_batches": 0
        }  # fmt: skip
        assert chat_requests(server) == 0  # nothing went online
    records = one_record_per_row(out, [*rows, {"custom_id": "25"}])
    prices = PriceBook.load(batch=True)
    for record in records[:25]:
        if record["row"] == 3:
            assert record["status"] == "error" and record["error_type"] == "invalid_request"
            assert record["http_status"] == 400
            assert record["error_message"].startswith("HTTP 400 context_length_exceeded: ")
            continue
        assert record["status"] == "ok" and record["http_status"] == 200
        answer = json.loads(record["response"])
        assert answer["object"] == "chat.completion" and record["finish_reason"] == "stop"
        assert record["prompt_tokens"] == answer["usage"]["prompt_tokens"]
        assert record["cost_usd"] == pytest.approx(
            prices.cost_usd(
                "gpt-4o-mini",
                prompt_tokens=record["prompt_tokens"],
                completion_tokens=record["completion_tokens"],
            )
        )
        assert record["attempts"] == 1 and record["latency_ms"] is None
    assert records[25]["error_type"] == "bad_input"
    assert journal_files(out) == ["journal.jsonl"]  # chunk and result files are gone
    estimate = json.loads((out / "estimate.json").read_text())
    assert estimate["groups"][0]["price_source"].endswith("(batch price)")


def test_wait_stays_to_the_end(tmp_path: Path, cli: Cli) -> None:
    rows = chat_rows(12)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(batch_phase_s=0.05)) as server:
        done = run_batch(cli, path, out, server, "--wait", "--poll-interval", "0.05", "-q")
        assert done.returncode == 0, done.stderr
        assert "finished: 12 of 12 rows done" in done.stdout
        assert batch_stats(server)["created"] == 1
    assert all(r["status"] == "ok" for r in one_record_per_row(out, rows))


def test_every_request_failed_is_read_from_the_error_file(tmp_path: Path, cli: Cli) -> None:
    """`completed` with output_file_id null: every row's own error, never a silent gap."""
    rows = chat_rows(6)
    for row in rows:
        row["body"]["mock_fault"] = "500"
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(batch_phase_s=0.05)) as server:
        done = run_batch(
            cli, path, out, server, "--wait", "--poll-interval", "0.05", "--fail-on-errors"
        )
        assert done.returncode == 4, done.stderr
    for record in one_record_per_row(out, rows):
        assert (record["status"], record["error_type"], record["http_status"]) == (
            "error", "server_error", 500
        )  # fmt: skip
        assert record["error_message"].startswith("HTTP 500 server_error: The server had an error")


def test_an_expired_batch_keeps_what_ran_and_records_the_rest(tmp_path: Path, cli: Cli) -> None:
    rows = chat_rows(10)
    rows[6]["body"]["mock_batch_expire"] = True
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(batch_phase_s=0.05)) as server:
        done = run_batch(cli, path, out, server, "--wait", "--poll-interval", "0.05")
        assert done.returncode == 0, done.stderr
    records = one_record_per_row(out, rows)
    assert [r["status"] for r in records[:6]] == ["ok"] * 6
    for record in records[6:]:
        assert record["error_type"] == "batch_expired"
        assert record["error_message"].startswith(
            "the batch expired (24 h) before this row ran (batch batch_mock"
        )
        assert record["error_message"].endswith("nothing was charged for it")


def test_expired_rows_are_sent_again_online_with_retry_errors(tmp_path: Path, cli: Cli) -> None:
    rows = chat_rows(10)
    rows[6]["body"]["mock_batch_expire"] = True
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(batch_phase_s=0.05)) as server:
        done = run_batch(cli, path, out, server, "--wait", "--poll-interval", "0.05")
        assert done.returncode == 0, done.stderr
        before = server.stats()["requests"]["by_path"].get("/v1/chat/completions", 0)
        again = cli(
            "run", path, "--out", out, "--base-url", server.base_url,
            "--retry-errors=batch_expired,batch_cancelled", "-q",
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        sent = server.stats()["requests"]["by_path"].get("/v1/chat/completions", 0) - before
    assert sent == 4  # the 4 rows the expired batch never ran, online, once each
    records = one_record_per_row(out, rows)
    assert [r["status"] for r in records] == ["ok"] * 10


def test_a_batch_that_fails_validation_gives_its_rows_back(tmp_path: Path, cli: Cli) -> None:
    rows = chat_rows(8)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    config = MockConfig(batch_phase_s=0.05, batch_faults={"validate": 1})
    with MockServer(config) as server:
        failed = run_batch(cli, path, out, server, "--wait", "--poll-interval", "0.05")
        assert failed.returncode == 3, failed.stderr
        assert "failed validation, so nothing of it ran or was charged" in failed.stdout
        assert "token_limit_exceeded: Enqueued token limit reached" in failed.stdout
        assert not (out / "results").exists() or read_results(out) == []
        again = run_batch(cli, path, out, server, "--wait", "--poll-interval", "0.05")
        assert again.returncode == 0, again.stderr
        # The failed batch ran nothing; its rows went once more, in a new batch.
        assert batch_stats(server)["created"] == 2
    assert all(r["status"] == "ok" for r in one_record_per_row(out, rows))
    status = cli("status", out, "--offline")
    assert "abandoned" in status.stdout and "collected" in status.stdout


def test_answers_lost_on_upload_and_create_are_looked_up_not_sent_again(
    tmp_path: Path, cli: Cli
) -> None:
    rows = chat_rows(20)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    config = MockConfig(batch_phase_s=0.05, batch_faults={"upload": 1, "create": 1, "get": 2})
    with MockServer(config) as server:
        done = run_batch(cli, path, out, server, "--wait", "--poll-interval", "0.05",
                         "--batch-size", "10")  # fmt: skip
        assert done.returncode == 0, done.stderr
        stats = server.stats()["batches"]
        assert stats["files_uploaded"] == 2  # the lost upload was found, not sent again
        assert stats["openai"]["created"] == 2
        assert stats["openai"]["custom_ids_in_two_batches"] == 0
        by_path = server.stats()["requests"]["by_path"]
        assert by_path["/v1/files"] >= 3 and by_path["/v1/batches"] >= 3  # the lists looked
    assert all(r["status"] == "ok" for r in one_record_per_row(out, rows))


def test_cancel_keeps_what_completed_and_records_the_rest(tmp_path: Path, cli: Cli) -> None:
    rows = chat_rows(8)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(batch_phase_s=SLOW)) as server:
        assert run_batch(cli, path, out, server, "--batch-size", "4").returncode == 3
        server.advance_batches(1.5 * SLOW)  # half way through in_progress: 2 of 4 ran in each
        cancel = cli("cancel", out)
        assert cancel.returncode == 0, cancel.stderr
        assert cancel.stdout.count(": cancelling") == 2
        assert "what completed is kept: run `batchrun run" in cancel.stdout
        server.advance_batches(SLOW)
        done = run_batch(cli, path, out, server, "--batch-size", "4")
        assert done.returncode == 0, done.stderr
        assert cli("cancel", out).stdout.endswith("no batch is running; nothing to cancel\n")
        assert batch_stats(server)["cancel_requests"] == 2
    records = one_record_per_row(out, rows)
    assert [r["status"] for r in records] == ["ok", "ok", "error", "error"] * 2
    cancelled = [r for r in records if r["status"] == "error"]
    assert {r["error_type"] for r in cancelled} == {"batch_cancelled"}


def test_an_online_run_is_refused_while_batches_are_in_flight(tmp_path: Path, cli: Cli) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(4))
    out = tmp_path / "out"
    with MockServer(MockConfig(batch_phase_s=SLOW)) as server:
        assert run_batch(cli, path, out, server).returncode == 3
        online = cli("run", path, "--out", out, "--base-url", server.base_url)
        assert online.returncode == 2
        assert "has 1 openai-batch batches in flight, whose rows online would send again" in (
            online.stderr
        )
        other = run_batch(
            cli, path, out, server, "--endpoint", "/v1/chat/completions", backend="anthropic-batch"
        )
        assert other.returncode == 2 and "--backend openai-batch" in other.stderr
        assert chat_requests(server) == 0


def test_rows_the_batch_api_cannot_take_are_bad_input(tmp_path: Path, cli: Cli) -> None:
    rows = [
        *chat_rows(2),
        {"custom_id": "speech", "url": "/v1/audio/speech",
         "body": {"model": "tts-1", "input": "hello", "voice": "alloy"}},
    ]  # fmt: skip
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(batch_phase_s=0.05)) as server:
        done = run_batch(cli, path, out, server, "--wait", "--poll-interval", "0.05")
        assert done.returncode == 0, done.stderr
    speech = one_record_per_row(out, rows)[2]
    assert speech["error_type"] == "bad_input"
    assert speech["error_message"].startswith(
        "row 2: the OpenAI Batch API does not serve /v1/audio/speech"
    )


def test_bad_usage_is_refused_before_anything_is_sent(tmp_path: Path, cli: Cli) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(2))
    done = cli("run", path, "--out", tmp_path / "out", "--backend", "openai-batch",
                   "--batch-size", "50001")  # fmt: skip
    assert done.returncode == 2
    assert "batch_max_requests must be at most 50,000, the openai-batch limit" in done.stderr
    assert not (tmp_path / "out").exists()
    missing = cli("status", tmp_path / "nowhere")
    assert missing.returncode == 2 and "has no provider batches" in missing.stderr


# ------------------------------------------------------------------------------- Anthropic


def message_rows(ids: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": custom_id,
            "url": "/v1/messages",
            "body": {
                "model": "claude-haiku-4-5",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": f"question {custom_id}"}],
            },
        }
        for custom_id in ids
    ]


def test_anthropic_message_batches_end_to_end(tmp_path: Path, cli: Cli) -> None:
    rows = message_rows(["plain-1", "with space", "with/slash", "x" * 70, "plain_5", "six"])
    rows[2]["body"]["mock_fault"] = "429"
    rows[4]["body"]["mock_batch_expire"] = True
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(batch_phase_s=0.05, api_key=TEST_KEY)) as server:
        done = cli("run", path, "--out", out, "--base-url", server.base_url,
                       "--backend", "anthropic-batch", "--wait", "--poll-interval", "0.05",
                       env=_anthropic_env())  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert batch_stats(server, "anthropic")["created"] == 1
    records = one_record_per_row(out, rows)  # each under its own custom_id, whatever it is
    prices = PriceBook.load(batch=True)
    for record in records[:2] + records[3:4]:
        assert record["status"] == "ok", record
        message = json.loads(record["response"])
        assert message["type"] == "message" and record["finish_reason"] == "max_tokens"
        assert record["prompt_tokens"] == message["usage"]["input_tokens"]
        assert record["completion_tokens"] == 8
        assert record["cost_usd"] == pytest.approx(
            prices.cost_usd(
                "claude-haiku-4-5", prompt_tokens=record["prompt_tokens"], completion_tokens=8
            )
        )
    assert records[2]["error_type"] == "rate_limited"
    assert records[2]["error_message"].startswith("batch request errored: rate_limit_error: ")
    assert [r["error_type"] for r in records[4:]] == ["batch_expired"] * 2


def _anthropic_env() -> dict[str, str]:
    return {"ANTHROPIC_API_KEY": TEST_KEY}


def test_anthropic_lost_create_is_adopted_from_the_list(tmp_path: Path, cli: Cli) -> None:
    rows = message_rows([f"m{i}" for i in range(9)])
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(batch_phase_s=0.05, batch_faults={"create": 2})) as server:
        done = cli("run", path, "--out", out, "--base-url", server.base_url,
                       "--backend", "anthropic-batch", "--wait", "--poll-interval", "0.05",
                       "--batch-size", "3", env=_anthropic_env())  # fmt: skip
        assert done.returncode == 0, done.stderr
        stats = batch_stats(server, "anthropic")
        assert stats["created"] == 3 and stats["custom_ids_in_two_batches"] == 0
    assert all(r["status"] == "ok" for r in one_record_per_row(out, rows))


def test_anthropic_backend_refuses_chat_rows_as_bad_input(tmp_path: Path, cli: Cli) -> None:
    rows = chat_rows(2)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(batch_phase_s=0.05)) as server:
        done = cli("run", path, "--out", out, "--base-url", server.base_url,
                       "--backend", "anthropic-batch", env=_anthropic_env())  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert batch_stats(server, "anthropic")["created"] == 0
    for record in one_record_per_row(out, rows):
        assert record["error_type"] == "bad_input"
        assert (
            "anthropic-batch sends Messages API requests (/v1/messages)"
            in (record["error_message"])
        )


def test_max_cost_holds_for_batches_and_reuses_what_they_did_not_spend(
    tmp_path: Path, cli: Cli
) -> None:
    from batchrun.cost.budget import worst_case
    from batchrun.inputs.reader import iter_requests

    rows = chat_rows(20)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    prices = PriceBook.load(batch=True)
    worst = [worst_case(prices, r).usd for r in iter_requests(path)]  # type: ignore[union-attr]
    assert all(w is not None for w in worst)
    max_cost = sum(worst[:14]) * 1.0000001  # 14 rows' worst cases fit at first
    out = tmp_path / "out"
    with MockServer(MockConfig(batch_phase_s=0.05)) as server:
        done = run_batch(cli, path, out, server, "--wait", "--poll-interval", "0.05",
                         "--batch-size", "5", "--max-cost", f"{max_cost:.10f}")  # fmt: skip
        assert done.returncode == 3, done.stderr
        assert "stopped early: the cost budget would be passed (--max-cost $" in done.stdout
        assert batch_stats(server)["custom_ids_in_two_batches"] == 0
    records = read_results(out)
    spent = sum(r["cost_usd"] for r in records)
    assert spent <= max_cost
    # Answers cost less than their worst case: the room they left let more rows go.
    assert 14 < len(records) < 20
    assert all(r["status"] == "ok" for r in records)


@pytest.mark.parametrize("backend", ["openai-batch", "anthropic-batch"])
def test_the_key_is_in_no_file_and_nothing_printed(tmp_path: Path, cli: Cli, backend: str) -> None:
    from tests.test_secrets import KEY, OTHER_KEY, leaks

    anthropic = backend == "anthropic-batch"
    rows = message_rows(["a", "b c", "d"]) if anthropic else chat_rows(3)
    rows[1]["body"]["mock_fault"] = "400"
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    env = {"ANTHROPIC_API_KEY" if anthropic else "OPENAI_API_KEY": KEY}
    with MockServer(MockConfig(batch_phase_s=SLOW, api_key=KEY)) as server:
        printed: list[str] = []
        refused = run_batch(cli, path, out, server, backend=backend,
                            env={name: OTHER_KEY for name in env})  # fmt: skip
        assert refused.returncode == 3 and "the API key was refused" in refused.stdout
        printed += [refused.stdout, refused.stderr]
        submitted = run_batch(cli, path, out, server, backend=backend, env=env)
        assert submitted.returncode == 3, submitted.stderr
        status = cli("status", out, env=env)
        server.advance_batches(1.5 * SLOW)
        cancel = cli("cancel", out, env=env)
        server.advance_batches(3 * SLOW)
        done = run_batch(cli, path, out, server, backend=backend, env=env)
        assert done.returncode == 0, done.stderr
        for result in (submitted, status, cancel, done):
            printed += [result.stdout, result.stderr]
    assert leaks(KEY, out, *printed) == []
    assert leaks(OTHER_KEY, out, *printed) == []
