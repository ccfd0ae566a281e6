"""`--update` (batchrun.runner.update, batchrun.store.update): through the CLI against the mock."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pyarrow.parquet as pq
import pytest

import batchrun
from batchrun.mock import MockConfig, MockServer
from batchrun.store import update as store_update
from batchrun.store.checkpoint import Checkpoint, fingerprint_file
from tests.helpers import TEST_KEY, chat_rows, openai_handler, read_results, write_jsonl
from tests.test_cli import run_cli

CHAT = "/v1/chat/completions"


@pytest.fixture
def server() -> Iterator[MockServer]:
    with MockServer(MockConfig(port=0, latency_ms=1, record_bodies=True)) as mock:
        yield mock


class _Since:
    def __init__(self, server: MockServer) -> None:
        self.server = server
        self.start = len(server.bodies())

    def questions(self) -> list[str]:
        found = []
        for raw in self.server.bodies()[self.start :]:
            body = json.loads(raw)
            if "messages" in body:
                found.append(body["messages"][-1]["content"])
        return found


def _run(path: Path, out: Path, server: MockServer, *extra: str | Path) -> Any:
    return run_cli(
        "run", path, "--out", out, "--base-url", server.base_url, "--flush-rows", "9", "-q",
        *extra,
    )  # fmt: skip


def _edit(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Three rows edited, one deleted, two added."""
    new = json.loads(json.dumps(rows))
    for i in (4, 17, 30):
        new[i]["body"]["messages"][0]["content"] = f"question number {i}, edited"
    del new[22]
    extra = chat_rows(52)[50:]
    for row in extra:
        row["body"]["messages"][0]["content"] += " (new)"
    return new + extra


def test_update_sends_exactly_the_edited_and_new_rows(tmp_path: Path, server: MockServer) -> None:
    rows = chat_rows(40)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    assert _run(path, out, server).returncode == 0
    new = _edit(rows)
    write_jsonl(path, new)

    refused = _run(path, out, server)
    assert refused.returncode == 2
    assert "the input file has changed" in refused.stderr and "--update" in refused.stderr

    since = _Since(server)
    updated = _run(path, out, server, "--update")
    assert updated.returncode == 0, updated.stderr
    assert sorted(since.questions()) == sorted(
        [f"question number {i}, edited" for i in (4, 17, 30)]
        + ["question number 50 (new)", "question number 51 (new)"]
    )
    assert "update: 36 rows unchanged (kept), 3 changed, 2 new, 1 removed" in updated.stdout
    records = read_results(out)  # plain readers: one record per row of the new input
    assert [r["row"] for r in records] == list(range(len(new)))
    assert [r["custom_id"] for r in records] == [r["custom_id"] for r in new]
    assert all(r["status"] == "ok" for r in records)
    assert "req-22" not in {r["custom_id"] for r in records}
    checkpoint = Checkpoint.load(out)
    assert checkpoint is not None
    assert checkpoint.fingerprint == fingerprint_file(path)
    assert checkpoint.total_rows == 41 and checkpoint.counts == {"ok": 41, "error": 0}
    # Resumed again: nothing changed, nothing sent; the export pairs each answer with its row.
    since = _Since(server)
    again = _run(path, out, server, "--update")
    assert again.returncode == 0 and since.questions() == []
    export = run_cli("export", out, "--to", tmp_path / "a.csv")
    assert export.returncode == 0, export.stderr
    with (tmp_path / "a.csv").open(newline="") as f:
        exported = list(csv.DictReader(f))
    assert [e["custom_id"] for e in exported] == [r["custom_id"] for r in new]
    assert [e["prompt"] for e in exported] == [r["body"]["messages"][0]["content"] for r in new]


def test_a_changed_template_under_update_resends_every_row(
    tmp_path: Path, server: MockServer
) -> None:
    table = tmp_path / "q.csv"
    table.write_text("id,question\na,first?\nb,second?\nc,third?\n", encoding="utf-8")
    out = tmp_path / "out"
    flags = ("--model", "gpt-4o-mini", "--id-column", "id")
    done = _run(table, out, server, *flags, "--prompt", "{{ question }}")
    assert done.returncode == 0, done.stderr
    refused = _run(table, out, server, *flags, "--prompt", "Q: {{ question }}")
    assert refused.returncode == 2 and "--update" in refused.stderr
    since = _Since(server)
    updated = _run(table, out, server, *flags, "--prompt", "Q: {{ question }}", "--update")
    assert updated.returncode == 0, updated.stderr
    assert sorted(since.questions()) == ["Q: first?", "Q: second?", "Q: third?"]
    assert "0 rows unchanged (kept), 3 changed" in updated.stdout
    # The same template again: nothing changed.
    since = _Since(server)
    same = _run(table, out, server, *flags, "--prompt", "Q: {{ question }}", "--update")
    assert same.returncode == 0 and since.questions() == []
    assert len(read_results(out)) == 3


def test_rows_without_ids_are_matched_by_row_number(tmp_path: Path, server: MockServer) -> None:
    bodies = [row["body"] for row in chat_rows(6)]
    path = write_jsonl(tmp_path / "in.jsonl", bodies)
    out = tmp_path / "out"
    assert _run(path, out, server).returncode == 0
    bodies[2]["messages"][0]["content"] = "changed"
    write_jsonl(path, bodies)
    refused = _run(path, out, server)
    assert refused.returncode == 2 and "by row number where they have none" in refused.stderr
    since = _Since(server)
    updated = _run(path, out, server, "--update")
    assert updated.returncode == 0, updated.stderr
    assert since.questions() == ["changed"]
    assert "update: 5 rows unchanged (kept), 1 changed, 0 new, 0 removed" in updated.stdout


def test_update_refuses_an_output_without_request_hashes(
    tmp_path: Path, server: MockServer
) -> None:
    rows = chat_rows(5)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    assert _run(path, out, server).returncode == 0
    for part in (out / "results").glob("part-*.parquet"):
        pq.write_table(pq.read_table(part).drop_columns(["request_sha256"]), part)
    write_jsonl(path, _edit(chat_rows(40))[:6])
    since = _Since(server)
    refused = _run(path, out, server, "--update")
    assert refused.returncode == 2
    assert "did not keep request hashes" in refused.stderr
    assert since.questions() == []
    assert len(read_results(out)) == 5  # the output as it was


def test_an_update_killed_before_its_switch_leaves_the_old_output_and_sends_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = chat_rows(40)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    handler, seen = openai_handler()
    transport = httpx2.MockTransport(handler)
    config = batchrun.RunConfig(
        input_path=path, out_dir=tmp_path / "out", base_url="http://mock.test/v1",
        api_key=TEST_KEY, concurrency=4, flush_rows=7, update=True,
    )  # fmt: skip
    assert batchrun.run_sync(config, transport=transport).finished
    new = _edit(rows)
    write_jsonl(path, new)
    before = len(seen)

    class Killed(Exception):
        pass

    def crash(*args: object, **kwargs: object) -> None:
        raise Killed

    monkeypatch.setattr(store_update, "switch", crash)
    with pytest.raises(Killed):
        batchrun.run_sync(config, transport=transport)
    monkeypatch.undo()
    assert len(seen) == before  # nothing sent before the switch
    assert [r["custom_id"] for r in read_results(tmp_path / "out")] == [
        r["custom_id"] for r in rows
    ]  # the old output, whole; no hidden part left counted
    summary = batchrun.run_sync(config, transport=transport)
    assert summary.finished
    assert len(seen) - before == 5
    records = read_results(tmp_path / "out")
    assert [r["custom_id"] for r in records] == [r["custom_id"] for r in new]


def test_a_full_disk_during_the_update_stops_with_exit_3_and_the_old_output_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = chat_rows(20)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    handler, seen = openai_handler()
    transport = httpx2.MockTransport(handler)
    config = batchrun.RunConfig(
        input_path=path, out_dir=tmp_path / "out", base_url="http://mock.test/v1",
        api_key=TEST_KEY, concurrency=4, flush_rows=7, update=True,
    )  # fmt: skip
    assert batchrun.run_sync(config, transport=transport).finished
    write_jsonl(path, _edit(chat_rows(40))[:21])
    before = len(seen)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_update, "switch", full)
    summary = batchrun.run_sync(config, transport=transport)
    assert summary.exit_code == 3 and summary.stopped is not None
    assert "cannot match the records" in summary.stopped
    assert (
        "No space left on device" in summary.stopped and "run the same command" in summary.stopped
    )
    assert len(seen) == before
    assert [r["custom_id"] for r in read_results(tmp_path / "out")] == [
        r["custom_id"] for r in rows
    ]
    monkeypatch.undo()
    assert batchrun.run_sync(config, transport=transport).finished
