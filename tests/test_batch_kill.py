"""kill -9 at random moments of a provider batch run, then resume: money spent once, and exactly
one record per row (DESIGN invariants 1 and 3).

Each round starts `batchrun run --backend ... --wait` and kills it with SIGKILL a random moment
after the journal shows a step, the steps taken in turn so that every window is hit whatever the
machine's speed (a kill timed from the start would mostly land in the interpreter's start-up on
a busy machine): just after "uploading" or "creating" is written, the call is on its way or the
server has acted and its answer (delayed by the mock) has not arrived, so the resume must look
the file or batch up; after "ended" or "downloaded", in the middle of polling and downloading;
after "committed", between two chunks. At the end, the mock must have seen every
row in exactly one batch, and created no batch the journal does not know. (Checked: with the
look-up before a create taken out, this test fails.)
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

import pytest

from batchrun.mock import MockConfig, MockServer
from batchrun.store.batch_journal import BatchJournal
from tests.helpers import TEST_KEY, chat_rows, write_jsonl
from tests.test_batch_run import message_rows
from tests.torture import ROOT, assert_all_ok, batchrun_cmd, cli_env, one_record_per_row, run_cli

# In the order the steps come: the submits of the first chunks, then (once every chunk is
# submitted) polling, downloading and committing.
KILL_AFTER = {
    "openai-batch": ["uploading", "creating", "uploaded", "creating", "ended", "downloaded",
                     "committed", "downloaded"],
    "anthropic-batch": ["creating", "created", "creating", "creating", "ended", "downloaded",
                        "committed", "downloaded"],
}  # fmt: skip
LATENCY_MS = 60


def journal_steps(out: Path) -> list[str]:
    try:
        lines = BatchJournal.path_in(out).read_bytes().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line).get("step", "") for line in lines[1:] if line.endswith(b"}")]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["openai-batch", "anthropic-batch"])
def test_kill_9_at_random_moments_then_resume(tmp_path: Path, backend: str) -> None:
    rng = random.Random(f"issue-14/{backend}")
    anthropic = backend == "anthropic-batch"
    rows = message_rows([f"m-{i}" for i in range(60)]) if anthropic else chat_rows(60)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    env = cli_env(key=None if anthropic else TEST_KEY)
    if anthropic:
        env["ANTHROPIC_API_KEY"] = TEST_KEY
    config = MockConfig(batch_phase_s=0.5, batch_latency_ms=LATENCY_MS, api_key=TEST_KEY)
    kills = 0
    with MockServer(config) as server:
        args = ("run", path, "--out", out, "--base-url", server.base_url, "--backend", backend,
                "--wait", "--poll-interval", "0.1", "--batch-size", "5", "-q")  # fmt: skip
        for step in KILL_AFTER[backend]:
            seen = len(journal_steps(out))
            proc = subprocess.Popen(
                batchrun_cmd(*args), env=env, cwd=ROOT,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + 60
            while step not in journal_steps(out)[seen:] and proc.poll() is None:
                assert time.monotonic() < deadline, f"the run never reached {step!r}"
                time.sleep(0.002)
            time.sleep(rng.uniform(0, LATENCY_MS / 1000))
            if proc.poll() is not None:
                assert proc.returncode == 0
                break
            proc.kill()
            proc.wait()
            kills += 1
        final = run_cli(*args, env=env, timeout=180)
        assert final.returncode == 0, final.stderr
        assert "finished: 60 of 60 rows done" in final.stdout
        stats = server.stats()["batches"]["anthropic" if anthropic else "openai"]
    assert kills >= 6
    journal = BatchJournal.load(out)
    assert journal is not None
    # Every row went in exactly one batch, and every batch the mock created is one the journal
    # owns: none was created twice for the same rows.
    assert stats["custom_ids_in_two_batches"] == 0
    assert stats["requests"] == len(rows)
    assert stats["created"] == len(journal.batch_ids())
    records = one_record_per_row(out, rows)
    if anthropic:
        assert [r["status"] for r in records] == ["ok"] * len(rows)
    else:
        assert_all_ok(records)
