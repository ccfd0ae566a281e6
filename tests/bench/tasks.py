"""`bench --only tasks`: 2,000 Midjourney rows through the task engine against the mock.

Tasks take 30-120 s and the gateway refreshes every 15 s, on a mock time scale of 1/20 (the
mock's --task-duration-s 1.5,6 and --task-refresh-s 0.75, batchrun's --poll-interval 0.75), so
the figures read as those of a real run divided by 20. Measured: submits/s (until the last
submit reached the mock), poll requests per task, end-to-end time against the ideal (the last
submit plus the longest task plus a refresh), peak RSS.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.bench.context import Context
from tests.bench.procs import BenchError
from tests.bench.report import Row

_SCALE = 20
_DURATION = (30.0 / _SCALE, 120.0 / _SCALE)
_REFRESH_S = 15.0 / _SCALE


def _input(ctx: Context, rows: int) -> Path:
    path = ctx.tmp / f"tasks-{rows}.jsonl"
    with path.open("w") as f:
        for i in range(rows):
            row = {"custom_id": f"mj-{i}", "url": "/mj/submit/imagine",
                   "body": {"prompt": f"a poster, number {i}"}}  # fmt: skip
            f.write(json.dumps(row) + "\n")
    return path


def tasks(ctx: Context) -> list[Row]:
    rows = 400 if ctx.settings.quick else 2_000
    ctx.log(f"[tasks] {rows:,} Midjourney tasks of 30-120 s (mock time / {_SCALE})")
    path = _input(ctx, rows)
    out = ctx.out_dir("tasks")
    flags = (
        "--task-refresh-s",
        str(_REFRESH_S),
        "--task-duration-s",
        f"{_DURATION[0]:g},{_DURATION[1]:g}",
    )
    with ctx.mock(*flags) as mock:
        started = time.monotonic()
        last_submit = [0.0]

        def tick() -> None:
            if not last_submit[0]:
                submits = sum(mock.stats()["tasks"]["submits_by_prompt"].values())
                if submits >= rows:
                    last_submit[0] = time.monotonic() - started

        child = ctx.batchrun_run(
            path, out, mock.base_url, "--max-tasks", str(rows),
            "--poll-interval", str(_REFRESH_S), "--concurrency", "50",
        )  # fmt: skip
        result = ctx.finish(child, 600, tick=tick, interval_s=0.2)
        stats = mock.stats()["tasks"]
    submits = sum(stats["submits_by_prompt"].values())
    polls = sum(stats["polls"].values())
    if submits != rows:
        raise BenchError(f"{submits:,} submits for {rows:,} rows")
    ctx.remove(out)
    submit_s = last_submit[0] or result.wall_s
    ideal_s = submit_s + _DURATION[1] + _REFRESH_S
    return [
        Row(bench="tasks", measure=f"submits/s, {rows:,} MJ rows, C=50",
            value=f"{rows / submit_s:,.0f}", data={"submit_s": submit_s}),
        Row(bench="tasks", measure="poll requests per task",
            value=f"{polls / rows:.3f} ({polls:,} polls)", data={"polls": polls}),
        Row(bench="tasks", measure="end-to-end against the ideal (last submit + longest task)",
            value=f"{result.wall_s:,.1f} s / {ideal_s:,.1f} s = {result.wall_s / ideal_s:.2f}x",
            data={"wall_s": result.wall_s, "ideal_s": ideal_s}),
        Row(bench="tasks", measure="peak RSS", value=f"{result.max_rss_kb / 1024:,.1f} MB",
            data={"max_rss_mb": result.max_rss_kb / 1024}),
    ]  # fmt: skip
