"""One adapter per provider Batch API: how a chunk is framed and submitted, polled, cancelled and
downloaded, with every step in the journal first.

    submit(chunk):  OpenAI     uploading ─► upload ─► uploaded ─► creating ─► create ─► created
                    Anthropic                                      creating ─► create ─► created

Guarantees (DESIGN invariant 3, money is spent once):
- "uploading" / "creating" are durable before the request goes. A chunk whose journal says
  one of them and no answer is looked up at the provider before anything is sent again: an
  OpenAI file by its name (which carries the output's id, the chunk's number and its sha256)
  and size, an OpenAI batch by its metadata (output id, chunk number, sha256), an Anthropic
  batch (no metadata) by its request count among the batches created since, that no other
  chunk owns. Several Anthropic candidates are not guessed between: `Ambiguous` stops the run.
- A create whose answer was lost and that the provider does not list is not sent again in the
  same run (`NotListed`): a later run looks once more first.
- The request file is sent only if its sha256 is the one the journal recorded; one that is
  missing or changed before anything was sent makes the chunk `ChunkLost` (its rows go again).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio

from batchrun.endpoints.batch_wire import (
    ANTHROPIC,
    OPENAI,
    BatchLimits,
    BatchLine,
    anthropic_item,
    anthropic_wire_id,
    openai_line,
    read_anthropic_line,
    read_openai_line,
)
from batchrun.models import Request
from batchrun.send.anthropic_batches import AnthropicBatches
from batchrun.send.batch_http import BatchApiError, BatchState, MaybeAccepted
from batchrun.send.openai_batches import OpenAIBatches
from batchrun.store.batch_files import Download, FileKind, file_digest, request_file
from batchrun.store.batch_journal import BatchJournal, Chunk

__all__ = [
    "Ambiguous",
    "AnthropicProvider",
    "ChunkLost",
    "Frame",
    "NotListed",
    "OpenAIProvider",
    "Provider",
]

log = logging.getLogger("batchrun")
# Clocks differ between here and the provider: look back this much further than the intent.
LOOKUP_SKEW_S = 600.0


class ChunkLost(Exception):
    """The chunk's request file is gone or changed, and nothing of it was sent: pack it again."""


class Ambiguous(BatchApiError):
    """Several provider batches could be this chunk's; none is adopted, none is created."""


class NotListed(BatchApiError):
    """A create's answer was lost and the provider does not list such a batch (yet)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """How a chunk's request file is framed (see `batchrun.store.batch_journal.ChunkWriter`)."""

    suffix: str
    head: bytes = b""
    separator: bytes = b""
    tail: bytes = b""


class Provider(Protocol):
    backend: str
    limits: BatchLimits
    frame: Frame
    usage: str  # which usage reader gives an ok answer's tokens
    result_kinds: tuple[FileKind, ...]  # the files a chunk's results come in

    def item(self, request: Request) -> tuple[bytes, str]: ...

    def read_line(self, line: bytes) -> BatchLine: ...

    async def submit(self, chunk: Chunk) -> BatchState: ...

    async def get(self, batch_id: str) -> BatchState: ...

    async def cancel(self, batch_id: str) -> BatchState: ...

    async def download(self, chunk: Chunk, kind: FileKind) -> Path | None: ...


async def _verified(journal: BatchJournal, chunk: Chunk) -> Path:
    path = request_file(journal.out_dir, chunk.file_name)
    digest = await anyio.to_thread.run_sync(file_digest, path)
    if digest != chunk.sha256:
        raise ChunkLost(f"{path} is {'missing' if digest is None else 'changed'}")
    return path


Fetch = Callable[[Callable[[], Download]], Awaitable[Download]]


async def _download(journal: BatchJournal, chunk: Chunk, kind: FileKind, fetch: Fetch) -> Path:
    """Stream a result file into OUT/batches (a failed attempt leaves nothing behind)."""
    download = await fetch(lambda: Download(journal.out_dir, chunk.number, kind))
    return await anyio.to_thread.run_sync(download.finish)


class OpenAIProvider:
    """OpenAI's Batch API (and compatible servers: LiteLLM's proxy)."""

    backend = "openai-batch"
    frame = Frame(".jsonl")
    usage = "openai"
    result_kinds: tuple[FileKind, ...] = ("output", "errors")

    def __init__(self, api: OpenAIBatches, journal: BatchJournal, limits: BatchLimits = OPENAI):
        self._api = api
        self._journal = journal
        self.limits = limits

    def item(self, request: Request) -> tuple[bytes, str]:
        return openai_line(request.custom_id, request.url, request.body), request.custom_id

    def read_line(self, line: bytes) -> BatchLine:
        return read_openai_line(line)

    def _file_name(self, chunk: Chunk) -> str:
        return f"batchrun-{self._journal.out_id}-{chunk.number:06d}-{chunk.sha256[:16]}.jsonl"

    def _metadata(self, chunk: Chunk) -> dict[str, str]:
        return {
            "batchrun_out": self._journal.out_id,
            "batchrun_chunk": str(chunk.number),
            "batchrun_sha256": chunk.sha256[:32],
        }

    async def submit(self, chunk: Chunk) -> BatchState:
        journal, api, number = self._journal, self._api, chunk.number
        name = self._file_name(chunk)
        if chunk.file_id is None:
            file_id = None
            if chunk.uploading_at is not None:
                since = chunk.uploading_at - LOOKUP_SKEW_S
                file_id = await api.find_upload(name, chunk.size_bytes, since)
            if file_id is None:
                path = await _verified(journal, chunk)
                journal.record(number, "uploading")
                try:
                    file_id = await api.upload(path, name)
                except MaybeAccepted as exc:
                    since = (chunk.uploading_at or 0.0) - LOOKUP_SKEW_S
                    file_id = await api.find_upload(name, chunk.size_bytes, since)
                    if file_id is None:  # a file costs nothing: sending it again is safe
                        log.info("chunk %s: %s; uploading again", number, exc.message)
                        file_id = await api.upload(path, name)
            journal.record(number, "uploaded", file_id=file_id)
        assert chunk.file_id is not None
        metadata = self._metadata(chunk)
        state = None
        if chunk.creating_at is not None:
            state = await api.find_batch(metadata, chunk.creating_at - LOOKUP_SKEW_S)
        if state is None:
            journal.record(number, "creating")
            try:
                state = await api.create(chunk.file_id, chunk.endpoint, metadata)
            except MaybeAccepted as exc:
                assert chunk.creating_at is not None
                state = await api.find_batch(metadata, chunk.creating_at - LOOKUP_SKEW_S)
                if state is None:
                    raise NotListed(
                        f"chunk {number}: {exc.message}; the batch may have been created, but "
                        "the provider does not list it; run the same command again: it looks "
                        "again before creating one"
                    ) from exc
        journal.record(number, "created", batch_id=state.id, status=state.status,
                       counts=state.counts)  # fmt: skip
        return state

    async def get(self, batch_id: str) -> BatchState:
        return await self._api.get(batch_id)

    async def cancel(self, batch_id: str) -> BatchState:
        return await self._api.cancel(batch_id)

    async def download(self, chunk: Chunk, kind: FileKind) -> Path | None:
        file_id = chunk.output_file_id if kind == "output" else chunk.error_file_id
        if file_id is None:
            return None
        return await _download(
            self._journal, chunk, kind, lambda sink: self._api.download(file_id, sink)
        )


class AnthropicProvider:
    """Anthropic's Message Batches."""

    backend = "anthropic-batch"
    frame = Frame(".json", head=b'{"requests":[', separator=b",", tail=b"]}")
    usage = "claude"
    result_kinds: tuple[FileKind, ...] = ("output",)

    def __init__(
        self, api: AnthropicBatches, journal: BatchJournal, limits: BatchLimits = ANTHROPIC
    ):
        self._api = api
        self._journal = journal
        self.limits = limits

    def item(self, request: Request) -> tuple[bytes, str]:
        wire_id = anthropic_wire_id(request.custom_id, request.row)
        return anthropic_item(wire_id, request.body), wire_id

    def read_line(self, line: bytes) -> BatchLine:
        return read_anthropic_line(line)

    async def _find(self, chunk: Chunk) -> BatchState | None:
        assert chunk.creating_at is not None
        known = self._journal.batch_ids()
        found = await self._api.find_batches(
            chunk.requests, chunk.creating_at - LOOKUP_SKEW_S, known
        )
        if len(found) > 1:
            ids = ", ".join(state.id for state in found)
            raise Ambiguous(
                f"chunk {chunk.number}: its create may have been accepted, and {len(found)} "
                f"message batches of {chunk.requests} requests were created since ({ids}); "
                "batchrun cannot tell which is this chunk's (message batches carry no "
                "metadata), so it creates none: cancel the ones that are not yours, then run "
                "the same command again"
            )
        return found[0] if found else None

    async def submit(self, chunk: Chunk) -> BatchState:
        journal, number = self._journal, chunk.number
        state = await self._find(chunk) if chunk.creating_at is not None else None
        if state is None:
            path = await _verified(journal, chunk)
            journal.record(number, "creating")
            try:
                state = await self._api.create(path, chunk.size_bytes)
            except MaybeAccepted as exc:
                state = await self._find(chunk)
                if state is None:
                    raise NotListed(
                        f"chunk {number}: {exc.message}; the batch may have been created, but "
                        "the provider does not list it; run the same command again: it looks "
                        "again before creating one"
                    ) from exc
        journal.record(number, "created", batch_id=state.id, status=state.status,
                       counts=state.counts)  # fmt: skip
        return state

    async def get(self, batch_id: str) -> BatchState:
        return await self._api.get(batch_id)

    async def cancel(self, batch_id: str) -> BatchState:
        return await self._api.cancel(batch_id)

    async def download(self, chunk: Chunk, kind: FileKind) -> Path | None:
        batch_id = chunk.batch_id
        assert batch_id is not None
        return await _download(
            self._journal, chunk, kind, lambda sink: self._api.results(batch_id, sink)
        )
