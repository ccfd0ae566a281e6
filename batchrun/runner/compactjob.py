"""The compaction at the end of a retry pass, in a process of its own: `python -m
batchrun.runner.compactjob OUT`, run by the `batchrun run` that holds OUT's lock.

A process of its own, because the memory a compaction takes (a window of records, the Parquet
writer) would otherwise stack on what the sending left in the run's own heap: peak RSS of a
retry pass over 1M rows with 10% errors was 239 MB against 211 MB at 100k rows with it in the
run's process (jemalloc), while a compaction alone takes ~205 MB at either size. Prints the
`CompactSummary` as one JSON line; exit 1 with the reason on stderr.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from batchrun.runner.export import use_returning_allocator
from batchrun.store.checkpoint import Checkpoint, CheckpointError
from batchrun.store.compact import compact, open_writer
from batchrun.store.ordered import ResultsError

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Compact OUT (`argv[0]`); the caller holds its lock."""
    out = Path(argv[0])
    use_returning_allocator()
    try:
        checkpoint = Checkpoint.load(out)
        if checkpoint is None:
            raise CheckpointError(f"{out} has no checkpoint.json")
        writer = open_writer(out, checkpoint)
        if writer.rerun is not None:
            writer.rerun.close()
        done = compact(out, checkpoint)
    except (OSError, CheckpointError, ResultsError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(json.dumps(dataclasses.asdict(done)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
