"""store/tasks.py: intent, submitted, ended, finished durable per row; a torn line cut; damage
refused; a parent's end found by custom_id (follow-up rows)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchrun.store.tasks import TaskEnd, TaskJournal, TaskJournalError, TaskLine


def intent(row: int) -> TaskLine:
    return TaskLine(step="intent", row=row, custom_id=f"p{row}", request_sha256=f"sha{row}")


def submitted(row: int, task_id: str) -> TaskLine:
    return TaskLine(step="submitted", row=row, task_id=task_id)


def test_each_step_reads_back_on_resume(tmp_path: Path) -> None:
    journal = TaskJournal.open(tmp_path)
    journal.write([intent(0), intent(1), intent(2)])
    journal.write([submitted(0, "t-0"), submitted(1, "t-1")])
    journal.sync()
    journal.finish([0, 2, 7])  # 2 has no task id (stays unknown), 7 is no task row
    journal.close()

    entries = TaskJournal.open(tmp_path).entries
    assert {row: e.state for row, e in entries.items()} == {
        0: "finished",
        1: "submitted",
        2: "intent",
    }
    assert entries[1].task_id == "t-1" and entries[1].custom_id == "p1"
    assert entries[1].request_sha256 == "sha1" and entries[1].submitted_at is not None
    assert [e.row for e in TaskJournal.load(tmp_path).unknown()] == [2]  # type: ignore[union-attr]


def test_a_tasks_end_reads_back_by_custom_id_and_a_resend_forgets_it(tmp_path: Path) -> None:
    buttons = {"buttons": [{"customId": "MJ::JOB::upsample::1::x", "label": "U1"}]}
    journal = TaskJournal.open(tmp_path)
    journal.write([intent(0), intent(1), intent(2), submitted(0, "t-0"), submitted(1, "t-1")])
    journal.write([TaskLine(step="ended", row=0, end=TaskEnd.of(ok=True, view=buttons))])
    journal.write([TaskLine(step="ended", row=1, end=TaskEnd(ok=False, reason="banned"))])
    failed = TaskEnd(ok=False, reason="code 24")
    journal.write([TaskLine(step="finished", row=2, end=failed)])  # refused: no task at all
    journal.sync()
    assert journal.by_custom_id("p0").end == TaskEnd.of(ok=True, view=buttons)  # type: ignore[union-attr]
    journal.finish([0, 1])
    journal.close()

    journal = TaskJournal.open(tmp_path)
    ends = {cid: journal.by_custom_id(cid).end for cid in ("p0", "p1", "p2")}  # type: ignore[union-attr]
    assert ends == {
        "p0": TaskEnd.of(ok=True, view=buttons),
        "p1": TaskEnd(ok=False, reason="banned"),
        "p2": failed,
    }
    assert journal.entries[0].state == "finished" and journal.entries[0].task_id == "t-0"
    assert journal.by_custom_id("nobody") is None
    journal.write([intent(0)])  # a retry pass sends p0 again: its old end no longer stands
    assert journal.by_custom_id("p0").end is None  # type: ignore[union-attr]
    journal.close()


def test_a_torn_last_line_is_cut_and_appending_goes_on(tmp_path: Path) -> None:
    journal = TaskJournal.open(tmp_path)
    journal.write([intent(0), intent(1), submitted(0, "t-0")])
    journal.close()
    path = TaskJournal.path_in(tmp_path)
    whole = path.read_bytes()
    with path.open("ab") as f:
        f.write(b'{"step":"submitted","row":1,"task_id":"t-')  # a crash mid-write

    journal = TaskJournal.open(tmp_path)
    assert path.read_bytes() == whole  # the torn line is cut off the file
    assert journal.entries[1].state == "intent"  # its task id never arrived whole
    journal.write([submitted(1, "t-1")])
    journal.close()
    assert TaskJournal.open(tmp_path).entries[1].task_id == "t-1"


def test_a_crash_between_intent_and_submitted_leaves_the_intent(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from batchrun.store.tasks import TaskJournal, TaskLine\n"
        "j = TaskJournal.open(Path(sys.argv[1]))\n"
        "j.write([TaskLine(step='intent', row=0, custom_id='a', request_sha256='s')])\n"
        "j.write([TaskLine(step='intent', row=1, custom_id='b', request_sha256='s')])\n"
        "j.write([TaskLine(step='submitted', row=0, task_id='t-0')])\n"
        "j.sync()\n"
        "os._exit(9)  # no close: as a kill -9 would leave it\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=False)
    assert done.returncode == 9
    entries = TaskJournal.open(tmp_path).entries
    assert entries[0].state == "submitted" and entries[1].state == "intent"


def test_a_row_sent_again_after_it_finished_starts_anew(tmp_path: Path) -> None:
    journal = TaskJournal.open(tmp_path)
    journal.write([intent(0), submitted(0, "t-0")])
    journal.finish([0])
    journal.write([intent(0)])  # a retry pass sends the failed row again
    journal.close()
    entry = TaskJournal.open(tmp_path).entries[0]
    assert entry.state == "intent" and entry.task_id is None


def test_another_file_or_a_damaged_line_is_refused(tmp_path: Path) -> None:
    path = TaskJournal.path_in(tmp_path)
    path.parent.mkdir()
    path.write_bytes(b'{"format":"something-else"}\n')
    with pytest.raises(TaskJournalError, match="not a batchrun task journal"):
        TaskJournal.open(tmp_path)
    path.write_bytes(b'{"format":"batchrun-tasks","version":1}\n{"step":"submitted","row":3}\n')
    with pytest.raises(TaskJournalError, match="line 2 is damaged"):
        TaskJournal.open(tmp_path)


def test_nothing_on_disk_until_a_task_row_runs(tmp_path: Path) -> None:
    assert TaskJournal.load(tmp_path) is None
    TaskJournal.open(tmp_path).close()
    assert not (tmp_path / "tasks").exists()  # a run without task rows
    journal = TaskJournal.open(tmp_path)
    journal.write([intent(0)])
    journal.close()
    assert os.listdir(tmp_path / "tasks") == ["journal.jsonl"]
