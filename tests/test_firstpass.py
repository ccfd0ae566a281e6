"""batchrun.runner.firstpass: the first pass owned by a task, and the reader's judge."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from batchrun.inputs.idtable import PENDING
from batchrun.runner.firstpass import FirstPass, Verdicts
from batchrun.runner.scan import ScanSettings
from batchrun.store.duplicates import DuplicateCursor, make_scratch_dir, write_duplicates
from tests.helpers import chat_rows, write_jsonl


def _first_pass(path: Path, out: Path, *, in_process: bool) -> FirstPass:
    out.mkdir(exist_ok=True)
    settings = ScanSettings(
        input_path=path,
        scratch_dir=make_scratch_dir(out),
        endpoint="/v1/chat/completions",
        max_row_bytes=1 << 20,
        estimate=True,
    )
    return FirstPass(settings, in_process=in_process)


@pytest.mark.anyio
@pytest.mark.parametrize("in_process", [True, False], ids=["thread", "process"])
async def test_it_reports_the_count_the_estimate_and_the_repeats(
    tmp_path: Path, in_process: bool
) -> None:
    rows = chat_rows(40)
    rows[30]["custom_id"] = rows[4]["custom_id"]
    out = tmp_path / "out"
    first_pass = _first_pass(write_jsonl(tmp_path / "in.jsonl", rows), out, in_process=in_process)
    await first_pass.run()
    assert first_pass.failure is None and first_pass.done
    assert first_pass.total_rows == 40 and first_pass.estimate is not None
    assert first_pass.models == ["gpt-4o-mini"] and first_pass.duplicates == 1
    assert first_pass.duplicates_file == out / "duplicates.bin"  # moved out of the scratch dir
    assert [p.name for p in out.iterdir()] == ["duplicates.bin"]


@pytest.mark.anyio
@pytest.mark.parametrize("in_process", [True, False], ids=["thread", "process"])
async def test_an_unreadable_input_is_a_failure_and_wakes_everyone(
    tmp_path: Path, in_process: bool
) -> None:
    bad = tmp_path / "in.jsonl.gz"
    bad.write_bytes(b"not gzip at all")
    first_pass = _first_pass(bad, tmp_path / "out", in_process=in_process)
    await first_pass.run()
    assert first_pass.failure is not None and first_pass.failure.startswith("cannot read ")
    assert first_pass.counted.is_set() and first_pass.judged.is_set()
    assert first_pass.total_rows is None


@pytest.mark.anyio
@pytest.mark.parametrize("in_process", [True, False], ids=["thread", "process"])
async def test_cancelling_its_task_stops_the_pass_and_removes_its_files(
    tmp_path: Path, in_process: bool
) -> None:
    out = tmp_path / "out"
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(300_000))
    first_pass = _first_pass(path, out, in_process=in_process)
    with anyio.move_on_after(1.5):  # well inside the pass: 300k rows take several seconds
        await first_pass.run()
    assert first_pass.failure == "the first pass over the input was stopped"
    assert not first_pass.done and first_pass.judged.is_set()  # waiters are woken
    assert list(out.iterdir()) == []
    assert _children() in ([], None)  # no first-pass process left behind


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_pass_cancelled_before_its_thread_started_ends_at_once(tmp_path: Path) -> None:
    # A fatal answer (a refused key, no quota) can cancel the run in the very tick the pass was
    # started: its worker thread never runs, and nothing may wait for it to end (this hung a run).
    out = tmp_path / "out"
    first_pass = _first_pass(
        write_jsonl(tmp_path / "in.jsonl", chat_rows(10)), out, in_process=True
    )
    with anyio.CancelScope() as scope:
        scope.cancel()
        await first_pass.run()
    assert first_pass.failure == "the first pass over the input was stopped"
    assert first_pass.judged.is_set() and list(out.iterdir()) == []


def _children() -> list[str] | None:
    """This process's child processes (None where /proc does not say)."""
    own = str(os.getpid())
    listed = Path(f"/proc/{own}/task/{own}/children")
    return listed.read_text().split() if listed.exists() else None


def test_the_judge_switches_from_its_table_to_the_list_only_when_told(tmp_path: Path) -> None:
    write_duplicates(tmp_path / "list", [(3, 1), (12, 0)])
    verdicts = Verdicts(horizon=5)
    assert [verdicts.verdict(r, cid) for r, cid in enumerate("abcb")] == [None, None, None, 1]
    assert verdicts.verdict(5, "f") is PENDING
    assert verdicts.adopt_offer() is False  # nothing offered yet
    verdicts.offer(DuplicateCursor(tmp_path / "list"))
    assert verdicts.verdict(5, "f") is PENDING  # not before the reader adopts it
    assert verdicts.adopt_offer() is True and verdicts.seen_below() == 0
    assert [verdicts.verdict(r, "?") for r in (5, 12, 13)] == [None, 0, None]
    verdicts.close()


def test_an_offer_of_no_list_means_no_row_repeats() -> None:
    verdicts = Verdicts(horizon=1)
    verdicts.offer(None)
    assert verdicts.adopt_offer() is True
    assert [verdicts.verdict(r, "same") for r in range(3)] == [None, None, None]


@pytest.mark.anyio
async def test_a_child_that_dies_is_a_failure_naming_its_last_words(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(5))
    settings = ScanSettings(
        input_path=path,
        scratch_dir=tmp_path / "out" / "gone",  # never made: writing its list there fails
        endpoint="/v1/chat/completions",
        max_row_bytes=1 << 20,
        estimate=False,
    )
    first_pass = FirstPass(settings, in_process=False)
    await first_pass.run()
    assert first_pass.total_rows == 5  # it counted, then died writing the list
    assert first_pass.failure is not None
    assert first_pass.failure.startswith("the first pass over the input stopped unexpectedly: ")
    assert "FileNotFoundError" in first_pass.failure and not first_pass.done
