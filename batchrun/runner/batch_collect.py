"""A finished batch's results, turned into records and committed through the ResultWriter.

    output / error file lines ──► match custom_id to the chunk's index ──► Record ──► commit
    rows of the chunk with no line ──► error record by how the batch ended

Guarantees:
- Results are matched by custom_id, never by order. Every row of the chunk gets exactly one
  record: its first result line, else an error saying why there is none (`batch_expired`,
  `batch_cancelled`, `batch_missing`), and a row the checkpoint already counts (a crash after
  part of a chunk was committed) is not written again: exactly once in OUT/results.
- An ok line becomes the record an online run would have written: the answer's JSON as
  `response`, its usage, model and finish reason, and `cost_usd` at the batch price book's rate.
  An error line keeps the provider's status, code and message, classified as a row's would be.
- The error file is read (a completed batch can have no output file at all: every request then
  failed, and each is recorded with its own error).
- Memory: the chunk's index (one entry per row, at most a batch's requests) and one flush of
  records. Blocking: run it in a worker thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from batchrun.common.secrets import redact
from batchrun.cost.budget import cost_of
from batchrun.cost.pricebook import PriceBook
from batchrun.endpoints.answers import read_answer
from batchrun.endpoints.batch_wire import BatchLine
from batchrun.endpoints.profiles import profile_for
from batchrun.endpoints.usage import USAGE_READERS
from batchrun.models import ErrorType, Record
from batchrun.runner.batch_provider import Provider
from batchrun.runner.summary import RunTotals
from batchrun.send.retry import FATAL, classify_response
from batchrun.store.batch_files import chunk_file, iter_lines, read_index
from batchrun.store.batch_journal import Chunk
from batchrun.store.writer import ResultWriter

__all__ = ["Collected", "collect_chunk", "record_from_line"]

# Anthropic's error types in batchrun's `error_type` words.
_ANTHROPIC_ERROR_TYPES = {
    "invalid_request_error": ErrorType.INVALID_REQUEST,
    "authentication_error": ErrorType.INVALID_REQUEST,
    "permission_error": ErrorType.INVALID_REQUEST,
    "not_found_error": ErrorType.INVALID_REQUEST,
    "request_too_large": ErrorType.INVALID_REQUEST,
    "rate_limit_error": ErrorType.RATE_LIMITED,
    "api_error": ErrorType.SERVER_ERROR,
    "overloaded_error": ErrorType.SERVER_ERROR,
    "timeout_error": ErrorType.TIMEOUT,
}
_NOT_RUN = {
    "expired": (ErrorType.BATCH_EXPIRED, "the batch expired (24 h) before this row ran"),
    "cancelled": (ErrorType.BATCH_CANCELLED, "the batch was cancelled before this row ran"),
}


@dataclass(slots=True)
class Collected:
    totals: RunTotals
    committed: int = 0  # records written by this call
    unmatched_lines: int = 0  # result lines whose custom_id is not one of the chunk's rows


def record_from_line(
    line: BatchLine,
    *,
    row: int,
    custom_id: str,
    endpoint: str,
    usage: str,
    prices: PriceBook,
    api_key: str | None,
) -> Record:
    """The record of one result line (see the module docstring)."""
    if line.kind == "ok" and isinstance(line.answer, dict):
        body = line.answer
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        if api_key and api_key in text:  # a proxy that echoes the headers back
            text = text.replace(api_key, "[redacted]")
        figures = USAGE_READERS[usage](body)
        model = body.get("model") if isinstance(body.get("model"), str) else None
        profile = profile_for(endpoint)
        answer = read_answer(profile.answer, body) if profile.answer else None
        return Record(
            custom_id=custom_id,
            row=row,
            endpoint=endpoint,
            attempts=1,
            status="ok",
            http_status=line.status_code or 200,
            response=text,
            model=model,
            finish_reason=answer.finish_reason if answer else None,
            prompt_tokens=figures.prompt_tokens,
            completion_tokens=figures.completion_tokens,
            total_tokens=figures.total_tokens,
            cached_tokens=figures.cached_tokens,
            reasoning_tokens=figures.reasoning_tokens,
            cost_usd=cost_of(prices, model, figures),
        )
    error_type, message = _error_of(line, usage)
    response = None
    if line.answer is not None:
        response = redact(json.dumps(line.answer, ensure_ascii=False), api_key)
    return Record(
        custom_id=custom_id,
        row=row,
        endpoint=endpoint,
        attempts=1,
        status="error",
        http_status=line.status_code,
        response=response,
        error_type=error_type,
        error_message=redact(message, api_key),
    )


def _error_of(line: BatchLine, usage: str) -> tuple[str, str]:
    if line.kind in _NOT_RUN:
        error_type, why = _NOT_RUN[line.kind]
        detail = f" ({line.error_code}: {line.error_message})" if line.error_message else ""
        return error_type, f"{why}{detail}; nothing was charged for it"
    if line.kind == "malformed":
        return ErrorType.BAD_RESPONSE, f"the batch's result line is malformed: {line.error_message}"
    if usage == "claude":
        error_type = _ANTHROPIC_ERROR_TYPES.get(line.error_code or "", ErrorType.API_ERROR)
        return error_type, f"batch request errored: {line.error_code}: {line.error_message}"
    if line.status_code is not None:
        text = json.dumps(line.answer) if line.answer is not None else ""
        verdict = classify_response(line.status_code, {}, line.answer, text)
        if verdict is not None:
            # A whole-run failure online (no quota) is this row's own failure in a batch.
            kind = ErrorType.API_ERROR if verdict.action == FATAL else verdict.error_type
            return kind, verdict.message
    return ErrorType.API_ERROR, f"batch request failed: {line.error_code}: {line.error_message}"


def collect_chunk(
    chunk: Chunk,
    provider: Provider,
    writer: ResultWriter,
    prices: PriceBook,
    *,
    api_key: str | None,
    flush_rows: int,
) -> Collected:
    """Commit a record for every row of an ended chunk that the checkpoint does not count yet."""
    out_dir: Path = writer.out_dir
    index = read_index(out_dir, chunk.number)
    done = writer.checkpoint.done
    collected = Collected(RunTotals())
    seen: set[int] = set()
    buffer: list[Record] = []

    def put(record: Record) -> None:
        buffer.append(record)
        if len(buffer) >= flush_rows:
            flush()

    def flush() -> None:
        if buffer:
            writer.commit(buffer)
            for record in buffer:
                collected.totals.add(record)
            collected.committed += len(buffer)
            buffer.clear()

    for kind in provider.result_kinds:
        path = chunk_file(out_dir, chunk.number, kind)
        if not path.exists():
            continue
        for raw in iter_lines(path):
            line = provider.read_line(raw)
            found = index.get(line.custom_id) if line.custom_id is not None else None
            if found is None:
                collected.unmatched_lines += 1
                continue
            row, custom_id = found
            if row in seen or row in done:
                continue
            seen.add(row)
            put(
                record_from_line(
                    line,
                    row=row,
                    custom_id=custom_id,
                    endpoint=chunk.endpoint,
                    usage=provider.usage,
                    prices=prices,
                    api_key=api_key,
                )
            )
    status = chunk.status or ""
    error_type, why = _NOT_RUN.get(
        "cancelled" if status.startswith("cancel") else status,
        (ErrorType.BATCH_MISSING, f"the batch ended ({status}) without a result for this row"),
    )
    for row, custom_id in sorted(index.values()):
        if row not in seen and row not in done:
            message = f"{why} (batch {chunk.batch_id}); nothing was charged for it"
            put(
                Record(
                    custom_id=custom_id,
                    row=row,
                    status="error",
                    endpoint=chunk.endpoint,
                    error_type=error_type,
                    error_message=message,
                    attempts=0,
                )
            )
    flush()
    return collected
