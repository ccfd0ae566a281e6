"""Task rows through the CLI against the mock's task lifecycle (batchrun.mock.tasks): every
status path, media under OUT/media, paid once across kill -9 and resume."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from batchrun.mock import MockConfig, MockServer
from tests.helpers import read_results, write_jsonl
from tests.torture import ROOT, batchrun_cmd, cli_env, kill_9_repeatedly, wait_for


def mj(i: int, prompt: str, **extra: Any) -> dict[str, Any]:
    return {"custom_id": f"m{i}", "url": "/mj/submit/imagine", "body": {"prompt": prompt, **extra}}


def chat(i: int) -> dict[str, Any]:
    return {
        "custom_id": f"c{i}",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hi {i}"}]},
    }


def run_cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        batchrun_cmd(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(),
        cwd=ROOT,
    )


def test_every_status_path_through_the_cli(tmp_path: Path) -> None:
    rows = [
        mj(0, "a cat"),
        mj(1, "a banned cat", mock_task="banned"),
        mj(2, "a failing cat", mock_task="fail"),
        mj(3, "a hanging cat", mock_task="timeout_after_submit"),
        mj(4, "a slow cat", mock_task="never"),
        *[chat(i) for i in range(10)],
    ]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    config = MockConfig(port=0, task_refresh_s=0.05, task_duration_s=(0.1, 0.3))
    with MockServer(config) as mock:
        done = run_cli(
            "run", path, "--out", out, "--base-url", mock.base_url, "--timeout", "1",
            "--task-timeout", "1.5", "--max-tasks", "3", "-q", "--poll-interval", "0.05",
        )  # fmt: skip
        submits = mock.stats()["tasks"]["submits_by_prompt"]
    assert done.returncode == 0, done.stderr
    records = {r["custom_id"]: r for r in read_results(out)}
    assert len(records) == 15
    assert records["m0"]["status"] == "ok" and records["m0"]["media"]
    assert all((out / m).stat().st_size > 0 for m in records["m0"]["media"])
    assert records["m1"]["error_type"] == "invalid_request"
    assert "code 24" in records["m1"]["error_message"] or "banned" in records["m1"]["error_message"]
    assert records["m2"]["error_type"] == "task_failed"
    assert records["m3"]["error_type"] == "submit_unknown"
    assert records["m4"]["error_type"] == "task_failed"
    assert "outlived --task-timeout" in records["m4"]["error_message"]
    assert all(records[f"c{i}"]["status"] == "ok" for i in range(10))
    assert all(n == 1 for n in submits.values()), submits  # nothing submitted twice
    assert "1 rows ended submit_unknown" in done.stdout
    assert "--resubmit-unknown" in done.stdout


def test_the_task_flags_have_help() -> None:
    done = run_cli("run", "--help")
    for flag in ("--max-tasks", "--task-timeout", "--poll-interval", "--resubmit-unknown"):
        assert flag in done.stdout


@pytest.mark.slow
def test_kill_9_across_submit_and_poll_then_resume_pays_once(tmp_path: Path) -> None:
    rows = [mj(i, f"poster {i}") for i in range(40)] + [chat(i) for i in range(20)]
    # Follow-ups after their parents: some read while the parent runs, some after it ended.
    follow_ups = {f"m{i}-u{1 + i % 2}": f"m{i}" for i in range(0, 40, 4)}
    for n, (custom_id, parent) in enumerate(follow_ups.items()):
        rows.insert(int(parent[1:]) + 2 + n * 2, action(custom_id, parent, custom_id[-2:].upper()))
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    config = MockConfig(port=0, task_refresh_s=0.05, task_duration_s=(0.3, 1.0))
    with MockServer(config) as mock:
        args = batchrun_cmd(
            "run", path, "--out", out, "--base-url", mock.base_url, "-q",
            "--concurrency", "4", "--max-tasks", "10", "--poll-interval", "0.05",
        )  # fmt: skip

        def progress() -> int:
            stats = mock.stats()["tasks"]
            return sum(stats["submits_by_prompt"].values()) + sum(stats["polls"].values())

        kills = kill_9_repeatedly(args, progress=progress, rng=random.Random(11), times=12, step=3)
        assert kills >= 4
        done = run_cli(
            "run", path, "--out", out, "--base-url", mock.base_url, "-q", "--poll-interval", "0.05"
        )
        submits = mock.stats()["tasks"]["submits_by_prompt"]
    assert done.returncode == 0, done.stderr
    records = read_results(out)
    assert sorted(r["custom_id"] for r in records) == sorted(r["custom_id"] for r in rows)
    unknown = {r["custom_id"] for r in records if r["error_type"] == "submit_unknown"}
    for record in records:
        custom_id = record["custom_id"]
        if follow_ups.get(custom_id) in unknown:  # the parent may have been accepted: not sent
            assert record["error_type"] == "task_failed", record
            assert "ended submit_unknown" in record["error_message"], record
        elif custom_id.startswith("m") and custom_id not in unknown:
            assert record["status"] == "ok", record
            assert record["media"], record
    prompts = {f"m{i}": f"poster {i}" for i in range(40)}
    prompts |= {c: f"poster {p[1:]} [{c[-2:].upper()}]" for c, p in follow_ups.items()}
    twice = {cid for cid, p in prompts.items() if submits.get(p, 0) > 1}
    assert twice <= unknown, (twice, unknown)
    sent = {c for c in follow_ups if submits.get(prompts[c])}  # every follow-up with a task
    assert sent >= {c for c, p in follow_ups.items() if not {c, p} & unknown}


def test_200_tasks_in_flight_take_a_few_polls_per_refresh(tmp_path: Path) -> None:
    rows = [mj(i, f"crowd {i}") for i in range(200)]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    refresh_s = 0.25
    config = MockConfig(port=0, task_refresh_s=refresh_s, task_duration_s=(1.0, 1.5))
    with MockServer(config) as mock:
        done = run_cli(
            "run", path, "--out", tmp_path / "out", "--base-url", mock.base_url, "-q",
            "--max-tasks", "200", "--poll-interval", str(refresh_s),
        )  # fmt: skip
        stats = mock.stats()["tasks"]
    assert done.returncode == 0, done.stderr
    assert all(r["status"] == "ok" for r in read_results(tmp_path / "out"))
    assert set(stats["submits_by_prompt"].values()) == {1}
    polls = sum(stats["polls"].values())
    # ~2 s of tasks at one poll of up to 200 ids per 0.25 s: about 8-12 polls, not 200 per round.
    assert 1 <= polls <= 40, stats["polls"]


def test_a_follow_up_row_is_submitted_once_its_parent_succeeded(tmp_path: Path) -> None:
    rows = [
        {"custom_id": "p1-u1", "url": "/mj/submit/action", "after": "p1", "body": {"button": "U1"}},
        mj(1, "a red door"),
        {"custom_id": "f-u2", "url": "/mj/submit/action", "after": "m2", "body": {"button": "U2"}},
        mj(2, "a failing door", mock_task="fail"),
        {
            "custom_id": "o-u1",
            "url": "/mj/submit/action",
            "after": "nobody",
            "body": {"button": "U1"},
        },
    ]
    rows[1]["custom_id"] = "p1"
    rows += [mj(3, "a banned door", mock_task="banned"), action("b-u1", "m3", "U1")]
    rows += [chat(0), action("c-u1", "c0", "U1")]  # a chat row is no task: nothing to act on
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    config = MockConfig(port=0, task_refresh_s=0.05, task_duration_s=(0.1, 0.3))
    with MockServer(config) as mock:
        done = run_cli(
            "run", path, "--out", tmp_path / "out", "--base-url", mock.base_url, "-q",
            "--poll-interval", "0.05",
        )  # fmt: skip
        submits = mock.stats()["tasks"]["submits_by_prompt"]
    assert done.returncode == 0, done.stderr
    records = {r["custom_id"]: r for r in read_results(tmp_path / "out")}
    assert len(records) == 9
    assert records["p1"]["status"] == "ok"
    assert records["p1-u1"]["status"] == "ok", records["p1-u1"]
    assert records["p1-u1"]["media"]
    assert submits.get("a red door [U1]") == 1 and submits.get("a red door") == 1
    assert records["f-u2"]["error_type"] == "task_failed"
    assert records["f-u2"]["error_message"].startswith("its parent m2 failed: ")
    assert records["o-u1"]["error_type"] == "bad_input"
    assert "'after' names 'nobody', which is no task row" in records["o-u1"]["error_message"]
    assert not any("[U2]" in p for p in submits)  # no submit for the failed parent's child
    assert records["b-u1"]["error_type"] == "task_failed"  # the refused parent's reason
    assert records["b-u1"]["error_message"].startswith("its parent m3 failed: ")
    assert "code 24" in records["b-u1"]["error_message"]
    assert records["c-u1"]["error_type"] == "bad_input"
    assert "'after' names 'c0'" in records["c-u1"]["error_message"]
    assert not any(p.startswith("a banned door [") for p in submits)


def action(custom_id: str, parent: str, button: str) -> dict[str, Any]:
    return {"custom_id": custom_id, "url": "/mj/submit/action", "after": parent,
            "body": {"button": button}}  # fmt: skip


def journal_lines(out: Path) -> list[dict[str, Any]]:
    path = out / "tasks" / "journal.jsonl"
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")[1:]
    return [json.loads(line) for line in lines if line.endswith(b"}")]


@pytest.mark.slow
def test_a_follow_up_finds_its_parent_committed_by_a_killed_run(tmp_path: Path) -> None:
    # --max-tasks 1 and one worker: m1, m2, then blocker 1 are submitted one after the other,
    # and the worker waits for room before blocker 2 (blocker 1 never ends), so no follow-up
    # was read yet when the run is killed: both parents' records are the first run's only.
    rows = [
        mj(1, "a blue door"),
        mj(2, "a failing door", mock_task="fail"),
        mj(3, "blocker 1", mock_task="never"),
        mj(4, "blocker 2", mock_task="never"),
        action("m1-u1", "m1", "U1"),
        action("m2-u1", "m2", "U1"),
    ]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    config = MockConfig(port=0, task_refresh_s=0.05, task_duration_s=(0.1, 0.3))
    with MockServer(config) as mock:
        args = batchrun_cmd(
            "run", path, "--out", out, "--base-url", mock.base_url, "-q",
            "--concurrency", "1", "--max-tasks", "1", "--poll-interval", "0.05",
        )  # fmt: skip
        quiet = subprocess.DEVNULL
        first = subprocess.Popen(args, env=cli_env(), cwd=ROOT, stdout=quiet, stderr=quiet)
        try:

            def parents_committed() -> bool:
                finished = {
                    line["row"] for line in journal_lines(out) if line["step"] == "finished"
                }
                return {0, 1} <= finished

            wait_for(parents_committed, timeout=30)
            assert first.poll() is None, "the first run ended before its kill"
        finally:
            first.kill()
            first.wait()
        before = dict(mock.stats()["tasks"]["submits_by_prompt"])
        assert not any("[U1]" in p for p in before), before  # no follow-up was submitted yet
        done = run_cli(
            "run", path, "--out", out, "--base-url", mock.base_url, "-q",
            "--poll-interval", "0.05", "--task-timeout", "1",
        )  # fmt: skip
        submits = mock.stats()["tasks"]["submits_by_prompt"]
    assert done.returncode == 0, done.stderr
    records = {r["custom_id"]: r for r in read_results(out)}
    assert sorted(records) == sorted(r["custom_id"] for r in rows)
    assert records["m1-u1"]["status"] == "ok", records["m1-u1"]
    assert records["m1-u1"]["media"] and all(
        (out / m).stat().st_size for m in records["m1-u1"]["media"]
    )
    assert submits.get("a blue door [U1]") == 1 and submits.get("a blue door") == 1
    assert records["m2-u1"]["error_type"] == "task_failed"
    assert records["m2-u1"]["error_message"].startswith("its parent m2 failed: ")
    assert not any(p.startswith("a failing door [") for p in submits)
