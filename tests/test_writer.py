"""batchrun.store.writer: part files committed atomically, then the checkpoint; a failed commit."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batchrun.common.ranges import RangeSet
from batchrun.models import Record
from batchrun.store import checkpoint as checkpoint_mod
from batchrun.store import writer as writer_mod
from batchrun.store.checkpoint import Checkpoint, Fingerprint
from batchrun.store.writer import ResultWriter


def new_checkpoint(out: Path) -> Checkpoint:
    checkpoint = Checkpoint(
        input_path="in.jsonl",
        fingerprint=Fingerprint(size=1, digest="ab" * 32, method="sha256"),
        settings={"endpoint": "/v1/chat/completions"},
        total_rows=10,
    )
    checkpoint.save(out)
    return checkpoint


def records(rows: range) -> list[Record]:
    return [Record(custom_id=f"c-{r}", row=r, status="ok", attempts=1) for r in rows]


def no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_commit_writes_a_part_then_the_checkpoint(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, new_checkpoint(tmp_path))
    writer.commit(records(range(0, 3)))
    writer.commit(records(range(3, 5)))
    assert [p.name for p in sorted((tmp_path / "results").iterdir())] == [
        "part-000000.parquet",
        "part-000001.parquet",
    ]
    saved = Checkpoint.load(tmp_path)
    assert saved is not None
    assert (saved.parts, saved.done, saved.counts) == (2, RangeSet([(0, 5)]), {"ok": 5, "error": 0})


def test_a_full_disk_while_writing_a_part_leaves_the_checkpoint_and_no_half_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = ResultWriter(tmp_path, new_checkpoint(tmp_path))
    writer.commit(records(range(0, 3)))
    monkeypatch.setattr(writer_mod.pq, "write_table", no_space)
    with pytest.raises(OSError, match="No space left on device"):
        writer.commit(records(range(3, 6)))
    # The half-written part is gone (its space given back), the checkpoint is the one before.
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["part-000000.parquet"]
    saved = Checkpoint.load(tmp_path)
    assert saved is not None and (saved.parts, saved.done) == (1, RangeSet([(0, 3)]))
    assert (writer.checkpoint.parts, writer.checkpoint.done) == (1, RangeSet([(0, 3)]))


def test_a_full_disk_while_saving_the_checkpoint_is_adopted_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = ResultWriter(tmp_path, new_checkpoint(tmp_path))
    writer.commit(records(range(0, 3)))
    monkeypatch.setattr(checkpoint_mod, "atomic_write_bytes", no_space)
    with pytest.raises(OSError, match="No space left on device"):
        writer.commit(records(range(3, 6)))
    monkeypatch.undo()
    # On disk: the part is complete and in place, the checkpoint does not count it yet.
    saved = Checkpoint.load(tmp_path)
    assert saved is not None and saved.parts == 1
    assert pq.read_table(tmp_path / "results" / "part-000001.parquet").num_rows == 3
    # A resume adopts it: its rows are neither lost nor sent again.
    resumed = ResultWriter(tmp_path, saved)
    assert resumed.recover() == 3
    again = Checkpoint.load(tmp_path)
    assert again is not None
    assert (again.parts, again.done, again.counts["ok"]) == (2, RangeSet([(0, 6)]), 6)


def test_commits_need_not_import_pandas_and_pandas_still_works_after(tmp_path: Path) -> None:
    """In a fresh interpreter (this one may have pandas loaded by other tests)."""
    script = f"""
import sys
from pathlib import Path
from batchrun.models import Record
from batchrun.store.checkpoint import Checkpoint, Fingerprint
from batchrun.store.writer import ResultWriter, skip_pandas_import
out = Path({str(tmp_path)!r})
fingerprint = Fingerprint(size=1, digest="x", method="sha256")
checkpoint = Checkpoint(input_path="in", fingerprint=fingerprint, settings={{}}, total_rows=2)
skip_pandas_import()
ResultWriter(out, checkpoint).commit(
    [Record(custom_id=str(i), row=i, status="ok", attempts=1) for i in range(2)]
)
print("pandas" in sys.modules)
import pyarrow.parquet as pq
print(pq.read_table(out / "results").to_pandas().shape)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split("\n")[:2] == ["False", "(2, 19)"], done.stderr
