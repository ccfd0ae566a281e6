"""The process itself: signals, a full disk, an output directory that cannot be written.

SIGINT once, kill -9 many times and two processes on one output are in tests/test_cli.py; here
are SIGTERM, a second Ctrl-C, a kill -9 between two parts (the journal), and the writer
failing. Each test ends with a resume and the dataset checked row by row: exactly one record
per input row.
"""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import batchrun
from batchrun.mock import MockConfig, MockServer
from batchrun.store import journal as journal_mod
from batchrun.store import writer as writer_mod
from batchrun.store.journal import Journal
from tests.helpers import chat_rows, read_results, write_jsonl
from tests.torture import (
    ROOT,
    assert_all_ok,
    batchrun_cmd,
    chat_requests,
    cli_env,
    config,
    one_record_per_row,
    parts,
    resends,
    run_cli,
    wait_for,
)


def checkpoint_is_consistent(out: Path) -> dict[str, Any]:
    """The checkpoint counts only complete parts, and exactly the rows they hold."""
    saved = json.loads((out / "checkpoint.json").read_text())
    files = parts(out)
    counted = files[: saved["parts"]]
    assert [p.name for p in counted] == [f"part-{i:06d}.parquet" for i in range(saved["parts"])]
    # At most one part past the checkpoint (a crash between the rename and the checkpoint); a
    # resume adopts it.
    assert len(files) - saved["parts"] in (0, 1)
    rows = sorted(r for p in counted for r in pq.read_table(p).column("row").to_pylist())
    assert len(rows) == len(set(rows)), "a row is in two committed parts"
    done = [r for start, end in saved["done"] for r in range(start, end)]
    assert rows == done
    return saved


def popen(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        batchrun_cmd(*args),
        env=cli_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def done_rows(out: Path) -> int:
    try:
        saved = json.loads((out / "checkpoint.json").read_text())
    except (FileNotFoundError, ValueError):
        return 0
    return sum(end - start for start, end in saved["done"])


# ----------------------------------------------------------------------------------- signals


def test_sigterm_stops_gracefully_and_resume_completes_exactly_once(tmp_path: Path) -> None:
    rows = chat_rows(150)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(latency_ms=20)) as server:
        args = ("run", path, "--out", out, "--base-url", server.base_url, "--concurrency", "4")
        proc = popen(*args, "--flush-interval", "0.2")
        wait_for(lambda: done_rows(out) > 0, timeout=30)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 3, stderr
        assert "SIGTERM: finishing requests in flight, then saving" in stderr
        assert "stopped early: interrupted by SIGTERM" in stdout
        assert "resume with:" in stdout
        saved = checkpoint_is_consistent(out)
        stopped_at = sum(end - start for start, end in saved["done"])
        assert 0 < stopped_at < len(rows)
        # Graceful: what was in flight was answered and saved, so the server saw at most the
        # saved rows plus nothing lost in between (no request without its record).
        assert chat_requests(server) == stopped_at
        sent_before = chat_requests(server)

        resumed = run_cli(*args)
        assert resumed.returncode == 0, resumed.stderr
        assert chat_requests(server) - sent_before == len(rows) - stopped_at
    checkpoint_is_consistent(out)
    assert_all_ok(one_record_per_row(out, rows))


def test_second_ctrl_c_quits_at_once_and_resume_is_exact(tmp_path: Path) -> None:
    # Rows 20-23 hang on their first send (the mock never answers them), so the 4 workers are
    # stuck on them, and after the first Ctrl-C the run would wait out --grace 60; the second
    # Ctrl-C must quit at once. The mock answers those rows the second time: the resume completes.
    rows = chat_rows(40)
    for row in rows[20:24]:
        row["body"]["mock_fault"] = "timeout"
        row["body"]["mock_fault_times"] = 1
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(latency_ms=5)) as server:
        args = ("run", path, "--out", out, "--base-url", server.base_url, "--concurrency", "4")
        proc = popen(*args, "--flush-interval", "0.1", "--grace", "60", "--timeout", "120")
        wait_for(lambda: done_rows(out) >= 20, timeout=30)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None, "the first Ctrl-C must wait for the requests in flight"
        second = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - second < 5
        assert proc.returncode == 3, stderr
        assert "SIGINT: finishing requests in flight, then saving" in stderr
        assert "SIGINT again: quitting now; every answer that arrived is saved" in stderr
        saved = checkpoint_is_consistent(out)
        assert sum(end - start for start, end in saved["done"]) == 20

        resumed = run_cli(*args)
        assert resumed.returncode == 0, resumed.stderr
    checkpoint_is_consistent(out)
    assert_all_ok(one_record_per_row(out, rows))


# ------------------------------------------------- answers that arrived are never paid twice


def saved_rows(out: Path) -> set[int]:
    """Rows in counted parts or in the journal (read while the run writes it: a torn tail is
    just not there yet)."""
    try:
        saved = json.loads((out / "checkpoint.json").read_text())
    except (FileNotFoundError, ValueError):
        return set()
    done = {r for start, end in saved["done"] for r in range(start, end)}
    return done | {r.row for r in Journal(out).read()}


def test_kill_9_resends_only_the_requests_that_were_in_flight(tmp_path: Path) -> None:
    # Issue 15: a kill -9 of a 3,000-row run with 20 requests in flight re-sent 340 answered
    # rows. With the default flush (5,000 rows or 10 s) no part is written before the kill:
    # everything that arrived is in the journal only.
    rows, concurrency = chat_rows(3000), 20
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(latency_ms=20, record_bodies=True)) as server:
        args = ("run", path, "--out", out, "--base-url", server.base_url, "-q")
        args += ("--concurrency", str(concurrency))
        proc = popen(*args)
        wait_for(lambda: chat_requests(server) >= 400, timeout=60)
        proc.kill()
        proc.wait()
        sent_before = chat_requests(server)
        assert done_rows(out) == 0, "a part was committed: this test would prove nothing"
        journaled = saved_rows(out)
        assert len(journaled) >= sent_before - concurrency

        resumed = run_cli(*args)
        assert resumed.returncode == 0, resumed.stderr
        sent = resends(server)
    records = one_record_per_row(out, rows)
    assert_all_ok(records)
    # Each row sent twice was in flight at the kill: at most one per worker.
    assert sent.distinct == len(rows)
    assert sent.repeated == sent.resent <= concurrency
    assert not (out / "journal").exists()  # folded on resume, released at the end
    # The folded answers were priced as they were committed: the report's cost is every row's.
    saved = json.loads((out / "checkpoint.json").read_text())
    assert all(r["cost_usd"] > 0 for r in records)
    assert saved["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in records))
    assert f"${saved['cost_usd']:,.4f} whole output" in resumed.stdout


def test_second_ctrl_c_saves_what_arrived_and_resends_only_what_was_in_flight(
    tmp_path: Path,
) -> None:
    # Rows 300-303 hang on their first send, so after the first Ctrl-C the run waits out
    # --grace 60 with 4 requests in flight while the other 16 workers' answers arrive. The
    # second Ctrl-C quits at once: those 4 are the only rows the resume may send again.
    rows, concurrency = chat_rows(1000), 20
    hung = range(300, 304)
    for i in hung:
        rows[i]["body"]["mock_fault"] = "timeout"
        rows[i]["body"]["mock_fault_times"] = 1
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(latency_ms=20, record_bodies=True)) as server:
        args = ("run", path, "--out", out, "--base-url", server.base_url, "-q")
        args += ("--concurrency", str(concurrency))
        proc = popen(*args, "--grace", "60", "--timeout", "120")
        wait_for(lambda: chat_requests(server) >= 400, timeout=60)
        proc.send_signal(signal.SIGINT)
        # Every answer but the hung rows' arrives during the grace period and is journaled.
        wait_for(lambda: len(saved_rows(out)) == chat_requests(server) - len(hung), timeout=60)
        assert proc.poll() is None, "the first Ctrl-C must wait for the requests in flight"
        second = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - second < 5
        assert proc.returncode == 3, stderr
        assert (
            "SIGINT again: quitting now; every answer that arrived is saved; "
            "run the same command to resume"
        ) in stderr
        checkpoint_is_consistent(out)

        resumed = run_cli(*args)
        assert resumed.returncode == 0, resumed.stderr
        sent = resends(server)
    assert_all_ok(one_record_per_row(out, rows))
    assert sent.repeated == sent.resent == len(hung)


# ------------------------------------------------------------------------- a failing writer


def _fail_from_part(monkeypatch: pytest.MonkeyPatch, first_failing: int) -> None:
    real = writer_mod.pq.write_table
    calls = 0

    def write_table(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls >= first_failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(*args, **kwargs)

    monkeypatch.setattr(writer_mod.pq, "write_table", write_table)


def test_disk_full_leaves_a_consistent_checkpoint_and_resume_is_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = chat_rows(200)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    settings = {"concurrency": 4, "flush_rows": 20, "flush_interval_s": 5.0}
    with MockServer(MockConfig(latency_ms=2)) as server:
        _fail_from_part(monkeypatch, 3)
        stopped = batchrun.run_sync(config(path, out, server.base_url, **settings))
        assert stopped.exit_code == 3 and "No space left on device" in (stopped.stopped or "")
        saved = checkpoint_is_consistent(out)
        assert saved["parts"] == 2 and len(parts(out)) == 2
        assert not list((out / "results").glob(".*.tmp"))  # no half-written part left behind

        monkeypatch.undo()  # space is back
        resumed = batchrun.run_sync(config(path, out, server.base_url, **settings))
        assert resumed.exit_code == 0
    checkpoint_is_consistent(out)
    assert_all_ok(one_record_per_row(out, rows))


def test_disk_full_stops_the_run_with_a_clear_message_and_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = chat_rows(200)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(latency_ms=2)) as server:
        _fail_from_part(monkeypatch, 3)
        summary = batchrun.run_sync(
            config(path, out, server.base_url, concurrency=4, flush_rows=20, flush_interval_s=5)
        )
    assert summary.exit_code == 3 and summary.fatal
    assert summary.stopped == (
        f"cannot write the results in {out / 'results'}: No space left on device; "
        "once that is fixed, run the same command to resume"
    )
    assert summary.done_rows == 40
    checkpoint_is_consistent(out)


def test_a_journal_that_cannot_be_written_stops_the_run_and_resume_is_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = chat_rows(200)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    real = journal_mod._write_all
    calls = 0

    def write_all(fd: int, data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    settings = {"concurrency": 4, "flush_rows": 1000, "flush_interval_s": 60.0}
    with MockServer(MockConfig(latency_ms=2)) as server:
        monkeypatch.setattr(journal_mod, "_write_all", write_all)
        stopped = batchrun.run_sync(config(path, out, server.base_url, **settings))
        assert stopped.exit_code == 3 and stopped.fatal
        assert stopped.stopped == (
            f"cannot write the results in {out / 'journal'}: No space left on device; "
            "once that is fixed, run the same command to resume"
        )
        checkpoint_is_consistent(out)
        monkeypatch.undo()
        resumed = batchrun.run_sync(config(path, out, server.base_url, **settings))
        assert resumed.exit_code == 0
    checkpoint_is_consistent(out)
    assert_all_ok(one_record_per_row(out, rows))


def test_a_journal_that_cannot_be_folded_on_resume_is_exit_3_and_sends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = chat_rows(100)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    settings = {"concurrency": 4, "flush_rows": 30, "flush_interval_s": 60.0}
    with MockServer(MockConfig(latency_ms=2, record_bodies=True)) as server:
        _fail_from_part(monkeypatch, 1)  # no part can be written: the answers stay journaled
        first = batchrun.run_sync(config(path, out, server.base_url, **settings))
        assert first.exit_code == 3 and first.done_rows == 0
        journaled = {r.row for r in Journal(out).read()}
        sent = chat_requests(server)
        assert len(journaled) >= 30

        again = batchrun.run_sync(config(path, out, server.base_url, **settings))
        assert again.exit_code == 3 and again.fatal
        assert again.stopped == (
            f"cannot write the results in {out / 'results'}: No space left on device; "
            "once that is fixed, run the same command to resume"
        )
        assert chat_requests(server) == sent  # nothing sent while the journal is not folded
        assert {r.row for r in Journal(out).read()} == journaled  # and nothing lost

        monkeypatch.undo()
        done = batchrun.run_sync(config(path, out, server.base_url, **settings))
        assert done.exit_code == 0
        assert resends(server).resent <= 4  # in flight when the first run stopped
    checkpoint_is_consistent(out)
    assert_all_ok(one_record_per_row(out, rows))


# ---------------------------------------------------------------- a real small or read-only disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _remount(mount: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)


def test_real_full_disk_then_space_is_back_resume_is_exact(
    tmp_path: Path, small_disk: Path
) -> None:
    rows = chat_rows(200)
    for row in rows:  # long answers fill the disk sooner
        row["body"]["mock_reply_tokens"] = 200
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = small_disk / "out"
    with MockServer(MockConfig(latency_ms=1, record_bodies=True)) as server:
        args = ("run", path, "--out", out, "--base-url", server.base_url, "-q")
        full = run_cli(*args, "--concurrency", "8", "--flush-rows", "25")
        assert full.returncode == 3, full.stderr
        # The journal or a part, whichever the disk refused first.
        assert "cannot write the results in " in full.stdout + full.stderr
        assert "No space left on device" in full.stdout + full.stderr
        saved = checkpoint_is_consistent(out)
        for part in parts(out)[: saved["parts"]]:
            pq.read_table(part)  # never a broken part behind the checkpoint

        _remount(small_disk, "size=16m")
        resumed = run_cli(*args)
        assert resumed.returncode == 0, resumed.stderr
        # What arrived before the disk filled was journaled (or is in a part): only the requests
        # in flight when the run stopped are sent again.
        assert resends(server).repeated <= 8
    checkpoint_is_consistent(out)
    assert_all_ok(one_record_per_row(out, rows))


def test_read_only_output_directory_is_refused_before_sending(
    tmp_path: Path, small_disk: Path
) -> None:
    rows = chat_rows(5)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = small_disk / "out"
    out.mkdir()
    _remount(small_disk, "ro")
    with MockServer(MockConfig()) as server:
        result = run_cli("run", path, "--out", out, "--base-url", server.base_url, "-q")
        assert chat_requests(server) == 0
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"batchrun: error: cannot write to the output directory {out}: Read-only file system\n"
    )


def test_output_directory_that_cannot_be_created_is_refused_before_sending(
    tmp_path: Path, small_disk: Path
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(5))
    _remount(small_disk, "ro")
    out = small_disk / "new-out"
    with MockServer(MockConfig()) as server:
        result = run_cli("run", path, "--out", out, "--base-url", server.base_url, "-q")
        assert chat_requests(server) == 0
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"batchrun: error: cannot create the output directory {out}: Read-only file system\n"
    )


def _scan_processes(out: Path) -> list[int]:
    """Processes running a first pass for `out` (their command line names its scratch dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"batchrun.runner.scan" in command and f"{out}/.batchrun-scan-".encode() in command:
            found.append(int(entry.name))
    return found


def _first_pass_running(out: Path) -> bool:
    try:
        saved = json.loads((out / "checkpoint.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    return saved["total_rows"] is None and saved["parts"] > 0


def _big_rows(n: int) -> list[dict[str, Any]]:
    """Rows long enough that an input of `n` gets its first pass in a process of its own."""
    rows = chat_rows(n)
    for row in rows:
        row["body"]["messages"][0]["content"] += " " + "lorem ipsum " * 50
    return rows


def test_sigint_during_the_parallel_first_pass_stops_it_too_and_resume_is_exact(
    tmp_path: Path,
) -> None:
    """The first pass runs alongside sending, in its own process: Ctrl-C stops both, leaves
    nothing behind, and the resume (which reads the input again) sends each row once."""
    rows = _big_rows(20_000)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    assert path.stat().st_size > 8 << 20  # the first pass's own process, not a thread
    out = tmp_path / "out"
    with MockServer(MockConfig(latency_ms=20)) as server:
        args = ("run", path, "--out", out, "--base-url", server.base_url, "--concurrency", "4")
        proc = popen(*args, "--flush-rows", "20", "--flush-interval", "0.2")
        wait_for(lambda: _first_pass_running(out) and bool(_scan_processes(out)), timeout=60)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 3, stderr
        assert "stopped early: interrupted by SIGINT" in stdout
        assert " of ? rows done; resume with:" in stdout  # the count was not known yet
        saved = checkpoint_is_consistent(out)
        assert saved["total_rows"] is None and saved["duplicates"] is None
        stopped_at = done_rows(out)
        assert chat_requests(server) == stopped_at
        wait_for(lambda: not _scan_processes(out), timeout=10)  # the first pass ended with it
        assert list(out.glob(".batchrun-*")) == []
        sent_before = chat_requests(server)
    with MockServer(MockConfig()) as fast:
        resumed = run_cli("run", path, "--out", out, "--base-url", fast.base_url, "-q")
        assert resumed.returncode == 0, resumed.stderr
        assert chat_requests(fast) == len(rows) - sent_before
    saved = checkpoint_is_consistent(out)
    assert (saved["total_rows"], saved["duplicates"]) == (len(rows), 0)
    assert_all_ok(one_record_per_row(out, rows))


def test_kill_9_during_the_parallel_first_pass_then_resume_judges_ids_again(
    tmp_path: Path,
) -> None:
    """kill -9 while the first pass is still running, with repeated custom_ids below and beyond
    the reader's in-memory horizon (100 rows here): the first pass's process ends with its parent,
    and the resume, with the count still unknown, judges every pending row again, the done ones'
    ids included, so each repeat is a bad_input record naming its first row and nothing is
    sent twice."""
    # 40,000 rows: the first pass must still be reading when two parts are committed, and on a
    # loaded machine the first commit waits for the price book (seconds while imports compile).
    rows = _big_rows(40_000)
    repeats = {50: 10, 150: 3, 9_000: 8_500, 39_999: 120}  # row -> the earlier row it repeats
    for row, first in repeats.items():
        rows[row]["custom_id"] = rows[first]["custom_id"]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    script = (
        "import sys, batchrun\n"
        "config = batchrun.RunConfig(input_path=sys.argv[1], out_dir=sys.argv[2], "
        "base_url=sys.argv[3], concurrency=4, flush_rows=20, flush_interval_s=0.2, "
        "id_horizon_rows=100)\n"
        "batchrun.run_sync(config)\n"
    )
    with MockServer(MockConfig(latency_ms=20)) as server:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(path), str(out), server.base_url],
            env=cli_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        wait_for(lambda: _first_pass_running(out) and done_rows(out) >= 40, timeout=60)
        assert _scan_processes(out)
        proc.kill()
        proc.communicate(timeout=30)
        wait_for(lambda: not _scan_processes(out), timeout=10)  # it noticed its parent died
        killed_at = done_rows(out)
        done_before = saved_rows(out)  # in counted parts, or journaled: not sent again
        sent_before = chat_requests(server)
    assert list(out.glob(".batchrun-scan-*"))  # left behind by the kill: swept by the resume
    with MockServer(MockConfig()) as fast:
        resumed = run_cli("run", path, "--out", out, "--base-url", fast.base_url, "-q")
        assert resumed.returncode == 0, resumed.stderr
        sent_after = chat_requests(fast)
    assert list(out.glob(".batchrun-*")) == []
    saved = checkpoint_is_consistent(out)
    assert (saved["total_rows"], saved["duplicates"]) == (len(rows), len(repeats))
    records = read_results(out)
    assert [r["row"] for r in records] == list(range(len(rows)))
    for r in records:
        if r["row"] in repeats:
            first = repeats[r["row"]]
            assert (r["status"], r["error_type"]) == ("error", "bad_input")
            assert f"is already used by row {first} (custom_ids" in r["error_message"]
        else:
            assert r["status"] == "ok", r
    # The resume sends each pending row once, repeats never. Before the kill, at most the rows
    # in flight (4) went unrecorded: the answers that arrived were journaled.
    pending = set(range(len(rows))) - done_before
    assert sent_after == len(pending - set(repeats))
    sent_and_recorded = len(done_before - set(repeats))
    assert sent_and_recorded <= sent_before <= sent_and_recorded + 4
    assert killed_at <= len(done_before)


def test_sigint_during_the_check_ids_first_pass_stops_at_once_and_sends_nothing(
    tmp_path: Path,
) -> None:
    """With --check-ids-first the whole input is read before sending; Ctrl-C there is not lost."""
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(200_000))
    out = tmp_path / "out"
    with MockServer(MockConfig()) as server:
        proc = popen(
            "run", path, "--out", out, "--base-url", server.base_url, "-q", "--check-ids-first"
        )
        wait_for(lambda: (out / ".lock").exists(), timeout=20)
        time.sleep(1.0)  # inside the pass (which takes seconds for 200k rows)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=15)
        assert proc.returncode == 3, stderr
        assert "stopped early: interrupted by SIGINT" in stdout
        assert chat_requests(server) == 0
    assert not (out / "checkpoint.json").exists()  # nothing half set up to resume from
    assert list(out.glob(".batchrun-*")) == []
