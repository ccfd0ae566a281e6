"""`--update`: resume an output whose input (or template) has changed since it was made.

    changed input ─► close a stopped retry pass ─► match records to the new rows by custom_id
                     (batchrun.store.update: unchanged requests keep their record) ─► the
                     checkpoint is the new input's ─► the run sends what is not done

Guarantees:
- Only the changed and new rows are sent, each once: after the switch the output is an ordinary
  resumable output of the new input, and before it the old one, whole.
- The rows' requests are rendered as the run renders them (the same reader, template and
  limits), so a changed template changes every row it renders differently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from batchrun.common.errors import FatalRunError
from batchrun.config import RunConfig
from batchrun.inputs.reader import iter_requests
from batchrun.models import Request
from batchrun.runner.rerun import close_open_pass
from batchrun.store.checkpoint import Fingerprint
from batchrun.store.ordered import ResultsError
from batchrun.store.update import UpdateCounts, update_output
from batchrun.store.writer import ResultWriter

__all__ = ["PendingUpdate", "apply_update"]

log = logging.getLogger("batchrun")


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingUpdate:
    """The new input's fingerprint and settings, found different from the checkpoint's."""

    fingerprint: Fingerprint
    settings: dict[str, Any]


def apply_update(config: RunConfig, writer: ResultWriter, update: PendingUpdate) -> UpdateCounts:
    """Match the output to the changed input and switch it over. Blocking."""
    close_open_pass(config, writer)
    log.info(
        "--update: matching the records to %s by custom_id (rows without one by row number)",
        config.input_path,
    )
    try:
        counts = update_output(
            config.out_dir,
            writer.checkpoint,
            _requests(config),
            input_path=config.input_path,
            fingerprint=update.fingerprint,
            settings=update.settings,
        )
    except (OSError, ResultsError) as exc:  # nothing was sent, and the output is as it was
        raise FatalRunError(
            "output",
            f"cannot match the records of {config.out_dir} to the changed input: {exc}; once "
            "that is fixed, run the same command to resume",
        ) from exc
    log.info("--update: %s", describe_update(counts))
    return counts


def describe_update(counts: UpdateCounts) -> str:
    parts = [
        f"{counts.unchanged:,} rows unchanged (kept)",
        f"{counts.changed:,} changed",
        f"{counts.added:,} new",
        f"{counts.removed:,} removed from the results",
    ]
    if counts.repeated:
        parts.append(f"{counts.repeated:,} repeating an earlier row's custom_id")
    if counts.unsendable:
        parts.append(f"{counts.unsendable:,} that cannot be sent (bad input)")
    return ", ".join(parts) + f"; {counts.to_send:,} to send or record"


def _requests(config: RunConfig) -> Iterator[tuple[int, str, str | None]]:
    rows = iter_requests(
        config.input_path,
        endpoint=config.endpoint,
        max_row_bytes=config.max_row_bytes,
        template=config.template,
    )
    try:
        for item in rows:
            digest = item.request_sha256 if isinstance(item, Request) else None
            yield item.row, item.custom_id, digest  # type: ignore[union-attr]
    finally:
        rows.close()
