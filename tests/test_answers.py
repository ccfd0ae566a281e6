"""batchrun.endpoints.answers: text, tool calls and embeddings out of every family's body."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from batchrun.endpoints.answers import ANSWER_READERS, Answer, read_answer


def _calls(answer: Answer) -> list[dict[str, Any]]:
    assert answer.tool_calls is not None
    return list(json.loads(answer.tool_calls))


def test_chat_text_and_finish_reason() -> None:
    body = {"choices": [{"message": {"content": "Paris."}, "finish_reason": "stop"}]}
    assert read_answer("chat", body) == Answer(text="Paris.", finish_reason="stop")


def test_chat_content_parts_are_joined() -> None:
    content = [{"type": "text", "text": "a"}, {"type": "refusal"}, {"type": "text", "text": "b"}]
    body = {"choices": [{"message": {"content": content}}]}
    assert read_answer("chat", body).text == "ab"


def test_chat_tool_calls_keep_the_arguments_text() -> None:
    body = {
        "choices": [
            {
                "message": {
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    answer = read_answer("chat", body)
    assert answer.text is None and answer.finish_reason == "tool_calls"
    assert _calls(answer) == [
        {"id": "call_1", "name": "get_weather", "arguments": '{"city":"Oslo"}'}
    ]


def test_chat_legacy_function_call() -> None:
    body = {"choices": [{"message": {"function_call": {"name": "f", "arguments": "{}"}}}]}
    assert _calls(read_answer("chat", body)) == [{"id": None, "name": "f", "arguments": "{}"}]


def test_completions_text() -> None:
    body = {"choices": [{"text": " world", "finish_reason": "length"}]}
    assert read_answer("completions", body) == Answer(text=" world", finish_reason="length")


def test_responses_output_items() -> None:
    body = {
        "status": "completed",
        "output": [
            {"type": "reasoning", "summary": []},
            {
                "type": "message",
                "content": [
                    {"type": "output_text", "text": "Hi "},
                    {"type": "output_text", "text": "there"},
                ],
            },
            {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": '{"q":1}'},
        ],
    }
    answer = read_answer("responses", body)
    assert answer.text == "Hi there"
    assert answer.finish_reason == "completed"
    assert _calls(answer) == [{"id": "c1", "name": "lookup", "arguments": '{"q":1}'}]


def test_responses_output_text_wins_when_present() -> None:
    assert read_answer("responses", {"output_text": "x", "output": []}).text == "x"


def test_claude_text_and_tool_use() -> None:
    body = {
        "type": "message",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Zürich"}},
        ],
        "stop_reason": "tool_use",
    }
    answer = read_answer("claude", body)
    assert answer.text == "Let me check."
    assert answer.finish_reason == "tool_use"
    assert _calls(answer) == [
        {"id": "toolu_1", "name": "weather", "arguments": '{"city": "Zürich"}'}
    ]


def test_gemini_text_function_call_and_thoughts_left_out() -> None:
    body = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "thinking...", "thought": True},
                        {"text": "The answer"},
                        {"text": " is 4."},
                        {"functionCall": {"name": "calc", "args": {"x": 2}}},
                    ],
                },
                "finishReason": "STOP",
            }
        ]
    }
    answer = read_answer("gemini", body)
    assert answer.text == "The answer is 4."
    assert answer.finish_reason == "STOP"
    assert _calls(answer) == [{"id": None, "name": "calc", "arguments": '{"x": 2}'}]


def test_embeddings_floats_in_index_order() -> None:
    body = {
        "data": [
            {"index": 1, "embedding": [0.5, 1]},
            {"index": 0, "embedding": [0.25, -1.0]},
        ]
    }
    assert read_answer("embeddings", body).embedding == [[0.25, -1.0], [0.5, 1.0]]


def test_embeddings_base64() -> None:
    packed = base64.b64encode(struct.pack("<3f", 0.5, -2.0, 3.25)).decode()
    body = {"data": [{"index": 0, "embedding": packed}]}
    assert read_answer("embeddings", body).embedding == [[0.5, -2.0, 3.25]]


@pytest.mark.parametrize(
    "embedding", ["not base64!", base64.b64encode(b"abc").decode(), [1, "x"], None, [True]]
)
def test_a_malformed_embedding_gives_none(embedding: object) -> None:
    assert read_answer("embeddings", {"data": [{"index": 0, "embedding": embedding}]}) == Answer()


def test_transcription_json_text() -> None:
    assert read_answer("transcription", {"text": "hello", "language": "en"}).text == "hello"


@pytest.mark.parametrize("kind", sorted(ANSWER_READERS))
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"choices": None, "content": "x", "candidates": [None], "data": "x", "output": [1]},
        {"choices": [{"message": ["not", "a", "dict"]}]},
        {"content": [{"type": "tool_use", "name": 3}], "candidates": [{"content": []}]},
        [],
        "a string",
        None,
    ],
)
def test_a_malformed_body_never_raises(kind: str, body: Any) -> None:
    answer = read_answer(kind, body)
    assert isinstance(answer, Answer)


def test_an_unknown_kind_has_no_answer() -> None:
    assert read_answer("nope", {"choices": [{"message": {"content": "x"}}]}) == Answer()
