"""Bad input, end to end through the library and the CLI, each with its exact message.

Row-level problems become error records (`error_type = "bad_input"`) carrying the line (JSONL) or
row (Parquet) number, and the other rows run; so does a row repeating an earlier row's custom_id.
File-level problems stop before anything is sent: `InputError` / `CheckpointError` from the
library, exit code 2 and one line on stderr from the CLI, no request to the server, no results.
Two can only be seen by reading the whole file (a repeated custom_id, a truncated .gz): with
`--check-ids-first` they are file-level problems too; without it, the first pass finds them
while rows are sent. (tests/test_reader.py unit-tests the reader itself.)
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batchrun
from batchrun.mock import MockConfig, MockServer
from tests.helpers import chat_rows, read_results
from tests.torture import chat_requests, config, parts, run_cli

GOOD_BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hello"}],
    "max_tokens": 5,
}


def batch_line(custom_id: object, **fields: object) -> bytes:
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions"}
    line["body"] = GOOD_BODY
    line.update(fields)
    return json.dumps(line).encode()


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with MockServer(MockConfig(latency_ms=1)) as mock:
        yield mock


# -------------------------------------------------------------------------------- row-level

# (line as it stands in the file, expected (custom_id, status, message) or None for a blank line)
_LINES: list[tuple[bytes, tuple[str, str, str | None] | None]] = [
    (b"\xef\xbb\xbf" + batch_line("ok-0"), ("ok-0", "ok", None)),  # a UTF-8 BOM first
    (batch_line("ok-1"), ("ok-1", "ok", None)),
    (b"", None),  # blank lines are not rows
    (
        b"{not json",
        (
            "2",
            "error",
            "line 4: invalid JSON: Expecting property name enclosed in double quotes at column 2",
        ),
    ),
    (b"[1, 2]", ("3", "error", "line 5: expected a JSON object, got an array")),
    (b"   \t", None),
    (b'"just a string"', ("4", "error", "line 7: expected a JSON object, got a string")),
    (b'\xff\xfe{"model": "gpt-4o-mini"}', ("5", "error", "line 8: not valid UTF-8 (byte 0)")),
    (
        json.dumps({"custom_id": "no-body", "url": "/v1/chat/completions"}).encode(),
        ("no-body", "error", "line 9: the row has no 'body'"),
    ),
    (
        b'{"model": "gpt-4o-mini"}',
        ("7", "error", "line 10: the body has no 'messages' (required by /v1/chat/completions)"),
    ),
    (
        batch_line("bad-model", body={**GOOD_BODY, "model": 7}),
        ("bad-model", "error", "line 11: 'model' must be a string, got a number"),
    ),
    (
        b'{"model": "gpt-4o-mini", "messages": "hello"}',
        ("9", "error", "line 12: 'messages' must be a non-empty array"),
    ),
    (
        json.dumps({**GOOD_BODY, "max_tokens": "5"}).encode(),
        ("10", "error", "line 13: 'max_tokens' must be a non-negative integer, got '5'"),
    ),
    (
        batch_line({"an": "object"}),
        ("11", "error", "line 14: 'custom_id' must be a non-empty string, got an object"),
    ),
    (
        batch_line("get", method="GET"),
        ("get", "error", "line 15: 'method' must be \"POST\", got 'GET'"),
    ),
    (
        batch_line("url", url="chat"),
        (
            "url",
            "error",
            "line 16: 'url' must be a path such as \"/v1/chat/completions\", got 'chat'",
        ),
    ),
    (json.dumps(GOOD_BODY).encode(), ("14", "ok", None)),  # a bare body
    (
        batch_line("body-list", body=[1]),
        ("body-list", "error", "line 18: 'body' must be a JSON object, got an array"),
    ),
]


def _expected() -> list[tuple[str, str, str | None]]:
    return [expected for _, expected in _LINES if expected is not None]


def _write_mixed(path: Path) -> Path:
    # CRLF line ends throughout, as a file written on Windows has them.
    path.write_bytes(b"\r\n".join(line for line, _ in _LINES) + b"\r\n")
    return path


def _check_row_by_row(out: Path) -> None:
    records = read_results(out)
    expected = _expected()
    assert [r["row"] for r in records] == list(range(len(expected)))
    for record, (custom_id, status, message) in zip(records, expected, strict=True):
        where = f"row {record['row']}"
        assert (record["custom_id"], record["status"]) == (custom_id, status), where
        assert record["error_message"] == message, where
        if status == "error":
            assert record["error_type"] == "bad_input", where
            assert (record["attempts"], record["http_status"]) == (0, None), where
        else:
            assert record["error_type"] is None and record["attempts"] == 1, where


def test_bad_rows_become_error_records_with_their_line_library(
    tmp_path: Path, server: MockServer
) -> None:
    path = _write_mixed(tmp_path / "in.jsonl")
    before = chat_requests(server)
    summary = batchrun.run_sync(config(path, tmp_path / "out", server.base_url))
    assert summary.exit_code == 0 and summary.finished
    ok = sum(1 for _, status, _ in _expected() if status == "ok")
    assert (summary.ok, summary.errors) == (ok, len(_expected()) - ok)
    assert chat_requests(server) - before == ok  # bad rows are never sent
    _check_row_by_row(tmp_path / "out")


def test_bad_rows_become_error_records_with_their_line_cli(
    tmp_path: Path, server: MockServer
) -> None:
    path = _write_mixed(tmp_path / "in.jsonl")
    out = tmp_path / "out"
    done = run_cli("run", path, "--out", out, "--base-url", server.base_url, "-q")
    assert done.returncode == 0, done.stderr
    bad = sum(1 for _, status, _ in _expected() if status == "error")
    assert f"finished: {len(_expected())} of {len(_expected())} rows done" in done.stdout
    assert f"errors by type: bad_input {bad}" in done.stdout
    _check_row_by_row(out)


def test_a_50_mb_row_is_a_row_error_and_the_others_run(tmp_path: Path, server: MockServer) -> None:
    # Generated here, never committed: 50 MB of prompt in one line, between two good rows.
    rows = chat_rows(3)
    rows[1]["body"]["messages"][0]["content"] = "x" * (50 * 1024 * 1024)
    path = tmp_path / "in.jsonl"
    with path.open("wb") as f:
        for row in rows:
            f.write(json.dumps(row).encode() + b"\n")
    size = len(json.dumps(rows[1]).encode())
    summary = batchrun.run_sync(config(path, tmp_path / "out", server.base_url))
    assert summary.exit_code == 0
    records = read_results(tmp_path / "out")
    assert [(r["row"], r["custom_id"], r["status"]) for r in records] == [
        (0, "req-0", "ok"),
        (1, "req-1", "error"),
        (2, "req-2", "ok"),
    ]
    assert records[1]["error_type"] == "bad_input"
    assert records[1]["error_message"] == (
        f"line 2: the row is {size:,} bytes, over the limit of 16,777,216 bytes (--max-row-bytes)"
    )


def test_parquet_bad_rows_carry_their_row_number(tmp_path: Path, server: MockServer) -> None:
    good = json.dumps(GOOD_BODY)
    path = tmp_path / "in.parquet"
    table = {"custom_id": ["a", "b", "c", "d", None], "body": [good, "{bad", None, "[1]", good]}
    pq.write_table(pa.table(table), path)
    summary = batchrun.run_sync(config(path, tmp_path / "out", server.base_url))
    assert summary.exit_code == 0
    records = read_results(tmp_path / "out")
    assert [(r["custom_id"], r["status"], r["error_message"]) for r in records] == [
        ("a", "ok", None),
        (
            "b",
            "error",
            "row 1: 'body' is not valid JSON: Expecting property name enclosed in double quotes "
            "at column 2",
        ),
        ("c", "error", "row 2: the 'body' is empty"),
        ("d", "error", "row 3: 'body' must be a JSON object, got an array"),
        ("4", "ok", None),
    ]


# ------------------------------------------------------------------------------- file-level


def _missing(tmp: Path) -> tuple[Path, str]:
    path = tmp / "nope.jsonl"
    return path, re.escape(f"input file not found: {path}")


def _directory(tmp: Path) -> tuple[Path, str]:
    path = tmp / "a-directory.jsonl"
    path.mkdir()
    return path, re.escape(f"input is a directory, not a file: {path}")


def _no_body_column(tmp: Path) -> tuple[Path, str]:
    path = tmp / "in.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "id": [1, 2]}), path)
    return path, re.escape(
        f"{path} has no 'body' column (columns: prompt, id); batchrun needs a 'body' column "
        "holding each request body as a JSON string or struct; if its rows are records, say how "
        "to build each request from its columns with --template FILE, or --model M --prompt "
        "'{{ column }}'"
    )


def _body_of_wrong_type(tmp: Path) -> tuple[Path, str]:
    path = tmp / "in.parquet"
    pq.write_table(pa.table({"body": [1, 2]}), path)
    return path, re.escape(
        f"{path}: the 'body' column is int64; it must be a JSON string or a struct"
    )


def _not_parquet(tmp: Path) -> tuple[Path, str]:
    path = tmp / "in.parquet"
    path.write_bytes(b"PAR1 but not really")
    return path, re.escape(f"{path} is not a readable Parquet file: ") + ".+"


def _truncated_gzip(tmp: Path) -> tuple[Path, str]:
    path = tmp / "in.jsonl.gz"
    data = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in chat_rows(2000)))
    path.write_bytes(data[: len(data) // 2])
    return path, re.escape(f"cannot read {path} after line ") + r"\d+: " + re.escape(
        "Compressed file ended before the end-of-stream marker was reached"
    )


def _duplicate_ids(tmp: Path) -> tuple[Path, str]:
    path = tmp / "in.jsonl"
    lines = [batch_line(cid) for cid in ("a", "b", "a", "b", "c", "a")]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, re.escape(
        "3 rows repeat a custom_id used on an earlier row, so their results could not be told "
        "apart: 'a' on rows 0, 2, 5; 'b' on rows 1, 3. Make the custom_ids unique."
    )


def _empty(tmp: Path) -> tuple[Path, str]:
    path = tmp / "in.jsonl"
    path.write_bytes(b"")
    return path, re.escape(f"{path} has no rows; nothing to send")


def _blank_lines_only(tmp: Path) -> tuple[Path, str]:
    path = tmp / "in.jsonl"
    path.write_bytes(b"\n  \r\n\t\n")
    return path, re.escape(f"{path} has no rows; nothing to send")


def _json_array(tmp: Path) -> tuple[Path, str]:
    path = tmp / "in.jsonl"
    path.write_text(json.dumps([r["body"] for r in chat_rows(342)], indent=2))
    return path, re.escape(
        f"{path} holds one JSON array, not JSON Lines (one request object per line); convert "
        'it: python -c "import json,sys; [print(json.dumps(r)) for r in '
        "json.load(open(sys.argv[1]))]\" in.jsonl > in.jsonl  (or: jq -c '.[]' in.jsonl > "
        "in.jsonl); nothing was sent"
    )


def _pretty_json(tmp: Path) -> tuple[Path, str]:
    path = tmp / "request.json"
    path.write_text(json.dumps(GOOD_BODY, indent=2))
    return path, re.escape(f"{path} looks like one JSON document over many lines; ") + ".+"


def _csv(tmp: Path) -> tuple[Path, str]:
    path = tmp / "prompts.csv"
    path.write_text("id,prompt\n1,hello\n2,world\n")
    return path, re.escape(
        f"{path}: a CSV file holds records, not requests; say how to build each request from "
        "its columns with --template FILE, or --model M --prompt '{{ column }}' (see batchrun "
        "run --help)"
    )


def _csv_named_jsonl(tmp: Path) -> tuple[Path, str]:
    path = tmp / "prompts.jsonl"
    path.write_text("id,prompt\n1,hello\n2,world\n")
    return path, re.escape(
        f"{path} looks like CSV (first line: id,prompt): name it prompts.csv and say how to "
        "build each request from its columns with --template FILE, or --model M --prompt "
        "'{{ column }}'; nothing was sent"
    )


def _parquet_named_jsonl(tmp: Path) -> tuple[Path, str]:
    path = tmp / "in.jsonl"
    pq.write_table(pa.table({"body": [json.dumps(GOOD_BODY)] * 3}), path)
    return path, re.escape(
        f"{path} is a Parquet file under a JSON Lines name: rename it in.parquet; nothing was sent"
    )


def _gzip_named_jsonl(tmp: Path) -> tuple[Path, str]:
    path = tmp / "in.jsonl"
    path.write_bytes(gzip.compress(b"".join(batch_line(str(i)) + b"\n" for i in range(3))))
    return path, re.escape(
        f"{path} is gzip-compressed under a plain name: rename it in.jsonl.gz; nothing was sent"
    )


def _first_thousand_rows_bad(tmp: Path) -> tuple[Path, str]:
    path = tmp / "in.jsonl"
    bad = json.dumps({"model": "gpt-4o-mini", "prompt": "hello"}).encode()  # no messages
    path.write_bytes(b"\n".join([bad] * 1000 + [batch_line("late-good")]) + b"\n")
    problem = "the body has no 'messages' (required by /v1/chat/completions)"
    return path, re.escape(
        f"{path}: none of the first 1,000 rows can be sent (line 1: {problem}; line 2: "
        f"{problem}; line 3: {problem}); nothing was sent. Fix the rows, or check --endpoint "
        "(rows that name no url go to /v1/chat/completions)"
    )


_FILE_LEVEL: list[Any] = [
    _missing,
    _directory,
    _no_body_column,
    _body_of_wrong_type,
    _not_parquet,
    _empty,
    _blank_lines_only,
    _json_array,
    _pretty_json,
    _csv,
    _csv_named_jsonl,
    _parquet_named_jsonl,
    _gzip_named_jsonl,
    _first_thousand_rows_bad,
]
# Found by reading the whole file: before sending only with --check-ids-first.
_WHOLE_FILE: list[Any] = [_truncated_gzip, _duplicate_ids]
_CASES = [(make, False) for make in _FILE_LEVEL] + [(make, True) for make in _WHOLE_FILE]
_IDS = [f"{make.__name__}{'-check-ids-first' if first else ''}" for make, first in _CASES]


@pytest.mark.parametrize(("make", "first"), _CASES, ids=_IDS)
def test_file_level_problem_stops_before_sending_library(
    tmp_path: Path, server: MockServer, make: Callable[[Path], tuple[Path, str]], first: bool
) -> None:
    path, message = make(tmp_path)
    out = tmp_path / "out"
    before = chat_requests(server)
    with pytest.raises((batchrun.InputError, batchrun.CheckpointError)) as info:
        batchrun.run_sync(config(path, out, server.base_url, check_ids_first=first))
    assert re.fullmatch(message, str(info.value)), str(info.value)
    assert chat_requests(server) == before
    assert not out.exists()  # a refused input leaves no output directory behind


@pytest.mark.parametrize(("make", "first"), _CASES, ids=_IDS)
def test_file_level_problem_stops_before_sending_cli(
    tmp_path: Path, server: MockServer, make: Callable[[Path], tuple[Path, str]], first: bool
) -> None:
    path, message = make(tmp_path)
    out = tmp_path / "out"
    before = chat_requests(server)
    flags = ["--check-ids-first"] if first else []
    result = run_cli("run", path, "--out", out, "--base-url", server.base_url, "-q", *flags)
    assert result.returncode == 2, result.stderr
    assert re.fullmatch(f"batchrun: error: {message}\n", result.stderr), result.stderr
    assert result.stdout == ""
    assert chat_requests(server) == before
    assert not out.exists()


# ----------------------------------------------------- found by the first pass while sending


def test_repeated_custom_ids_become_bad_input_records_naming_the_first_row(
    tmp_path: Path, server: MockServer
) -> None:
    path, _ = _duplicate_ids(tmp_path)  # a, b, a, b, c, a
    out = tmp_path / "out"
    before = chat_requests(server)
    result = run_cli("run", path, "--out", out, "--base-url", server.base_url, "-q")
    assert result.returncode == 0, result.stderr
    assert chat_requests(server) - before == 3  # a, b and c, once each
    got = [(r["custom_id"], r["status"], r["error_message"]) for r in read_results(out)]
    repeat = (
        "line {}: custom_id {!r} is already used by row {} (custom_ids must be unique); not sent"
    )
    assert got == [
        ("a", "ok", None),
        ("b", "ok", None),
        ("a", "error", repeat.format(3, "a", 0)),
        ("b", "error", repeat.format(4, "b", 1)),
        ("c", "ok", None),
        ("a", "error", repeat.format(6, "a", 0)),
    ]
    assert "3 rows repeat a custom_id used on an earlier row" in result.stderr


def test_a_truncated_gzip_found_while_sending_stops_the_run_with_the_reason(
    tmp_path: Path, server: MockServer
) -> None:
    path, message = _truncated_gzip(tmp_path)
    out = tmp_path / "out"
    result = run_cli("run", path, "--out", out, "--base-url", server.base_url, "-q")
    assert result.returncode == 3, result.stderr
    [line] = [x for x in result.stdout.splitlines() if x.startswith("stopped early: ")]
    assert re.fullmatch("stopped early: " + message, line), line
    rows = [r["row"] for r in read_results(out)] if parts(out) else []
    assert rows == sorted(set(rows))  # whatever was sent before the stop: each row once
