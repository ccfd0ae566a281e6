"""runner/tasks.py (the task engine) through `batchrun.run`: task rows submitted once, polled in
batches, their media saved, every row one record; resume polls and never resubmits (a fake
family and gateway on MockTransport: tests/taskfake.py; the CLI against the mock in
tests/test_task_cli.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import anyio

import batchrun
from batchrun.runner.pipeline import run
from batchrun.store.tasks import TaskJournal
from tests.helpers import read_results, write_jsonl
from tests.taskfake import GATEWAY, FakeFamily, FakeGateway, families

KEY = "sk-test-tasks"


def task_rows(prompts: list[str]) -> list[dict[str, Any]]:
    return [
        {"custom_id": f"p{i}", "url": "/fake/submit", "body": {"prompt": prompt}}
        for i, prompt in enumerate(prompts)
    ]


def chat_row(i: int) -> dict[str, Any]:
    return {
        "custom_id": f"c{i}",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hi {i}"}]},
    }


def go(
    tmp_path: Path,
    rows: list[dict[str, Any]],
    gateway: FakeGateway,
    family: FakeFamily | None = None,
    control: batchrun.RunControl | None = None,
    **overrides: Any,
) -> tuple[batchrun.RunSummary, dict[str, dict[str, Any]]]:
    path = tmp_path / "in.jsonl"
    if not path.exists():
        write_jsonl(path, rows)
    settings: dict[str, Any] = {
        "input_path": path,
        "out_dir": tmp_path / "out",
        "base_url": GATEWAY,
        "api_key": KEY,
        "concurrency": 4,
        "max_retries": 2,
        "flush_interval_s": 0.2,
        "estimate": False,
        "check_quota": False,
    }
    settings.update(overrides)
    summary = anyio.run(
        lambda: run(
            batchrun.RunConfig(**settings),
            control,
            transport=gateway.transport(),
            task_families=families(family or FakeFamily()),
        )
    )
    return summary, {r["custom_id"]: r for r in read_results(tmp_path / "out")}


def test_tasks_end_ok_with_their_media_and_chat_rows_flow_beside_them(tmp_path: Path) -> None:
    gateway = FakeGateway(duration_s=0.3)
    rows = task_rows([f"cat {i}" for i in range(6)]) + [chat_row(i) for i in range(20)]
    summary, records = go(tmp_path, rows, gateway)
    assert summary.finished and len(records) == 26
    assert all(r["status"] == "ok" for r in records.values())
    assert set(gateway.submits_by_prompt.values()) == {1}  # each task submitted once
    task = records["p3"]
    assert json.loads(task["response"])["status"] == "SUCCESS"
    [media] = task["media"]
    assert (tmp_path / "out" / media).read_bytes() == b"\x89PNG fake"
    assert task["request_sha256"] and task["error_type"] is None
    # The media host never sees the key (DESIGN invariant 7).
    assert gateway.media_headers and all(
        "authorization" not in h and KEY not in json.dumps(h) for h in gateway.media_headers
    )
    entries = TaskJournal.open(tmp_path / "out").entries
    assert {e.state for e in entries.values()} == {"finished"} and len(entries) == 6


def test_a_rejection_on_http_200_is_invalid_request_and_never_retried(tmp_path: Path) -> None:
    gateway = FakeGateway()
    _, records = go(tmp_path, task_rows(["banned word", "fine"]), gateway)
    assert records["p0"]["error_type"] == "invalid_request"
    assert "banned prompt" in records["p0"]["error_message"]
    assert "code 24" in records["p0"]["error_message"]
    assert gateway.submits_by_prompt["banned word"] == 1
    assert records["p1"]["status"] == "ok"


def test_a_failed_task_is_task_failed_with_the_reason(tmp_path: Path) -> None:
    _, records = go(tmp_path, task_rows(["fail please"]), FakeGateway())
    assert records["p0"]["error_type"] == "task_failed"
    assert records["p0"]["error_message"] == "the picture could not be made"
    assert json.loads(records["p0"]["response"])["status"] == "FAILURE"


def test_a_task_past_its_timeout_is_task_failed(tmp_path: Path) -> None:
    _, records = go(tmp_path, task_rows(["slow one", "quick"]), FakeGateway(), task_timeout_s=0.4)
    assert records["p0"]["error_type"] == "task_failed"
    assert "outlived --task-timeout (0.4 s)" in records["p0"]["error_message"]
    assert records["p1"]["status"] == "ok"


def test_a_timeout_after_the_submit_went_is_submit_unknown_and_resent_only_on_request(
    tmp_path: Path,
) -> None:
    gateway = FakeGateway()
    summary, records = go(tmp_path, task_rows(["timeout here", "fine"]), gateway)
    assert records["p0"]["error_type"] == "submit_unknown"
    assert "--resubmit-unknown" in records["p0"]["error_message"]
    assert gateway.submits_by_prompt["timeout here"] == 1  # not retried
    assert summary.session.errors_by_type == {"submit_unknown": 1}
    rendered = batchrun.runner.summary.render_summary(summary, command="batchrun run")
    assert "1 rows ended submit_unknown" in rendered and "--resubmit-unknown" in rendered

    # A retry pass without the flag keeps it unknown and sends nothing.
    _, records = go(tmp_path, [], gateway, retry_errors=("submit_unknown",))
    assert gateway.submits_by_prompt["timeout here"] == 1
    assert records["p0"]["error_type"] == "submit_unknown"
    # With it, the row is sent again (and may be paid twice: the user said so).
    _, records = go(tmp_path, [], gateway, retry_errors=("submit_unknown",), resubmit_unknown=True)
    assert gateway.submits_by_prompt["timeout here"] == 2


def test_a_500_or_429_on_submit_is_retried_and_makes_one_task(tmp_path: Path) -> None:
    gateway = FakeGateway(submit_faults={"a": [500], "b": [429]})
    _, records = go(tmp_path, task_rows(["a", "b"]), gateway)
    assert records["p0"]["status"] == records["p1"]["status"] == "ok"
    assert gateway.submits_by_prompt == {"a": 1, "b": 1}
    assert len(gateway.tasks) == 2


def test_failed_polls_are_retried_after_a_backoff(tmp_path: Path) -> None:
    gateway = FakeGateway(poll_faults=[500, 502, 500])
    _, records = go(tmp_path, task_rows(["x", "y"]), gateway)
    assert all(r["status"] == "ok" for r in records.values())
    assert gateway.submits_by_prompt == {"x": 1, "y": 1}


def test_poll_traffic_is_bounded_by_the_batch_and_the_refresh(tmp_path: Path) -> None:
    gateway = FakeGateway(duration_s=1.0)
    family = FakeFamily(refresh_s=0.2, batch=100)
    summary, records = go(
        tmp_path,
        task_rows([f"p {i}" for i in range(200)]),
        gateway,
        family,
        concurrency=20,
        max_tasks=200,
    )
    assert summary.finished and len(records) == 200
    assert all(r["status"] == "ok" for r in records.values())
    # 200 tasks in flight for ~1 s at one poll per 0.2 s each: ~2 requests per interval, not
    # 200 (the gather window lets a ramp-up take a few more).
    intervals = summary.elapsed_s / family.refresh_s
    assert len(gateway.polls) <= 4 * math.ceil(200 / family.batch) * (intervals + 1) / 2
    assert len(gateway.polls) < 200
    assert max(gateway.polls) > 50  # many ids per request


def test_at_most_max_tasks_are_open_at_once(tmp_path: Path) -> None:
    gateway = FakeGateway(duration_s=0.2)
    seen: list[int] = []
    gateway.on_submit = lambda n: seen.append(gateway.open_tasks())
    _, records = go(tmp_path, task_rows([f"q {i}" for i in range(12)]), gateway, max_tasks=3)
    assert len(records) == 12 and all(r["status"] == "ok" for r in records.values())
    assert max(seen) <= 2  # the submit being made is the third


def test_a_resume_polls_the_journaled_tasks_and_submits_none_again(tmp_path: Path) -> None:
    control = batchrun.RunControl()
    gateway = FakeGateway(duration_s=0.5)
    prompts = [f"r {i}" for i in range(5)]
    gateway.on_submit = lambda n: (
        control.stop("test: stop once all are submitted") if n == 5 else None
    )
    summary, records = go(tmp_path, task_rows(prompts), gateway, control=control, grace_s=0.0)
    assert not summary.finished and len(records) < 5
    entries = TaskJournal.open(tmp_path / "out").entries
    assert len([e for e in entries.values() if e.state == "submitted"]) >= 1

    summary, records = go(tmp_path, [], gateway)
    assert summary.finished and len(records) == 5
    assert all(r["status"] == "ok" for r in records.values())
    assert set(gateway.submits_by_prompt.values()) == {1}


def test_an_intent_without_a_task_id_is_submit_unknown_on_resume(tmp_path: Path) -> None:
    control = batchrun.RunControl()
    gateway = FakeGateway(duration_s=5.0)
    gateway.on_submit = lambda n: control.stop("test") if n == 2 else None
    go(tmp_path, task_rows(["u0", "u1"]), gateway, control=control, grace_s=0.0)
    journal = TaskJournal.path_in(tmp_path / "out")
    # As if the crash came while the submit of row 1 was in flight: no task id line.
    lines = [
        line
        for line in journal.read_text().splitlines(keepends=True)
        if '"row":1,"task_id"' not in line
    ]
    journal.write_text("".join(lines))
    gateway.duration_s = 0.1
    for task in gateway.tasks.values():
        task.duration_s = 0.1
    _, records = go(tmp_path, [], gateway)
    assert records["p1"]["error_type"] == "submit_unknown"
    assert records["p0"]["status"] == "ok"
    assert gateway.submits_by_prompt == {"u0": 1, "u1": 1}


def test_the_progress_figures_name_each_count_and_the_oldest_running_task(tmp_path: Path) -> None:
    from batchrun.runner.tasks import TaskRunner, TaskSettings

    async def figures() -> tuple[str | None, str | None]:
        runner = TaskRunner(
            journal=TaskJournal.open(tmp_path),
            sender=None,  # type: ignore[arg-type]
            http=None,  # type: ignore[arg-type]
            media=None,
            settings=TaskSettings(),
            control=batchrun.RunControl(),
            put=None,  # type: ignore[arg-type]
        )
        before = runner.figures()
        c = runner.counts
        c.submitted, c.done, c.failed = 5, 2, 1
        c.running = {"t3": anyio.current_time() - 42.0, "t4": anyio.current_time() - 3.0}
        return before, runner.figures()

    before, after = anyio.run(figures)
    assert before is None  # no task row yet: the line shows nothing of tasks
    assert after == "tasks: 5 submitted, 2 running, 2 done, 1 failed, oldest 42 s"
