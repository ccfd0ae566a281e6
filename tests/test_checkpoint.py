"""batchrun.store.checkpoint: the checkpoint file, the input fingerprint, the output lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from batchrun.common.ranges import RangeSet
from batchrun.store import checkpoint as checkpoint_mod
from batchrun.store.checkpoint import (
    CHECKPOINT_NAME,
    Checkpoint,
    CheckpointError,
    Fingerprint,
    OutputLock,
    OutputLockedError,
    RerunPass,
    atomic_write_bytes,
    fingerprint_file,
)

# ------------------------------------------------------------------------------------- checkpoint


def _checkpoint() -> Checkpoint:
    return Checkpoint(
        input_path="/data/in.jsonl",
        fingerprint=Fingerprint(size=123, digest="ab" * 32, method="sha256"),
        settings={"endpoint": "/v1/chat/completions"},
        parts=3,
        done=RangeSet([(0, 100), (150, 160)]),
        total_rows=1000,
        counts={"ok": 105, "error": 5},
    )


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    cp = _checkpoint()
    cp.save(tmp_path)
    loaded = Checkpoint.load(tmp_path)
    assert loaded == cp
    assert loaded is not None
    assert loaded.done.ranges() == [(0, 100), (150, 160)]
    on_disk = json.loads((tmp_path / CHECKPOINT_NAME).read_text())
    assert on_disk["version"] == 1
    assert on_disk["done"] == [[0, 100], [150, 160]]


def test_row_count_and_repeats_may_be_unknown_and_old_files_mean_no_repeats(
    tmp_path: Path,
) -> None:
    cp = _checkpoint()
    cp.total_rows, cp.duplicates = None, None  # the first pass had not finished
    cp.save(tmp_path)
    assert Checkpoint.load(tmp_path) == cp
    cp.total_rows, cp.duplicates = 1000, 7
    cp.save(tmp_path)
    assert Checkpoint.load(tmp_path) == cp
    # Written before the first pass ran alongside sending: no "duplicates" key, and a run
    # then refused an input with a repeated custom_id.
    old = json.loads((tmp_path / CHECKPOINT_NAME).read_text())
    del old["duplicates"]
    (tmp_path / CHECKPOINT_NAME).write_text(json.dumps(old))
    loaded = Checkpoint.load(tmp_path)
    assert loaded is not None and (loaded.total_rows, loaded.duplicates) == (1000, 0)
    old["total_rows"] = None
    (tmp_path / CHECKPOINT_NAME).write_text(json.dumps(old))
    loaded = Checkpoint.load(tmp_path)
    assert loaded is not None and (loaded.total_rows, loaded.duplicates) == (None, None)


def test_checkpoint_load_missing_is_none(tmp_path: Path) -> None:
    assert Checkpoint.load(tmp_path) is None


def test_checkpoint_save_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    cp = _checkpoint()
    cp.save(tmp_path)
    cp.done.add_range(100, 150)
    cp.parts = 4
    cp.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]
    loaded = Checkpoint.load(tmp_path)
    assert loaded is not None
    assert loaded.parts == 4
    assert loaded.done.ranges() == [(0, 160)]


def test_atomic_write_keeps_old_file_when_writing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b'{"version": 1, "input_path": "x"',  # truncated
        b"\xff\xfe garbage",
        b"[]",
        b"null",
        b'"a string"',
        b'{"version": 1}',
        b'{"version": 1, "input_path": "x", "fingerprint": "abc", "settings": {}, '
        b'"parts": 0, "done": []}',
        b'{"version": 1, "input_path": "x", "fingerprint": {"size": 1, "digest": "d", '
        b'"method": "sha256"}, "settings": {}, "parts": 0, "done": [[1]]}',
        b'{"version": 1, "input_path": "x", "fingerprint": {"size": 1, "digest": "d", '
        b'"method": "sha256"}, "settings": {}, "parts": 0, "done": [], "counts": []}',
    ],
)
def test_damaged_checkpoint_raises_checkpoint_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / CHECKPOINT_NAME).write_bytes(content)
    with pytest.raises(CheckpointError, match="damaged"):
        Checkpoint.load(tmp_path)


def test_checkpoint_of_another_version_is_refused(tmp_path: Path) -> None:
    data = _checkpoint().to_json()
    data["version"] = 99
    (tmp_path / CHECKPOINT_NAME).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="unsupported checkpoint version 99"):
        Checkpoint.load(tmp_path)


def test_check_resumable_accepts_same_input_and_settings() -> None:
    cp = _checkpoint()
    cp.check_resumable(
        Fingerprint(size=123, digest="ab" * 32, method="sha256"),
        {"endpoint": "/v1/chat/completions", "unrelated": None},
    )


def test_check_resumable_refuses_a_setting_the_output_was_started_without() -> None:
    cp = _checkpoint()  # written before templates existed: no "template" key
    with pytest.raises(CheckpointError) as info:
        cp.check_resumable(
            cp.fingerprint, {"endpoint": "/v1/chat/completions", "template": "ab12" * 16}
        )
    assert str(info.value) == (
        "--template was not set when this output was started and is a template with sha256 "
        "ab12ab12ab12 now; use the same value to resume, --update to re-send the rows whose "
        "requests it changes, or a new --out directory"
    )


def test_check_resumable_refuses_changed_fingerprint() -> None:
    cp = _checkpoint()
    with pytest.raises(CheckpointError) as info:
        cp.check_resumable(
            Fingerprint(size=124, digest="cd" * 32, method="sha256"),
            {"endpoint": "/v1/chat/completions"},
        )
    message = str(info.value)
    assert "the input file has changed" in message
    assert "was 123 bytes" in message
    assert "now 124 bytes" in message
    assert "Add --update to send only its changed and new rows" in message
    assert "new --out directory" in message


def test_differs_tells_a_changed_input_or_setting_from_the_same_one() -> None:
    cp = _checkpoint()
    settings = {"endpoint": "/v1/chat/completions"}
    assert not cp.differs(cp.fingerprint, settings)
    assert cp.differs(Fingerprint(size=1, digest="x", method="sha256"), settings)
    assert cp.differs(cp.fingerprint, {**settings, "template": "ab" * 32})


def test_passes_and_compaction_state_round_trip_and_old_checkpoints_have_none(
    tmp_path: Path,
) -> None:
    cp = _checkpoint()
    cp.passes.append(
        RerunPass(number=1, kind="retry", error_types=["server_error"], rows=9,
                  done=RangeSet([(0, 4)]), fixed=3)
    )  # fmt: skip
    cp.first_part, cp.parts, cp.stale_records = 5, 8, 4
    cp.save(tmp_path)
    loaded = Checkpoint.load(tmp_path)
    assert loaded is not None and loaded.open_pass is not None
    assert loaded.open_pass.done == RangeSet([(0, 4)]) and loaded.open_pass.fixed == 3
    assert (loaded.first_part, loaded.parts, loaded.stale_records) == (5, 8, 4)
    data = cp.to_json()
    for key in ("first_part", "passes", "stale_records"):
        del data[key]
    old = Checkpoint.from_json(data)
    assert (old.first_part, old.passes, old.stale_records, old.open_pass) == (0, [], 0, None)


def test_check_resumable_refuses_changed_endpoint() -> None:
    cp = _checkpoint()
    with pytest.raises(CheckpointError) as info:
        cp.check_resumable(cp.fingerprint, {"endpoint": "/v1/embeddings"})
    assert str(info.value) == (
        "--endpoint was '/v1/chat/completions' when this output was started and is "
        "'/v1/embeddings' now; use the same value to resume, --update to re-send the rows "
        "whose requests it changes, or a new --out directory"
    )


def test_check_resumable_refuses_missing_setting() -> None:
    cp = _checkpoint()
    with pytest.raises(CheckpointError, match="--endpoint was"):
        cp.check_resumable(cp.fingerprint, {})


# ------------------------------------------------------------------------------------ fingerprint


def test_fingerprint_of_a_directory_or_unreadable_input_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CheckpointError, match=r"^input is a directory, not a file: "):
        fingerprint_file(tmp_path)
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"{}\n")

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(CheckpointError) as info:
        fingerprint_file(path)
    assert str(info.value) == f"cannot read the input file {path}: Permission denied"


def test_fingerprint_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"hello\n")
    fp = fingerprint_file(path)
    assert fp.method == "sha256"
    assert fp.size == 6
    assert fp.digest == "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    assert fingerprint_file(path) == fp
    assert Fingerprint.from_json(fp.to_json()) == fp


def test_fingerprint_changes_with_content_of_same_size(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"a" * 5000)
    before = fingerprint_file(path)
    path.write_bytes(b"a" * 4999 + b"b")
    after = fingerprint_file(path)
    assert before.size == after.size
    assert before != after


def test_fingerprint_sampled_for_large_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scale the sampling down: 16 blocks of 64 bytes over a 64 KiB "large" file.
    monkeypatch.setattr(checkpoint_mod, "_FULL_HASH_LIMIT", 1024)
    monkeypatch.setattr(checkpoint_mod, "_SAMPLE_BLOCK", 64)
    monkeypatch.setattr(checkpoint_mod, "_SAMPLE_COUNT", 16)
    path = tmp_path / "big.jsonl"
    data = bytearray(os.urandom(64 * 1024))
    path.write_bytes(data)
    fp = fingerprint_file(path)
    assert fp.method == "sha256-sampled"
    assert fp.size == len(data)
    assert fingerprint_file(path) == fp

    # The first, last and a middle sampled block are all part of the digest.
    step = (len(data) - 64) // 15
    for offset in (0, len(data) - 1, 7 * step + 10):
        changed = bytearray(data)
        changed[offset] ^= 0xFF
        path.write_bytes(changed)
        assert fingerprint_file(path).digest != fp.digest, offset

    path.write_bytes(data + b"x")  # appended: the size changes
    assert fingerprint_file(path) != fp

    # A small file is still hashed whole under the same settings.
    small = tmp_path / "small.jsonl"
    small.write_bytes(b"x" * 1024)
    assert fingerprint_file(small).method == "sha256"


# ------------------------------------------------------------------------------------ output lock


def test_lock_twice_in_one_process_raises(tmp_path: Path) -> None:
    with OutputLock(tmp_path):
        assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(OutputLockedError, match="another batchrun process"):
            OutputLock(tmp_path).acquire()
    # Released on exit: a new lock succeeds.
    with OutputLock(tmp_path):
        pass


def test_an_output_directory_that_cannot_be_written_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(path: object, flags: int, mode: int = 0o777) -> int:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(checkpoint_mod.os, "open", read_only)
    with pytest.raises(CheckpointError) as info:
        OutputLock(tmp_path).acquire()
    assert str(info.value) == (
        f"cannot write to the output directory {tmp_path}: Read-only file system"
    )


def test_lock_error_is_a_checkpoint_error(tmp_path: Path) -> None:
    with OutputLock(tmp_path), pytest.raises(CheckpointError):
        OutputLock(tmp_path).acquire()


def test_release_is_idempotent(tmp_path: Path) -> None:
    lock = OutputLock(tmp_path)
    lock.acquire()
    lock.release()
    lock.release()
    OutputLock(tmp_path).acquire()


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from batchrun.store.checkpoint import OutputLock
    lock = OutputLock(Path(sys.argv[1]))
    lock.acquire()
    print("locked", flush=True)
    if sys.argv[2] == "hold":
        time.sleep(60)
    """
)

_TRY = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from batchrun.store.checkpoint import OutputLock, OutputLockedError
    try:
        OutputLock(Path(sys.argv[1])).acquire()
    except OutputLockedError as exc:
        print("refused:", exc)
        sys.exit(3)
    print("locked")
    """
)


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    with OutputLock(tmp_path):
        result = subprocess.run(
            _python(_TRY, str(tmp_path)), capture_output=True, text=True, timeout=30
        )
    assert result.returncode == 3, result.stderr
    assert "another batchrun process is already writing to" in result.stdout


def test_lock_released_when_holder_is_killed(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        _python(_HOLDER, str(tmp_path), "hold"), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError):
            OutputLock(tmp_path).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert holder.returncode == -signal.SIGKILL
    # The kernel dropped the flock with the process: no stale lock.
    with OutputLock(tmp_path):
        pass


def test_lock_released_when_holder_exits_without_release(tmp_path: Path) -> None:
    result = subprocess.run(
        _python(_HOLDER, str(tmp_path), "exit"), capture_output=True, text=True, timeout=30
    )
    assert result.stdout.strip() == "locked", result.stderr
    with OutputLock(tmp_path):
        pass
