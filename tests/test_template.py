"""Templates: loading and checking the file, rendering one row, and what a row cannot do."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrun.inputs.rows import RowProblem
from batchrun.inputs.template import Template, TemplateError, load_template, shortcut_template

ASK_TOML = """\
endpoint = "/v1/chat/completions"
id = "question_id"

[body]
model = "gpt-4o-mini"
max_tokens = 100
messages = [
  { role = "system", content = "Answer in one line." },
  { role = "user", content = "Topic: {{ topic }}. {{ question }}" },
]
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def chat(content: str, **extra: Any) -> Template:
    body = {"model": "m", "messages": [{"role": "user", "content": content}], **extra}
    return Template(body)


def test_toml_template_renders_the_body(tmp_path: Path) -> None:
    template = load_template(write(tmp_path / "ask.toml", ASK_TOML))
    assert template.endpoint == "/v1/chat/completions"
    assert template.id_column == "question_id"
    assert template.columns == {"topic", "question"}
    assert template.needed_columns() == {"topic", "question", "question_id"}
    body = template.render({"topic": "maths", "question": "What is 2+2?", "other": 1})
    assert body == {
        "model": "gpt-4o-mini",
        "max_tokens": 100,
        "messages": [
            {"role": "system", "content": "Answer in one line."},
            {"role": "user", "content": "Topic: maths. What is 2+2?"},
        ],
    }


def test_json_template_is_the_same_template(tmp_path: Path) -> None:
    toml = load_template(write(tmp_path / "ask.toml", ASK_TOML))
    doc = {
        "id": "question_id",
        "endpoint": "/v1/chat/completions",
        "body": toml.body,
    }
    as_json = load_template(write(tmp_path / "ask.json", json.dumps(doc)))
    assert as_json == toml and as_json.digest == toml.digest


@pytest.mark.parametrize(
    "value",
    ['say "hi"\nthen {{ leave }} and {% raw %}', "\\u0000 \\ \" ' }} {{", "日本語 🎉", ""],
)
def test_values_are_inserted_as_text_never_as_source(value: str) -> None:
    body = chat("Q: {{ q }}").render({"q": value})
    assert body["messages"][0]["content"] == "Q: " + value
    single = chat("{{ q }}").render({"q": value})
    assert single["messages"][0]["content"] == value
    # What is sent is JSON that reads back to exactly that text.
    assert json.loads(json.dumps(single))["messages"][0]["content"] == value


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_text_round_trips_through_a_template(value: str) -> None:
    body = chat("<<{{ q }}>>").render({"q": value})
    assert body["messages"][0]["content"] == f"<<{value}>>"


@pytest.mark.parametrize(
    ("value", "kept"),
    [(7, 7), (0.25, 0.25), (True, True), (["a", 1], ["a", 1]), ({"k": [1]}, {"k": [1]})],
)
def test_a_single_placeholder_keeps_the_value_type(value: Any, kept: Any) -> None:
    template = Template({"model": "m", "input": "{{ x }}", "n": "{{ k }}"})
    assert template.render({"x": value, "k": 2}) == {"model": "m", "input": kept, "n": 2}


def test_text_around_a_placeholder_makes_a_string() -> None:
    template = Template({"a": "{{ n }} ", "b": "n={{ n }}", "c": "{{ n | string }}"})
    assert template.render({"n": 5}) == {"a": "5 ", "b": "n=5", "c": "5"}


def test_values_inside_text_are_written_as_json() -> None:
    template = Template({"t": "{{ flag }} {{ items }} {{ obj }} {{ x }}"})
    rendered = template.render({"flag": False, "items": ["é", 2], "obj": {"k": None}, "x": 1.5})
    assert rendered == {"t": 'false ["é", 2] {"k": null} 1.5'}


def test_two_placeholders_are_text_not_one_expression() -> None:
    template = Template({"t": "{{ a }} and {{ b }}"})
    assert template.render({"a": 1, "b": 2}) == {"t": "1 and 2"}


def test_columns_reaches_any_column_name() -> None:
    template = Template({"t": '{{ columns["Question Text"] }}'})
    assert template.all_columns and template.needed_columns() is None
    assert template.render({"Question Text": "why?"}) == {"t": "why?"}


def test_static_parts_are_compiled_once_and_shared() -> None:
    template = chat("{{ q }}", tools=[{"type": "function", "function": {"name": "f"}}])
    first, second = template.render({"q": "a"}), template.render({"q": "b"})
    assert first["tools"] is second["tools"]  # not rebuilt per row
    assert first["messages"][0]["content"] == "a" and second["messages"][0]["content"] == "b"


def test_control_flow_and_filters() -> None:
    template = Template(
        {
            "t": "{% if hint is defined and hint %}Hint: {{ hint }}. {% endif %}{{ q | upper }}",
            "n": "{{ limit | int }}",
            "f": "{{ temp | float }}",
            "j": "{{ meta | tojson }}",
        }
    )
    row = {"q": "go", "limit": " 12 ", "temp": "0.5", "meta": {"a": "<b>"}}
    assert template.render(row) == {"t": "GO", "n": 12, "f": 0.5, "j": '{"a": "<b>"}'}
    assert template.render({**row, "hint": "x"})["t"] == "Hint: x. GO"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({}, "messages[0].content: the row has no column 'question'"),
        ({"question": None}, "messages[0].content: column 'question' is null (empty)"),
    ],
)
def test_missing_and_null_columns_name_the_column(row: dict[str, Any], message: str) -> None:
    for content in ("{{ question }}", "Q: {{ question }}"):
        with pytest.raises(RowProblem) as info:
            chat(content).render(row)
        assert str(info.value) == message


def test_a_missing_key_of_columns_names_the_column() -> None:
    with pytest.raises(RowProblem, match="the row has no column 'Question Text'"):
        Template({"t": '{{ columns["Question Text"] }}'}).render({})


@pytest.mark.parametrize(
    ("leaf", "row", "message"),
    [
        ("{{ n + 1 }}", {"n": "a"}, 'messages[0].content: can only concatenate str (not "int")'),
        ("{{ n | int }}", {"n": "5x"}, "cannot make an integer of '5x'"),
        ("{{ n | float }}", {"n": "nan"}, "cannot make a finite number of 'nan'"),
        ("{{ 1 / n }}", {"n": 0}, "division by zero"),
        ("{{ n.__class__ }}", {"n": "s"}, "unsafe"),
        ("{{ m.topic }}", {"m": {}}, "has no attribute 'topic'"),
        ("x{{ m.topic }}", {"m": {"topic": None}}, "'x{{ m.topic }}' gave null"),
    ],
)
def test_a_row_that_cannot_fill_the_template_is_a_row_problem(
    leaf: str, row: dict[str, Any], message: str
) -> None:
    with pytest.raises(RowProblem, match=re.escape(message)):
        chat(leaf).render(row)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[body]\nmodel = '{{ x '\n", ": model: template syntax error: unexpected end"),
        ("[body]\nmodel = '{% if %}'\n", "model: template syntax error"),
        ("endpiont = '/v1/x'\n[body]\nm = 1\n", "unknown key 'endpiont'"),
        ("id = 'x'\n", "no 'body'"),
        ("body = 'x'\n", "'body' must be a table"),
        ("endpoint = 'v1/chat'\n[body]\nm = 1\n", "'endpoint' must be a path"),
        ("id = ''\n[body]\nm = 1\n", "'id' must be a column name"),
        ("[body]\nwhen = 2024-01-01\n", "when: JSON cannot carry a date"),
        ("[body]\nt = nan\n", "t: JSON cannot carry a number that is not finite"),
        ("[body\n", "not valid TOML"),
    ],
)
def test_bad_template_files_are_refused_naming_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path / "t.toml", text)
    with pytest.raises(TemplateError, match=message) as info:
        load_template(path)
    assert str(path) in str(info.value)


def test_bad_json_template_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"not valid JSON: .* at line 1"):
        load_template(write(tmp_path / "t.json", "{"))
    with pytest.raises(TemplateError, match=r"expected a table .* got an array"):
        load_template(write(tmp_path / "t.json", "[]"))
    with pytest.raises(TemplateError, match="cannot read the template"):
        load_template(tmp_path / "nope.toml")


def test_id_column_flag_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "ask.toml", ASK_TOML)
    template = load_template(path, id_column="qid")
    assert template.id_column == "qid"
    assert template.digest != load_template(path).digest  # other ids: another run


def test_digest_follows_what_is_sent() -> None:
    a = chat("{{ q }}")
    assert chat("{{ q }}").digest == a.digest
    assert chat("{{ q }}!").digest != a.digest
    assert Template(a.body, id_column="qid").digest != a.digest
    # The endpoint is recorded by the run on its own (the effective one), not in the digest.
    other_endpoint = Template(a.body, endpoint="/v1/responses")
    assert other_endpoint.digest == a.digest and other_endpoint != a
    assert "sha256:" in repr(a)


def test_shortcuts_build_the_same_template_as_the_file() -> None:
    short = shortcut_template(
        model="gpt-4o-mini", prompt="{{ question }}", system="Be brief.", max_tokens=50
    )
    written = Template(
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "{{ question }}"},
            ],
            "max_tokens": 50,
        },
    )
    assert short == written and short.endpoint is None
    assert short.render({"question": "q?"})["messages"][1] == {"role": "user", "content": "q?"}
    plain = shortcut_template(model="m", prompt="{{ q }}")
    assert plain.render({"q": "x"}) == {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
    }


def test_shortcuts_for_embeddings_and_what_they_refuse() -> None:
    emb = shortcut_template(
        model="text-embedding-3-small", prompt="{{ t }}", endpoint="/v1/embeddings"
    )
    assert emb.render({"t": "hello"}) == {"model": "text-embedding-3-small", "input": "hello"}
    with pytest.raises(TemplateError, match="--system and --max-tokens do not apply"):
        shortcut_template(model="m", prompt="x", system="s", endpoint="/v1/embeddings")
    with pytest.raises(TemplateError, match="write a template file"):
        shortcut_template(model="m", prompt="x", endpoint="/v1/images/generations")
    with pytest.raises(TemplateError, match="--prompt needs --model"):
        shortcut_template(model="", prompt="x")
