"""The mock's Batch API routes: OpenAI's `/v1/files` and `/v1/batches`, Anthropic's
`/v1/messages/batches`, with their latency and the faults tests ask for.

    route(request) ──► (label, Reply) | None        label: the path with ids as {id}, for stats

`MockConfig.batch_faults` names operations (upload, create, get, list, content, cancel, results)
whose first N calls are carried out and then answered with a dropped connection: the reply a
client never sees although the server acted on the request, the case that tests whether a client
looks before it sends again. `validate: N` fails the first N OpenAI batches in validation, as
OpenAI does when the organisation's enqueued-token limit is reached (openai-python#1643).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

from batchrun.mock.batches import BatchService, Execute
from batchrun.mock.files import FileStore
from batchrun.mock.http import HttpRequest, Reply
from batchrun.mock.message_batches import MessageBatchService

__all__ = ["BATCH_FAULT_OPERATIONS", "BatchApi"]

BATCH_FAULT_OPERATIONS = (
    "upload", "create", "get", "list", "content", "cancel", "results", "validate"
)  # fmt: skip
PREFIXES = ("/v1/files", "/v1/batches", "/v1/messages/batches")


class BatchApi:
    """Files, batches and message batches of one mock server."""

    def __init__(
        self,
        *,
        execute: Execute,
        execute_message: Execute,
        clock: Callable[[], float],
        phase_s: float,
        latency_s: float,
        faults: Mapping[str, int],
        base_url: Callable[[], str],
    ) -> None:
        self.files = FileStore()
        self._faults: Counter[str] = Counter(faults)
        self.batches = BatchService(
            self.files, execute, clock=clock, phase_s=phase_s, fail_validation=self._fail_validation
        )
        self.message_batches = MessageBatchService(
            execute_message, clock=clock, phase_s=phase_s, base_url=base_url
        )
        self._latency_s = latency_s

    def _fail_validation(self) -> bool:
        if self._faults["validate"] > 0:
            self._faults["validate"] -= 1
            return True
        return False

    def stats(self) -> dict[str, object]:
        return {
            "files_uploaded": self.files.uploads,
            "openai": self.batches.stats(),
            "anthropic": self.message_batches.stats(),
        }

    def route(self, request: HttpRequest) -> tuple[str, Reply] | None:
        found = self._dispatch(request.method, request.path.rstrip("/"), request)
        if found is None:
            return None
        label, operation, reply = found
        if reply.status < 400 and self._faults[operation] > 0:
            self._faults[operation] -= 1
            reply.action = "reset"  # done, but the client never hears of it
        reply.delay_s = self._latency_s
        return label, reply

    def _dispatch(
        self, method: str, path: str, request: HttpRequest
    ) -> tuple[str, str, Reply] | None:
        parts = path.split("/")[2:]  # without "", "v1"
        files, batches, messages = self.files, self.batches, self.message_batches
        if parts[0] == "files":
            if len(parts) == 1:
                if method == "POST":
                    return "/v1/files", "upload", files.upload(request)
                if method == "GET":
                    return "/v1/files", "list", files.listing(request)
            elif len(parts) == 2 and method == "GET":
                return "/v1/files/{id}", "get", files.get(parts[1])
            elif len(parts) == 2 and method == "DELETE":
                return "/v1/files/{id}", "delete", files.delete(parts[1])
            elif len(parts) == 3 and parts[2] == "content" and method == "GET":
                return "/v1/files/{id}/content", "content", files.content(parts[1])
            return None
        if parts[0] == "batches":
            if len(parts) == 1:
                if method == "POST":
                    return "/v1/batches", "create", batches.create(request)
                if method == "GET":
                    return "/v1/batches", "list", batches.listing(request)
            elif len(parts) == 2 and method == "GET":
                return "/v1/batches/{id}", "get", batches.get(parts[1])
            elif len(parts) == 3 and parts[2] == "cancel" and method == "POST":
                return "/v1/batches/{id}/cancel", "cancel", batches.cancel(parts[1])
            return None
        if parts[:2] == ["messages", "batches"]:
            rest = parts[2:]
            label = "/v1/messages/batches"
            if not rest:
                if method == "POST":
                    return label, "create", messages.create(request)
                if method == "GET":
                    return label, "list", messages.listing(request)
            elif len(rest) == 1 and method == "GET":
                return label + "/{id}", "get", messages.get(rest[0])
            elif len(rest) == 2 and rest[1] == "cancel" and method == "POST":
                return label + "/{id}/cancel", "cancel", messages.cancel(rest[0])
            elif len(rest) == 2 and rest[1] == "results" and method == "GET":
                return label + "/{id}/results", "results", messages.results(rest[0])
        return None
