"""Records out of CSV / TSV / JSONL / Parquet, rendered by a template into request rows."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchrun.common.ranges import RangeSet
from batchrun.inputs import tables as tables_mod
from batchrun.inputs.reader import InputError, ParsedRow, iter_ids, iter_requests, iter_rows
from batchrun.inputs.tables import table_format
from batchrun.inputs.template import Template, shortcut_template
from batchrun.models import Request, RowError

ASK = shortcut_template(model="gpt-4o-mini", prompt="{{ question }}", id_column="qid")
TRICKY = [
    'He said "stop", then left',
    "line one\nline two\r\nline three",
    "日本語, émoji 🎉, RTL \u05e9\u05dc\u05d5\u05dd",
    "{{ question }} {% if x %}y{% endif %} {# not a comment #}",
    '\\"}]}, "model": "evil"',
]


def write_csv(
    path: Path, header: list[str], rows: list[list[Any]], *, delimiter: str = ","
) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def rows_of(path: Path, template: Template = ASK, **kwargs: Any) -> list[ParsedRow | RowError]:
    return list(iter_rows(path, template=template, **kwargs))


def content(item: ParsedRow | RowError) -> Any:
    assert isinstance(item, ParsedRow), item
    return item.body["messages"][-1]["content"]


def test_format_from_the_name() -> None:
    names = {
        "q.csv": "csv",
        "Q.CSV.GZ": "csv",
        "q.csv.zst": "csv",
        "q.tsv": "tsv",
        "q.tab.gz": "tsv",
        "q.parquet": "parquet",
        "q.pq": "parquet",
        "q.jsonl": "jsonl",
        "q.jsonl.gz": "jsonl",
        "q.ndjson": "jsonl",
    }
    assert {name: table_format(Path(name)) for name in names} == names


def test_csv_values_reach_the_body_intact_with_their_ids_and_lines(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "q.csv", ["qid", "question"], [[f"q{i}", t] for i, t in enumerate(TRICKY)]
    )
    items = rows_of(path)
    assert [content(item) for item in items] == TRICKY
    assert [item.custom_id for item in items] == [f"q{i}" for i in range(len(TRICKY))]
    assert [item.row for item in items] == list(range(len(TRICKY)))
    # Record 1 spans two newlines inside its quotes: the next record starts 3 lines later.
    assert [item.line for item in items] == [2, 3, 6, 7, 8]
    for item in items:
        assert isinstance(item, ParsedRow)
        assert json.loads(item.raw_body) == item.body  # what is sent reads back the same
        assert item.url == "/v1/chat/completions"
        assert item.body["model"] == "gpt-4o-mini"


def test_csv_row_errors_name_the_line_and_the_column(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text(
        "qid,question\n"
        "a,fine\n"
        "b,\n"  # an empty cell is null
        ",no id\n"
        "c,too,many\n"
        "\n"
        'd,"two\nlines"\n'
        "e\n",
        encoding="utf-8",
    )
    items = rows_of(path)
    assert [type(i).__name__ for i in items] == [
        "ParsedRow",
        "RowError",
        "RowError",
        "RowError",
        "ParsedRow",
        "RowError",
    ]
    assert [(i.row, i.line, i.custom_id) for i in items] == [
        (0, 2, "a"),
        (1, 3, "b"),
        (2, 4, "2"),
        (3, 5, "3"),  # a record that does not fit the header: none of its fields is trusted
        (4, 7, "d"),
        (5, 9, "5"),
    ]
    messages = [i.message for i in items if isinstance(i, RowError)]
    assert messages == [
        "line 3: messages[0].content: column 'question' is null (empty)",
        "line 4: the id column 'qid' is null (empty)",
        "line 5: the record has 3 fields, the header has 2 (a value with the delimiter in it "
        "must be quoted)",
        "line 9: the record has 1 fields, the header has 2 (a value with the delimiter in it "
        "must be quoted)",
    ]
    assert list(iter_ids(path, template=ASK)) == [(i.row, i.custom_id) for i in items]


def test_a_column_the_file_lacks_stops_before_the_first_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "q.csv", ["qid", "qestion"], [["a", "b"]])
    with pytest.raises(InputError) as info:
        rows_of(path)
    assert str(info.value) == (
        f"{path} has no column 'question' (the template uses: --prompt); "
        "its columns: 'qid', 'qestion'"
    )
    no_id = write_csv(tmp_path / "n.csv", ["question"], [["b"]])
    with pytest.raises(InputError, match="has no column 'qid' \\(its id column: --prompt\\)"):
        list(iter_ids(no_id, template=ASK))


def test_duplicate_header_names_are_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "q.csv", ["qid", "question", "qid"], [["a", "b", "c"]])
    with pytest.raises(InputError, match="names column 'qid' more than once"):
        rows_of(path)


def test_csv_without_a_template_says_how_to_give_one(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "q.csv", ["question"], [["b"]])
    for call in (lambda: list(iter_rows(path)), lambda: list(iter_ids(path))):
        with pytest.raises(
            InputError,
            match=r"a CSV file holds records, not requests; .*--template FILE, or --model M",
        ):
            call()


def test_tsv_bom_crlf_blank_lines_and_compression(tmp_path: Path) -> None:
    text = '\ufeffqid\tquestion\r\n\r\nx\tsay "hi"\r\ny\t"tab\there"\r\n'
    expected = ['say "hi"', "tab\there"]
    plain = tmp_path / "q.tsv"
    plain.write_bytes(text.encode())
    gz = tmp_path / "q.tsv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    zst = tmp_path / "q.tab.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    for path in (plain, gz, zst):
        items = rows_of(path)
        assert [content(i) for i in items] == expected
        assert [(i.custom_id, i.line) for i in items] == [("x", 3), ("y", 4)]


def test_truncated_compressed_csv_is_an_input_error(tmp_path: Path) -> None:
    data = "qid,question\n" + "".join(f"q{i},question {i}\n" for i in range(5000))
    path = tmp_path / "q.csv.gz"
    path.write_bytes(gzip.compress(data.encode())[:-40])
    with pytest.raises(InputError, match=r"cannot read .*q.csv.gz"):
        rows_of(path)


def test_an_unclosed_quote_stops_at_the_row_limit(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    # Everything after the quote would be one value: reading stops once it passes the limit.
    path.write_text('qid,question\na,"never closed\n' + "b,more text\n" * 200, encoding="utf-8")
    with pytest.raises(InputError) as info:
        rows_of(path, max_row_bytes=1000)
    assert str(info.value) == (
        f"cannot read {path} at line 2: a value is longer than a whole row may be (1,000 "
        "bytes, --max-row-bytes): a quote never closed, or a value too large to send"
    )


def test_invalid_utf8_in_a_csv_is_one_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_bytes(b"qid,question\na,caf\xe9\nb,fine\n")
    first, second = rows_of(path)
    assert isinstance(first, RowError)
    assert first.message == "line 2: the row holds text that is not valid UTF-8"
    assert content(second) == "fine"


def test_a_body_over_max_row_bytes_is_a_row_error(tmp_path: Path) -> None:
    template = shortcut_template(model="m", prompt="{{ a }} {{ b }}", id_column="qid")
    rows = [["a", "x" * 300, "y" * 300], ["b", "o", "k"]]
    path = write_csv(tmp_path / "q.csv", ["qid", "a", "b"], rows)
    big, small = rows_of(path, template=template, max_row_bytes=400)
    assert isinstance(big, RowError)
    assert (
        big.message
        == "line 2: the body is 656 bytes, over the limit of 400 bytes (--max-row-bytes)"
    )
    assert content(small) == "o k"


def test_the_body_must_have_what_the_endpoint_needs(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "q.csv", ["question"], [["b"]])
    template = Template({"model": "m", "prompt": "{{ question }}"})
    with pytest.raises(
        InputError, match="the body has no 'messages' \\(required by /v1/chat/completions\\)"
    ):
        rows_of(path, template=template)
    items = rows_of(path, template=template, endpoint="/v1/completions")
    assert isinstance(items[0], ParsedRow) and items[0].url == "/v1/completions"


def test_the_templates_endpoint_wins_over_the_default(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "q.csv", ["t"], [["hello"]])
    template = Template({"model": "e", "input": "{{ t }}"}, endpoint="/v1/embeddings")
    (item,) = rows_of(path, template=template, endpoint="/v1/chat/completions")
    assert isinstance(item, ParsedRow) and item.url == "/v1/embeddings"


def test_a_rendered_body_is_checked_like_any_body(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "q.csv", ["q", "limit"], [["a", "12"], ["b", "many"]])
    raw = Template(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "{{ q }}"}],
            "max_tokens": "{{ limit }}",
        }
    )
    first, _ = rows_of(path, template=raw)
    assert isinstance(first, RowError)
    assert first.message == "line 2: 'max_tokens' must be a non-negative integer, got '12'"
    converted = Template({**raw.body, "max_tokens": "{{ limit | int }}"})
    ok, bad = rows_of(path, template=converted)
    assert isinstance(ok, ParsedRow) and ok.body["max_tokens"] == 12
    assert isinstance(bad, RowError)
    assert bad.message == "line 3: max_tokens: cannot make an integer of 'many'"


def test_jsonl_records_keep_their_types_and_name_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    lines = [
        {"qid": 1, "question": "one", "n": 3, "tags": ["a", "b"]},
        {"qid": "two", "n": 1, "tags": []},
        "[1, 2]",
        "{not json",
        {"qid": 4.5, "question": "float id", "n": 1, "tags": []},
        {"qid": "five", "question": "ok", "n": 2, "tags": ["c"]},
    ]
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n",
        encoding="utf-8",
    )
    template = Template(
        {
            "model": "m",
            "n": "{{ n }}",
            "metadata": {"tags": "{{ tags }}"},
            "messages": [{"role": "user", "content": "{{ question }}"}],
        },
        id_column="qid",
    )
    items = rows_of(path, template=template)
    assert [(i.row, i.line, i.custom_id) for i in items] == [
        (0, 1, "1"),
        (1, 2, "two"),
        (2, 3, "2"),
        (3, 4, "3"),
        (4, 5, "4"),
        (5, 6, "five"),
    ]
    first = items[0]
    assert isinstance(first, ParsedRow)
    assert first.body["n"] == 3 and first.body["metadata"] == {"tags": ["a", "b"]}
    assert [i.message for i in items if isinstance(i, RowError)] == [
        "line 2: messages[0].content: the row has no column 'question'",
        "line 3: expected a JSON object, got an array",
        "line 4: invalid JSON: Expecting property name enclosed in double quotes at column 2",
        "line 5: 'qid' must be a non-empty string, got a number",
    ]
    assert list(iter_ids(path, template=template)) == [(i.row, i.custom_id) for i in items]


def test_parquet_of_any_columns(tmp_path: Path) -> None:
    path = tmp_path / "q.parquet"
    table = pa.table(
        {
            "qid": pa.array([10, 11, 12], pa.int64()),
            "question": ["a", None, "c"],
            "score": [0.5, 1.0, math.nan],
            "meta": [{"k": "x", "v": None}, {"k": None, "v": 2}, None],
            "blob": [b"\x00", b"\x01", b"\x02"],  # not used: never read, never a problem
        }
    )
    pq.write_table(table, path)
    template = Template(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "{{ question }} {{ meta }}"}],
            "temperature": "{{ score }}",
        },
        id_column="qid",
    )
    assert template.needed_columns() == {"qid", "question", "meta", "score"}
    first, second, third = rows_of(path, template=template)
    assert isinstance(first, ParsedRow) and first.line is None and first.custom_id == "10"
    assert content(first) == 'a {"k": "x"}'  # struct nulls dropped, as for a `body` struct
    assert first.body["temperature"] == 0.5
    assert isinstance(second, RowError)
    assert second.message == "row 1: messages[0].content: column 'question' is null (empty)"
    assert isinstance(third, RowError) and third.custom_id == "12"
    assert third.message == "row 2: messages[0].content: column 'meta' is null (empty)"
    blob = Template(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "b": "{{ blob }}"}
    )
    assert all(
        isinstance(i, RowError) and "JSON cannot carry" in i.message
        for i in rows_of(path, template=blob)
    )
    nan = Template(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "t": "{{ score }}"}
    )
    nan_row = rows_of(path, template=nan)[2]
    assert isinstance(nan_row, RowError)
    assert nan_row.message == "row 2: a value is NaN or infinite, which JSON cannot carry"
    typo = Template({"model": "m", "messages": [{"role": "user", "content": "{{ qestion }}"}]})
    with pytest.raises(
        InputError, match=r"has no column 'qestion' .*its columns: 'qid', 'question'"
    ):
        rows_of(path, template=typo)


def test_parquet_reads_only_the_columns_the_template_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "q.parquet"
    pq.write_table(pa.table({"qid": ["a"], "question": ["q"], "huge": ["x" * 1000]}), path)
    asked: list[Any] = []
    real = pq.ParquetFile.iter_batches

    def spy(self: pq.ParquetFile, *args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs.get("columns"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    assert content(rows_of(path)[0]) == "q"
    assert list(iter_ids(path, template=ASK)) == [(0, "a")]
    every = Template(
        {"model": "m", "messages": [{"role": "user", "content": "{{ columns.huge[:2] }}"}]}
    )
    assert content(rows_of(path, template=every)[0]) == "xx"
    assert asked == [["qid", "question"], ["qid"], ["qid", "question", "huge"]]


def test_skip_keeps_row_numbers_in_every_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tables_mod, "_PARQUET_BATCH_ROWS", 4)
    n = 11
    questions = [f"question {i}" for i in range(n)]
    csv_path = write_csv(
        tmp_path / "q.csv", ["qid", "question"], [[f"q{i}", q] for i, q in enumerate(questions)]
    )
    jsonl_path = tmp_path / "q.jsonl"
    jsonl_path.write_text(
        "".join(
            json.dumps({"qid": f"q{i}", "question": q}) + "\n\n" for i, q in enumerate(questions)
        )
    )
    parquet_path = tmp_path / "q.parquet"
    pq.write_table(
        pa.table({"qid": [f"q{i}" for i in range(n)], "question": questions}), parquet_path
    )
    skip = RangeSet()
    for r in (0, 1, 2, 3, 5, 9):
        skip.add(r)
    for path in (csv_path, jsonl_path, parquet_path):
        items = rows_of(path, skip=skip)
        assert [i.row for i in items] == [4, 6, 7, 8, 10], path
        assert [content(i) for i in items] == [questions[r] for r in (4, 6, 7, 8, 10)]
        assert list(iter_ids(path, template=ASK)) == [(i, f"q{i}") for i in range(n)]


def test_without_an_id_column_ids_are_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text('question\n"a\nb"\n\nc\nd,extra\n', encoding="utf-8")
    template = shortcut_template(model="m", prompt="{{ question }}")
    assert list(iter_ids(path, template=template)) == [(0, "0"), (1, "1"), (2, "2")]
    assert [i.custom_id for i in rows_of(path, template=template)] == ["0", "1", "2"]
    parquet = tmp_path / "q.parquet"
    pq.write_table(pa.table({"question": ["a", "b"]}), parquet)
    assert list(iter_ids(parquet, template=template)) == [(0, "0"), (1, "1")]


def test_iter_requests_sends_the_rendered_bytes(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "q.csv", ["qid", "question"], [["a", TRICKY[0]]])
    (request,) = iter_requests(path, template=ASK)
    assert isinstance(request, Request)
    assert request.custom_id == "a" and request.model == "gpt-4o-mini"
    assert json.loads(request.body)["messages"][0]["content"] == TRICKY[0]
    assert request.prompt_tokens_estimate > 0


def test_an_empty_csv_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("", encoding="utf-8")
    assert rows_of(path) == [] and list(iter_ids(path, template=ASK)) == []
    path.write_text("qid,question\n", encoding="utf-8")
    assert rows_of(path) == []


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.text(min_size=1), min_size=1, max_size=8), st.sampled_from([",", "\t"]))
def test_any_text_survives_csv_and_the_template(
    tmp_path: Path, values: list[str], delimiter: str
) -> None:
    path = tmp_path / ("q.tsv" if delimiter == "\t" else "q.csv")
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, dialect="excel-tab" if delimiter == "\t" else "excel")
    writer.writerow(["qid", "question"])
    writer.writerows([[f"id{i}", v] for i, v in enumerate(values)])
    path.write_bytes(buffer.getvalue().encode("utf-8", "surrogatepass"))
    items = rows_of(path)
    assert [content(i) for i in items] == values
    for item in items:
        assert isinstance(item, ParsedRow)
        assert json.loads(item.raw_body)["messages"][0]["content"] == content(item)
