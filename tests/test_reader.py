"""batchrun.inputs.reader: JSONL (plain, .gz, .zst) and Parquet rows, and every bad-input case."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchrun.common.ranges import RangeSet
from batchrun.inputs import parquet as parquet_mod
from batchrun.inputs.idtable import PENDING, Pending
from batchrun.inputs.reader import (
    DEFAULT_ENDPOINT,
    InputError,
    ParsedRow,
    iter_ids,
    iter_requests,
    iter_rows,
)
from batchrun.models import Request, RowError

CHAT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def batch_line(custom_id: Any, body: Any = None, **extra: Any) -> bytes:
    row = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions"}
    row["body"] = CHAT_BODY if body is None else body
    row.update(extra)
    return json.dumps(row).encode()


def write_lines(path: Path, lines: list[bytes], *, end: bytes = b"\n") -> Path:
    path.write_bytes(b"".join(line + end for line in lines))
    return path


def rows_of(path: Path, **kwargs: Any) -> list[ParsedRow | RowError]:
    return list(iter_rows(path, **kwargs))


def only_error(path: Path, line: bytes, **kwargs: Any) -> RowError:
    write_lines(path, [line])
    items = rows_of(path, **kwargs)
    assert len(items) == 1
    item = items[0]
    assert isinstance(item, RowError), item
    return item


# -------------------------------------------------------------------------------- good JSONL rows


def test_batch_api_lines(tmp_path: Path) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "héllo ✓"}],
        "max_tokens": 5,
    }
    path = write_lines(
        tmp_path / "in.jsonl",
        [batch_line("a", body), batch_line("b", body, url="/v1/responses")],
    )
    items = rows_of(path)
    assert [type(i) for i in items] == [ParsedRow, RowError]
    first = items[0]
    assert isinstance(first, ParsedRow)
    assert (first.row, first.custom_id, first.url, first.line) == (0, "a", DEFAULT_ENDPOINT, 1)
    assert first.body == body
    # The body is re-encoded compactly, non-ASCII kept as UTF-8.
    assert first.raw_body == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    assert "héllo ✓".encode() in first.raw_body
    # /v1/responses requires "input", which this body lacks.
    second = items[1]
    assert isinstance(second, RowError)
    assert second.custom_id == "b"
    assert second.message == "line 2: the body has no 'input' (required by /v1/responses)"


def test_bare_body_is_sent_byte_for_byte(tmp_path: Path) -> None:
    line = (
        b'{ "messages" :[{"role":"user","content":"caf\\u00e9 \xc3\xa9"}],'
        b'  "model":"m", "temperature": 1.0, "tools": [], "x_unknown": {"keep": null}}'
    )
    path = write_lines(tmp_path / "in.jsonl", [line, line])
    items = rows_of(path)
    assert len(items) == 2
    for row, item in enumerate(items):
        assert isinstance(item, ParsedRow)
        assert item.raw_body == line
        assert item.custom_id == str(row)
        assert item.url == DEFAULT_ENDPOINT
        assert item.body["x_unknown"] == {"keep": None}
        assert item.line == row + 1


def test_bare_body_uses_the_given_endpoint(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "in.jsonl",
        [b'{"model": "e", "input": "text"}', b'{"model": "e", "input": 7}'],
    )
    good, bad = rows_of(path, endpoint="/v1/embeddings")
    assert isinstance(good, ParsedRow)
    assert good.url == "/v1/embeddings"
    assert isinstance(bad, RowError)
    assert bad.message == "line 2: 'input' must be a non-empty string or array"
    # The same rows on the chat endpoint lack "messages".
    first = rows_of(path)[0]
    assert isinstance(first, RowError)
    assert "the body has no 'messages'" in first.message


def test_batch_line_without_custom_id_uses_row_number(tmp_path: Path) -> None:
    line = json.dumps({"url": "/v1/chat/completions", "body": CHAT_BODY}).encode()
    int_id = json.dumps({"custom_id": 42, "body": CHAT_BODY}).encode()
    path = write_lines(tmp_path / "in.jsonl", [b"", line, b"  ", line, int_id])
    items = rows_of(path)
    assert [(i.row, i.custom_id) for i in items] == [(0, "0"), (1, "1"), (2, "42")]
    assert [i.line for i in items] == [2, 4, 5]


def test_unknown_endpoint_is_passed_through_unchecked(tmp_path: Path) -> None:
    line = json.dumps({"custom_id": "x", "url": "/v1/moderations", "body": {"a": 1}}).encode()
    (item,) = rows_of(write_lines(tmp_path / "in.jsonl", [line]))
    assert isinstance(item, ParsedRow)
    assert item.url == "/v1/moderations"


def test_lone_surrogate_escape_in_body_is_kept_escaped(tmp_path: Path) -> None:
    line = b'{"custom_id": "a", "body": {"model": "m", "messages": [{"content": "x\\ud800y"}]}}'
    (item,) = rows_of(write_lines(tmp_path / "in.jsonl", [line]))
    assert isinstance(item, ParsedRow)
    assert b"\\ud800" in item.raw_body
    assert json.loads(item.raw_body) == item.body
    item.raw_body.decode("utf-8")  # valid UTF-8 on the wire


def test_blank_lines_are_skipped_and_not_rows(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "in.jsonl",
        [b"", batch_line("a"), b"   ", b"\t", batch_line("b"), b"", b""],
    )
    items = rows_of(path)
    assert [(i.row, i.custom_id, i.line) for i in items] == [(0, "a", 2), (1, "b", 5)]
    assert list(iter_ids(path)) == [(0, "a"), (1, "b")]


def test_utf8_bom_is_ignored(tmp_path: Path) -> None:
    bare = b'{"model":"m","messages":[{"role":"user","content":"x"}]}'
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + bare + b"\n" + batch_line("b") + b"\n")
    first, second = rows_of(path)
    assert isinstance(first, ParsedRow)
    assert first.raw_body == bare  # no BOM sent
    assert isinstance(second, ParsedRow)
    assert list(iter_ids(path)) == [(0, "0"), (1, "b")]


def test_bom_alone_on_first_line_is_blank(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\xef\xbb\xbf\n" + batch_line("a") + b"\n")
    assert [(i.row, i.custom_id) for i in rows_of(path)] == [(0, "a")]


def test_crlf_line_ends(tmp_path: Path) -> None:
    bare = b'{"model":"m","messages":[{"role":"user","content":"x"}]}'
    path = write_lines(tmp_path / "in.jsonl", [bare, b"", batch_line("b")], end=b"\r\n")
    first, second = rows_of(path)
    assert isinstance(first, ParsedRow)
    assert first.raw_body == bare  # no \r sent
    assert isinstance(second, ParsedRow)
    assert second.custom_id == "b"
    assert second.line == 3
    assert list(iter_ids(path)) == [(0, "0"), (1, "b")]


def test_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(batch_line("a") + b"\n" + batch_line("b"))
    assert [i.custom_id for i in rows_of(path)] == ["a", "b"]


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst", ".JSONL.GZ", ".jsonl.zstd"])
def test_compressed_jsonl(tmp_path: Path, suffix: str) -> None:
    lines = [batch_line(f"id-{i}") for i in range(500)] + [b"", b"{bad"]
    plain = write_lines(tmp_path / "plain.jsonl", lines)
    data = plain.read_bytes()
    compressed = tmp_path / f"in{suffix}"
    if "gz" in suffix.lower():
        compressed.write_bytes(gzip.compress(data))
    else:
        compressed.write_bytes(zstandard.ZstdCompressor().compress(data))
    assert rows_of(compressed) == rows_of(plain)
    assert list(iter_ids(compressed)) == list(iter_ids(plain))
    assert len(rows_of(compressed)) == 501


def test_zstd_with_several_frames(tmp_path: Path) -> None:
    cctx = zstandard.ZstdCompressor()
    path = tmp_path / "in.jsonl.zst"
    path.write_bytes(
        cctx.compress(batch_line("a") + b"\n") + cctx.compress(batch_line("b") + b"\n")
    )
    assert [i.custom_id for i in rows_of(path)] == ["a", "b"]


def _big_jsonl(n: int) -> bytes:
    return b"".join(batch_line(f"id-{i}-{i * 7919 % 10007}") + b"\n" for i in range(n))


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_truncated_compressed_file_is_an_input_error_not_fewer_rows(
    tmp_path: Path, kind: str
) -> None:
    data = _big_jsonl(3000)
    packed = gzip.compress(data) if kind == "gz" else zstandard.ZstdCompressor().compress(data)
    path = tmp_path / f"in.jsonl.{kind}"
    path.write_bytes(packed[: len(packed) * 2 // 3])
    with pytest.raises(InputError, match="cannot read"):
        rows_of(path)
    with pytest.raises(InputError, match="cannot read"):
        list(iter_ids(path))


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_corrupt_compressed_file_is_an_input_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"in.jsonl.{kind}"
    if kind == "gz":
        packed = bytearray(gzip.compress(_big_jsonl(300)))
        packed[30:60] = b"\xff" * 30
        path.write_bytes(bytes(packed))
    else:
        path.write_bytes(b"this is not zstd data\n")
    with pytest.raises(InputError, match="cannot read"):
        rows_of(path)
    with pytest.raises(InputError, match="cannot read"):
        list(iter_ids(path))


# -------------------------------------------------------------------------------------- skipping


def test_skip_passes_over_done_rows_and_keeps_row_numbers(tmp_path: Path) -> None:
    lines = [batch_line(f"id-{i}") for i in range(10)]
    lines[3] = b"{not json"  # done already: never parsed, so no error
    lines.insert(5, b"")  # a blank line does not shift the row numbers
    path = write_lines(tmp_path / "in.jsonl", lines)
    items = rows_of(path, skip=RangeSet([(0, 2), (3, 4), (8, 10)]))
    assert [(i.row, i.custom_id) for i in items] == [
        (2, "id-2"),
        (4, "id-4"),
        (5, "id-5"),
        (6, "id-6"),
        (7, "id-7"),
    ]
    assert all(isinstance(i, ParsedRow) for i in items)
    assert rows_of(path, skip=RangeSet([(0, 10)])) == []


# ------------------------------------------------------------------------------- bad JSONL rows


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"model": ', "line 1: invalid JSON: Expecting value at column 10"),
        (b'{"a": 1,}', "line 1: invalid JSON: Expecting property name enclosed in double quotes"),
        (b"[1, 2]", "line 1: expected a JSON object, got an array"),
        (b'"text"', "line 1: expected a JSON object, got a string"),
        (b"5", "line 1: expected a JSON object, got a number"),
        (b"null", "line 1: expected a JSON object, got null"),
        (b"true", "line 1: expected a JSON object, got a boolean"),
        (
            b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}',
            "line 1: the row has no 'body'",
        ),
        (b'{"custom_id": "a", "body": null}', "line 1: the row has no 'body'"),
        (b'{"custom_id": "a", "body": [1]}', "line 1: 'body' must be a JSON object, got an array"),
        (
            b'{"model": "m"}',
            "line 1: the body has no 'messages' (required by /v1/chat/completions)",
        ),
        (b'{"model": "m", "messages": []}', "line 1: 'messages' must be a non-empty array"),
        (b'{"model": "m", "messages": "hi"}', "line 1: 'messages' must be a non-empty array"),
        (
            b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}',
            "line 1: 'model' must be a string, got a number",
        ),
        (
            b'{"model": "m", "messages": [1], "max_tokens": -1}',
            "line 1: 'max_tokens' must be a non-negative integer, got -1",
        ),
        (
            b'{"model": "m", "messages": [1], "max_tokens": "5"}',
            "line 1: 'max_tokens' must be a non-negative integer, got '5'",
        ),
        (
            b'{"model": "m", "messages": [1], "max_completion_tokens": 1.5}',
            "line 1: 'max_completion_tokens' must be a non-negative integer, got 1.5",
        ),
        (
            b'{"model": "m", "messages": [1], "n": true}',
            "line 1: 'n' must be a non-negative integer, got True",
        ),
        (
            b'{"custom_id": {"a": 1}, "body": {"model": "m", "messages": [1]}}',
            "line 1: 'custom_id' must be a non-empty string, got an object",
        ),
        (
            b'{"custom_id": "", "body": {"model": "m", "messages": [1]}}',
            "line 1: 'custom_id' must be a non-empty string, got an empty string",
        ),
        (
            b'{"custom_id": true, "body": {"model": "m", "messages": [1]}}',
            "line 1: 'custom_id' must be a non-empty string, got a boolean",
        ),
        (
            b'{"custom_id": "a", "url": "chat/completions", "body": {"messages": [1]}}',
            "line 1: 'url' must be a path such as \"/v1/chat/completions\", got 'chat/completions'",
        ),
        (
            b'{"custom_id": "a", "url": "https://api.openai.com/v1/chat/completions", '
            b'"body": {"messages": [1]}}',
            "line 1: 'url' must be a path such as \"/v1/chat/completions\", "
            "got 'https://api.openai.com/v1/chat/completions'",
        ),
        (
            b'{"custom_id": "a", "method": "GET", "url": "/v1/chat/completions", '
            b'"body": {"messages": [1]}}',
            "line 1: 'method' must be \"POST\", got 'GET'",
        ),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "\xff"}]}',
            "line 1: not valid UTF-8 (byte 57)",
        ),
        (
            b'{"custom_id": "\\ud800", "body": {"model": "m", "messages": [1]}}',
            "line 1: 'custom_id' is not valid Unicode: a lone surrogate at character 0",
        ),
        (
            b'{"model": "x\\udfff", "messages": [1]}',
            "line 1: 'model' is not valid Unicode: a lone surrogate at character 1",
        ),
    ],
)
def test_bad_row_message(tmp_path: Path, line: bytes, message: str) -> None:
    error = only_error(tmp_path / "in.jsonl", line)
    assert error.message.startswith(message), error.message
    assert (error.row, error.line) == (0, 1)


def test_bad_row_keeps_its_custom_id_when_known(tmp_path: Path) -> None:
    error = only_error(tmp_path / "in.jsonl", batch_line("mine", method="GET"))
    assert error.custom_id == "mine"
    error = only_error(tmp_path / "in.jsonl", b"{not json")
    assert error.custom_id == "0"


def test_json_python_refuses_is_a_row_error_not_a_crash(tmp_path: Path) -> None:
    huge_int = b'{"model": "m", "messages": [1], "seed": ' + b"9" * 5000 + b"}"
    too_deep = b'{"model": "m", "messages": [1], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = write_lines(tmp_path / "in.jsonl", [huge_int, too_deep, batch_line("ok")])
    first, second, third = rows_of(path)
    assert isinstance(first, RowError)
    assert first.message.startswith("line 1: unreadable JSON: Exceeds the limit")
    assert isinstance(second, RowError)
    assert second.message.startswith("line 2: unreadable JSON: maximum recursion depth")
    assert isinstance(third, ParsedRow)
    assert [r for r, _ in iter_ids(path)] == [0, 1, 2]


def test_row_over_max_row_bytes(tmp_path: Path) -> None:
    small = b'{"model":"m","messages":[1]}'
    big = b'{"model":"m","messages":["' + b"x" * 200 + b'"]}'
    path = write_lines(tmp_path / "in.jsonl", [small, big])
    ok, error = rows_of(path, max_row_bytes=100)
    assert isinstance(ok, ParsedRow)
    assert isinstance(error, RowError)
    assert error.message == (
        f"line 2: the row is {len(big):,} bytes, over the limit of 100 bytes (--max-row-bytes)"
    )
    assert (error.row, error.custom_id, error.line) == (1, "1", 2)


def test_row_over_max_row_bytes_keeps_its_custom_id(tmp_path: Path) -> None:
    # The duplicate check (iter_ids) saw "big-one" for this row: its error record must carry the
    # same id, or the row's own id is missing from the results (and "1" could collide).
    big = batch_line("big-one", body={"model": "m", "messages": ["x" * 200]})
    path = write_lines(
        tmp_path / "in.jsonl", [batch_line("a"), big, b'{"custom_id": 5, "x": ' + b"1" * 200 + b"}"]
    )
    _, error, other = rows_of(path, max_row_bytes=100)
    assert isinstance(error, RowError) and isinstance(other, RowError)
    assert (error.row, error.custom_id) == (1, "big-one")
    assert error.message.startswith("line 2: the row is ")
    assert other.custom_id == "5"
    assert list(iter_ids(path)) == [(0, "a"), (1, "big-one"), (2, "5")]


def test_row_errors_do_not_stop_the_stream(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "in.jsonl",
        [batch_line("a"), b"{bad", b"[]", b"\xff\xfe", batch_line("e")],
    )
    items = rows_of(path)
    assert [type(i).__name__ for i in items] == [
        "ParsedRow",
        "RowError",
        "RowError",
        "RowError",
        "ParsedRow",
    ]
    assert [i.row for i in items] == [0, 1, 2, 3, 4]
    assert [i.line for i in items] == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------- whole-file errors


def test_empty_file_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"")
    assert rows_of(path) == []
    assert list(iter_ids(path)) == []
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(b"\n\n  \n")
    assert rows_of(blank) == []


@pytest.mark.parametrize("name", ["missing.jsonl", "missing.jsonl.gz", "missing.parquet"])
def test_missing_file_is_an_input_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError, match="input file not found"):
        rows_of(tmp_path / name)
    with pytest.raises(InputError, match="input file not found"):
        list(iter_ids(tmp_path / name))


def test_directory_is_an_input_error(tmp_path: Path) -> None:
    folder = tmp_path / "data.jsonl"
    folder.mkdir()
    with pytest.raises(InputError, match="input is a directory, not a file"):
        rows_of(folder)
    pq_folder = tmp_path / "data.parquet"
    pq_folder.mkdir()
    with pytest.raises(InputError, match="is not a readable Parquet file"):
        rows_of(pq_folder)


def test_not_parquet_named_parquet(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    path.write_bytes(batch_line("a") + b"\n")
    with pytest.raises(InputError, match=r"in\.parquet is not a readable Parquet file"):
        rows_of(path)
    with pytest.raises(InputError, match="is not a readable Parquet file"):
        list(iter_ids(path))


def test_parquet_without_body_column_names_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"custom_id": ["a"], "prompt": ["hi"]}), path)
    with pytest.raises(InputError) as info:
        rows_of(path)
    message = str(info.value)
    assert "has no 'body' column (columns: custom_id, prompt)" in message


def test_parquet_body_of_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"body": [1, 2]}), path)
    with pytest.raises(InputError, match="the 'body' column is int64"):
        rows_of(path)


# --------------------------------------------------------------------------------------- Parquet


def test_parquet_json_string_body(tmp_path: Path) -> None:
    bodies = [
        '{"model": "m",  "messages": [{"role": "user", "content": "hé"}]}',
        None,
        "{not json",
        "[1]",
        '{"model": "m"}',
    ]
    path = tmp_path / "in.parquet"
    pq.write_table(
        pa.table({"custom_id": ["a", "b", "c", "d", "e"], "body": bodies}),
        path,
    )
    items = rows_of(path)
    assert len(items) == 5
    ok = items[0]
    assert isinstance(ok, ParsedRow)
    assert ok.raw_body == str(bodies[0]).encode()  # sent as it stands
    assert (ok.row, ok.custom_id, ok.url, ok.line) == (0, "a", DEFAULT_ENDPOINT, None)
    messages = [i.message if isinstance(i, RowError) else None for i in items]
    assert messages[1:] == [
        "row 1: the 'body' is empty",
        "row 2: 'body' is not valid JSON: Expecting property name enclosed in double quotes "
        "at column 2",
        "row 3: 'body' must be a JSON object, got an array",
        "row 4: the body has no 'messages' (required by /v1/chat/completions)",
    ]
    assert [i.custom_id for i in items] == ["a", "b", "c", "d", "e"]
    assert all(i.line is None for i in items)


def test_parquet_struct_body_drops_nulls(tmp_path: Path) -> None:
    bodies = [
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x", "name": "ann"}],
            "max_tokens": 5,
        },
        {"model": "m", "messages": [{"role": "user", "content": "y"}]},
    ]
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"body": bodies}), path)
    first, second = rows_of(path)
    assert isinstance(first, ParsedRow)
    assert isinstance(second, ParsedRow)
    assert first.body == bodies[0]
    # The struct column gave row 1 a null max_tokens and a null name: neither is sent.
    assert second.body == {"model": "m", "messages": [{"role": "user", "content": "y"}]}
    assert json.loads(second.raw_body) == second.body
    assert b"null" not in second.raw_body
    assert (first.custom_id, second.custom_id) == ("0", "1")


def test_parquet_struct_body_with_a_non_json_field_is_a_row_error(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "blob": b"\x00"}
    pq.write_table(pa.table({"body": [body]}), path)
    (item,) = rows_of(path)
    assert isinstance(item, RowError)
    assert item.message.startswith("row 0: the 'body' struct holds a value JSON cannot carry")


def test_parquet_custom_id_and_url_columns(tmp_path: Path) -> None:
    body = json.dumps(CHAT_BODY)
    emb = json.dumps({"model": "e", "input": "x"})
    path = tmp_path / "in.parquet"
    pq.write_table(
        pa.table(
            {
                "custom_id": [7, None, 9],
                "url": [None, "/v1/embeddings", "embeddings"],
                "body": [body, emb, emb],
            }
        ),
        path,
    )
    first, second, third = rows_of(path)
    assert isinstance(first, ParsedRow)
    assert (first.custom_id, first.url) == ("7", DEFAULT_ENDPOINT)
    assert isinstance(second, ParsedRow)
    assert (second.custom_id, second.url) == ("1", "/v1/embeddings")
    assert isinstance(third, RowError)
    assert third.custom_id == "9"
    assert "'url' must be a path" in third.message
    assert list(iter_ids(path)) == [(0, "7"), (1, "1"), (2, "9")]


def test_parquet_without_custom_id_uses_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"body": [json.dumps(CHAT_BODY)] * 3}), path)
    assert [i.custom_id for i in rows_of(path)] == ["0", "1", "2"]
    assert list(iter_ids(path)) == [(0, "0"), (1, "1"), (2, "2")]


def test_parquet_skip_across_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parquet_mod, "_PARQUET_BATCH_ROWS", 4)
    n = 20
    path = tmp_path / "in.parquet"
    bodies = [json.dumps(CHAT_BODY)] * n
    bodies[5] = "{broken"  # skipped, so never parsed
    pq.write_table(
        pa.table({"custom_id": [f"id-{i}" for i in range(n)], "body": bodies}),
        path,
        row_group_size=6,
    )
    skip = RangeSet([(0, 9), (13, 14), (16, 20)])
    items = rows_of(path, skip=skip)
    assert [(i.row, i.custom_id) for i in items] == [
        (r, f"id-{r}") for r in range(n) if r not in skip
    ]
    assert all(isinstance(i, ParsedRow) for i in items)
    assert len(rows_of(path)) == n


# ----------------------------------------------------------------------------------- requests


def test_iter_requests_builds_requests(tmp_path: Path) -> None:
    chat = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "x" * 400}],
        "max_tokens": 50,
        "n": 2,
    }
    path = write_lines(
        tmp_path / "in.jsonl",
        [
            batch_line("c", chat),
            json.dumps(
                {"custom_id": "e", "url": "/v1/embeddings", "body": {"model": 3, "input": "x"}}
            ).encode(),
            json.dumps(
                {"custom_id": "f", "url": "/v1/embeddings", "body": {"input": "y" * 40}}
            ).encode(),
        ],
    )
    first, second, third = iter_requests(path)
    assert isinstance(first, Request)
    assert first.custom_id == "c"
    assert first.model == "gpt-4o"
    assert json.loads(first.body) == chat
    assert first.max_output_tokens == 100 and first.output_limited
    assert first.prompt_tokens_estimate >= 100
    assert first.token_charge == first.prompt_tokens_estimate + 100
    assert isinstance(second, RowError)
    assert second.custom_id == "e"
    assert isinstance(third, Request)
    assert third.model is None
    assert third.max_output_tokens == 0 and third.output_limited
    assert third.prompt_tokens_estimate == 10


def test_a_row_without_an_output_limit_says_so(tmp_path: Path) -> None:
    # The limiter charges 256 output tokens for it; that is an assumption, not a bound.
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "go on"}]}
    path = write_lines(tmp_path / "in.jsonl", [batch_line("c", chat)])
    (request,) = iter_requests(path)
    assert isinstance(request, Request)
    assert request.max_output_tokens == 256 and not request.output_limited


def test_iter_requests_honours_skip(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [batch_line(f"id-{i}") for i in range(5)])
    got = [r.row for r in iter_requests(path, skip=RangeSet([(1, 3)]))]
    assert got == [0, 3, 4]


class _ScriptedJudge:
    """A judge that knows rows below `known_below` (ids as a dict), and notes what it saw."""

    def __init__(self, known_below: int, *, seen_below: int = 0) -> None:
        self.known_below = known_below
        self._seen_below = seen_below
        self.first: dict[str, int] = {}
        self.asked: list[int] = []
        self.seen_rows: list[tuple[int, str]] = []

    def verdict(self, row: int, custom_id: str) -> int | Pending | None:
        self.asked.append(row)
        if row >= self.known_below:
            return PENDING
        earlier = self.first.setdefault(custom_id, row)
        return None if earlier == row else earlier

    def seen_below(self) -> int:
        return self._seen_below

    def seen(self, row: int, custom_id: str) -> None:
        self.seen_rows.append((row, custom_id))
        self.first.setdefault(custom_id, row)


def test_a_judged_repeat_becomes_a_bad_input_error_naming_the_first_row(tmp_path: Path) -> None:
    lines = [batch_line("a"), batch_line("b"), b"", batch_line("a"), b"{broken", batch_line("3")]
    path = write_lines(tmp_path / "in.jsonl", lines)
    got = list(iter_requests(path, judge=_ScriptedJudge(99)))
    assert [type(g).__name__ for g in got] == [
        "Request",
        "Request",
        "RowError",
        "RowError",
        "RowError",
    ]
    assert got[2] == RowError(
        row=2, custom_id="a", line=4,
        message="line 4: custom_id 'a' is already used by row 0 (custom_ids must be unique); "
        "not sent",
    )  # fmt: skip
    # A bad row keeps its own reason; its id (its row number here) still counts.
    assert isinstance(got[3], RowError) and got[3].custom_id == "3"
    assert got[4] == RowError(
        row=4, custom_id="3", line=6,
        message="line 6: custom_id '3' is already used by row 3 (custom_ids must be unique); "
        "not sent",
    )  # fmt: skip


def test_a_repeat_in_parquet_names_rows(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    bodies = [json.dumps(CHAT_BODY)] * 3
    pq.write_table(pa.table({"custom_id": ["x", "y", "x"], "body": bodies}), path)
    got = list(iter_requests(path, judge=_ScriptedJudge(99)))
    assert isinstance(got[2], RowError)
    assert got[2].message == (
        "row 2: custom_id 'x' is already used by row 0 (custom_ids must be unique); not sent"
    )


def test_nothing_past_an_unjudged_row_is_handed_out(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [batch_line(f"id-{i}") for i in range(6)])
    judge = _ScriptedJudge(3)
    rows = iter_requests(path, judge=judge)
    assert [next(rows).row for _ in range(3)] == [0, 1, 2]
    assert next(rows) is PENDING
    assert next(rows) is PENDING  # asked again, still not known
    judge.known_below = 99
    assert [r.row for r in rows] == [3, 4, 5]  # type: ignore[union-attr]
    assert judge.asked == [0, 1, 2, 3, 3, 3, 4, 5]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_skipped_rows_are_seen_by_the_judge_below_its_mark(tmp_path: Path, fmt: str) -> None:
    ids = [f"id-{i}" for i in range(8)]
    ids[6] = "id-1"  # repeats a row that is done (skipped): only `seen` can tell
    if fmt == "jsonl":
        path = write_lines(tmp_path / "in.jsonl", [batch_line(cid) for cid in ids])
    else:
        path = tmp_path / "in.parquet"
        bodies = [json.dumps(CHAT_BODY)] * len(ids)
        pq.write_table(pa.table({"custom_id": ids, "body": bodies}), path)
    judge = _ScriptedJudge(99, seen_below=5)
    got = list(iter_requests(path, skip=RangeSet([(0, 3), (5, 6)]), judge=judge))
    assert judge.seen_rows == [(0, "id-0"), (1, "id-1"), (2, "id-2")]  # row 5: past the mark
    assert [g.row for g in got] == [3, 4, 6, 7]
    assert isinstance(got[2], RowError) and "already used by row 1" in got[2].message


def test_sample_files_read_cleanly() -> None:
    samples = Path(__file__).resolve().parent.parent / "samples"
    jsonl = list(iter_rows(samples / "requests.jsonl"))
    parquet = list(iter_rows(samples / "requests.parquet"))
    assert len(jsonl) == len(parquet) == 300
    assert all(isinstance(i, ParsedRow) for i in jsonl + parquet)
    assert [i.custom_id for i in jsonl] == [f"req-{i:04d}" for i in range(1, 301)]
    assert [i.custom_id for i in parquet] == [i.custom_id for i in jsonl]
    assert [i.body for i in parquet] == [i.body for i in jsonl]  # type: ignore[union-attr]


# -------------------------------------------------------------------------------------- fuzzing

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
_field_values = _json_values | st.sampled_from(["/v1/chat/completions", "POST", "GET", "", "m"])
_rowish = st.fixed_dictionaries(
    {},
    optional={
        "custom_id": _field_values,
        "method": _field_values,
        "url": _field_values,
        "body": _json_values
        | st.fixed_dictionaries(
            {"messages": _json_values},
            optional={"model": _field_values, "max_tokens": _json_values, "n": _json_values},
        ),
        "model": _field_values,
        "messages": _json_values,
    },
)
_line = (
    st.binary(max_size=60)
    | _rowish.map(lambda d: json.dumps(d).encode())
    | _json_values.map(lambda v: json.dumps(v).encode())
    | st.sampled_from([b"", b" ", b"\r", b"\xef\xbb\xbf", b"\xef\xbb\xbf{}", b"\t\r "])
).map(lambda b: b.replace(b"\n", b""))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(_line, max_size=12))
def test_fuzz_reader_never_crashes(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes]
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "in.jsonl"
    path.write_bytes(b"\n".join(lines))
    expected_lines = [
        n
        for n, line in enumerate(lines, start=1)
        if (line[3:] if n == 1 and line.startswith(b"\xef\xbb\xbf") else line).strip()
    ]
    items = rows_of(path)
    assert all(isinstance(i, (ParsedRow, RowError)) for i in items)
    assert [i.line for i in items] == expected_lines
    assert [i.row for i in items] == list(range(len(expected_lines)))
    # The cheap id pass agrees with the full read on every row's id.
    assert list(iter_ids(path)) == [(i.row, i.custom_id) for i in items]
    assert len(list(iter_requests(path))) == len(items)
