"""Benchmarks 5-7: how soon a 90%-done 1M-row run resumes sending, how soon a fresh 10M-row
output sends its first request, and `batchrun estimate`.

The 90%-done output is written the way batchrun writes one (`ResultWriter.commit` of rows
0..900k in parts, which also saves the `Checkpoint`), not by sending 900k requests. Start-up is
the time from starting `batchrun run` to the first request the mock sees (its counters read
every 10 ms). Each resume attempt is killed with SIGKILL as soon as it has sent, which leaves the
output as it was; the last one is stopped with SIGTERM and checked: exit 3, and the rows it
committed start at row 900,000 (so it did resume, and did not start again from row 0).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from tests.bench.context import Context
from tests.bench.inputs import MODEL
from tests.bench.procs import BenchError, Child, MockServer
from tests.bench.report import Row, median, met
from tests.bench.sampler import StatsSampler

__all__ = ["estimate", "first_request", "resume"]

_RESUME_ROWS = 1_000_000
_DONE_SHARE = 0.9
_PART_ROWS = 50_000
_RESPONSE = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 22, "completion_tokens": 16, "total_tokens": 38},
    },
    separators=(",", ":"),
)


def _prepare_resume(ctx: Context, input_path: Path, total: int, done: int) -> Path:
    """An output directory holding rows 0..done-1 of `input_path`, as batchrun commits them."""
    from batchrun.inputs.reader import DEFAULT_ENDPOINT
    from batchrun.models import Record
    from batchrun.store.checkpoint import Checkpoint, fingerprint_file
    from batchrun.store.writer import ResultWriter

    out = ctx.out_dir("resume")
    out.mkdir(parents=True)
    checkpoint = Checkpoint(
        input_path=str(input_path),
        fingerprint=fingerprint_file(input_path),
        settings={"endpoint": DEFAULT_ENDPOINT},
        total_rows=total,
        duplicates=0,  # its custom_ids are unique, as the first pass would have found
    )
    checkpoint.save(out)
    writer = ResultWriter(out, checkpoint)
    for start in range(0, done, _PART_ROWS):
        writer.commit(
            [
                Record(
                    custom_id=f"row-{row:09d}",
                    row=row,
                    status="ok",
                    endpoint=DEFAULT_ENDPOINT,
                    http_status=200,
                    response=_RESPONSE,
                    model=MODEL,
                    finish_reason="stop",
                    prompt_tokens=22,
                    completion_tokens=16,
                    total_tokens=38,
                    attempts=1,
                    latency_ms=1.0,
                )
                for row in range(start, min(done, start + _PART_ROWS))
            ]
        )
    return out


def _first_request_s(ctx: Context, mock: MockServer, child: Child, timeout_s: float) -> float:
    """Seconds from starting `child` to the first request the mock saw (10 ms resolution)."""
    sampler = StatsSampler(mock, every_s=0.0)
    deadline = time.monotonic() + timeout_s
    while True:
        sample = sampler.take()
        if sample.total > 0:
            return sample.t - child.started_at
        if child.poll() is not None:
            raise BenchError(f"batchrun ended before sending anything: {ctx.log_tail(child)}")
        if time.monotonic() > deadline:
            child.kill()
            raise BenchError(f"batchrun sent nothing within {timeout_s:.0f} s")
        time.sleep(0.01)


def _check_resumed(ctx: Context, out: Path, done: int) -> str:
    import pyarrow.parquet as pq

    from batchrun.store.checkpoint import Checkpoint

    checkpoint = Checkpoint.load(out)
    if checkpoint is None:
        raise BenchError(f"{out} lost its checkpoint")
    if not checkpoint.done.covers(0, done):
        raise BenchError(f"the resumed run lost finished rows: {checkpoint.done!r}")
    parts = sorted((out / "results").glob("part-*.parquet"))
    prepared = -(-done // _PART_ROWS)
    new_rows: list[int] = []
    for part in parts[prepared:]:
        new_rows += pq.read_table(part, columns=["row"]).column("row").to_pylist()
    added = len(checkpoint.done) - done
    if added <= 0 or not new_rows or min(new_rows) != done:
        raise BenchError(
            f"the resumed run did not continue at row {done:,}: {added:,} rows added, "
            f"new rows from {min(new_rows) if new_rows else None}"
        )
    return f"resumed at row {done:,}: +{added:,} rows committed, exit 3 on SIGTERM"


def resume(ctx: Context) -> list[Row]:
    total = _RESUME_ROWS
    done = int(total * _DONE_SHARE)
    c = str(ctx.settings.concurrency)
    ctx.log(f"[resume] {total:,}-row input, output {done:,} rows done; start -> first request")
    path = ctx.chat_input(total)
    started = time.perf_counter()
    out = _prepare_resume(ctx, path, total, done)
    ctx.log(f"  prepared the 90%-done output in {time.perf_counter() - started:.1f} s")
    times: list[float] = []
    verified = ""
    try:
        with ctx.mock() as mock:
            for k in range(ctx.settings.repeat):
                mock.reset()
                child = ctx.batchrun_run(path, out, mock.base_url, "--concurrency", c)
                times.append(_first_request_s(ctx, mock, child, timeout_s=60))
                ctx.log(f"  resume {k + 1}: first request after {times[-1]:.2f} s")
                if k < ctx.settings.repeat - 1:
                    child.kill()  # nothing committed yet: the output stays 90% done
                    continue
                time.sleep(1.0)
                child.send_signal(signal.SIGTERM)
                ctx.finish(child, 60, expect=3)
                verified = _check_resumed(ctx, out, done)
                ctx.log(f"  {verified}")
            mock.reset()
            fresh_out = ctx.out_dir("fresh")
            child = ctx.batchrun_run(path, fresh_out, mock.base_url, "--concurrency", c)
            fresh = _first_request_s(ctx, mock, child, timeout_s=300)
            child.kill()
            ctx.remove(fresh_out)
            ctx.log(
                f"  fresh output (id scan of {total:,} rows): first request after {fresh:.2f} s"
            )
    finally:
        ctx.remove(out)
    resume_s = median(times)
    return [
        Row(
            bench="resume",
            measure=f"{total:,} rows, 90% done: start -> first request",
            value=f"{resume_s:.2f} s",
            target="< 3 s",
            met=met(resume_s < 3.0),
            data={"runs_s": times, "verified": verified},
        ),
        Row(
            bench="resume",
            measure=f"for comparison, a fresh output of {total:,} rows (first pass alongside)",
            value=f"{fresh:.2f} s",
            data={"fresh_s": fresh},
        ),
    ]


def first_request(ctx: Context) -> list[Row]:
    """Benchmark 7: a new output of 10M rows (~2 GB, written to the temp directory and removed
    after): start -> the first request the mock sees. Each run is killed with SIGKILL once it
    has sent (its output removed); the first pass runs alongside, so the row count, the id
    check and the estimate do not come first."""
    rows = 1_000_000 if ctx.settings.quick else 10_000_000
    ctx.log(f"[firstreq] {rows:,}-row input, new output each time: start -> first request")
    path = ctx.chat_input(rows)
    size = path.stat().st_size
    times: list[float] = []
    try:
        with ctx.mock() as mock:
            for k in range(ctx.settings.repeat):
                mock.reset()
                out = ctx.out_dir("firstreq")
                child = ctx.batchrun_run(
                    path, out, mock.base_url, "--concurrency", str(ctx.settings.concurrency)
                )
                try:
                    times.append(_first_request_s(ctx, mock, child, timeout_s=120))
                finally:
                    child.kill()
                    ctx.remove(out)
                ctx.log(f"  run {k + 1}: first request after {times[-1]:.2f} s")
    finally:
        ctx.forget_input(path)  # ~2 GB: not kept for the benchmarks after this one
    first_s = median(times)
    return [
        Row(
            bench="firstreq",
            measure=f"new output, {rows:,} rows ({size / 1e9:.1f} GB): start -> first request",
            value=f"{first_s:.2f} s",
            target="< 3 s",
            met=met(first_s < 3.0),
            data={"runs_s": times, "rows": rows, "input_bytes": size},
        )
    ]


def estimate(ctx: Context) -> list[Row]:
    probe = ctx.batchrun("estimate", "--help")
    if probe.wait(60).code != 0:
        ctx.log("[estimate] skipped: this checkout has no `batchrun estimate`")
        return [Row(bench="estimate", measure="batchrun estimate", value="skipped: not present")]
    rows = 200_000 if ctx.settings.quick else 1_000_000
    ctx.log(f"[estimate] batchrun estimate on {rows:,} short chat rows")
    path = ctx.chat_input(rows)
    rates: list[float] = []
    cpu: list[float] = []
    for k in range(ctx.settings.repeat):
        child = ctx.batchrun("estimate", str(path), "--json")
        result = ctx.finish(child, rows / 500 + 120)
        counted = json.loads(ctx.output(child))["totals"]["rows"]
        if counted != rows:
            raise BenchError(f"batchrun estimate counted {counted:,} rows, not {rows:,}")
        rates.append(rows / result.wall_s)
        cpu.append(result.cpu_s / rows * 1e6)
        ctx.log(f"  run {k + 1}: {result.wall_s:.1f} s = {rates[-1]:,.0f} rows/s")
    return [
        Row(
            bench="estimate",
            measure=f"batchrun estimate, {rows:,} chat rows (gpt-4o-mini, o200k_base)",
            value=f"{median(rates):,.0f} rows/s ({median(cpu):,.0f} us CPU/row)",
            data={"rows_per_s": rates, "cpu_us_per_row": cpu},
        )
    ]
