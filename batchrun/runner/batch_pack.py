"""Packing the pending rows into chunks a provider accepts, streamed from the input.

    iter_requests(input, skip=done | claimed) ──► Packer.next_chunk() ──► Chunk ("packed")
                                               └─► bad rows as error records (Packer.bad)

Guarantees:
- Rows are read by the same reader, with the same template, as an online run, so a row means the
  same whichever backend sends it, and a row that cannot be sent is the same `bad_input` record.
- A chunk holds rows of one endpoint, at most the provider's requests, bytes and (embeddings)
  inputs per batch, or the smaller `batch_max_*` asked for; it is sealed as soon as the next row
  would not fit, so a chunk's file is on disk and in the journal before the next one starts.
- A row the provider's Batch API cannot take (an endpoint it does not serve, a row larger than a
  whole batch, Anthropic's `max_tokens: 0`) is a `bad_input` record saying so, not a failed batch.
- With `--max-cost` (a `CostBudget` whose spend counts the worst case of every live chunk), a row
  is packed only if its worst case fits; the first that does not ends the packing (`blocked`
  says why), with the chunks packed so far sealed: a batch's cost is committed when it is
  created, so it must fit before.
- Memory: one row at a time, and the open chunk of each endpoint on disk. Blocking: call
  `next_chunk` from a worker thread, one call at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from batchrun.common.ranges import RangeSet
from batchrun.config import RunConfig
from batchrun.cost.budget import CostBudget
from batchrun.endpoints.batch_wire import ANTHROPIC_ENDPOINT, embedding_inputs
from batchrun.inputs.reader import iter_requests
from batchrun.models import ErrorType, Record, Request, RowError
from batchrun.runner.batch_provider import Provider
from batchrun.store.batch_files import ChunkWriter
from batchrun.store.batch_journal import BatchJournal, Chunk

__all__ = ["Packer", "bad_row_record"]

_STOP_CHECK_ROWS = 1024


def bad_row_record(row: int, custom_id: str, message: str, url: str | None = None) -> Record:
    return Record(
        custom_id=custom_id,
        row=row,
        status="error",
        endpoint=url,
        error_type=ErrorType.BAD_INPUT,
        error_message=message,
        attempts=0,
    )


@dataclass(slots=True)
class _Open:
    writer: ChunkWriter
    embedding_inputs: int = 0
    worst_usd: float = 0.0


class Packer:
    """Packs the rows not in `skip` into chunks; `bad` collects the rows that cannot go."""

    def __init__(
        self,
        config: RunConfig,
        provider: Provider,
        journal: BatchJournal,
        skip: RangeSet,
        budget: CostBudget | None = None,
    ) -> None:
        self._config = config
        self._budget = budget
        self.blocked: str | None = None  # why packing stopped short: the cost budget
        self._provider = provider
        self._journal = journal
        limits = provider.limits
        self._max_requests = config.batch_max_requests or limits.max_requests
        self._max_bytes = config.batch_max_bytes or limits.max_bytes
        self._max_inputs = limits.max_embedding_inputs
        self._rows = iter_requests(
            config.input_path,
            endpoint=config.endpoint,
            skip=skip,
            max_row_bytes=config.max_row_bytes,
            template=config.template,
        )
        self._open: dict[str, _Open] = {}
        self._next_number = journal.next_number()
        self._read_all = False
        self.bad: list[Record] = []

    def next_chunk(self, should_stop: Callable[[], bool]) -> tuple[Chunk | None, bool]:
        """The next sealed chunk (None: none yet), and whether rows may remain. Returns early,
        without a chunk, once `bad` holds a flush's worth of records, or when `should_stop`."""
        read = 0
        while not self._read_all and self.blocked is None:
            read += 1
            if read % _STOP_CHECK_ROWS == 0 and should_stop():
                return None, True
            if len(self.bad) >= self._config.flush_rows:
                return None, True
            item = next(self._rows, None)
            if item is None:
                self._read_all = True
                break
            if isinstance(item, RowError):
                message = item.message
                self.bad.append(bad_row_record(item.row, item.custom_id, message))
                continue
            assert isinstance(item, Request)  # no id judge: the ids were checked by the whole pass
            sealed = self._add(item)
            if sealed is not None:
                return sealed, True
        if self._open:
            endpoint = next(iter(self._open))
            return self._seal(endpoint, self._open.pop(endpoint)), bool(self._open)
        return None, False

    def close(self) -> None:
        """Give up the chunks not sealed (their rows stay pending) and the input."""
        for chunk in self._open.values():
            chunk.writer.discard()
        self._open.clear()
        self._rows.close()

    def _add(self, request: Request) -> Chunk | None:
        problem = self._problem(request)
        if problem is not None:
            self.bad.append(bad_row_record(request.row, request.custom_id, problem, request.url))
            return None
        item, wire_id = self._provider.item(request)
        frame = self._provider.frame
        if len(frame.head) + len(item) + len(frame.tail) > self._max_bytes:
            message = (
                f"row {request.row}: the request is {len(item):,} bytes, over the "
                f"{self._max_bytes:,} bytes a {self._provider.backend} batch may hold"
            )
            self.bad.append(bad_row_record(request.row, request.custom_id, message, request.url))
            return None
        worst = 0.0
        if self._budget is not None:
            reserved = self._budget.try_reserve(request)
            if reserved is None:
                self.blocked = self._budget.exhausted(request)
                return None
            worst = reserved
        inputs = 0
        if self._max_inputs is not None and request.url.endswith("/embeddings"):
            inputs = embedding_inputs(json.loads(request.body))
        sealed = None
        current = self._open.get(request.url)
        if current is not None and (
            current.writer.requests >= self._max_requests
            or current.writer.size_with(item) > self._max_bytes
            or (inputs and current.embedding_inputs + inputs > (self._max_inputs or 0))
        ):
            sealed = self._seal(request.url, self._open.pop(request.url))
            current = None
        if current is None:
            current = self._open[request.url] = _Open(self._new_writer())
        current.writer.add(item, row=request.row, wire_id=wire_id, custom_id=request.custom_id)
        current.embedding_inputs += inputs
        current.worst_usd += worst
        return sealed

    def _new_writer(self) -> ChunkWriter:
        frame = self._provider.frame
        number = self._next_number
        self._next_number += 1
        return ChunkWriter(
            self._config.out_dir,
            number,
            suffix=frame.suffix,
            head=frame.head,
            separator=frame.separator,
            tail=frame.tail,
        )

    def _seal(self, endpoint: str, chunk: _Open) -> Chunk:
        sealed = chunk.writer.seal()
        return self._journal.add(
            sealed,
            backend=self._provider.backend,
            base_url=self._config.base_url,
            endpoint=endpoint,
            worst_usd=chunk.worst_usd,
        )

    def _problem(self, request: Request) -> str | None:
        """Why the provider's Batch API cannot take this row, or None."""
        backend, limits = self._provider.backend, self._provider.limits
        where = f"row {request.row}"
        if request.url not in limits.endpoints:
            if backend == "anthropic-batch":
                return (
                    f"{where}: anthropic-batch sends Messages API requests ({ANTHROPIC_ENDPOINT}) "
                    f"and this row is for {request.url}; give such rows --endpoint "
                    f"{ANTHROPIC_ENDPOINT} (a Messages API body), or send them with "
                    "--backend online"
                )
            served = ", ".join(sorted(limits.endpoints))
            return (
                f"{where}: the OpenAI Batch API does not serve {request.url} (it serves "
                f"{served}); send this row with --backend online"
            )
        if backend == "anthropic-batch" and b'"max_tokens"' in request.body:
            body = json.loads(request.body)
            if body.get("max_tokens") == 0:
                return f"{where}: max_tokens 0 (cache pre-warming) is not allowed in a batch"
        return None
