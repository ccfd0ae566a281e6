"""batchrun on a two-node Ray cluster on this machine, against the mock server on 127.0.0.1.

One cluster for the module (each start costs seconds): a head and a second node, 2 logical CPUs
each, in a temp dir of the module's own, usage stats off, token auth off (loopback only).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from batchrun.cluster.engine import ClusterSettings, run_on_ray  # noqa: E402
from batchrun.config import RunConfig  # noqa: E402
from batchrun.mock import MockConfig, MockServer  # noqa: E402
from tests.helpers import TEST_KEY, chat_rows, write_jsonl  # noqa: E402
from tests.s3server import s3_server  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_DEDUP_LOGS": "0",
}


@pytest.fixture(scope="module")
def s3() -> Iterator[pafs.S3FileSystem]:
    with s3_server() as fs:
        yield fs


@pytest.fixture(scope="module")
def cluster(s3: pafs.S3FileSystem) -> Iterator[Any]:
    """Started after the S3 server: its workers inherit AWS_ENDPOINT_URL and the fake keys."""
    saved = {k: os.environ.get(k) for k in [*_ENV, "RAY_TMPDIR"]}
    # A short path: Ray's sockets live under it, and a Unix socket path has 107 bytes at most.
    tmp = tempfile.mkdtemp(prefix="brray-", dir="/tmp")
    os.environ.update(_ENV, RAY_TMPDIR=tmp)
    node = {"num_cpus": 2, "object_store_memory": 100 << 20}
    c = cluster_utils.Cluster(
        initialize_head=True, head_node_args={**node, "include_dashboard": False}
    )
    second = c.add_node(**node)
    c.wait_for_nodes()
    ray.init(address=c.address)
    try:
        yield c, second
    finally:
        ray.shutdown()
        c.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _config(path: Path, server: MockServer, **overrides: Any) -> RunConfig:
    settings: dict[str, Any] = {
        "input_path": path,
        "out_dir": path.parent / "out",
        "base_url": server.base_url,
        "api_key": TEST_KEY,
        "concurrency": 8,
        "flush_rows": 20,
        "flush_interval_s": 0.5,
        "check_quota": False,
    }
    settings.update(overrides)
    return RunConfig(**settings)


def _settings(path: Path | str, out: Path | str, **overrides: Any) -> ClusterSettings:
    values: dict[str, Any] = {
        "address": "auto",
        "input_uri": str(path),
        "out_uri": str(out),
        "workers": 2,
        "shard_bytes": 8_000,
    }
    values.update(overrides)
    return ClusterSettings(**values)


def _records(out: Path) -> list[dict[str, Any]]:
    files = glob.glob(str(out / "shards" / "*" / "results" / "part-*.parquet"))
    return ds.dataset(files, format="parquet").to_table().to_pylist() if files else []


def _exactly_once(out: Path, n: int) -> list[dict[str, Any]]:
    records = _records(out)
    rows = sorted(r["row"] for r in records)
    assert rows == list(range(n)), "every row exactly once"
    return records


def _committed(out: Path) -> int:
    done = 0
    for path in glob.glob(str(out / "shards" / "*" / "checkpoint.json")):
        try:
            data = json.loads(Path(path).read_text())
        except ValueError:
            continue  # being replaced this instant
        done += sum(e - s for s, e in data["done"])
    return done


def _wait_for_commits(out: Path, rows: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _committed(out) < rows:
        assert time.monotonic() < deadline, "no commit in time"
        time.sleep(0.05)


def _chat(server: MockServer) -> int:
    """Chat requests the mock saw (each shard's run also checks the key: GET /v1/models)."""
    return int(server.stats()["requests"]["by_path"].get("/v1/chat/completions", 0))


def test_every_row_once_on_two_nodes_and_a_resume_sends_nothing(
    cluster: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(600))
    caplog.set_level(logging.INFO, logger="batchrun")

    def estimates() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("estimate:")]

    with MockServer(MockConfig(latency_ms=20)) as server:
        summary = run_on_ray(_config(path, server), _settings(path, tmp_path / "out"))
        assert summary.finished and summary.total_rows == 600 and summary.ok == 600
        assert _chat(server) == 600
        assert len({r["custom_id"] for r in _exactly_once(tmp_path / "out", 600)}) == 600
        found = estimates()  # the whole job's, once, with every shard's rows
        assert len(found) == 1 and found[0].startswith("estimate: 600 rows,"), found
        caplog.clear()
        again = run_on_ray(_config(path, server), _settings(path, tmp_path / "out"))
        assert again.finished and again.done_before == 600
        assert _chat(server) == 600  # nothing sent twice
        assert estimates() == [], "a resume of counted shards logs none, as locally"
    plan = json.loads((tmp_path / "out" / "cluster.json").read_text())
    assert len(plan["shards"]) > 4


def test_the_limit_is_held_across_workers_by_one_shared_budget(
    cluster: Any, tmp_path: Path
) -> None:
    rows, rpm = 160, 1200  # 20 a second; the bucket holds one second
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(rows))
    with MockServer(MockConfig(latency_ms=5, rpm=rpm)) as server:
        config = _config(path, server, max_requests_per_minute=rpm, concurrency=16)
        started = time.monotonic()
        summary = run_on_ray(config, _settings(path, tmp_path / "out", shard_bytes=4_000))
        elapsed = time.monotonic() - started
        stats = server.stats()
    assert summary.finished and summary.ok == rows
    refused = stats["requests"]["by_status"].get("429", 0)
    # Two budgets of 1,200 RPM each would meet ~half 429s; one shared one meets a few, where
    # its smooth refill and the mock's meet (0.5% over 800 rows in `make bench`; up to 4 in
    # 164 here on a loaded machine).
    assert refused <= 0.05 * stats["requests"]["total"]
    # Two workers with a budget each would take half as long (and meet 429s).
    assert elapsed >= (rows - rpm / 60) / (rpm / 60) * 0.95


def test_a_shard_that_keeps_failing_ends_as_error_records(cluster: Any, tmp_path: Path) -> None:
    bodies = [json.dumps(r["body"]) for r in chat_rows(100)]
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"body": bodies}), path, row_group_size=25, compression="none")
    meta = pq.ParquetFile(path).metadata
    start = meta.row_group(2).column(0).data_page_offset  # damage the third group's page header
    data = bytearray(path.read_bytes())
    data[start : start + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    with MockServer(MockConfig()) as server:
        summary = run_on_ray(
            _config(path, server), _settings(path, tmp_path / "out", shard_bytes=1)
        )
    records = _exactly_once(tmp_path / "out", 100)
    bad = [r for r in records if r["status"] == "error"]
    assert [r["row"] for r in bad] == list(range(50, 75))
    assert all("failed 3 times" in r["error_message"] for r in bad)
    assert "cannot read" in bad[0]["error_message"]
    assert summary.finished and summary.ok == 75 and summary.errors == 25


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchrun", *args], cwd=ROOT,
        env={**os.environ, "OPENAI_API_KEY": TEST_KEY}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_input_and_output_on_an_object_store(
    cluster: Any, s3: pafs.S3FileSystem, tmp_path: Path
) -> None:
    """A job from and to the moto S3 server; then `report` and `export` read the s3:// OUT as
    the run wrote it: the report's figures are the records', the export's rows in order, and
    an export that would join the input on the store is refused, naming --no-join."""
    rows = chat_rows(300)
    for i, row in enumerate(rows):
        if i % 20 == 3:
            row["body"]["mock_fault"] = "400"
    local = write_jsonl(tmp_path / "in.jsonl", rows)
    s3.create_dir("bkt/prompts")
    with s3.open_output_stream("bkt/prompts/in.jsonl") as f:
        f.write(local.read_bytes())
    settings = _settings("s3://bkt/prompts/in.jsonl", "s3://bkt/runs/june", shard_bytes=6_000)
    with MockServer(MockConfig(latency_ms=10)) as server:
        summary = run_on_ray(_config(local, server), settings)
        assert summary.finished and (summary.ok, summary.errors) == (285, 15)
        again = run_on_ray(_config(local, server), settings)
        assert again.finished and again.done_before == 300
        assert _chat(server) == 300
    files = [
        i.path
        for i in s3.get_file_info(pafs.FileSelector("bkt/runs/june/shards", recursive=True))
        if i.base_name.startswith("part-")
    ]
    assert len({f.split("/shards/")[1].split("/")[0] for f in files}) >= 3
    records = ds.dataset(files, filesystem=s3, format="parquet").to_table().to_pylist()
    assert sorted(r["row"] for r in records) == list(range(300))
    assert s3.get_file_info("bkt/runs/june/cluster.json").type == pafs.FileType.File

    done = _cli("report", "s3://bkt/runs/june", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    ok = [r for r in records if r["status"] == "ok"]
    assert (report["rows"], report["rows_ok"], report["rows_error"]) == (300, 285, 15)
    assert report["requests"] == sum(r["attempts"] for r in records)
    assert report["tokens"]["prompt_tokens"] == sum(r["prompt_tokens"] for r in ok)
    assert report["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in ok))
    total = next(c for c in report["comparison"] if c["scope"] == "total")
    assert total["rows_estimated"] == 300, "the shards' estimates, read from the store"

    target = tmp_path / "answers.parquet"
    refused = _cli("export", "s3://bkt/runs/june", "--to", str(target))
    assert refused.returncode == 2 and "--no-join" in refused.stderr, refused.stderr
    assert "s3://bkt/prompts/in.jsonl" in refused.stderr and not target.exists()
    done = _cli("export", "s3://bkt/runs/june", "--to", str(target), "--no-join")
    assert done.returncode == 0, done.stderr
    table = pq.read_table(target).to_pylist()
    assert [r["row"] for r in table] == list(range(300))
    assert [r["custom_id"] for r in table] == [f"req-{i}" for i in range(300)]
    assert [r["status"] for r in table] == ["error" if i % 20 == 3 else "ok" for i in range(300)]
    missing = _cli("report", "s3://bkt/runs/nothing-here")
    assert missing.returncode == 2 and "holds no cluster.json" in missing.stderr


def test_rows_exactly_once_after_kill_9_of_the_driver(cluster: Any, tmp_path: Path) -> None:
    rows = 1500
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(rows))
    out = tmp_path / "out"
    with MockServer(MockConfig(latency_ms=100)) as server:
        script = (
            "import sys; from pathlib import Path; from batchrun.config import RunConfig\n"
            "from batchrun.cluster.engine import ClusterSettings, run_on_ray\n"
            f"c = RunConfig(input_path={str(path)!r}, out_dir={str(out)!r}, "
            f"base_url={server.base_url!r}, api_key='sk-test', concurrency=8, flush_rows=20, "
            "flush_interval_s=0.5, check_quota=False)\n"
            f"run_on_ray(c, ClusterSettings(address={cluster[0].address!r}, "
            f"input_uri={str(path)!r}, out_uri={str(out)!r}, workers=2, shard_bytes=20000))\n"
        )
        driver = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
        try:
            _wait_for_commits(out, 200)
        finally:
            driver.send_signal(signal.SIGKILL)
            driver.wait()
        before = _committed(out)
        assert before < rows
        sent_before = _chat(server)
        summary = run_on_ray(_config(path, server), _settings(path, out, shard_bytes=20_000))
        sent = _chat(server)
    assert summary.finished and summary.ok == rows
    _exactly_once(out, rows)
    # Redone: at most what was in flight or waiting for a commit at the kill, per worker.
    assert sent - rows <= 2 * (8 + 20) + (sent_before - before)
    assert sent >= rows


def test_rows_exactly_once_after_losing_a_worker_node(cluster: Any, tmp_path: Path) -> None:
    c, second = cluster
    rows = 1500
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(rows))
    out = tmp_path / "out"
    outcome: dict[str, Any] = {}
    with MockServer(MockConfig(latency_ms=100)) as server:

        def drive() -> None:
            try:
                outcome["summary"] = run_on_ray(
                    _config(path, server), _settings(path, out, shard_bytes=20_000)
                )
            except BaseException as exc:  # shown by the assertion below
                outcome["error"] = exc

        thread = threading.Thread(target=drive)
        thread.start()
        _wait_for_commits(out, 200)
        c.remove_node(second)  # kills the node's raylet and its workers
        thread.join(timeout=120)
    assert not thread.is_alive() and "error" not in outcome, outcome.get("error")
    summary = outcome["summary"]
    assert summary.finished and summary.ok == rows
    _exactly_once(out, rows)


def test_the_cli_runs_a_job_on_a_local_cluster_of_its_own(cluster: Any, tmp_path: Path) -> None:
    """`--ray local`: the CLI starts a cluster of this machine's cores, and says how it went."""
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(120))
    ray_tmp = tempfile.mkdtemp(prefix="brcli-", dir="/tmp")  # short: Ray's socket paths
    env = {**os.environ, "OPENAI_API_KEY": "sk-test", "RAY_TMPDIR": ray_tmp}
    with MockServer(MockConfig()) as server:
        done = subprocess.run(
            [sys.executable, "-m", "batchrun", "run", str(path), "--out", str(tmp_path / "out"),
             "--base-url", server.base_url, "--ray", "local", "--ray-workers", "2",
             "--shard-mb", "1", "-q"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "finished: 120 of 120 rows done" in done.stdout
    _exactly_once(tmp_path / "out", 120)
    assert "sk-test" not in done.stdout + done.stderr
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _on_a_terminal(args: list[str], timeout_s: float = 240) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal (200 columns), as a user sees it: the
    progress bar is drawn only there. (exit code, stdout, what the terminal showed)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    env = {**os.environ, "OPENAI_API_KEY": TEST_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchrun", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=slave, text=True,
    )  # fmt: skip
    os.close(slave)
    shown = bytearray()
    reader = threading.Thread(target=_drain, args=(master, shown))
    reader.start()
    try:
        stdout, _ = proc.communicate(timeout=timeout_s)
    finally:
        reader.join(timeout=10)
        os.close(master)
    return proc.returncode, stdout, shown.decode(errors="replace")


def _drain(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other end is closed
            return
        if not chunk:
            return
        into.extend(chunk)


def _summary_line(stdout: str, start: str) -> str:
    lines = [line.strip() for line in stdout.splitlines() if line.strip().startswith(start)]
    assert lines, f"no line starting {start!r} in:\n{stdout}"
    return lines[0]


def test_the_driver_shows_the_local_bar_and_summary_fed_by_the_shards(
    cluster: Any, tmp_path: Path
) -> None:
    """Three files, three shards, two workers: the bar moves between shard ends (the shards
    report every second), ends at 450/450 with the records' ok / err / cost, and the summary's
    figures are the records' sums."""
    folder = tmp_path / "in"
    folder.mkdir()
    for f in range(3):
        rows = chat_rows(150, prefix=f"f{f}")
        for i, row in enumerate(rows):
            if i % 30 == 7:
                row["body"]["mock_fault"] = "400"
        write_jsonl(folder / f"part{f}.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(latency_ms=150)) as server:
        code, stdout, shown = _on_a_terminal(
            ["run", str(folder), "--out", str(out), "--base-url", server.base_url,
             "--ray", cluster[0].address, "--ray-workers", "2", "--concurrency", "8",
             "--flush-interval", "0.3"]
        )  # fmt: skip
    assert code == 0, shown[-3000:]
    records = _records(out)
    assert len(records) == 450
    assert len({r["custom_id"] for r in records}) == 450
    ok = [r for r in records if r["status"] == "ok"]
    errors = [r for r in records if r["status"] == "error"]
    assert len(errors) == 15
    cost = sum(r["cost_usd"] or 0.0 for r in ok)
    prompt = sum(r["prompt_tokens"] or 0 for r in ok)
    completion = sum(r["completion_tokens"] or 0 for r in ok)
    kinds = sorted({r["error_type"] for r in errors})
    assert "finished: 450 of 450 rows done" in stdout
    assert _summary_line(stdout, "whole output:") == "whole output: 435 ok, 15 errors"
    assert _summary_line(stdout, "this run:").startswith(
        "this run: 450 rows (435 ok, 15 errors), 450 requests, 0 retries"
    )
    assert _summary_line(stdout, "errors by type:") == f"errors by type: {kinds[0]} 15"
    assert _summary_line(stdout, "tokens:").startswith(
        f"tokens: prompt {prompt:,} (cached 0), completion {completion:,}"
    )
    assert _summary_line(stdout, "cost:") == f"cost: ${cost:,.4f} this run"
    draws = [d for d in shown.replace("\n", "\r").split("\r") if " row/s" in d or "row/s" in d]
    counts = [int(d.split("/450")[0].split()[-1].replace(",", "")) for d in draws if "/450" in d]
    assert counts, shown[-2000:]
    # Fed by the reports, not only by shard ends (0, 150, 300, 450): each shard takes ~3 s.
    assert any(n % 150 for n in counts), counts
    assert counts == sorted(counts)
    last = [d for d in draws if "450/450" in d][-1]
    assert "ok=435" in last and "err=15" in last and f"cost=${cost:,.4f}" in last, last
    # The job's estimate, logged once as a local run logs its own: the shards' added up.
    from batchrun.cost.estimate import estimate_file, merge_estimates
    from batchrun.cost.pricebook import PriceBook
    from batchrun.runner.render import format_usd

    prices = PriceBook.load()
    expected = merge_estimates(
        [estimate_file(folder / f"part{f}.jsonl", prices=prices) for f in range(3)]
    )
    assert expected is not None
    totals = expected.totals()
    line = (
        f"estimate: 450 rows, {totals['prompt_tokens']:,} prompt tokens, expected cost "
        f"{format_usd(totals['cost_expected_usd'])}"
    )
    assert shown.count("estimate: ") == 1 and line in shown, shown[-3000:]


def test_report_and_export_read_a_cluster_output_as_one(cluster: Any, tmp_path: Path) -> None:
    """`batchrun report OUT` and `batchrun export OUT` over every shard: the report's figures
    are the records' sums with the shards' estimates added up; the export has one row per
    input row, in input order."""
    rows = chat_rows(300)
    for i, row in enumerate(rows):
        if i % 20 == 3:
            row["body"]["mock_fault"] = "400"
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    with MockServer(MockConfig(latency_ms=5)) as server:
        summary = run_on_ray(_config(path, server), _settings(path, out, shard_bytes=6_000))
    assert summary.finished and summary.errors == 15
    assert len(list((out / "shards").iterdir())) >= 3
    records = _records(out)
    ok = [r for r in records if r["status"] == "ok"]
    done = _cli("report", str(out), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["rows"], report["rows_ok"], report["rows_error"]) == (300, 285, 15)
    assert report["requests"] == sum(r["attempts"] for r in records)
    assert report["tokens"]["prompt_tokens"] == sum(r["prompt_tokens"] for r in ok)
    assert report["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in ok))
    total = next(c for c in report["comparison"] if c["scope"] == "total")
    assert total["rows_estimated"] == 300 and total["rows_ok"] == 285

    target = tmp_path / "answers.parquet"
    done = _cli("export", str(out), "--to", str(target))
    assert done.returncode == 0, done.stderr
    table = pq.read_table(target).to_pylist()
    assert [r["row"] for r in table] == list(range(300))
    assert [r["custom_id"] for r in table] == [f"req-{i}" for i in range(300)]
    assert [r["status"] for r in table] == ["error" if i % 20 == 3 else "ok" for i in range(300)]
    assert table[1]["prompt"] == "question number 1"  # the input's columns beside the results
    assert not list(out.glob("results")), "nothing written under OUT"


def test_retry_errors_and_update_on_ray_are_refused_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    """A shard's rows start where its span does, and a retry pass reads an output as rows
    0..total_rows (its list, its compaction): so `--retry-errors --ray` is refused at once
    (exit 2, a message naming it), before any cluster is started or OUT is written, instead
    of passing over the finished shards in silence or failing in each one."""
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(5))
    out = tmp_path / "out"
    done = _cli("run", str(path), "--out", str(out), "--base-url", "http://127.0.0.1:9/v1",
                "--ray", "local", "--retry-errors")  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--retry-errors does not run on Ray yet" in done.stderr
    assert not out.exists()
    done = _cli("run", str(path), "--out", str(out), "--base-url", "http://127.0.0.1:9/v1",
                "--ray", "local", "--update")  # fmt: skip
    assert done.returncode == 2 and "--update does not run on Ray yet" in done.stderr
    assert not out.exists()


def test_rows_exactly_once_after_repeated_kill_9_of_the_cli_driver(
    cluster: Any, tmp_path: Path
) -> None:
    """`batchrun run --ray ADDRESS` killed -9 three times at seeded random moments once it has
    committed more, then run to the end: every row once, and what was sent again is bounded by
    what each kill left in flight or unflushed per worker."""
    from tests.torture import kill_9_repeatedly

    rows = chat_rows(1500)
    for row in rows:  # ~1.5 KB a row: three shards of --shard-mb 1
        row["body"]["messages"][0]["content"] += " " + "x" * 1400
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    workers, concurrency, flush_rows = 2, 8, 20
    with MockServer(MockConfig(latency_ms=100)) as server:
        args = [
            sys.executable, "-m", "batchrun", "run", str(path), "--out", str(out),
            "--base-url", server.base_url, "--ray", cluster[0].address,
            "--ray-workers", str(workers), "--shard-mb", "1", "--concurrency", str(concurrency),
            "--flush-rows", str(flush_rows), "--flush-interval", "0.5", "-q",
        ]  # fmt: skip
        rng = random.Random(13)
        kills = 0
        for _ in range(3):
            kills += kill_9_repeatedly(
                args, progress=lambda: _committed(out), rng=rng, times=1, step=150, within_s=1.0
            )
            time.sleep(1.0)  # the dead driver's actors go with it
        assert kills == 3, "every kill fell inside the run"
        assert 0 < _committed(out) < len(rows)
        done = subprocess.run(args, cwd=ROOT, env={**os.environ, "OPENAI_API_KEY": TEST_KEY},
                              capture_output=True, text=True, timeout=240)  # fmt: skip
        sent = _chat(server)
    assert done.returncode == 0, done.stderr[-2000:]
    _exactly_once(out, len(rows))
    assert sent >= len(rows)
    # Redone: at most what each kill left in flight or waiting for a commit, per worker.
    assert sent - len(rows) <= kills * workers * (concurrency + flush_rows), sent
