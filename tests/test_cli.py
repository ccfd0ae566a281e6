"""The `batchrun` command as a user runs it: real subprocesses against the real mock server."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import batchrun
from batchrun.mock import MockConfig, MockServer
from tests.helpers import TEST_KEY, chat_rows, read_results, write_jsonl
from tests.torture import chat_requests, kill_9_repeatedly, resends

ROOT = Path(__file__).resolve().parent.parent


def batchrun_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "batchrun", *map(str, args)]


def env_with_key(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["OPENAI_API_KEY"] = TEST_KEY
    env.update(extra)
    return env


def run_cli(*args: str | Path, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        batchrun_cmd(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env_with_key(**env),
        cwd=ROOT,
    )


@pytest.fixture
def mock() -> Iterator[MockServer]:
    with MockServer(MockConfig(port=0, latency_ms=2)) as server:
        yield server


@pytest.mark.parametrize("engine", [(), ("--http-client", "httpx2")], ids=["aiohttp", "httpx2"])
def test_run_then_run_again(tmp_path: Path, mock: MockServer, engine: tuple[str, ...]) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(50))
    out = tmp_path / "out"
    done = run_cli("run", path, "--out", out, "--base-url", mock.base_url, *engine)
    assert done.returncode == 0, done.stderr
    assert "finished: 50 of 50 rows done" in done.stdout
    assert str(out / "results") in done.stdout
    assert len(read_results(out)) == 50

    again = run_cli("run", path, "--out", out, "--base-url", mock.base_url)
    assert again.returncode == 0
    assert "this run: 0 rows" in again.stdout


def test_unknown_http_client_is_exit_2(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(1))
    done = run_cli("run", path, "--out", tmp_path / "out", "--http-client", "requests")
    assert done.returncode == 2
    assert "--http-client: invalid choice: 'requests'" in done.stderr
    assert not (tmp_path / "out").exists()


def test_key_on_the_command_line_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(1))
    result = run_cli("run", path, "--out", tmp_path / "out", "--api-key", "sk-abc")
    assert result.returncode == 2
    assert "--api-key is refused" in result.stderr and "ps" in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_input_is_exit_2(tmp_path: Path) -> None:
    result = run_cli("run", tmp_path / "nope.jsonl", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "input file not found" in result.stderr


def test_help_explains_formats_and_exit_codes() -> None:
    result = run_cli("run", "--help")
    assert result.returncode == 0
    for words in ("custom_id", "Parquet", "exit codes", "--rpm", "--tpm", "resume"):
        assert words in result.stdout
    said = " ".join(result.stdout.split())
    assert "--max-output-tokens N" in said and "gpt-4o 16,384" in said and "32,768" in said
    assert "--max-cost reached" in said


def test_bad_max_output_tokens_is_exit_2(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(1))
    done = run_cli("run", path, "--out", tmp_path / "out", "--max-output-tokens", "0")
    assert done.returncode == 2 and "--max-output-tokens" in done.stderr
    with pytest.raises(ValueError, match="max_output_tokens must be positive"):
        batchrun.RunConfig(input_path=path, out_dir=tmp_path / "out", max_output_tokens=-5)
    with pytest.raises(ValueError, match="max_output_tokens must be a whole number"):
        batchrun.RunConfig(input_path=path, out_dir=tmp_path / "out", max_output_tokens=1.5)  # type: ignore[arg-type]


def test_second_run_on_same_output_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(400))
    out = tmp_path / "out"
    with MockServer(MockConfig(port=0, latency_ms=50)) as slow:
        first = subprocess.Popen(
            batchrun_cmd("run", path, "--out", out, "--base-url", slow.base_url, "-q",
                         "--concurrency", "4"),
            env=env_with_key(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            _wait_for(lambda: (out / "checkpoint.json").exists(), timeout=20)
            second = run_cli("run", path, "--out", out, "--base-url", slow.base_url)
            assert second.returncode == 2
            assert "another batchrun process is already writing" in second.stderr
        finally:
            first.kill()
            first.wait()


def test_sigint_stops_gracefully_and_resume_completes(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(300))
    out = tmp_path / "out"
    with MockServer(MockConfig(port=0, latency_ms=20)) as server:
        args = ("run", path, "--out", out, "--base-url", server.base_url, "--concurrency", "4")
        proc = subprocess.Popen(
            batchrun_cmd(*args, "--flush-interval", "0.2"),
            env=env_with_key(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        _wait_for(lambda: (out / "results").exists() and _parts(out) >= 1, timeout=20)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 3, stderr
        assert "stopped early: interrupted by SIGINT" in stdout
        assert "resume with" in stdout
        partial = read_results(out)
        assert 0 < len(partial) < 300

        resumed = run_cli(*args)
        assert resumed.returncode == 0, resumed.stderr
    records = read_results(out)
    assert [r["row"] for r in records] == list(range(300))
    assert all(r["status"] == "ok" for r in records)


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_gives_exactly_one_record_per_row(
    tmp_path: Path,
) -> None:
    """Invariant 1: kill -9 many times at random instants, resume to the end, check row by row."""
    n_rows = 3000
    rows = chat_rows(n_rows)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    concurrency = 16
    with MockServer(MockConfig(port=0, latency_ms=20, record_bodies=True)) as server:
        args = batchrun_cmd(
            "run", path, "--out", out, "--base-url", server.base_url, "-q",
            "--concurrency", str(concurrency), "--flush-rows", "40", "--flush-interval", "0.05",
        )  # fmt: skip
        # Each run sends 30 requests, then dies within 0.3 s: at most ~270 rows of 3000 each.
        kills = kill_9_repeatedly(
            args, progress=lambda: chat_requests(server), rng=random.Random(20261124), times=8,
            step=30,
        )  # fmt: skip
        final = subprocess.run(args, env=env_with_key(), cwd=ROOT, capture_output=True, text=True)
        assert final.returncode == 0, final.stderr
        sent = resends(server)
    assert kills >= 3, "the run finished too fast to be killed; make it longer"
    records = read_results(out)
    assert [r["row"] for r in records] == list(range(n_rows))  # none missing, none twice
    assert [r["custom_id"] for r in records] == [r["custom_id"] for r in rows]
    assert all(r["status"] == "ok" for r in records)
    # Work redone after a crash is what was in flight at the kill: at most one row per worker
    # (the answers that had arrived were journaled).
    assert sent.distinct == n_rows
    assert sent.resent <= kills * concurrency


def _parts(out: Path) -> int:
    return len(list((out / "results").glob("part-*.parquet")))


def _wait_for(condition: object, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for the condition")


@pytest.mark.parametrize(
    "sample", ["requests.jsonl", "requests.parquet", "prompts.jsonl"], ids=lambda s: s
)
def test_samples_run_through_the_mock(tmp_path: Path, mock: MockServer, sample: str) -> None:
    """Chat, tools, o-series, image content, embeddings, Parquet and bare bodies all pass."""
    out = tmp_path / "out"
    result = run_cli("run", ROOT / "samples" / sample, "--out", out, "--base-url", mock.base_url)
    assert result.returncode == 0, result.stderr
    records = read_results(out)
    expected = 50 if sample == "prompts.jsonl" else 300
    assert [r["row"] for r in records] == list(range(expected))
    assert all(r["status"] == "ok" and r["prompt_tokens"] for r in records)
    if sample != "prompts.jsonl":
        endpoints = {r["endpoint"] for r in records}
        assert endpoints == {"/v1/chat/completions", "/v1/embeddings"}
        assert {r["finish_reason"] for r in records} >= {"stop", "tool_calls"}


# --- tables and templates ---------------------------------------------------------------------

TRICKY_QUESTIONS = [
    'What does "quoted" mean, and why?',
    "First line\nsecond line\r\nthird line",
    "Unicode: 日本語, café, emoji 🎉, \u05e9\u05dc\u05d5\u05dd",
    "Injection? {{ question }} {% for x in y %}{% endfor %} {# c #}",
    '"}], "model": "gpt-4o", "x": [{"a": "',
    "Tab\there, backslash \\ and a NUL-free ending",
]
ASK_TEMPLATE = """\
id = "qid"

[body]
model = "gpt-4o-mini"
max_tokens = 64
messages = [
  { role = "system", content = "Answer in one line." },
  { role = "user", content = "{{ question }}" },
]
"""


def _questions_csv(path: Path, questions: list[str]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["qid", "question", "topic"])
        writer.writerows([[f"q-{i}", q, "t"] for i, q in enumerate(questions)])
    return path


def _wire(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _asked(question: str) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "max_tokens": 64,
        "messages": [
            {"role": "system", "content": "Answer in one line."},
            {"role": "user", "content": question},
        ],
    }


@pytest.fixture
def recording() -> Iterator[MockServer]:
    with MockServer(MockConfig(port=0, record_bodies=True)) as server:
        yield server


def test_a_csv_through_a_template_reaches_the_server_intact(
    tmp_path: Path, recording: MockServer
) -> None:
    path = _questions_csv(tmp_path / "questions.csv", TRICKY_QUESTIONS)
    template = tmp_path / "ask.toml"
    template.write_text(ASK_TEMPLATE, encoding="utf-8")
    out = tmp_path / "out"
    done = run_cli(
        "run", path, "--out", out, "--base-url", recording.base_url, "--template", template
    )
    assert done.returncode == 0, done.stderr
    expected = [_wire(_asked(q)) for q in TRICKY_QUESTIONS]
    assert sorted(recording.bodies()) == sorted(expected)  # byte for byte, each exactly once
    records = read_results(out)
    assert [(r["row"], r["custom_id"], r["status"]) for r in records] == [
        (i, f"q-{i}", "ok") for i in range(len(TRICKY_QUESTIONS))
    ]

    # The shortcuts build the same requests, so they resume the same output: nothing to do.
    recording.reset()
    shortcut = (
        "--model", "gpt-4o-mini", "--max-tokens", "64", "--system", "Answer in one line.",
        "--prompt", "{{ question }}", "--id-column", "qid",
    )  # fmt: skip
    again = run_cli("run", path, "--out", out, "--base-url", recording.base_url, *shortcut)
    assert again.returncode == 0, again.stderr
    assert "this run: 0 rows" in again.stdout and recording.bodies() == []

    fresh = tmp_path / "fresh"
    short = run_cli("run", path, "--out", fresh, "--base-url", recording.base_url, *shortcut)
    assert short.returncode == 0, short.stderr
    # The same requests; only the order of the body's keys is the shortcut's own.
    received = sorted(json.loads(body)["messages"][1]["content"] for body in recording.bodies())
    assert received == sorted(TRICKY_QUESTIONS)
    assert all(json.loads(body) in map(_asked, TRICKY_QUESTIONS) for body in recording.bodies())


def test_template_errors_become_row_errors_and_the_run_goes_on(
    tmp_path: Path, recording: MockServer
) -> None:
    path = tmp_path / "questions.csv"
    path.write_text(
        "qid,question\n"
        "a,first\n"
        "b,\n"  # empty: null where the prompt needs text
        'c,"two\nlines"\n'
        "d,too,many,fields\n"
        ",no id\n"
        "f,last\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    done = run_cli(
        "run", path, "--out", out, "--base-url", recording.base_url,
        "--model", "gpt-4o-mini", "--prompt", "Q: {{ question }}", "--id-column", "qid",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = read_results(out)
    assert [(r["row"], r["custom_id"], r["status"], r["error_type"]) for r in records] == [
        (0, "a", "ok", None),
        (1, "b", "error", "bad_input"),
        (2, "c", "ok", None),
        (3, "3", "error", "bad_input"),
        (4, "4", "error", "bad_input"),
        (5, "f", "ok", None),
    ]
    assert [r["error_message"] for r in records if r["status"] == "error"] == [
        "line 3: messages[0].content: column 'question' is null (empty)",
        "line 6: the record has 4 fields, the header has 2 (a value with the delimiter in it "
        "must be quoted)",
        "line 7: the id column 'qid' is null (empty)",
    ]
    sent = sorted(json.loads(b)["messages"][0]["content"] for b in recording.bodies())
    assert sent == ["Q: first", "Q: last", "Q: two\nlines"]  # only the rows that could be built


def test_a_changed_template_is_refused_on_resume(tmp_path: Path, mock: MockServer) -> None:
    path = _questions_csv(tmp_path / "questions.csv", ["one", "two"])
    out = tmp_path / "out"
    first = ("--model", "gpt-4o-mini", "--prompt", "{{ question }}")
    assert run_cli("run", path, "--out", out, "--base-url", mock.base_url, *first).returncode == 0
    changed = run_cli(
        "run", path, "--out", out, "--base-url", mock.base_url,
        "--model", "gpt-4o-mini", "--prompt", "Briefly: {{ question }}",
    )  # fmt: skip
    assert changed.returncode == 2
    assert "--template was a template with sha256 " in changed.stderr
    assert "use the same value to resume, --update to re-send" in changed.stderr
    plain = run_cli("run", path, "--out", out, "--base-url", mock.base_url)
    assert plain.returncode == 2
    assert "when this output was started and is not set now" in plain.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "m"), "--model goes with --prompt"),
        (("--prompt", "{{ question }}"), "--prompt needs --model"),
        (("--system", "s", "--id-column", "q"), "--system and --id-column go with --prompt or"),
        (("--id-column", "qid"), "--id-column goes with --prompt or --template"),
        (("--template", "t.toml", "--max-tokens", "5"), "--max-tokens goes with --prompt; with"),
        (("--template", "t.toml", "--prompt", "x"), "--template and --prompt both say how"),
        (("--model", "m", "--prompt", "{{ qestion }}"), "has no column 'qestion'"),
        (("--model", "m", "--prompt", "{{ q"), "--prompt: messages[0].content: template syntax"),
        (("--model", "m", "--prompt", "x", "--id-column", "nope"), "has no column 'nope'"),
        (("--template", "missing.toml"), "cannot read the template missing.toml"),
        ((), "a CSV file holds records, not requests"),
    ],
)
def test_template_usage_errors_exit_2_before_sending(
    tmp_path: Path, mock: MockServer, args: tuple[str, ...], message: str
) -> None:
    path = _questions_csv(tmp_path / "questions.csv", ["one"])
    done = run_cli("run", path, "--out", tmp_path / "out", "--base-url", mock.base_url, *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert mock.stats()["requests"]["total"] == 0
