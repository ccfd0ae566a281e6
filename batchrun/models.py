"""Values that travel between the stages.

    reader ──► Request ──► worker ──► Record ──► writer
       └────► RowError ─────────────► Record (status "error", error_type "bad_input")

They are plain frozen dataclasses: no I/O, no behaviour beyond small derived values, so that every
stage can be tested with hand-made values.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["ERROR_TYPES", "ErrorType", "Record", "Request", "RowError", "Upload"]


class ErrorType:
    """The values of the `error_type` column (documented in the README)."""

    BAD_INPUT = "bad_input"  # the row could not be turned into a request
    INVALID_REQUEST = "invalid_request"  # a 4xx that no retry can fix
    RATE_LIMITED = "rate_limited"  # still 429 after every retry, or a request larger than the TPM
    SERVER_ERROR = "server_error"  # still 5xx after every retry
    TIMEOUT = "timeout"  # still timing out after every retry
    CONNECTION_ERROR = "connection_error"  # still unreachable after every retry
    BAD_RESPONSE = "bad_response"  # a body that is not JSON, or JSON of the wrong shape
    API_ERROR = "api_error"  # HTTP 200 whose body is {"error": ...}
    # A provider batch ended before the row ran: nothing was charged, a later run may send it.
    BATCH_EXPIRED = "batch_expired"  # the 24 h window passed
    BATCH_CANCELLED = "batch_cancelled"  # the batch was cancelled (batchrun cancel OUT)
    BATCH_MISSING = "batch_missing"  # the batch ended without a result for the row
    # Submit-then-poll tasks (batchrun.runner.tasks).
    TASK_FAILED = "task_failed"  # the task reached failure, or outlived --task-timeout
    SUBMIT_UNKNOWN = "submit_unknown"  # the submit may have been accepted: not resent silently


ERROR_TYPES = tuple(v for k, v in vars(ErrorType).items() if k.isupper())


@dataclass(frozen=True, slots=True)
class Upload:
    """A file a row uploads: its form field, the file (resolved inside the files root when the
    row was read), and the name it is sent under (the name the row gave, without folders)."""

    field: str
    path: str
    filename: str
    seconds: float | None = None  # an audio file's duration, from its header (whisper bills it)


@dataclass(frozen=True, slots=True)
class Request:
    """One input row, ready to send.

    `body` is the exact JSON sent on the wire: for a bare request body it is the input line itself,
    byte for byte, so tools, images and unknown fields pass through untouched.
    """

    row: int
    custom_id: str
    url: str
    body: bytes
    model: str | None
    prompt_tokens_estimate: int
    max_output_tokens: int
    # False: the row sets no output limit, so max_output_tokens is the rate limiter's assumption
    # (batchrun.endpoints.usage), not a bound on what the answer may cost.
    output_limited: bool = True
    # Files sent as multipart/form-data with the body's other fields (transcriptions, edits).
    uploads: tuple[Upload, ...] = ()
    # A follow-up task row (Midjourney U1, say): the custom_id of the row whose task it acts on;
    # submitted once that task succeeded (batchrun.runner.tasks).
    after: str | None = None

    @property
    def request_sha256(self) -> str:
        """What this row asks, as one value: the sha256 of its url, a newline and the body sent.

        Stored with the row's record, so that `--update` can tell an edited row (or a template
        that renders differently) from an unchanged one."""
        return hashlib.sha256(self.url.encode() + b"\n" + self.body).hexdigest()

    @property
    def token_charge(self) -> int:
        """What the tokens-per-minute budget is charged before the response says the real figure."""
        return self.prompt_tokens_estimate + self.max_output_tokens


@dataclass(frozen=True, slots=True)
class RowError:
    """An input row that cannot be sent; it becomes an error record, never a crash."""

    row: int
    custom_id: str
    message: str
    line: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """The final outcome of one input row: one line of the results dataset."""

    custom_id: str
    row: int
    status: str  # "ok" or "error"
    endpoint: str | None = None
    http_status: int | None = None
    response: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    model: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    attempts: int = 0
    latency_ms: float | None = None
    cost_usd: float | None = None
    # Request.request_sha256 of the request this record answers; None for a row never sent
    # (bad input), and in records written before the column existed.
    request_sha256: str | None = None
    # The answer as typed values (batchrun.endpoints.answers); None where the family has none.
    text: str | None = None
    tool_calls: str | None = None  # JSON: [{"id", "name", "arguments"}, ...]
    embedding: list[list[float]] | None = None  # one vector per input, in input order
    media: tuple[str, ...] | None = None  # files the row produced, relative to OUT
    content_type: str | None = None  # of the answer's body (a media file's, for binary ones)
    # Not a column: what the row is billed by besides tokens, for pricing it when it is
    # committed (batchrun.endpoints.billing): ("characters", 1234.0), ("audio_seconds", 62.5),
    # ("images@hd 1024x1024", 2.0), ("image_input_tokens", 130.0).
    billed: tuple[tuple[str, float], ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"
