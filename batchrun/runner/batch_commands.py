"""`batchrun status OUT` and `batchrun cancel OUT`: a batch output's chunks as they stand, and
stopping what is still running at the provider.

Guarantees:
- Neither writes under OUT nor takes its lock: they read the journal (a run may be collecting at
  the same time) and ask the provider. `status` only reads (GET); with `refresh=False` it shows
  what the journal last saw and sends nothing.
- `cancel` asks the provider to cancel every batch that has not ended, and nothing else: what
  completed is kept, and the next `batchrun run` on OUT collects the partial results (rows
  that never ran become `batch_cancelled` records).
- The API key goes only to the base URL each chunk was sent to (or `base_url` when given).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx2

from batchrun.common.errors import FatalRunError
from batchrun.runner.batch_provider import Provider
from batchrun.runner.batch_run import make_provider
from batchrun.runner.render import format_table
from batchrun.send.batch_http import BatchApiError, BatchState
from batchrun.store.batch_journal import BatchJournal, Chunk
from batchrun.store.checkpoint import Checkpoint

__all__ = ["BatchView", "StatusReport", "cancel_batches", "render_status", "status_of"]

KeyFor = Callable[[str], str | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchView:
    chunk: int
    backend: str
    batch_id: str | None
    rows: int
    stage: str  # the journal's word: packed, uploading, submitted, ended, collected...
    status: str | None  # the provider's word
    counts: dict[str, int]
    error: str | None = None  # why the provider could not be asked


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReport:
    out_dir: str
    total_rows: int | None
    ok: int
    errors: int
    batches: list[BatchView] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def _view(chunk: Chunk, state: BatchState | None = None, error: str | None = None) -> BatchView:
    return BatchView(
        chunk=chunk.number,
        backend=chunk.backend,
        batch_id=chunk.batch_id,
        rows=chunk.requests,
        stage=chunk.stage,
        status=state.status if state else chunk.status,
        counts=state.counts if state else chunk.counts,
        error=error,
    )


def _journal(out_dir: Path) -> BatchJournal:
    journal = BatchJournal.load(out_dir)
    if journal is None:
        path = BatchJournal.path_in(out_dir)
        raise FileNotFoundError(f"{out_dir} has no provider batches (no {path})")
    return journal


async def status_of(
    out_dir: Path,
    *,
    key_for: KeyFor,
    base_url: str | None = None,
    refresh: bool = True,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> StatusReport:
    """Every chunk of OUT, those in flight as the provider sees them now (with `refresh`)."""
    journal = _journal(out_dir)
    checkpoint = Checkpoint.load(out_dir)

    async def ask(chunk: Chunk, client: httpx2.AsyncClient) -> BatchView:
        provider = _provider(chunk, journal, client, key_for, base_url)
        assert chunk.batch_id is not None
        try:
            return _view(chunk, await provider.get(chunk.batch_id))
        except (BatchApiError, FatalRunError) as exc:
            return _view(chunk, error=exc.message)

    views = []
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30.0), transport=transport) as client:
        for _, chunk in sorted(journal.chunks.items()):
            in_flight = chunk.live and chunk.batch_id is not None and not chunk.ended
            views.append(await ask(chunk, client) if refresh and in_flight else _view(chunk))
    return StatusReport(
        out_dir=str(out_dir),
        total_rows=checkpoint.total_rows if checkpoint else None,
        ok=checkpoint.counts.get("ok", 0) if checkpoint else 0,
        errors=checkpoint.counts.get("error", 0) if checkpoint else 0,
        batches=views,
    )


async def cancel_batches(
    out_dir: Path,
    *,
    key_for: KeyFor,
    base_url: str | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> list[BatchView]:
    """Cancel every batch of OUT that has not ended; their states as the provider answers."""
    journal = _journal(out_dir)
    views = []
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30.0), transport=transport) as client:
        for chunk in journal.live_chunks:
            if chunk.batch_id is None or chunk.ended:
                continue
            provider = _provider(chunk, journal, client, key_for, base_url)
            try:
                views.append(_view(chunk, await provider.cancel(chunk.batch_id)))
            except (BatchApiError, FatalRunError) as exc:
                views.append(_view(chunk, error=exc.message))
    return views


def _provider(
    chunk: Chunk,
    journal: BatchJournal,
    client: httpx2.AsyncClient,
    key_for: KeyFor,
    base_url: str | None,
) -> Provider:
    return make_provider(
        chunk.backend,
        journal,
        client,
        base_url=base_url or chunk.base_url,
        api_key=key_for(chunk.backend),
        max_retries=2,
    )


def render_status(report: StatusReport) -> str:
    header = ["chunk", "backend", "batch", "rows", "stage", "provider status", "requests"]
    body = []
    for view in report.batches:
        counts = ", ".join(f"{k} {v:,}" for k, v in view.counts.items()) or "-"
        status = view.status or "-"
        if view.error:
            status += f" (cannot ask: {view.error})"
        body.append([str(view.chunk), view.backend, view.batch_id or "-", f"{view.rows:,}",
                     view.stage, status, counts])  # fmt: skip
    live = sum(1 for v in report.batches if v.stage not in ("collected", "abandoned"))
    total = "?" if report.total_rows is None else f"{report.total_rows:,}"
    lines = [
        f"{report.out_dir}: {len(report.batches)} batches ({live} not collected yet); "
        f"results: {report.ok:,} ok, {report.errors:,} errors of {total} rows",
        "",
        *format_table(header, body, left=3),
    ]
    return "\n".join(lines)
