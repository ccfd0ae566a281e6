"""`batchrun compact` (batchrun.store.compact): fewer parts, one record per row, atomic."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from batchrun.models import Record
from batchrun.store import compact as compact_module
from batchrun.store.checkpoint import Checkpoint, Fingerprint, OutputLock, OutputLockedError
from batchrun.store.compact import compact, compact_output, open_writer
from batchrun.store.ordered import RowOrder
from batchrun.store.writer import RESULT_SCHEMA, ResultWriter
from tests.test_cli import run_cli


def _record(row: int, status: str, attempts: int = 1) -> Record:
    return Record(
        custom_id=f"id-{row}",
        row=row,
        status=status,
        error_type=None if status == "ok" else "server_error",
        attempts=attempts,
        response='{"ok": true}' if status == "ok" else None,
    )


def _output(out: Path, rows: int = 50, part_rows: int = 7) -> Checkpoint:
    """An output of `rows` rows, every fifth an error, then the errors superseded by ok records
    in later parts (as a retry pass leaves them before compaction)."""
    checkpoint = Checkpoint(
        input_path="in.jsonl",
        fingerprint=Fingerprint(size=0, digest="x", method="sha256"),
        settings={},
        total_rows=rows,
        duplicates=0,
    )
    writer = ResultWriter(out, checkpoint)
    first = [_record(r, "error" if r % 5 == 0 else "ok") for r in range(rows)]
    for start in range(0, rows, part_rows):
        writer.commit(first[start : start + part_rows])
    fixed = [_record(r, "ok", attempts=2) for r in range(0, rows, 5)]
    writer.commit(fixed[:4])
    writer.commit(fixed[4:])
    checkpoint.stale_records = len(fixed)
    checkpoint.save(out)
    return checkpoint


def _current(out: Path) -> list[tuple[int, str, int]]:
    """Each row's current record, read through the checkpoint."""
    checkpoint = Checkpoint.load(out)
    assert checkpoint is not None
    order = RowOrder(
        out,
        checkpoint,
        columns=["status", "attempts"],
        project=lambda b: b.select(["row", "status", "attempts"]),
        schema=pa.schema([RESULT_SCHEMA.field(n) for n in ("row", "status", "attempts")]),
        scratch=[out],
    )
    found = []
    for window in order.windows():
        found += [(r["row"], r["status"], r["attempts"]) for r in window.table.to_pylist()]
    return found


def _plain(out: Path) -> list[dict[str, object]]:
    return sorted(ds.dataset(out / "results").to_table().to_pylist(), key=lambda r: r["row"])


EXPECTED = [(r, "ok", 2 if r % 5 == 0 else 1) for r in range(50)]


def test_compact_leaves_one_record_per_row_in_fewer_parts(tmp_path: Path) -> None:
    checkpoint = _output(tmp_path)
    assert len(_plain(tmp_path)) == 60  # superseded records visible to plain readers
    done = compact(tmp_path, checkpoint, part_rows=20)
    assert (done.parts_before, done.parts_after, done.records, done.dropped) == (10, 3, 50, 10)
    plain = _plain(tmp_path)
    assert [(r["row"], r["status"], r["attempts"]) for r in plain] == EXPECTED
    names = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert names == ["part-000010.parquet", "part-000011.parquet", "part-000012.parquet"]
    saved = Checkpoint.load(tmp_path)
    assert saved is not None
    assert (saved.first_part, saved.parts, saved.stale_records) == (10, 13, 0)
    assert _current(tmp_path) == EXPECTED
    # A run resuming it adopts nothing and finds it whole.
    writer = open_writer(tmp_path, saved)
    assert writer.checkpoint.parts == 13 and _current(tmp_path) == EXPECTED


class Crash(Exception):
    pass


@pytest.mark.parametrize("when", ["writing", "before the switch", "after the switch"])
def test_a_crash_at_any_step_leaves_a_correct_resumable_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    checkpoint = _output(tmp_path)
    if when == "writing":
        calls = iter(range(100))
        real_close = compact_module.PartSink._close_part

        def close(self: compact_module.PartSink) -> None:
            if next(calls) == 1:
                raise Crash  # the second new part
            real_close(self)

        monkeypatch.setattr(compact_module.PartSink, "_close_part", close)
    elif when == "before the switch":
        monkeypatch.setattr(Checkpoint, "save", lambda self, out: (_ for _ in ()).throw(Crash()))
    else:
        monkeypatch.setattr(compact_module, "finish_compaction", _crash)
    with pytest.raises(Crash):
        compact(tmp_path, checkpoint, part_rows=20)
    monkeypatch.undo()
    # Read as a crash leaves it: through the checkpoint, the same records.
    assert _current(tmp_path) == EXPECTED
    # The next run (or compact) tidies: after the switch it finishes, before it sweeps.
    reloaded = Checkpoint.load(tmp_path)
    assert reloaded is not None
    open_writer(tmp_path, reloaded)
    assert _current(tmp_path) == EXPECTED
    hidden = [p.name for p in (tmp_path / "results").iterdir() if p.name.startswith(".")]
    assert hidden == []
    if when == "after the switch":
        assert [(r["row"], r["status"], r["attempts"]) for r in _plain(tmp_path)] == EXPECTED
    else:
        assert len(_plain(tmp_path)) == 60  # as before compacting: compact again to finish
        compact_output(tmp_path)
        assert [(r["row"], r["status"], r["attempts"]) for r in _plain(tmp_path)] == EXPECTED


def _crash(*args: object) -> None:
    raise Crash


def test_compact_refuses_an_output_a_run_holds_and_a_folder_without_checkpoint(
    tmp_path: Path,
) -> None:
    _output(tmp_path)
    with OutputLock(tmp_path), pytest.raises(OutputLockedError):
        compact_output(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_cli("compact", empty)
    assert done.returncode == 2 and "no checkpoint.json" in done.stderr
    missing = run_cli("compact", tmp_path / "nowhere")
    assert missing.returncode == 2 and "no output directory" in missing.stderr


def test_compact_through_the_cli_before_and_after_readers(tmp_path: Path) -> None:
    _output(tmp_path)
    assert len(_plain(tmp_path)) == 60
    done = run_cli("compact", tmp_path, "--part-rows", "1000")
    assert done.returncode == 0, done.stderr
    assert "10 parts into 1, 50 records (10 superseded left out)" in done.stdout
    assert [(r["row"], r["status"], r["attempts"]) for r in _plain(tmp_path)] == EXPECTED
    again = run_cli("compact", tmp_path)
    assert again.returncode == 0 and "1 parts into 1, 50 records (0 superseded" in again.stdout
