"""The input's own columns in row order (what an export joins the results to)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun.inputs.columns import input_columns, prompt_text
from batchrun.inputs.reader import InputError, iter_ids
from batchrun.inputs.template import shortcut_template
from tests.helpers import chat_rows, write_jsonl
from tests.test_tables import TRICKY, write_csv


def read_all(path: Path, *, records: bool, chunk_rows: int = 3) -> tuple[pa.Schema, list[Any]]:
    columns = input_columns(path, records=records, chunk_rows=chunk_rows)
    chunks = list(columns.chunks())
    starts = [chunk.start for chunk in chunks]
    stops = [chunk.stop for chunk in chunks]
    assert starts == [0, *stops[:-1]], "chunks must be consecutive"
    assert all(chunk.table.schema == columns.schema for chunk in chunks)
    rows = [row for chunk in chunks for row in chunk.table.to_pylist()]
    return columns.schema, rows


def test_csv_records_keep_every_column_as_text_with_rows_in_order(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "q.csv",
        ["qid", "question", "n"],
        [[f"q{i}", text, "00123" if i == 0 else ""] for i, text in enumerate(TRICKY)],
    )
    schema, rows = read_all(path, records=True)
    assert schema.names == ["qid", "question", "n"]
    assert all(field.type == pa.string() for field in schema)
    assert [r["question"] for r in rows] == TRICKY
    assert [r["qid"] for r in rows] == [f"q{i}" for i in range(len(TRICKY))]
    assert [r["n"] for r in rows] == ["00123", None, None, None, None]  # no types guessed


def test_a_csv_record_that_cannot_be_read_is_a_row_of_nulls_in_its_place(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("qid,question\nq0,a\nq1,b,extra\n\nq2,c\n", encoding="utf-8")
    _, rows = read_all(path, records=True)
    assert rows == [
        {"qid": "q0", "question": "a"},
        {"qid": None, "question": None},  # wrong number of fields: a bad_input row of the run
        {"qid": "q2", "question": "c"},  # the blank line is not a record
    ]


def test_tsv_and_compressed_csv(tmp_path: Path) -> None:
    tsv = write_csv(tmp_path / "q.tsv", ["a", "b"], [["1", "x,y"]], delimiter="\t")
    assert read_all(tsv, records=True)[1] == [{"a": "1", "b": "x,y"}]
    gz = tmp_path / "q.csv.gz"
    gz.write_bytes(gzip.compress(b"a,b\n1,2\n"))
    assert read_all(gz, records=True)[1] == [{"a": "1", "b": "2"}]


def test_jsonl_records_are_typed_from_a_first_pass(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {"id": 1, "q": "first", "score": 1, "ok": True, "tags": ["a"], "mixed": "x"},
            '{"id": 2, "q": "second", "score": 2.5}',
            "not json",
            {"id": 3, "extra": None, "ok": False, "tags": {"k": 1}, "mixed": 7},
        ],
    )
    schema, rows = read_all(path, records=True)
    assert schema.names == ["id", "q", "score", "ok", "tags", "mixed", "extra"]
    types = {field.name: field.type for field in schema}
    assert types == {
        "id": pa.int64(),
        "q": pa.string(),
        "score": pa.float64(),
        "ok": pa.bool_(),
        "tags": pa.string(),  # arrays and objects: JSON text
        "mixed": pa.string(),  # strings as they are, other values as JSON
        "extra": pa.string(),  # only nulls
    }
    assert rows[0] == {
        "id": 1, "q": "first", "score": 1.0, "ok": True, "tags": '["a"]', "mixed": "x",
        "extra": None,
    }  # fmt: skip
    assert rows[1]["score"] == 2.5 and rows[1]["ok"] is None
    assert set(rows[2].values()) == {None}  # invalid JSON: the row is there, all null
    assert rows[3]["tags"] == '{"k": 1}' and rows[3]["mixed"] == "7"


def test_parquet_records_keep_their_types_and_nested_values(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": pa.array([10, 11, 12], pa.int32()),
            "doc": ["a", None, "c"],
            "meta": [{"k": 1}, {"k": 2}, None],
            "vec": [[1.0, 2.0], [], None],
        }
    )
    path = tmp_path / "docs.parquet"
    pq.write_table(table, path, row_group_size=2)
    schema, rows = read_all(path, records=True, chunk_rows=2)
    assert schema == table.schema
    assert rows == table.to_pylist()


def test_request_lines_give_the_model_and_the_last_user_message(tmp_path: Path) -> None:
    lines: list[Any] = chat_rows(2)
    lines[1]["body"]["messages"] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url"}]},
    ]
    lines.append({"model": "m", "messages": [{"role": "user", "content": "bare body"}]})
    lines.append("{broken")
    lines.append({"custom_id": "e", "url": "/v1/embeddings", "body": {"input": ["a", "b"]}})
    path = write_jsonl(tmp_path / "in.jsonl", lines)
    schema, rows = read_all(path, records=False)
    assert schema.names == ["model", "prompt"]
    assert rows == [
        {"model": "gpt-4o-mini", "prompt": "question number 0"},
        {"model": "gpt-4o-mini", "prompt": "look"},
        {"model": "m", "prompt": "bare body"},
        {"model": None, "prompt": None},
        {"model": None, "prompt": '["a", "b"]'},
    ]
    assert [row for row, _ in iter_ids(path)] == list(range(len(rows)))  # the run's row numbers


def test_a_parquet_of_requests_with_string_or_struct_bodies(tmp_path: Path) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    strings = tmp_path / "s.parquet"
    pq.write_table(pa.table({"body": [json.dumps(body), "not json", None]}), strings)
    assert read_all(strings, records=False)[1] == [
        {"model": "gpt-4o-mini", "prompt": "hi"},
        {"model": None, "prompt": None},
        {"model": None, "prompt": None},
    ]
    structs = tmp_path / "t.parquet"
    pq.write_table(pa.table({"body": [body, {"messages": [{"role": "user", "content": "yo"}]}]}),
                   structs)  # fmt: skip
    assert read_all(structs, records=False)[1] == [
        {"model": "gpt-4o-mini", "prompt": "hi"},
        {"model": None, "prompt": "yo"},
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"messages": [{"role": "user", "content": "q"}]}, "q"),
        ({"messages": [{"role": "system", "content": "s"}]}, None),
        ({"contents": [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}]}, "a\nb"),
        ({"input": "embed me"}, "embed me"),
        ({"input": [{"role": "user", "content": [{"type": "input_text", "text": "r"}]}]}, "r"),
        ({"prompt": "complete"}, "complete"),
        ({"prompt": ["x", "y"]}, '["x", "y"]'),
        ({"model": "dall-e"}, None),
    ],
    ids=["chat", "no-user", "gemini", "embeddings", "responses", "completions", "list", "none"],
)
def test_prompt_text(body: dict[str, Any], expected: str | None) -> None:
    assert prompt_text(body) == expected


def test_a_missing_file_or_a_csv_of_requests_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="input file not found"):
        input_columns(tmp_path / "nope.csv", records=True)
    path = write_csv(tmp_path / "q.csv", ["a"], [["1"]])
    with pytest.raises(InputError, match="holds records, not requests"):
        input_columns(path, records=False)


def test_the_rows_are_those_the_template_reader_numbers(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text('qid,question\r\nq0,a\r\n\r\nq1,"two\r\nlines"\r\nq2,c\r\n', "utf-8")
    template = shortcut_template(model="m", prompt="{{ question }}", id_column="qid")
    ids = list(iter_ids(path, template=template))
    _, rows = read_all(path, records=True, chunk_rows=2)
    assert [(i, r["qid"]) for i, r in enumerate(rows)] == ids
