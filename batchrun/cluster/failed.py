"""A shard that keeps failing ends as error records, as a bad row does in a local run.

Guarantees:
- Every pending row of the shard (not in its checkpoint's done rows) gets one error record
  (`bad_input`, with the reason and how often the shard failed), committed through the store's
  writer (part, then checkpoint), to OUT or to the object store through `ShardMirror`. Rows the
  shard committed before stay as they are: nothing twice.
- The rows' custom_ids are read as a local run reads them; where even they cannot be read, the
  row number stands in (the default id of a row without one), for the span's known rows.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from batchrun.cluster.shardrun import ShardResult, _local_input, shard_prefix
from batchrun.config import RunConfig
from batchrun.inputs.reader import InputError, iter_ids
from batchrun.inputs.shards import Shard
from batchrun.models import ErrorType, Record
from batchrun.runner.summary import RunTotals
from batchrun.store.checkpoint import Checkpoint, Fingerprint, OutputLock, fingerprint_file
from batchrun.store.remote import OutputLocation, ShardMirror
from batchrun.store.writer import ResultWriter

__all__ = ["fail_shard"]

_NO_END = 1 << 62
_CHUNK = 5000
_UNREADABLE = Fingerprint(size=-1, digest="", method="unreadable")


def fail_shard(
    shard: Shard, config: RunConfig, location: OutputLocation, reason: str
) -> ShardResult:
    message = f"shard {shard.id} {reason}"
    with tempfile.TemporaryDirectory(prefix="batchrun-failed-") as scratch:
        mirror: ShardMirror | None = None
        local = location.local
        if local is not None:
            out_dir = local / shard_prefix(shard.id)
        else:
            mirror = ShardMirror(location, shard_prefix(shard.id), Path(scratch) / "out")
            mirror.pull()
            out_dir = mirror.staging
        out_dir.mkdir(parents=True, exist_ok=True)
        with OutputLock(out_dir):
            try:
                input_path, span = _local_input(shard, Path(scratch) / "input")
            except (OSError, InputError):
                input_path, span = None, shard.span
            checkpoint = Checkpoint.load(out_dir)
            ids: list[tuple[int, str]] = []
            if input_path is not None:
                found = iter_ids(
                    input_path,
                    template=config.template,
                    max_row_bytes=config.max_row_bytes,
                    span=span,
                )
                with contextlib.suppress(InputError):  # the rest by row number below
                    for pair in found:
                        ids.append(pair)
            last = ids[-1][0] + 1 if ids else span.start_row
            if span.end_row < _NO_END:
                ids.extend((row, str(row)) for row in range(last, span.end_row))
            elif checkpoint is None and not ids:
                # Not one row readable, and the plan does not know how many there are: nothing
                # can stand for them, so the shard stays pending (and is reported so).
                return ShardResult(
                    shard_id=shard.id, total_rows=0, done_rows=0, ok=0, errors=0, cost_usd=0.0,
                    session=RunTotals(), stopped=message, fatal=False,
                )  # fmt: skip
            if checkpoint is None:
                checkpoint = Checkpoint(
                    input_path=str(input_path or shard.path),
                    fingerprint=fingerprint_file(input_path) if input_path else _UNREADABLE,
                    settings={
                        "endpoint": config.effective_endpoint,
                        "template": config.template.digest if config.template else None,
                    },
                    total_rows=len(ids),
                )
                checkpoint.save(out_dir)
            writer = ResultWriter(out_dir, checkpoint)
            writer.recover()
            records = [
                Record(
                    custom_id=cid,
                    row=row,
                    status="error",
                    error_type=ErrorType.BAD_INPUT,
                    error_message=message,
                    attempts=0,
                )
                for row, cid in ids
                if row not in checkpoint.done
            ]
            for i in range(0, len(records), _CHUNK):
                writer.commit(records[i : i + _CHUNK])
            if mirror is not None:
                mirror.push()
        session = RunTotals()
        for record in records:
            session.add(record)
        return ShardResult(
            shard_id=shard.id,
            total_rows=checkpoint.total_rows or 0,
            done_rows=len(checkpoint.done),
            ok=checkpoint.counts.get("ok", 0),
            errors=checkpoint.counts.get("error", 0),
            cost_usd=checkpoint.cost_usd,
            session=session,
            stopped=None,
            fatal=False,
        )
