"""Export files: atomic placement, the three table formats, the OpenAI Batch output lines."""

from __future__ import annotations

import csv
import datetime
import decimal
import io
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun.store.exportfiles import (
    BatchOutputSink,
    ExportExistsError,
    ExportFile,
    batch_request_id,
    table_sink,
)

TABLE = pa.table(
    {
        "row": pa.array([0, 1, 2], pa.int64()),
        "text": ['say "hi", twice', "line one\nline two", None],
        "tags": [["a", "b"], [], None],
        "meta": [{"k": 1}, {"k": None}, None],
        "blob": pa.array([b"\xff\x00", None, b"ok"], pa.binary()),
        "when": [datetime.datetime(2026, 1, 2, 3, 4, 5), None, None],
        "price": pa.array([decimal.Decimal("1.50"), None, None], pa.decimal128(5, 2)),
        "score": [1.5, float("nan"), float("inf")],
    }
)


def write(fmt: str, path: Path, tables: list[pa.Table]) -> None:
    with ExportFile(path, force=False) as target:
        sink = table_sink(fmt, target.tmp, tables[0].schema)
        for table in tables:
            sink.write(table)
        sink.close()
        target.commit()


def test_parquet_keeps_the_types_and_gathers_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write("parquet", path, [TABLE.slice(i, 1) for i in range(3)])
    back = pq.read_table(path)
    assert back.schema == TABLE.schema
    assert back.to_pylist()[:1] == TABLE.to_pylist()[:1]
    assert pq.ParquetFile(path).metadata.num_row_groups == 1  # not one per write


def test_csv_quotes_text_and_writes_nested_values_as_json(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write("csv", path, [TABLE])
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert [r["text"] for r in rows] == ['say "hi", twice', "line one\nline two", ""]
    assert [r["tags"] for r in rows] == ['["a","b"]', "[]", ""]
    assert rows[0]["meta"] == '{"k":1}' and rows[1]["meta"] == '{"k":null}'
    assert rows[0]["blob"] == "/wA=" and rows[2]["blob"] == "b2s="  # base64: bytes are not text
    assert rows[0]["price"] == "1.50"


def test_jsonl_is_one_valid_json_object_per_row(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write("jsonl", path, [TABLE])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    rows = [json.loads(line) for line in lines]  # NaN would be invalid JSON: written as null
    assert list(rows[0]) == TABLE.schema.names
    assert rows[0]["text"] == 'say "hi", twice' and rows[1]["text"] == "line one\nline two"
    assert rows[0]["when"] == "2026-01-02T03:04:05"
    assert rows[0]["price"] == "1.50" and rows[0]["blob"] == "/wA="
    assert rows[0]["meta"] == {"k": 1} and rows[0]["tags"] == ["a", "b"]
    assert [r["score"] for r in rows] == [1.5, None, None]


def test_an_existing_file_is_refused_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("precious")
    with pytest.raises(ExportExistsError, match=r"t.csv exists; add --force"):
        write("csv", path, [TABLE])
    assert path.read_text() == "precious"
    with ExportFile(path, force=True) as target:
        sink = table_sink("csv", target.tmp, TABLE.schema)
        sink.write(TABLE)
        sink.close()
        target.commit()
    assert path.read_text().startswith('"row"')


def test_a_file_not_committed_is_never_in_place_and_its_temporary_is_removed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.jsonl"
    with pytest.raises(OSError, match="No space left"), ExportFile(path, force=False) as target:
        sink = table_sink("jsonl", target.tmp, TABLE.schema)
        sink.write(TABLE)
        sink.close()
        assert target.tmp.exists() and target.tmp.name.startswith(".")
        raise OSError(28, "No space left on device")
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_a_temporary_file_left_by_a_killed_export_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    (tmp_path / ".t.csv.batchrun-tmp").write_text("half")
    write("csv", path, [TABLE])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


RESPONSE = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
}
ERROR_BODY = {"error": {"message": "bad model", "type": "invalid_request_error", "code": None}}


def batch_lines(tmp_path: Path, rows: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    schema = pa.schema(
        [
            ("row", pa.int64()),
            ("custom_id", pa.string()),
            ("status", pa.string()),
            ("http_status", pa.int32()),
            ("response", pa.string()),
            ("error_type", pa.string()),
            ("error_message", pa.string()),
        ]
    )
    sink = BatchOutputSink(tmp_path / "out.jsonl", tmp_path / "err.jsonl", seed="s")
    sink.write(pa.Table.from_pylist(rows, schema=schema))
    sink.close()
    out = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    err = (tmp_path / "err.jsonl").read_text(encoding="utf-8").splitlines()
    assert (sink.ok_lines, sink.error_lines) == (len(out), len(err))
    return [json.loads(line) for line in out], [json.loads(line) for line in err]


def test_batch_lines_for_every_kind_of_record(tmp_path: Path) -> None:
    base = {"http_status": None, "response": None, "error_type": None, "error_message": None}
    out, err = batch_lines(
        tmp_path,
        [
            {**base, "row": 0, "custom_id": "a", "status": "ok", "http_status": 200,
             "response": json.dumps(RESPONSE)},
            {**base, "row": 1, "custom_id": "b\"q", "status": "ok", "http_status": 200,
             "response": json.dumps(RESPONSE, indent=2)},  # a server that pretty-prints
            {**base, "row": 2, "custom_id": "c", "status": "error", "http_status": 400,
             "response": json.dumps(ERROR_BODY), "error_type": "invalid_request",
             "error_message": "HTTP 400: bad model"},
            {**base, "row": 3, "custom_id": "d", "status": "error", "http_status": 502,
             "response": "<html>502 Bad Gateway</html>", "error_type": "server_error",
             "error_message": "HTTP 502 (not JSON)"},
            {**base, "row": 4, "custom_id": "e", "status": "error", "error_type": "timeout",
             "error_message": "no response in time"},
        ],
    )  # fmt: skip
    assert out == [
        {"id": batch_request_id("s", 0), "custom_id": "a",
         "response": {"status_code": 200, "request_id": None, "body": RESPONSE}, "error": None},
        {"id": batch_request_id("s", 1), "custom_id": 'b"q',
         "response": {"status_code": 200, "request_id": None, "body": RESPONSE}, "error": None},
    ]  # fmt: skip
    assert err == [
        {"id": batch_request_id("s", 2), "custom_id": "c",
         "response": {"status_code": 400, "request_id": None, "body": ERROR_BODY},
         "error": {"code": "invalid_request", "message": "HTTP 400: bad model"}},
        {"id": batch_request_id("s", 3), "custom_id": "d",
         "response": {"status_code": 502, "request_id": None, "body": None},
         "error": {"code": "server_error", "message": "HTTP 502 (not JSON)"}},
        {"id": batch_request_id("s", 4), "custom_id": "e", "response": None,
         "error": {"code": "timeout", "message": "no response in time"}},
    ]  # fmt: skip


def test_batch_request_ids_are_stable_and_distinct() -> None:
    ids = [batch_request_id("seed", row) for row in range(1000)]
    assert all(re.fullmatch(r"batch_req_[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == 1000
    assert ids[7] == batch_request_id("seed", 7) != batch_request_id("other", 7)
