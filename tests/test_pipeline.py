"""The whole run through the library API, with the network replaced by httpx2.MockTransport."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batchrun
from batchrun.store.checkpoint import Checkpoint
from tests.helpers import TEST_KEY, chat_rows, openai_handler, read_results, write_jsonl


def _config(tmp_path: Path, input_path: Path, **overrides: object) -> batchrun.RunConfig:
    settings: dict[str, object] = {
        "input_path": input_path,
        "out_dir": tmp_path / "out",
        "base_url": "http://mock.test/v1",
        "api_key": TEST_KEY,
        "concurrency": 4,
        "flush_rows": 7,
        "max_retries": 2,
    }
    settings.update(overrides)
    return batchrun.RunConfig(**settings)  # type: ignore[arg-type]


def test_every_row_gets_exactly_one_record(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(40))
    handler, seen = openai_handler()
    summary = batchrun.run_sync(_config(tmp_path, path), transport=httpx2.MockTransport(handler))

    assert summary.finished and summary.exit_code == 0
    records = read_results(tmp_path / "out")
    assert [r["row"] for r in records] == list(range(40))
    assert [r["custom_id"] for r in records] == [f"req-{i}" for i in range(40)]
    assert all(r["status"] == "ok" for r in records)
    first = records[0]
    assert first["prompt_tokens"] == 10 and first["completion_tokens"] == 3
    assert first["cached_tokens"] == 2 and first["finish_reason"] == "stop"
    assert first["model"] == "gpt-4o-mini" and first["attempts"] == 1
    assert json.loads(first["response"])["choices"][0]["message"]["content"] == "an answer"
    assert len(seen) == 40
    # Each record names the request it answers: sha256 of url, newline, the body as sent.
    wire = json.dumps(chat_rows(40)[0]["body"], separators=(",", ":")).encode()
    assert first["request_sha256"] == hashlib.sha256(b"/v1/chat/completions\n" + wire).hexdigest()
    assert len({r["request_sha256"] for r in records}) == 40
    # 40 rows in parts of at most 7
    assert len(list((tmp_path / "out" / "results").glob("part-*.parquet"))) == 6


def test_bad_rows_become_error_records_and_the_rest_run(tmp_path: Path) -> None:
    rows: list[object] = [*chat_rows(3)]
    rows.insert(1, "{not json")
    rows.insert(3, json.dumps({"custom_id": "no-body"}))
    path = write_jsonl(tmp_path / "in.jsonl", rows)  # type: ignore[arg-type]
    handler, seen = openai_handler()
    summary = batchrun.run_sync(_config(tmp_path, path), transport=httpx2.MockTransport(handler))

    assert summary.finished
    records = read_results(tmp_path / "out")
    assert [r["status"] for r in records] == ["ok", "error", "ok", "error", "ok"]
    assert records[1]["error_type"] == "bad_input"
    assert records[1]["error_message"].startswith("line 2: invalid JSON")
    assert records[3]["custom_id"] == "no-body"
    assert records[3]["error_message"] == "line 4: the row has no 'body'"
    assert len(seen) == 3


def test_resume_sends_only_what_is_missing(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(30))
    control = batchrun.RunControl()
    calls = 0

    def stop_after_ten(body: dict[str, object], n: int) -> httpx2.Response | None:
        nonlocal calls
        calls = n
        if n == 10:
            control.stop("test stop")
        return None

    handler, _ = openai_handler(stop_after_ten)
    first = batchrun.run_sync(
        _config(tmp_path, path, concurrency=1), control, transport=httpx2.MockTransport(handler)
    )
    assert not first.finished and first.exit_code == 3
    assert first.stopped == "test stop"
    done_first = first.done_rows
    assert 0 < done_first < 30

    handler2, seen2 = openai_handler()
    second = batchrun.run_sync(_config(tmp_path, path), transport=httpx2.MockTransport(handler2))
    assert second.finished
    records = read_results(tmp_path / "out")
    assert [r["row"] for r in records] == list(range(30))
    assert len(seen2) == 30 - done_first
    sent_again = {m["messages"][0]["content"] for m in seen2}  # type: ignore[index]
    assert "question number 0" not in sent_again


def test_finished_output_sends_nothing(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(5))
    handler, _ = openai_handler()
    batchrun.run_sync(_config(tmp_path, path), transport=httpx2.MockTransport(handler))
    handler2, seen2 = openai_handler()
    again = batchrun.run_sync(_config(tmp_path, path), transport=httpx2.MockTransport(handler2))
    assert again.finished and seen2 == [] and again.session.rows == 0


def test_refused_key_stops_early_and_the_rest_stays_pending(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(200))

    def refuse_after_20(body: dict[str, object], n: int) -> httpx2.Response | None:
        if n > 20:
            return httpx2.Response(
                401,
                json={
                    "error": {
                        "message": f"Incorrect API key provided: {TEST_KEY}.",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            )
        return None

    handler, seen = openai_handler(refuse_after_20)
    summary = batchrun.run_sync(
        _config(tmp_path, path, flush_rows=5000), transport=httpx2.MockTransport(handler)
    )
    assert summary.fatal and summary.exit_code == 3
    assert "API key was refused" in (summary.stopped or "")
    assert TEST_KEY not in (summary.stopped or "")
    # stops within a few requests of the first refusal, not after trying all 200 rows
    assert len(seen) <= 20 + 4 + 4
    records = read_results(tmp_path / "out")
    assert all(r["status"] == "ok" for r in records)
    assert len(records) == summary.done_rows == 20

    handler2, seen2 = openai_handler()
    resumed = batchrun.run_sync(_config(tmp_path, path), transport=httpx2.MockTransport(handler2))
    assert resumed.finished
    assert [r["row"] for r in read_results(tmp_path / "out")] == list(range(200))
    assert len(seen2) == 180


def test_a_repeated_custom_id_is_a_bad_input_record_for_the_later_row(tmp_path: Path) -> None:
    rows = chat_rows(5)
    rows[3]["custom_id"] = "req-1"
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    handler, seen = openai_handler()
    summary = batchrun.run_sync(_config(tmp_path, path), transport=httpx2.MockTransport(handler))
    assert summary.finished
    records = read_results(tmp_path / "out")
    assert [r["row"] for r in records] == list(range(5))
    assert [r["status"] for r in records] == ["ok", "ok", "ok", "error", "ok"]
    assert (records[3]["custom_id"], records[3]["error_type"]) == ("req-1", "bad_input")
    assert records[3]["error_message"] == (
        "line 4: custom_id 'req-1' is already used by row 1 (custom_ids must be unique); not sent"
    )
    assert len(seen) == 4  # the earlier row is sent once, the later one not at all
    checkpoint = Checkpoint.load(tmp_path / "out")
    assert checkpoint is not None and (checkpoint.total_rows, checkpoint.duplicates) == (5, 1)


def test_check_ids_first_refuses_repeated_custom_ids_before_sending(tmp_path: Path) -> None:
    rows = chat_rows(5)
    rows[3]["custom_id"] = "req-1"
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    handler, seen = openai_handler()
    with pytest.raises(batchrun.InputError, match=r"'req-1' on rows 1, 3"):
        batchrun.run_sync(
            _config(tmp_path, path, check_ids_first=True), transport=httpx2.MockTransport(handler)
        )
    assert seen == []
    assert not (tmp_path / "out" / "checkpoint.json").exists()


def test_changed_input_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(5))
    handler, _ = openai_handler()
    batchrun.run_sync(_config(tmp_path, path), transport=httpx2.MockTransport(handler))
    write_jsonl(path, chat_rows(6))
    with pytest.raises(batchrun.CheckpointError, match="input file has changed"):
        batchrun.run_sync(_config(tmp_path, path), transport=httpx2.MockTransport(handler))


def test_orphan_part_is_adopted_not_resent(tmp_path: Path) -> None:
    """A crash between committing a part and writing the checkpoint loses nothing."""
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(10))
    handler, _ = openai_handler()
    out = tmp_path / "out"
    batchrun.run_sync(
        _config(tmp_path, path, flush_rows=4), transport=httpx2.MockTransport(handler)
    )
    # Rewind the checkpoint to before the last part, as if the process died right after the rename.
    checkpoint = Checkpoint.load(out)
    assert checkpoint is not None and checkpoint.parts == 3
    checkpoint.parts = 2
    checkpoint.done = batchrun.store.checkpoint.RangeSet([(0, 8)])
    checkpoint.save(out)

    handler2, seen2 = openai_handler()
    summary = batchrun.run_sync(_config(tmp_path, path), transport=httpx2.MockTransport(handler2))
    assert summary.finished and seen2 == []
    assert [r["row"] for r in read_results(out)] == list(range(10))


def test_key_never_written_anywhere(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(6))

    def echo_key_in_errors(body: dict[str, object], n: int) -> httpx2.Response | None:
        if n % 2:
            return httpx2.Response(400, json={"error": {"message": f"bad key {TEST_KEY}"}})
        return None

    handler, _ = openai_handler(echo_key_in_errors)
    batchrun.run_sync(_config(tmp_path, path), transport=httpx2.MockTransport(handler))
    for file in (tmp_path / "out").rglob("*"):
        if file.is_file():
            assert TEST_KEY.encode() not in file.read_bytes(), file
    assert TEST_KEY not in repr(_config(tmp_path, path))


def test_a_parquet_table_through_a_template(tmp_path: Path) -> None:
    path = tmp_path / "questions.parquet"
    pq.write_table(pa.table({"id": [7, 8, 9], "q": ["one", None, "three"], "n": [1, 2, 3]}), path)
    template = batchrun.Template(
        {
            "model": "gpt-4o-mini",
            "n": "{{ n }}",
            "messages": [{"role": "user", "content": "{{ q }}"}],
        },
        endpoint="/v1/chat/completions",
        id_column="id",
    )
    handler, seen = openai_handler()
    config = _config(tmp_path, path, template=template, endpoint="/v1/embeddings")
    assert config.effective_endpoint == "/v1/chat/completions"  # the template's wins
    summary = batchrun.run_sync(config, transport=httpx2.MockTransport(handler))
    assert summary.finished and summary.ok == 2 and summary.errors == 1
    records = read_results(tmp_path / "out")
    assert [(r["custom_id"], r["status"]) for r in records] == [
        ("7", "ok"), ("8", "error"), ("9", "ok")
    ]  # fmt: skip
    assert records[1]["error_message"] == "row 1: messages[0].content: column 'q' is null (empty)"
    assert sorted((b["n"], b["messages"][0]["content"]) for b in seen) == [(1, "one"), (3, "three")]
    checkpoint = Checkpoint.load(tmp_path / "out")
    assert checkpoint is not None
    assert checkpoint.settings == {"endpoint": "/v1/chat/completions", "template": template.digest}


def test_run_config_refuses_a_template_that_is_not_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"template must be a Template .* got str"):
        _config(tmp_path, tmp_path / "in.csv", template="ask.toml")
