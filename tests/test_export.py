"""`batchrun export` as a user runs it: real runs on the mock, then the CLI, then the files read
back the way their users read them (pandas, polars, DuckDB; OpenAI Batch tooling line by line).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from batchrun.mock import MockConfig, MockServer
from batchrun.runner import export as export_mod
from batchrun.runner.export import ExportConfig, ExportError, export
from batchrun.store.ordered import SCRATCH_PREFIX
from tests.helpers import TEST_KEY, chat_rows, read_results, write_jsonl
from tests.test_tables import TRICKY, write_csv

ROOT = Path(__file__).resolve().parent.parent
ROWS = 240
ASK = """\
id = "qid"
[body]
model = "gpt-4o-mini"
max_tokens = 12
messages = [{ role = "user", content = "{{ topic }}: {{ question }}" }]
"""
ERROR_TYPES = {"bad_input", "invalid_request", "server_error"}


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["OPENAI_API_KEY"] = TEST_KEY
    return env


def cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = environment()
    return subprocess.run(
        [sys.executable, "-m", "batchrun", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


@dataclass(frozen=True)
class Run:
    input: Path
    out: Path
    questions: list[dict[str, Any]]  # the CSV's rows as written
    results: list[dict[str, Any]]  # OUT/results sorted by row


def question(i: int) -> str | None:
    if i % 40 == 7:
        return None  # an empty cell: the template cannot fill it, a bad_input row
    return f"{TRICKY[i % len(TRICKY)]} #{i}"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """240 CSV questions through a template; answers arrive out of order (latency jitter), some
    fail (injected 500s and 400s, not retried) and some cannot be sent (an empty question)."""
    tmp = tmp_path_factory.mktemp("export")
    questions = [
        {"qid": f"q-{i:03d}", "question": question(i), "topic": f"t{i % 3}",
         "status": "draft" if i % 2 else "final", "model": "human"}
        for i in range(ROWS)
    ]  # fmt: skip
    path = write_csv(
        tmp / "questions.csv",
        list(questions[0]),
        [[q[k] or "" for k in q] for q in questions],
    )
    (tmp / "ask.toml").write_text(ASK, encoding="utf-8")
    out = tmp / "out"
    config = MockConfig(latency_ms=1, jitter_ms=40, faults={"500": 0.05, "400": 0.03}, seed=3)
    with MockServer(config) as mock:
        done = cli("run", path, "--out", out, "--base-url", mock.base_url, "--template",
                   tmp / "ask.toml", "--concurrency", "16", "--max-retries", "0",
                   "--flush-rows", "16", "-q")  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = read_results(out)
    assert {r["status"] for r in results} == {"ok", "error"}
    assert {r["error_type"] for r in results if r["error_type"]} == ERROR_TYPES
    in_order_of_parts = [
        row
        for part in sorted((out / "results").glob("part-*.parquet"))
        for row in pq.read_table(part, columns=["row"]).column("row").to_pylist()
    ]
    assert in_order_of_parts != sorted(in_order_of_parts), "the jitter must shuffle the rows"
    return Run(path, out, questions, results)


def answer_text(record: dict[str, Any]) -> str | None:
    if record["status"] != "ok":
        return None
    content: str = json.loads(record["response"])["choices"][0]["message"]["content"]
    return content


def blank(value: Any) -> Any:
    """The ways an empty value reads back (CSV has no null, pandas has NaN)."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


READERS: dict[str, dict[str, Callable[[Path], list[dict[str, Any]]]]] = {
    "parquet": {
        "pandas": lambda p: pd.read_parquet(p).to_dict("records"),
        "polars": lambda p: pl.read_parquet(p).to_dicts(),
        "duckdb": lambda p: duckdb.sql(f"select * from read_parquet('{p}')").pl().to_dicts(),
    },
    "csv": {
        "pandas": lambda p: pd.read_csv(p, dtype=str, keep_default_na=False).to_dict("records"),
        "polars": lambda p: pl.read_csv(p, infer_schema=False).to_dicts(),
        "duckdb": lambda p: (
            duckdb.sql(f"select * from read_csv('{p}', all_varchar=true)").pl().to_dicts()
        ),
    },
    "jsonl": {
        "pandas": lambda p: pd.read_json(p, lines=True, dtype=False).to_dict("records"),
        "polars": lambda p: pl.read_ndjson(p, infer_schema_length=None).to_dicts(),
        "duckdb": lambda p: duckdb.sql(f"select * from read_json_auto('{p}')").pl().to_dicts(),
    },
}


@pytest.mark.parametrize("fmt", list(READERS))
def test_the_joined_export_reads_everywhere_one_row_per_input_row_in_input_order(
    run: Run, tmp_path: Path, fmt: str
) -> None:
    to = tmp_path / f"answers.{fmt}"
    done = cli("export", run.out, "--to", to)
    assert done.returncode == 0, done.stderr
    ok = sum(r["status"] == "ok" for r in run.results)
    assert f"exported {ROWS} rows to {to}, joined to {run.input}" in done.stdout
    assert f"{ok} ok, {ROWS - ok} error, 0 pending" in done.stdout
    assert "status -> input.status, model -> input.model" in done.stdout
    if fmt != "parquet":
        assert to.read_text(encoding="utf-8").count("\n") - (fmt == "csv") >= ROWS
    for library, read in READERS[fmt].items():
        rows = read(to)
        assert len(rows) == ROWS, library
        assert [int(r["row"]) for r in rows] == list(range(ROWS)), library
        assert list(rows[0])[:7] == ["row", "custom_id", "qid", "question", "topic",
                                     "input.status", "input.model"]  # fmt: skip
        for row, q, record in zip(rows, run.questions, run.results, strict=True):
            where = f"{library}, row {record['row']}"
            assert row["qid"] == q["qid"] == row["custom_id"] == record["custom_id"], where
            assert blank(row["question"]) == q["question"], where
            assert row["input.status"] == q["status"] and row["input.model"] == "human", where
            assert row["status"] == record["status"], where
            assert blank(row["text"]) == answer_text(record), where
            assert blank(row["error_type"]) == record["error_type"], where
            assert blank(row["model"]) == record["model"], where
            if record["status"] == "ok":
                assert int(row["completion_tokens"]) == record["completion_tokens"], where


def test_the_openai_batch_export_has_the_documented_shape_line_by_line(
    run: Run, tmp_path: Path
) -> None:
    to = tmp_path / "batch_output.jsonl"
    done = cli("export", run.out, "--format", "openai-batch", "--to", to)
    assert done.returncode == 0, done.stderr
    errors_file = tmp_path / "batch_output_errors.jsonl"
    ok_records = [r for r in run.results if r["status"] == "ok"]
    failed = [r for r in run.results if r["status"] != "ok"]
    assert f"{len(ok_records)} lines to {to}, {len(failed)} to {errors_file}" in done.stdout
    output = to.read_text(encoding="utf-8").splitlines()
    errors = errors_file.read_text(encoding="utf-8").splitlines()
    assert len(output) == len(ok_records) and len(errors) == len(failed)
    ids = set()
    # The BatchRequestOutput object of OpenAI's API reference, field by field.
    for line, record in zip(output, ok_records, strict=True):
        item = json.loads(line)
        assert list(item) == ["id", "custom_id", "response", "error"]
        assert re.fullmatch(r"batch_req_[0-9a-f]{32}", item["id"])
        ids.add(item["id"])
        assert item["custom_id"] == record["custom_id"]
        assert item["error"] is None
        response = item["response"]
        assert list(response) == ["status_code", "request_id", "body"]
        assert response["status_code"] == 200 and isinstance(response["status_code"], int)
        assert response["request_id"] is None  # response headers are not kept (README)
        assert response["body"] == json.loads(record["response"])
        assert response["body"]["object"] == "chat.completion"
    for line, record in zip(errors, failed, strict=True):
        item = json.loads(line)
        assert list(item) == ["id", "custom_id", "response", "error"]
        assert re.fullmatch(r"batch_req_[0-9a-f]{32}", item["id"])
        ids.add(item["id"])
        assert item["custom_id"] == record["custom_id"]
        assert item["error"] == {"code": record["error_type"], "message": record["error_message"]}
        if record["http_status"] is None:  # bad input: nothing was sent
            assert item["response"] is None
        else:
            response = item["response"]
            assert list(response) == ["status_code", "request_id", "body"]
            assert response["status_code"] == record["http_status"] >= 400
            assert response["body"] == json.loads(record["response"])
            assert "message" in response["body"]["error"]
    assert len(ids) == ROWS
    again = tmp_path / "again.jsonl"
    assert cli("export", run.out, "--format", "openai-batch", "--to", again).returncode == 0
    assert again.read_text(encoding="utf-8") == to.read_text(encoding="utf-8")  # stable ids


def test_a_changed_input_is_refused_and_nothing_is_written(run: Run, tmp_path: Path) -> None:
    changed = tmp_path / "questions.csv"
    changed.write_text(run.input.read_text(encoding="utf-8").replace("#17", "#71"), "utf-8")
    to = tmp_path / "answers.parquet"
    done = cli("export", run.out, "--join", changed, "--to", to)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"{changed} is not the input this output was made from" in lines[0]
    assert "would pair with the wrong results" in lines[0] and "--no-join" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["questions.csv"]
    assert not list(run.out.glob(f"{SCRATCH_PREFIX}*"))


def test_the_results_alone_with_no_join(run: Run, tmp_path: Path) -> None:
    to = tmp_path / "results.parquet"
    done = cli("export", run.out, "--no-join", "--to", to)
    assert done.returncode == 0, done.stderr
    assert "(results only)" in done.stdout
    table = pq.read_table(to)
    assert table.column_names[:3] == ["row", "custom_id", "status"]
    assert "qid" not in table.column_names and "input.status" not in table.column_names
    assert table.column("row").to_pylist() == list(range(ROWS))
    assert table.column("status").to_pylist() == [r["status"] for r in run.results]


def test_an_existing_file_is_kept_unless_forced(run: Run, tmp_path: Path) -> None:
    to = tmp_path / "answers.csv"
    to.write_text("mine")
    done = cli("export", run.out, "--to", to)
    assert done.returncode == 2 and "answers.csv exists; add --force" in done.stderr
    assert to.read_text() == "mine"
    assert cli("export", run.out, "--to", to, "--force").returncode == 0
    assert to.read_text(encoding="utf-8").startswith('"row","custom_id","qid"')


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--to", "{out}/results/x.parquet"), "which holds only result parts"),
        (("--to", "{tmp}/answers.txt"), "cannot tell the format from the name of --to"),
        (("--to", "{tmp}/a.jsonl", "--errors-to", "{tmp}/e.jsonl"), "--errors-to goes with"),
        (("--to", "{tmp}/a.csv", "--join", "{input}", "--no-join"), "contradict"),
        (("--to", "{input}", "--force"), "is the input file"),
    ],
    ids=["inside-results", "unknown-suffix", "errors-to", "join-and-no-join", "over-the-input"],
)
def test_bad_usage_is_one_line_and_exit_2(
    run: Run, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    filled = [a.format(out=run.out, tmp=tmp_path, input=run.input) for a in args]
    before = run.input.read_bytes()
    done = cli("export", run.out, *filled)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == [] and run.input.read_bytes() == before
    assert not list((run.out / "results").glob("x*"))


def test_a_damaged_part_is_named_and_nothing_is_written(run: Run, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(run.out, out)
    part = out / "results" / "part-000003.parquet"
    part.write_bytes(part.read_bytes()[:100])  # cut short, as a failing disk might leave it
    to = tmp_path / "answers.parquet"
    done = cli("export", out, "--to", to)
    assert done.returncode == 2
    assert f"cannot read {part}" in done.stderr and "nothing was written" in done.stderr
    assert not to.exists() and not list(tmp_path.glob(".answers*"))
    assert not list(out.glob(f"{SCRATCH_PREFIX}*"))


def test_an_output_without_a_checkpoint_is_refused(tmp_path: Path) -> None:
    done = cli("export", tmp_path, "--to", tmp_path / "a.parquet")
    assert done.returncode == 2 and "has no checkpoint.json" in done.stderr


def test_help_says_it_may_run_alongside_a_run() -> None:
    done = cli("export", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "may run while `batchrun run` is still writing to OUT" in text
    for words in ("openai-batch", "pending", "input.NAME", "--join", "exit codes"):
        assert words in text


def test_a_moved_input_is_named_and_can_be_given_with_join(tmp_path: Path) -> None:
    rows = chat_rows(12)
    rows[3]["body"]["tools"] = [
        {"type": "function", "function": {"name": "lookup", "parameters": {
            "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}
    ]  # fmt: skip
    path = write_jsonl(tmp_path / "requests.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(jitter_ms=20)) as mock:
        done = cli("run", path, "--out", out, "--base-url", mock.base_url, "-q")
    assert done.returncode == 0, done.stderr
    moved = path.rename(tmp_path / "moved.jsonl")
    to = tmp_path / "answers.parquet"
    refused = cli("export", out, "--to", to)
    assert refused.returncode == 2
    assert f"this output's input {path} is not there" in refused.stderr
    assert "--join FILE" in refused.stderr and "--no-join" in refused.stderr
    done = cli("export", out, "--join", moved, "--to", to)
    assert done.returncode == 0, done.stderr
    table = pq.read_table(to).to_pylist()
    # A file of requests gives the body's model and the user message as its columns.
    assert [r["prompt"] for r in table] == [f"question number {i}" for i in range(12)]
    assert {r["input.model"] for r in table} == {"gpt-4o-mini"}
    assert [r["custom_id"] for r in table] == [f"req-{i}" for i in range(12)]
    calls = json.loads(table[3]["tool_calls"])
    assert [c["name"] for c in calls] == ["lookup"] and "q" in json.loads(calls[0]["arguments"])
    assert table[3]["finish_reason"] == "tool_calls" and table[3]["text"] is None
    assert all(r["text"] and r["tool_calls"] is None for i, r in enumerate(table) if i != 3)


def _wait_for(condition: Callable[[], bool], *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the condition")
        time.sleep(0.05)


def _parts(out: Path) -> int:
    checkpoint = out / "checkpoint.json"
    return int(json.loads(checkpoint.read_text())["parts"]) if checkpoint.exists() else 0


def test_an_export_alongside_a_running_run_shows_the_rest_as_pending(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(300))
    out = tmp_path / "out"
    env = environment()
    with MockServer(MockConfig(latency_ms=150)) as slow:
        running = subprocess.Popen(
            [sys.executable, "-m", "batchrun", "run", str(path), "--out", str(out), "--base-url",
             slow.base_url, "--concurrency", "4", "--flush-rows", "8", "-q"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_for(lambda: _parts(out) >= 2, timeout_s=60)
            to = tmp_path / "so-far.parquet"
            done = cli("export", out, "--to", to)
            assert running.poll() is None, "the run must still be going"
        finally:
            running.send_signal(signal.SIGKILL)
            running.wait()
    assert done.returncode == 0, done.stderr
    table = pq.read_table(to)
    statuses = table.column("status").to_pylist()
    assert table.column("row").to_pylist() == list(range(300))
    finished = statuses.count("ok")
    assert 16 <= finished < 300 and statuses.count("pending") == 300 - finished
    assert f"{300 - finished} rows have no committed result yet" in done.stdout


@pytest.fixture
def failing_sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[BaseException]]:
    """Sinks that fail on their second table with the exception put in the list."""
    raised: list[BaseException] = []
    real = export_mod.table_sink

    def sink(fmt: str, path: Path, schema: Any) -> Any:
        inner = real(fmt, path, schema)
        writes = [0]

        class Failing:
            def write(self, table: Any) -> None:
                writes[0] += 1
                if writes[0] == 2:
                    raise raised[0]
                inner.write(table)

            def close(self) -> None:
                inner.close()

        return Failing()

    monkeypatch.setattr(export_mod, "table_sink", sink)
    yield raised


def test_a_full_disk_during_the_export_leaves_nothing_behind(
    run: Run, tmp_path: Path, failing_sink: list[BaseException]
) -> None:
    failing_sink.append(OSError(28, "No space left on device"))
    config = ExportConfig(out_dir=run.out, to=tmp_path / "a.jsonl", chunk_rows=50)
    with pytest.raises(ExportError, match=r"cannot write the export: .*No space left on device"):
        export(config)
    assert list(tmp_path.iterdir()) == []
    assert not list(run.out.glob(f"{SCRATCH_PREFIX}*"))


def test_ctrl_c_during_the_export_leaves_nothing_behind(
    run: Run, tmp_path: Path, failing_sink: list[BaseException]
) -> None:
    failing_sink.append(KeyboardInterrupt())
    config = ExportConfig(out_dir=run.out, to=tmp_path / "a.parquet", chunk_rows=50)
    with pytest.raises(KeyboardInterrupt):
        export(config)
    assert list(tmp_path.iterdir()) == []
    assert not list(run.out.glob(f"{SCRATCH_PREFIX}*"))


def test_small_windows_give_the_same_file(run: Run, tmp_path: Path) -> None:
    whole = export(ExportConfig(out_dir=run.out, to=tmp_path / "a.parquet"))
    split = export(ExportConfig(out_dir=run.out, to=tmp_path / "b.parquet", window_rows=9,
                                chunk_rows=7))  # fmt: skip
    assert (whole.ok, whole.errors, whole.pending) == (split.ok, split.errors, split.pending)
    assert pq.read_table(tmp_path / "a.parquet") == pq.read_table(tmp_path / "b.parquet")
