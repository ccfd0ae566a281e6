"""`--retry-errors` (batchrun.runner.rerun, batchrun.store.rerun): through the CLI against the mock.

The first pass runs with `--max-retries 0`, so that a row asking the mock for a 500 the first
time it is sent (`mock_fault_times: 1`) ends as a server_error record; the retry pass sends the
same body again, which the mock then answers.
"""

from __future__ import annotations

import csv
import json
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun.mock import MockConfig, MockServer
from batchrun.models import Record
from batchrun.store.checkpoint import Checkpoint, Fingerprint
from batchrun.store.compact import open_writer
from batchrun.store.rerun import PassRows, iter_listed_rows, pass_path, start_retry_pass
from batchrun.store.writer import ResultWriter, records_to_table
from tests.helpers import faulty_rows, read_results, write_jsonl
from tests.test_cli import ROOT, batchrun_cmd, env_with_key, run_cli
from tests.torture import kill_9_repeatedly

CHAT = "/v1/chat/completions"


@pytest.fixture
def server() -> Iterator[MockServer]:
    with MockServer(MockConfig(port=0, latency_ms=1, record_bodies=True)) as mock:
        yield mock


def _sent(server: MockServer) -> int:
    return int(server.stats()["requests"]["by_path"].get(CHAT, 0))


class _Since:
    """What the mock received from now on (no reset: it would forget `mock_fault_times`)."""

    def __init__(self, server: MockServer) -> None:
        self.server = server
        self.sent = _sent(server)
        self.bodies = len(server.bodies())

    def count(self) -> int:
        return _sent(self.server) - self.sent

    def questions(self) -> list[str]:
        return _questions(self.server, self.bodies)


def _questions(server: MockServer, skip: int = 0) -> list[str]:
    """The user message of every chat request the mock received, in order."""
    out = []
    for raw in server.bodies()[skip:]:
        body = json.loads(raw)
        if "messages" in body:
            out.append(body["messages"][-1]["content"])
    return out


def _run(
    path: Path, out: Path, server: MockServer, *extra: str
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "run", path, "--out", out, "--base-url", server.base_url, "--max-retries", "0",
        "--flush-rows", "7", "-q", *extra,
    )  # fmt: skip


def _faulty_input(tmp_path: Path, n: int, failing: dict[int, str]) -> tuple[Path, list[Any]]:
    rows = faulty_rows(n, {i: (kind, 1) for i, kind in failing.items()})
    return write_jsonl(tmp_path / "in.jsonl", rows), rows


def test_retry_errors_sends_only_the_failed_rows_and_keeps_one_record_per_row(
    tmp_path: Path, server: MockServer
) -> None:
    # 500: server_error, 429: rate_limited; 400: invalid_request, not retried by default.
    failing = {3: "500", 10: "500", 25: "429", 38: "500", 20: "400"}
    path, rows = _faulty_input(tmp_path, 40, failing)
    out = tmp_path / "out"
    first = _run(path, out, server)
    assert first.returncode == 0, first.stderr
    before = {r["row"]: r for r in read_results(out)}
    assert {r for r, rec in before.items() if rec["status"] == "error"} == set(failing)
    assert before[20]["error_type"] == "invalid_request"
    assert _sent(server) == 40

    since = _Since(server)
    again = _run(path, out, server, "--retry-errors")
    assert again.returncode == 0, again.stderr
    retried = sorted(set(failing) - {20})
    # Exactly one request per failed row of a retryable type, none for the others.
    assert since.count() == len(retried)
    assert sorted(since.questions()) == sorted(f"question number {i}" for i in retried)
    assert "retry pass 1: 4 of 4 rows re-sent, 4 ok now" in again.stdout
    records = read_results(out)  # plain pyarrow over OUT/results: compacted, one per row
    assert [r["row"] for r in records] == list(range(40))
    assert [r["custom_id"] for r in records] == [r["custom_id"] for r in rows]
    assert [r["row"] for r in records if r["status"] == "error"] == [20]
    for i in retried:
        assert records[i]["attempts"] == 2  # the first pass's attempt and the retry's
    assert records[0]["attempts"] == 1
    checkpoint = Checkpoint.load(out)
    assert checkpoint is not None and checkpoint.stale_records == 0
    assert checkpoint.counts == {"ok": 39, "error": 1}
    assert not list(out.glob("pass-*.rows"))  # the finished pass's list is gone

    # The same command again: a new pass over what remains (the 400, not retryable): nothing.
    since = _Since(server)
    third = _run(path, out, server, "--retry-errors")
    assert third.returncode == 0, third.stderr
    assert since.count() == 0
    report = run_cli("report", out, "--json")
    data = json.loads(report.stdout)
    assert data["rows"] == 40 and data["rows_error"] == 1
    assert data["passes"] == [
        {"number": 1, "error_types": ["rate_limited", "server_error", "timeout",
         "connection_error", "bad_response"], "rows": 4, "resent": 4, "fixed": 4,
         "finished": True}
    ]  # fmt: skip


def test_retry_errors_with_types_and_all(tmp_path: Path, server: MockServer) -> None:
    path, _ = _faulty_input(tmp_path, 12, {2: "500", 5: "400"})
    out = tmp_path / "out"
    assert _run(path, out, server).returncode == 0
    since = _Since(server)
    only = _run(path, out, server, "--retry-errors=invalid_request")
    assert only.returncode == 0, only.stderr
    assert since.questions() == ["question number 5"]
    since = _Since(server)
    every = _run(path, out, server, "--retry-errors=all")
    assert every.returncode == 0, every.stderr
    assert since.questions() == ["question number 2"]
    assert all(r["status"] == "ok" for r in read_results(out))
    bad = _run(path, out, server, "--retry-errors=server_eror")
    assert bad.returncode == 2
    assert "server_eror" in bad.stderr and "server_error" in bad.stderr


def test_superseded_records_until_compact_but_report_and_export_see_one_per_row(
    tmp_path: Path, server: MockServer
) -> None:
    path, _ = _faulty_input(tmp_path, 30, {1: "500", 2: "500", 17: "500"})
    out = tmp_path / "out"
    assert _run(path, out, server).returncode == 0
    done = _run(path, out, server, "--retry-errors", "--no-compact")
    assert done.returncode == 0, done.stderr
    plain = read_results(out)
    assert len(plain) == 33  # what the README says: superseded records until compact
    report = json.loads(run_cli("report", out, "--json").stdout)
    assert (report["rows"], report["rows_ok"], report["rows_error"]) == (30, 30, 0)
    assert report["requests"] == 33
    export = run_cli("export", out, "--to", tmp_path / "a.csv", "--no-join")
    assert export.returncode == 0, export.stderr
    assert "left out" not in export.stdout
    with (tmp_path / "a.csv").open(newline="") as f:
        exported = list(csv.DictReader(f))
    assert [int(r["row"]) for r in exported] == list(range(30))
    assert all(r["status"] == "ok" for r in exported)

    compacted = run_cli("compact", out)
    assert compacted.returncode == 0, compacted.stderr
    assert "3 superseded left out" in compacted.stdout
    records = read_results(out)
    assert [r["row"] for r in records] == list(range(30))
    assert all(r["status"] == "ok" for r in records)
    assert len(list((out / "results").glob("part-*.parquet"))) == 1


def _pass_done(out: Path) -> int:
    try:
        checkpoint = Checkpoint.load(out)
    except Exception:  # being replaced at this instant: ask again
        return -1
    if checkpoint is None or not checkpoint.passes:
        return 0
    return len(checkpoint.passes[-1].done)


@pytest.mark.slow
def test_kill_9_during_the_retry_pass_then_resume_sends_each_failed_row_once(
    tmp_path: Path,
) -> None:
    n_rows = 1200
    failing = set(random.Random(7).sample(range(n_rows), 400))
    path, rows = _faulty_input(tmp_path, n_rows, dict.fromkeys(failing, "500"))
    out = tmp_path / "out"
    rng = random.Random(20261202)
    with MockServer(MockConfig(port=0, latency_ms=40)) as server:
        first = _run(path, out, server, "--concurrency", "32")
        assert first.returncode == 0, first.stderr
        assert _sent(server) == n_rows
        since = _Since(server)
        args = batchrun_cmd(
            "run", path, "--out", out, "--base-url", server.base_url, "--max-retries", "0",
            "-q", "--concurrency", "8", "--flush-rows", "10", "--flush-interval", "0.05",
            "--retry-errors",
        )  # fmt: skip
        # Killed at a random instant once each run has committed some of the pass.
        kills = kill_9_repeatedly(
            args, progress=lambda: max(0, _pass_done(out)), rng=rng, times=6, within_s=0.4
        )
        final = subprocess.run(args, env=env_with_key(), cwd=ROOT, capture_output=True, text=True)
        assert final.returncode == 0, final.stderr
        sent = since.count()
    assert kills >= 3, "the retry pass finished too fast to be killed; make it longer"
    records = read_results(out)
    assert [r["row"] for r in records] == list(range(n_rows))  # none missing, none twice
    assert [r["custom_id"] for r in records] == [r["custom_id"] for r in rows]
    assert all(r["status"] == "ok" for r in records)
    # Every failed row once, plus at most what was in flight at each kill (8): an answer that
    # arrived is journaled, and a resume commits it for the pass instead of sending it again.
    assert len(failing) <= sent <= len(failing) + kills * 8
    for r in records:  # attempts add up across passes (a killed run's lost attempt is not seen)
        assert r["attempts"] == (2 if r["row"] in failing else 1)


def test_an_output_made_before_the_hash_column_resumes_retries_and_reports(
    tmp_path: Path, server: MockServer
) -> None:
    path, _ = _faulty_input(tmp_path, 20, {4: "500", 9: "500"})
    out = tmp_path / "out"
    assert _run(path, out, server).returncode == 0
    # Make it an old output: its parts without request_sha256.
    for part in (out / "results").glob("part-*.parquet"):
        table = pq.read_table(part)
        pq.write_table(table.drop_columns(["request_sha256"]), part)
    checkpoint = json.loads((out / "checkpoint.json").read_text())
    for key in ("first_part", "passes", "stale_records"):
        del checkpoint[key]
    (out / "checkpoint.json").write_text(json.dumps(checkpoint))

    again = _run(path, out, server)
    assert again.returncode == 0 and "this run: 0 rows" in again.stdout
    report = run_cli("report", out)
    assert report.returncode == 0 and "20 rows, 18 ok, 2 error" in report.stdout
    since = _Since(server)
    retried = _run(path, out, server, "--retry-errors")
    assert retried.returncode == 0, retried.stderr
    assert sorted(since.questions()) == ["question number 4", "question number 9"]
    records = read_results(out)
    assert [r["row"] for r in records] == list(range(20))
    hashes = {r["row"]: r["request_sha256"] for r in records}
    assert hashes[4] is not None and hashes[9] is not None and hashes[0] is None
    assert pa.types.is_string(pq.read_schema(next((out / "results").glob("*.parquet"))).field(
        "request_sha256").type)  # fmt: skip


def test_help_names_retry_errors_and_compact() -> None:
    run = run_cli("run", "--help")
    assert "--retry-errors" in run.stdout and "--no-compact" in run.stdout
    assert "rate_limited, server_error, timeout, connection_error, bad_response" in run.stdout
    top = run_cli("--help")
    assert "compact" in top.stdout
    compact = run_cli("compact", "--help")
    assert "--part-rows" in compact.stdout


# --- the pass's list and the writer's seam (batchrun.store.rerun) -----------------------------


def _finished_output(out: Path, rows: int, errors: set[int]) -> Checkpoint:
    checkpoint = Checkpoint(
        input_path="in.jsonl",
        fingerprint=Fingerprint(size=0, digest="x", method="sha256"),
        settings={},
        total_rows=rows,
        duplicates=0,
    )
    writer = ResultWriter(out, checkpoint)
    records = [
        Record(
            custom_id=str(r),
            row=r,
            status="error" if r in errors else "ok",
            error_type="server_error" if r in errors else None,
            attempts=3 if r in errors else 1,
        )
        for r in range(rows)
    ]
    random.Random(3).shuffle(records)  # completion order
    for start in range(0, rows, 64):
        writer.commit(records[start : start + 64])
    return checkpoint


def test_the_pass_lists_its_rows_and_the_reader_skips_every_other_row(tmp_path: Path) -> None:
    errors = set(random.Random(5).sample(range(10_000), 1_500))
    checkpoint = _finished_output(tmp_path, 10_000, errors)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    rerun = start_retry_pass(tmp_path, checkpoint, ["server_error"], scratch)
    assert rerun.rows == 1_500 and list(iter_listed_rows(pass_path(tmp_path, 1))) == sorted(errors)
    saved = Checkpoint.load(tmp_path)
    assert saved is not None and saved.open_pass is not None and saved.open_pass.rows == 1_500
    rerun.done.add_range(0, 100)  # the first 100 listed rows were committed already
    rows = PassRows(tmp_path, rerun)
    wanted = sorted(errors)[100:]
    assert [r for r in range(10_000) if r not in rows] == wanted
    rows = PassRows(tmp_path, rerun)
    first_wanted = wanted[0]
    assert rows.covers(0, first_wanted) and not rows.covers(0, first_wanted + 1)
    assert rows.covers(9_999, 9_999)


def test_a_part_committed_by_a_killed_pass_is_adopted_for_the_pass_not_sent_again(
    tmp_path: Path,
) -> None:
    checkpoint = _finished_output(tmp_path, 300, {5, 50, 51, 200})
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    start_retry_pass(tmp_path, checkpoint, ["server_error"], scratch)
    # The killed run wrote a part with rows 50 and 200 fixed, and died before the checkpoint.
    fixed = [Record(custom_id=str(r), row=r, status="ok", attempts=1) for r in (50, 200)]
    index = checkpoint.parts
    pq.write_table(
        records_to_table(fixed), tmp_path / "results" / f"part-{index:06d}.parquet"
    )  # fmt: skip
    resumed = Checkpoint.load(tmp_path)
    assert resumed is not None
    writer = open_writer(tmp_path, resumed)
    assert resumed.parts == index + 1
    assert resumed.open_pass is not None and len(resumed.open_pass.done) == 2
    assert resumed.counts == {"ok": 298, "error": 2} and resumed.stale_records == 2
    assert resumed.open_pass.fixed == 2
    rows = PassRows(tmp_path, resumed.open_pass)
    assert [r for r in range(300) if r not in rows] == [5, 51]
    # Attempts add up: the new record of row 5 carries the first pass's 3.
    assert writer.rerun is not None
    (carried,) = writer.rerun.supersede([Record(custom_id="5", row=5, status="ok", attempts=1)])
    assert carried.attempts == 4


def test_answers_a_killed_pass_had_journaled_are_committed_for_the_pass_not_sent_again(
    tmp_path: Path,
) -> None:
    checkpoint = _finished_output(tmp_path, 300, {5, 50, 51, 200})
    # What the first pass left journaled (a crash before its release): row 5's old error,
    # counted already.
    first = ResultWriter(tmp_path, checkpoint)
    first.journal.write([Record(custom_id="5", row=5, status="error", attempts=3)])
    first.journal.close()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    start_retry_pass(tmp_path, checkpoint, ["server_error"], scratch)
    killed = open_writer(tmp_path, checkpoint)
    # The killed pass: row 51's new answer committed (its journal line not yet released), rows 5
    # and 200 answered and journaled only; row 50 was in flight.
    fixed = {r: Record(custom_id=str(r), row=r, status="ok", attempts=1) for r in (5, 51, 200)}
    killed.journal.write([fixed[51]])
    killed.commit([fixed[51]])
    killed.journal.write([fixed[5], fixed[51], fixed[200]])
    killed.journal.sync()
    resumed = Checkpoint.load(tmp_path)
    assert resumed is not None and resumed.open_pass is not None
    writer = open_writer(tmp_path, resumed)
    assert writer.fold_journal(lambda r: 0.5) == 2  # rows 5 and 200; row 51 is counted
    assert resumed.open_pass.fixed == 3 and len(resumed.open_pass.done) == 3
    assert resumed.counts == {"ok": 299, "error": 1} and resumed.stale_records == 3
    assert resumed.cost_usd == pytest.approx(1.0)
    rows = PassRows(tmp_path, resumed.open_pass)
    assert [r for r in range(300) if r not in rows] == [50]  # only the one in flight goes again
    row_5 = [(r["status"], r["attempts"]) for r in read_results(tmp_path) if r["row"] == 5]
    assert sorted(row_5) == [("error", 3), ("ok", 4)]  # superseded; attempts add up (3 + 1)
    assert not (tmp_path / "journal").exists()


def test_a_full_disk_while_listing_the_rows_to_retry_stops_with_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx2

    import batchrun
    from batchrun.runner import rerun as runner_rerun
    from tests.helpers import TEST_KEY, openai_handler

    path = write_jsonl(tmp_path / "in.jsonl", faulty_rows(10, {}))
    fail_first = {3, 7}

    def fail(body: dict[str, Any], n: int) -> Any:
        text = body["messages"][0]["content"]
        if any(text == f"question number {i}" for i in fail_first):
            fail_first.discard(int(text.rsplit(" ", 1)[1]))
            return httpx2.Response(500, json={"error": {"message": "boom"}})
        return None

    handler, seen = openai_handler(fail)
    transport = httpx2.MockTransport(handler)
    config = batchrun.RunConfig(
        input_path=path, out_dir=tmp_path / "out", base_url="http://mock.test/v1",
        api_key=TEST_KEY, concurrency=2, max_retries=0, retry_errors=("server_error",),
    )  # fmt: skip

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner_rerun, "start_retry_pass", full)
    summary = batchrun.run_sync(config, transport=transport)
    assert summary.exit_code == 3 and summary.stopped is not None
    assert "cannot list the rows to retry" in summary.stopped
    assert "No space left on device" in summary.stopped
    assert len(seen) == 10 and summary.errors == 2  # the first pass, whole; nothing re-sent
    monkeypatch.undo()
    again = batchrun.run_sync(config, transport=transport)
    assert again.finished and again.errors == 0 and len(seen) == 12
