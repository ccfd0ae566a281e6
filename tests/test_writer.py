"""batchrun.store.writer: part files committed atomically, then the checkpoint; a failed commit."""

from __future__ import annotations

import errno
import json
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
    assert done.stdout.split("\n")[:2] == ["False", "(2, 24)"], done.stderr


# ------------------------------------------------------------- the journal, at every crash instant


def price(record: Record) -> float | None:
    """A price book stand-in: each row its own price, so a cost counted twice shows."""
    return 0.001 * (record.row + 1) if record.ok else None


def dataset_rows(out: Path) -> list[int]:
    """The rows of the counted parts, after checking that the checkpoint counts exactly those,
    and their cost exactly once, priced by `price`."""
    saved = Checkpoint.load(out)
    assert saved is not None
    files = sorted((out / "results").glob("part-*.parquet"))[: saved.parts]
    tables = [pq.read_table(p) for p in files]
    rows = sorted(r for t in tables for r in t.column("row").to_pylist())
    assert RangeSet((r, r + 1) for r in rows) == saved.done and len(rows) == len(saved.done)
    costs = [c for t in tables for c in t.column("cost_usd").to_pylist()]
    expected = [0.001 * (r + 1) for t in tables for r in t.column("row").to_pylist()]
    assert costs == pytest.approx(expected)  # every answer priced, the folded ones too
    assert saved.cost_usd == pytest.approx(sum(expected))
    return rows


def commit(writer: ResultWriter, rows: range) -> None:
    """A flush as `Stages._commit` does it: priced, then committed."""
    batch = records(rows)
    writer.commit(batch, [price(r) for r in batch])


def resume(out: Path) -> ResultWriter:
    """A fresh process: load the checkpoint, recover, fold the journal (as the session does)."""
    saved = Checkpoint.load(out)
    assert saved is not None
    writer = ResultWriter(out, saved)
    writer.recover()
    writer.fold_journal(price)
    return writer


class Crash(Exception):
    """Stands for the process dying at this instant (nothing after it runs)."""


def crash(*args: object, **kwargs: object) -> None:
    raise Crash


def test_recover_folds_what_only_the_journal_holds_and_prices_it(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, new_checkpoint(tmp_path))
    writer.journal.write(records(range(0, 4)))
    commit(writer, range(0, 4))
    writer.journal.write(records(range(4, 7)))  # then kill -9: rows 4-6 only in the journal
    assert [r.cost_usd for r in writer.journal.read()] == [None] * 3  # journaled unpriced
    resumed = resume(tmp_path)
    assert dataset_rows(tmp_path) == list(range(7))
    assert resumed.checkpoint.counts == {"ok": 7, "error": 0}
    assert resumed.checkpoint.cost_usd == pytest.approx(0.001 * sum(range(1, 8)))
    assert resumed.journal.files() == [] and not (tmp_path / "journal").exists()


def test_a_fold_of_error_records_counts_them_and_no_cost(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, new_checkpoint(tmp_path))
    failed = Record(custom_id="c-0", row=0, status="error", error_type="server", attempts=3)
    writer.journal.write([failed, *records(range(1, 3))])
    resumed = resume(tmp_path)
    assert resumed.checkpoint.counts == {"ok": 2, "error": 1}
    assert resumed.checkpoint.cost_usd == pytest.approx(0.002 + 0.003)


def test_nothing_to_fold_leaves_no_journal_and_no_part(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, new_checkpoint(tmp_path))
    assert not writer.has_journal()
    assert writer.fold_journal(crash) == 0  # the price book is not even asked
    assert writer.existing_parts() == []


def test_crash_after_the_part_and_before_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = ResultWriter(tmp_path, new_checkpoint(tmp_path))
    writer.journal.write(records(range(0, 6)))
    monkeypatch.setattr(checkpoint_mod, "atomic_write_bytes", crash)
    with pytest.raises(Crash):
        commit(writer, range(0, 4))  # the part is in place, the checkpoint is not
    monkeypatch.undo()
    # The resume adopts the part (rows 0-3), then folds only what no part holds (4-5).
    resume(tmp_path)
    assert dataset_rows(tmp_path) == list(range(6))


def test_crash_after_the_checkpoint_and_before_the_journal_is_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = ResultWriter(tmp_path, new_checkpoint(tmp_path))
    writer.journal.write(records(range(0, 4)))
    monkeypatch.setattr(writer.journal, "release", crash)
    with pytest.raises(Crash):
        commit(writer, range(0, 4))
    # The journal still holds rows 0-3, which a counted part holds too: not counted (nor their
    # cost added) twice.
    assert [r.row for r in writer.journal.read()] == [0, 1, 2, 3]
    resumed = resume(tmp_path)
    assert dataset_rows(tmp_path) == list(range(4))
    assert resumed.checkpoint.parts == 1 and resumed.checkpoint.counts["ok"] == 4


@pytest.mark.parametrize("instant", ["part written", "checkpoint saved"])
def test_crash_in_the_middle_of_the_fold_is_finished_by_the_next_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instant: str
) -> None:
    writer = ResultWriter(tmp_path, new_checkpoint(tmp_path))
    writer.journal.write(records(range(0, 5)))
    writer.journal.release(RangeSet())  # a new segment from here
    writer.journal.write(records(range(3, 6)))  # rows 3 and 4 in two files
    saved = Checkpoint.load(tmp_path)
    assert saved is not None
    folding = ResultWriter(tmp_path, saved)
    folding.recover()
    if instant == "part written":
        monkeypatch.setattr(checkpoint_mod, "atomic_write_bytes", crash)
    else:
        monkeypatch.setattr(folding.journal, "clear", crash)
    with pytest.raises(Crash):
        folding.fold_journal(price)
    monkeypatch.undo()
    resumed = resume(tmp_path)
    assert dataset_rows(tmp_path) == list(range(6))  # each row once, its cost once
    assert resumed.checkpoint.parts == 1
    assert resumed.journal.files() == []


def test_a_fold_that_cannot_be_written_keeps_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = ResultWriter(tmp_path, new_checkpoint(tmp_path))
    writer.journal.write(records(range(0, 3)))
    saved = Checkpoint.load(tmp_path)
    assert saved is not None
    monkeypatch.setattr(writer_mod.pq, "write_table", no_space)
    with pytest.raises(OSError, match="No space left on device"):
        ResultWriter(tmp_path, saved).fold_journal(price)
    monkeypatch.undo()
    assert [r.row for r in writer.journal.read()] == [0, 1, 2]  # still there for the next try
    assert not saved.done and saved.cost_usd == 0
    resume(tmp_path)
    assert dataset_rows(tmp_path) == [0, 1, 2]


def test_a_torn_group_at_the_kill_stays_pending(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, new_checkpoint(tmp_path))
    writer.journal.write(records(range(0, 3)))
    [segment] = writer.journal.files()
    whole = segment.stat().st_size
    writer.journal.write(records(range(3, 6)))
    with segment.open("r+b") as f:  # killed halfway through the second group's write
        f.truncate(whole + (segment.stat().st_size - whole) // 2)
    resumed = resume(tmp_path)
    assert dataset_rows(tmp_path) == [0, 1, 2]
    assert 3 not in resumed.checkpoint.done  # sent again by the resume: it was never durable


def answer_records() -> list[Record]:
    return [
        Record(
            custom_id="chat",
            row=0,
            status="ok",
            attempts=1,
            text="Paris",
            tool_calls='[{"id": "call_1", "name": "f", "arguments": "{}"}]',
            content_type="application/json",
        ),
        Record(
            custom_id="emb",
            row=1,
            status="ok",
            attempts=1,
            embedding=[[0.5, -0.25], [1.0, 0.0]],
            content_type="application/json",
        ),
        Record(
            custom_id="tts",
            row=2,
            status="ok",
            attempts=1,
            media=("media/ab/tts-ab-0.mp3",),
            content_type="audio/mpeg",
        ),
        Record(custom_id="bad", row=3, status="error", error_type="bad_input", attempts=0),
    ]


def test_the_answer_columns_read_back_in_pyarrow_pandas_polars_and_duckdb(tmp_path: Path) -> None:
    import duckdb
    import pandas as pd
    import polars as pl

    writer = ResultWriter(tmp_path, new_checkpoint(tmp_path))
    writer.commit(answer_records())
    table = pq.read_table(tmp_path / "results")
    assert str(table.schema.field("embedding").type) == "list<element: list<element: float>>"
    assert str(table.schema.field("media").type) == "list<element: string>"
    rows = sorted(table.to_pylist(), key=lambda r: r["row"])
    assert [r["text"] for r in rows] == ["Paris", None, None, None]
    assert json.loads(rows[0]["tool_calls"]) == [{"id": "call_1", "name": "f", "arguments": "{}"}]
    assert rows[1]["embedding"] == [[0.5, -0.25], [1.0, 0.0]]  # exact in float32
    assert (rows[2]["media"], rows[2]["content_type"]) == (["media/ab/tts-ab-0.mp3"], "audio/mpeg")

    frame = pd.read_parquet(tmp_path / "results").sort_values("row")
    assert list(frame["text"])[:1] == ["Paris"]
    assert [list(v) for v in frame["embedding"].iloc[1]] == [[0.5, -0.25], [1.0, 0.0]]
    polars = pl.read_parquet(tmp_path / "results" / "*.parquet").sort("row")
    assert polars["embedding"].to_list()[1] == [[0.5, -0.25], [1.0, 0.0]]
    assert polars["media"].to_list()[2] == ["media/ab/tts-ab-0.mp3"]
    glob = str(tmp_path / "results" / "*.parquet")
    found = duckdb.sql(
        f"select embedding[1][2], media[1], text from '{glob}' order by row"
    ).fetchall()
    assert found[:3] == [
        (None, None, "Paris"),
        (-0.25, None, None),
        (None, "media/ab/tts-ab-0.mp3", None),
    ]


def test_an_output_started_before_the_answer_columns_keeps_its_columns_on_resume(
    tmp_path: Path,
) -> None:
    checkpoint = new_checkpoint(tmp_path)
    old = checkpoint.to_json()
    del old["results_schema"]  # what a checkpoint written before schema 2 holds
    (tmp_path / "checkpoint.json").write_text(json.dumps(old))
    resumed = Checkpoint.load(tmp_path)
    assert resumed is not None and resumed.results_schema == 1
    writer = ResultWriter(tmp_path, resumed)
    writer.commit(answer_records())
    table = pq.read_table(tmp_path / "results")
    # The 18 columns of the first schema, so that every part of the output reads alike.
    assert table.schema.names == writer_mod.result_schema(1).names
    assert len(table.schema.names) == 18
    # The media file is not lost: its path is in the response.
    tts = next(r for r in table.to_pylist() if r["custom_id"] == "tts")
    assert json.loads(tts["response"]) == {
        "batchrun_media": ["media/ab/tts-ab-0.mp3"],
        "content_type": "audio/mpeg",
    }
    saved = Checkpoint.load(tmp_path)
    assert saved is not None and saved.results_schema == 1  # still, after the commit


def test_a_new_output_says_its_results_schema(tmp_path: Path) -> None:
    new_checkpoint(tmp_path)
    assert json.loads((tmp_path / "checkpoint.json").read_text())["results_schema"] == 2
