"""Replacing a committed part file in place, for a step that completes its records later
(`batchrun media` adding the media files a run could not download).

Guarantees:
- The new part is written under a hidden name, fsynced, then renamed over the old one and the
  folder fsynced: a reader, or a crash, sees the old part or the new one, never half of one. The
  rows it holds do not change (each record is updated, none added or removed), so the
  checkpoint stays true and exactly one record per row stays in OUT/results.
- The part keeps its own schema (an output's first schema stays the first, see `writer`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.store.checkpoint import fsync_dir

__all__ = ["read_part", "replace_part"]


def read_part(path: Path) -> tuple[list[dict[str, Any]], pa.Schema]:
    table = pq.read_table(path)
    return table.to_pylist(), table.schema


def replace_part(path: Path, records: list[dict[str, Any]], schema: pa.Schema) -> None:
    """`path` now holds `records` (the same rows, updated), atomically."""
    old_rows = pq.read_table(path, columns=["row"]).column("row").to_pylist()
    if sorted(old_rows) != sorted(r["row"] for r in records):
        raise ValueError(f"{path.name}: a replacement must hold the same rows")
    table = pa.Table.from_pylist(records, schema=schema)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    fsync_dir(path.parent)
