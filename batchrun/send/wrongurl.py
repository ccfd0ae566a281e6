"""Telling a wrong URL from rows' own 404s, before the first request is accepted (issue 16).

A full endpoint given as the base URL (`.../v1/chat/completions`), a missing `/v1`, a typo in the
host's path: every row is answered 404 "Invalid URL" / "Not Found", and a run that recorded each
one would burn through the whole input. `WrongUrlGuard` holds such rows back instead:

- Until some request is accepted (a 2xx, or a 4xx other than 404/408/409/429: an endpoint that
  exists judged it), a row answered 404 "not found" waits in `hold`; its record is not handed on.
- The first accepted request proves the URL right: every held row returns, and its error record
  stands (those 404s were the rows' own).
- `NOT_FOUND_LIMIT` such answers prove it wrong; so do fewer when no other request can come to
  prove it right: every worker holds one (`workers`), or the input has no more rows
  (`input_done`) and every request in flight is held. `hold` then raises
  `FatalRunError("not_found")` naming the URL and `--base-url`; the held rows stay pending.

Pure bookkeeping on the event loop; the `Sender` calls it and counts what is in flight.
"""

from __future__ import annotations

import json
import re
from typing import Any

import anyio

from batchrun.common.errors import FatalRunError
from batchrun.send.retry import error_summary

__all__ = ["NOT_FOUND_LIMIT", "WrongUrlGuard"]

NOT_FOUND_LIMIT = 20
# What servers say for a path they do not serve: OpenAI and one-api "Invalid URL (POST /v1/..)",
# FastAPI (vLLM) {"detail": "Not Found"}, nginx "404 Not Found", llama.cpp "File Not Found".
_NOT_FOUND_TEXT = re.compile(r"invalid url|not found|no route|unknown (path|route|endpoint)", re.I)


class WrongUrlGuard:
    def __init__(self, *, base_url: str, workers: int, limit: int = NOT_FOUND_LIMIT) -> None:
        self._base_url = base_url
        self._limit = max(1, min(limit, workers))
        self._input_done = False
        self.confirmed = False  # some request was accepted: the URL is right
        self._not_found = 0
        self._held = 0
        self._decided: anyio.Event | None = None
        self._wrong: FatalRunError | None = None
        self._last: tuple[str, str, str] = ("", "", "")  # url, endpoint, the server's words

    def answered(self, status: int) -> None:
        """Every HTTP answer comes here; one an existing endpoint gives confirms the URL."""
        if not self.confirmed and _endpoint_exists(status):
            self.confirmed = True
            self._decide()

    def suspect(self, status: int | None, text: str | None) -> bool:
        """Whether a row's final answer may be a wrong URL's (then call `hold`)."""
        return not self.confirmed and _is_not_found(status, text)

    async def hold(self, *, url: str, endpoint: str, text: str | None, in_flight: int) -> None:
        """Wait for the verdict on a row answered "not found". Returns when the URL is right;
        raises `FatalRunError` when it is wrong. `in_flight`: requests in flight, this one too."""
        self._not_found += 1
        self._last = (url, endpoint, _server_words(text))
        if self._not_found >= self._limit or (self._input_done and self._held + 1 >= in_flight):
            self._prove_wrong()
        if self._decided is None:
            self._decided = anyio.Event()
        decided = self._decided
        self._held += 1
        try:
            if self._wrong is None and not self.confirmed:
                await decided.wait()
        finally:
            self._held -= 1
        if self._wrong is not None:
            raise FatalRunError(self._wrong.kind, self._wrong.message)

    def left(self, in_flight: int) -> None:
        """A request ended: if no row is left to send and only held rows are in flight, nothing
        can prove the URL right."""
        if self._input_done and self._held and self._held >= in_flight and not self.confirmed:
            self._prove_wrong()

    def input_done(self, in_flight: int) -> None:
        """No more rows will be sent than those in flight."""
        self._input_done = True
        self.left(in_flight)

    def release(self) -> None:
        """The run stops for another reason: held rows return (and find the run stopping)."""
        self._decide()

    def _prove_wrong(self) -> None:
        if self._wrong is None and not self.confirmed:
            url, endpoint, words = self._last
            n = self._not_found
            self._wrong = FatalRunError(
                "not_found",
                f"{n} request{'s' * (n > 1)} answered HTTP 404 ({words}) and none was accepted: "
                f"the URL is wrong. Rows went to {url}, that is --base-url {self._base_url} "
                f"joined with the endpoint {endpoint}; --base-url must be the API's base URL, "
                "such as https://api.openai.com/v1 (check it, and the rows' url or --endpoint)",
            )
        self._decide()

    def _decide(self) -> None:
        if self._decided is not None:
            self._decided.set()


def _endpoint_exists(status: int) -> bool:
    """An answer only an endpoint that exists gives: it accepted or judged the request."""
    return 200 <= status < 300 or (400 <= status < 500 and status not in (404, 408, 409, 429))


def _is_not_found(status: int | None, text: str | None) -> bool:
    """A 404 for the path, not for a model (`model_not_found`: the URL was right)."""
    if status != 404:
        return False
    if not text or not text.strip():
        return True
    code, message = error_summary(_json(text), text)
    if code == "model_not_found" or "model" in message.lower():
        return False
    return _NOT_FOUND_TEXT.search(message) is not None


def _server_words(text: str | None) -> str:
    return error_summary(_json(text), text)[1] if text else "empty body"


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None
