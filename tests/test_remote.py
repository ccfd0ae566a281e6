"""OUT on an object store: moto's S3-compatible server on 127.0.0.1, read and written through
pyarrow's S3 filesystem, as a cluster worker does (no Ray here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

import batchrun
from batchrun.store.checkpoint import Checkpoint
from batchrun.store.remote import OutputLocation, ShardMirror, is_remote
from tests.helpers import TEST_KEY, chat_rows, openai_handler, write_jsonl
from tests.s3server import s3_server

pytest.importorskip("moto.server")


@pytest.fixture(scope="module")
def s3() -> Iterator[pafs.S3FileSystem]:
    with s3_server() as fs:
        yield fs


def test_an_object_is_written_whole_and_read_back(s3: pafs.S3FileSystem, tmp_path: Path) -> None:
    for uri in ("s3://bkt/loc", str(tmp_path / "loc")):
        location = OutputLocation(uri)
        assert location.read_bytes("cluster.json") is None
        location.write_whole("cluster.json", b"one")
        location.write_whole("cluster.json", b"two")
        assert location.read_bytes("cluster.json") == b"two"
        assert location.names("") == ["cluster.json"]
        assert location.names("nothing/here") == []
    assert is_remote("s3://bkt/x") and not is_remote("/tmp/x") and not is_remote("file:///tmp/x")


def _config(path: Path, out: Path, **overrides: object) -> batchrun.RunConfig:
    settings: dict[str, object] = {
        "input_path": path,
        "out_dir": out,
        "base_url": "http://mock.test/v1",
        "api_key": TEST_KEY,
        "concurrency": 1,
        "flush_rows": 5,
    }
    settings.update(overrides)
    return batchrun.RunConfig(**settings)  # type: ignore[arg-type]


def _s3_rows(s3: pafs.S3FileSystem, prefix: str) -> list[int]:
    files = [
        i.path
        for i in s3.get_file_info(pafs.FileSelector(f"{prefix}/results", allow_not_found=True))
        if i.base_name.startswith("part-")
    ]
    table = ds.dataset(files, filesystem=s3, format="parquet").to_table(columns=["row"])
    return sorted(table.column("row").to_pylist())


def test_a_run_staged_locally_is_copied_commit_by_commit_and_resumes_from_the_store(
    s3: pafs.S3FileSystem, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(40))
    location = OutputLocation("s3://bkt/run1")
    mirror = ShardMirror(location, "shards/s1", tmp_path / "stage")
    mirror.pull()
    control = batchrun.RunControl()

    def answer_then_stop(body: dict[str, object], n: int) -> httpx2.Response | None:
        if n == 17:
            control.stop("stopped by the test")
        return None

    handler, _ = openai_handler(answer_then_stop)
    first = batchrun.run_sync(
        _config(path, mirror.staging, grace_s=0),
        control,
        transport=httpx2.MockTransport(handler),
    )
    # (run_sync has no on_commit; push what the run committed, as the worker's hook does)
    mirror.push()
    assert not first.finished
    stored = Checkpoint.from_json(
        json.loads(location.read_bytes("shards/s1/checkpoint.json") or b"")
    )
    assert len(stored.done) == first.done_rows and stored.parts >= 3
    # The worker's disk is gone: a new staging directory, filled from the store.
    again = ShardMirror(location, "shards/s1", tmp_path / "stage2")
    again.pull()
    handler2, seen2 = openai_handler()
    summary = batchrun.run_sync(
        _config(path, again.staging), transport=httpx2.MockTransport(handler2)
    )
    again.push()
    assert summary.finished and summary.done_before == first.done_rows
    assert len(seen2) == 40 - first.done_rows
    assert _s3_rows(s3, "bkt/run1/shards/s1") == list(range(40))


def test_a_part_stored_before_its_checkpoint_is_adopted_not_sent_again(
    s3: pafs.S3FileSystem, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", chat_rows(20))
    location = OutputLocation("s3://bkt/run2")
    mirror = ShardMirror(location, "s", tmp_path / "stage")
    mirror.pull()
    handler, _ = openai_handler()
    batchrun.run_sync(
        _config(path, mirror.staging, flush_rows=10), transport=httpx2.MockTransport(handler)
    )
    # A crash between the two steps: both parts reached the store, the checkpoint did not.
    for name in ("part-000000.parquet", "part-000001.parquet"):
        location.upload(mirror.staging / "results" / name, f"s/results/{name}")
    assert location.read_bytes("s/checkpoint.json") is None
    location.upload(mirror.staging / "estimate.json", "s/estimate.json")
    fresh = ShardMirror(location, "s", tmp_path / "stage2")
    fresh.pull()
    # With no checkpoint the output is refused rather than resent (the local rule, kept).
    with pytest.raises(batchrun.CheckpointError, match="no checkpoint"):
        batchrun.run_sync(_config(path, fresh.staging), transport=httpx2.MockTransport(handler))
    # With the checkpoint of the first part only, the second part is adopted on resume.
    first_only = Checkpoint.load(mirror.staging)
    assert first_only is not None
    location.write_whole("s/checkpoint.json", _checkpoint_with_one_part(first_only))
    fresh.pull()
    handler2, seen2 = openai_handler()
    summary = batchrun.run_sync(
        _config(path, fresh.staging), transport=httpx2.MockTransport(handler2)
    )
    assert summary.finished and seen2 == []  # nothing sent again
    fresh.push()
    assert _s3_rows(s3, "bkt/run2/s") == list(range(20))


def _checkpoint_with_one_part(full: Checkpoint) -> bytes:
    data = full.to_json()
    data["parts"] = 1
    data["done"] = [[0, 10]]
    data["counts"] = {"ok": 10, "error": 0}
    return json.dumps(data).encode()
