"""The joined table's pieces: names, the answer read out of a record, rows set beside records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from batchrun.inputs.columns import InputChunk, InputColumns
from batchrun.inputs.rows import InputError
from batchrun.runner.join import (
    READ_COLUMNS,
    SORTED,
    Cursor,
    chunks,
    joined,
    joined_schema,
    project,
)
from batchrun.store.ordered import Window
from batchrun.store.writer import RESULT_SCHEMA


def test_input_columns_keep_their_names_unless_a_result_has_it() -> None:
    schema, renamed = joined_schema(
        pa.schema([("question", pa.string()), ("status", pa.int8()), ("input.status", pa.bool_())])
    )
    assert renamed == {
        "question": "question",
        "status": "input.status",
        "input.status": "input.input.status",  # the renamed one took its name first
    }
    assert schema.names[:5] == ["row", "custom_id", "question", "input.status",
                                "input.input.status"]  # fmt: skip
    assert schema.field("input.status").type == pa.int8()
    assert schema.names[5:8] == ["status", "text", "tool_calls"]
    assert len(set(schema.names)) == len(schema.names)


def records(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    base: dict[str, Any] = {name: None for name in RESULT_SCHEMA.names}
    base |= {"status": "ok", "attempts": 1, "custom_id": "c"}
    table = pa.Table.from_pylist([base | row for row in rows], schema=RESULT_SCHEMA)
    return table.select([n for n in READ_COLUMNS if n in RESULT_SCHEMA.names]).to_batches()[0]


def chat(content: str | None, calls: list[dict[str, Any]] | None = None) -> str:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return json.dumps({"choices": [{"message": message, "finish_reason": "stop"}]})


def test_the_answer_is_read_out_of_each_stored_response() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    batch = records(
        [
            {"row": 0, "endpoint": "/v1/chat/completions", "response": chat("hello")},
            {"row": 1, "endpoint": "/v1/chat/completions", "response": chat(None, [call])},
            {"row": 2, "endpoint": "/v1/embeddings", "response": '{"data": []}'},
            {"row": 3, "endpoint": "/v1/chat/completions", "response": chat("no"),
             "status": "error"},
            {"row": 4, "endpoint": "/v1/chat/completions", "response": "{not json"},
            {"row": 5, "endpoint": "/v1/messages",
             "response": json.dumps({"content": [{"type": "text", "text": "claude"}]})},
        ]
    )  # fmt: skip
    out = project(batch)
    assert out.schema == SORTED
    assert out.column("text").to_pylist() == ["hello", None, None, None, None, "claude"]
    calls = out.column("tool_calls").to_pylist()
    assert json.loads(calls[1]) == [{"id": "c1", "name": "f", "arguments": '{"a":1}'}]
    assert calls[0] is None and calls[3] is None


def test_text_columns_of_the_results_are_used_as_they_stand() -> None:
    batch = records(
        [
            {
                "row": 0,
                "endpoint": "/v1/chat/completions",
                "response": chat("old"),
                "text": "stored",
            },
            {"row": 1, "endpoint": "/v1/chat/completions", "response": chat("read")},
        ]
    )
    assert project(batch).column("text").to_pylist() == ["stored", "read"]  # fmt: skip


def sorted_table(rows: list[int]) -> pa.Table:
    data = {name: [None] * len(rows) for name in SORTED.names}
    data["row"] = rows
    data["custom_id"] = [f"c{r}" for r in rows]
    data["status"] = ["ok"] * len(rows)
    return pa.Table.from_pydict(data, schema=SORTED)


def test_the_cursor_takes_any_range_across_windows() -> None:
    windows = [
        Window(0, 10, sorted_table([1, 4, 9])),
        Window(10, 20, sorted_table([])),
        Window(20, 30, sorted_table([20, 25, 29])),
    ]
    cursor = Cursor(iter(windows))
    taken = [cursor.take(a, b).column("row").to_pylist() for a, b in
             [(0, 4), (4, 12), (12, 21), (21, 29), (29, 30)]]  # fmt: skip
    assert taken == [[1], [4, 9], [20], [25], [29]]


def test_rows_without_a_record_are_pending_beside_their_input() -> None:
    schema, _ = joined_schema(pa.schema([("q", pa.string())]))
    inputs = pa.table({"q": ["a", "b", "c", "d"]})
    table = joined(10, 14, inputs, sorted_table([11, 13]), schema)
    assert table.schema == schema
    assert table.column("row").to_pylist() == [10, 11, 12, 13]
    assert table.column("q").to_pylist() == ["a", "b", "c", "d"]
    assert table.column("custom_id").to_pylist() == [None, "c11", None, "c13"]
    assert table.column("status").to_pylist() == ["pending", "ok", "pending", "ok"]


def columns_of(rows: int, chunk_rows: int) -> InputColumns:
    schema = pa.schema([("q", pa.int64())])

    def read() -> Iterator[InputChunk]:
        for start in range(0, rows, chunk_rows):
            values = list(range(start, min(rows, start + chunk_rows)))
            yield InputChunk(start, pa.table({"q": values}, schema=schema))

    return InputColumns(schema, read)


def test_chunks_cover_the_rows_and_catch_an_input_of_another_length() -> None:
    got = [(a, b) for a, b, _ in chunks(columns_of(10, 4), 10, 4)]
    assert got == [(0, 4), (4, 8), (8, 10)]
    assert [(a, b) for a, b, t in chunks(None, 5, 2) if t is None] == [(0, 2), (2, 4), (4, 5)]
    with pytest.raises(InputError, match="reads as fewer rows than the 12"):
        list(chunks(columns_of(10, 4), 12, 4))
    with pytest.raises(InputError, match="reads as more rows than the 9"):
        list(chunks(columns_of(10, 4), 9, 4))
