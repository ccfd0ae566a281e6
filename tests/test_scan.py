"""batchrun.runner.scan: the first pass, called in this process and run as `python -m`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from batchrun.inputs.rows import InputError
from batchrun.runner.scan import ScanSettings, Stopped, run_pass
from batchrun.store.duplicates import DuplicateCursor
from tests.helpers import chat_rows, write_jsonl
from tests.torture import ROOT, cli_env


def _settings(path: Path, scratch: Path, **overrides: Any) -> ScanSettings:
    scratch.mkdir(exist_ok=True)
    values: dict[str, Any] = {
        "input_path": path,
        "scratch_dir": scratch,
        "endpoint": "/v1/chat/completions",
        "max_row_bytes": 1 << 20,
        "estimate": True,
    }
    values.update(overrides)
    return ScanSettings(**values)


def test_it_counts_estimates_names_the_models_and_lists_the_repeats(tmp_path: Path) -> None:
    rows = chat_rows(3000)
    rows[7]["body"]["model"] = "gpt-4o"
    rows[2500]["custom_id"] = rows[10]["custom_id"]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    events: list[dict[str, Any]] = []
    run_pass(_settings(path, tmp_path / "scratch"), events.append)
    kinds = [e["event"] for e in events if e["event"] != "progress"]
    assert kinds == ["models", "counted", "judged"]
    assert events[0]["models"] == ["gpt-4o-mini", "gpt-4o"]  # after the first 2,000 rows
    counted, judged = events[-2], events[-1]
    assert counted["rows"] == 3000 and counted["estimate"]["totals"]["rows"] == 3000
    assert counted["models"] == ["gpt-4o-mini", "gpt-4o"]
    assert judged["duplicates"] == 1
    with DuplicateCursor(Path(judged["file"])) as listed:
        assert listed.first_row_of(2500) == 10


def test_no_repeat_leaves_no_list_and_no_estimate_when_off(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(5))
    events: list[dict[str, Any]] = []
    run_pass(_settings(path, tmp_path / "scratch", estimate=False), events.append)
    assert events[-2] == {
        "event": "counted",
        "rows": 5,
        "estimate": None,
        "models": ["gpt-4o-mini"],
    }
    assert events[-1] == {"event": "judged", "duplicates": 0, "file": None}
    assert list((tmp_path / "scratch").iterdir()) == []


def test_it_stops_when_asked_and_raises_for_an_unreadable_input(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(2000))
    with pytest.raises(Stopped):
        run_pass(_settings(path, tmp_path / "s1"), lambda event: None, should_stop=lambda: True)
    bad = tmp_path / "in.jsonl.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match="cannot read"):
        run_pass(_settings(bad, tmp_path / "s2"), lambda event: None)


def _start(settings: ScanSettings) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "batchrun.runner.scan", settings.to_json()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=cli_env(), cwd=ROOT,
    )  # fmt: skip


def _events(proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    assert proc.stdout is not None
    return [json.loads(line) for line in proc.stdout]


def test_as_a_process_it_speaks_json_lines_and_ends_when_done(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(50))
    proc = _start(_settings(path, tmp_path / "scratch"))
    events = _events(proc)  # stdin stays open: the child ends by itself
    assert proc.wait(timeout=60) == 0
    events = [e for e in events if e["event"] != "progress"]  # one a second on a slow machine
    assert [e["event"] for e in events] == ["counted", "judged"]
    assert events[0]["rows"] == 50


def test_as_a_process_it_ends_at_once_when_its_stdin_closes(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(300_000))
    proc = _start(_settings(path, tmp_path / "scratch"))
    assert proc.stdin is not None and proc.stdout is not None
    time.sleep(1.0)  # well inside the pass: 300k rows take several seconds
    proc.stdin.close()  # what the kernel does when the parent is killed
    assert proc.wait(timeout=10) == 0
    assert "judged" not in [e["event"] for e in _events(proc)]


def test_as_a_process_an_unreadable_input_is_an_error_event_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "in.jsonl.gz"
    bad.write_bytes(b"not gzip at all")
    proc = _start(_settings(bad, tmp_path / "scratch"))
    [event] = _events(proc)
    assert event["event"] == "error" and event["message"].startswith("cannot read ")
    assert proc.wait(timeout=60) == 2
