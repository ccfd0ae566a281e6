"""Input files for the benchmarks, generated fast and deterministically into a temp directory.

Every row is an OpenAI Batch API line with a unique `custom_id` and one user message:

    {"custom_id":"row-000000042","method":"POST","url":"/v1/chat/completions",
     "body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Row 42: the quick..."}],
             "max_tokens":16}}

`content_chars` fixes the message length exactly, so a row's token charge is known in advance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["MODEL", "QUESTION_TEMPLATE", "chat_body", "write_chat_rows", "write_question_csv"]

MODEL = "gpt-4o-mini"
_WORDS = (
    "the quick brown fox jumps over a lazy dog while benchmarks count requests per second and "
    "peak memory so that a bulk runner can be judged by numbers rather than hopes "
)
_FILLER = (_WORDS * (1 + 65536 // len(_WORDS)))[:65536]
_LINE = (
    '{"custom_id":"row-%09d","method":"POST","url":"/v1/chat/completions","body":'
    '{"model":"%s","messages":[{"role":"user","content":"%s"}],"max_tokens":%d}}\n'
)
_BATCH_ROWS = 10_000


def _content(row: int, content_chars: int) -> str:
    prefix = f"Row {row}: "
    return (prefix + _FILLER[: max(0, content_chars - len(prefix))])[:content_chars]


# The template the CSV benchmark sends every row through: a system message, a user message
# with two columns in it, a JSON-typed max_tokens.
QUESTION_TEMPLATE = """\
id = "qid"

[body]
model = "gpt-4o-mini"
max_tokens = 16
messages = [
  { role = "system", content = "Answer in one word." },
  { role = "user", content = "Topic {{ topic }}. {{ question }}" },
]
"""
# Quotes doubled and a comma inside the quoted value: the CSV parser's quoted path, every row.
_CSV_LINE = 'q-%09d,"Row %d: what is the ""capital"" of country %d, in one word?",geo-%d\n'


def write_question_csv(path: Path, rows: int) -> Path:
    """A CSV `qid,question,topic` of `rows` rows (about 75 bytes each) for QUESTION_TEMPLATE."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8", buffering=1 << 20) as f:
        f.write("qid,question,topic\n")
        for start in range(0, rows, _BATCH_ROWS):
            end = min(rows, start + _BATCH_ROWS)
            f.writelines(_CSV_LINE % (r, r, r % 200, r % 7) for r in range(start, end))
    tmp.replace(path)
    return path


def chat_body(row: int, *, content_chars: int, max_tokens: int) -> dict[str, Any]:
    """The request body of row `row` (what the mock and batchrun each estimate tokens from)."""
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": _content(row, content_chars)}],
        "max_tokens": max_tokens,
    }


def write_chat_rows(path: Path, rows: int, *, content_chars: int, max_tokens: int) -> Path:
    """Write `rows` chat rows to `path` (JSONL); about 1M rows a second."""
    if content_chars > len(_FILLER):
        raise ValueError(f"content_chars must be at most {len(_FILLER)}, got {content_chars}")
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8", buffering=1 << 20) as f:
        for start in range(0, rows, _BATCH_ROWS):
            end = min(rows, start + _BATCH_ROWS)
            f.writelines(
                _LINE % (row, MODEL, _content(row, content_chars), max_tokens)
                for row in range(start, end)
            )
    tmp.replace(path)
    return path
