"""store/batch_files.py: chunk and result files are whole or absent, and cleaned up."""

from __future__ import annotations

import json
from pathlib import Path

from batchrun.store.batch_files import (
    Download,
    chunk_file,
    file_digest,
    iter_lines,
    read_index,
    remove_chunk_files,
    remove_request_file,
    sweep_temporary,
)
from tests.test_batch_journal import seal_chunk


def test_chunk_files_are_whole_or_not_there(tmp_path: Path) -> None:
    writer = seal_chunk(tmp_path, 3, [4, 5], head=b"[", separator=b",", tail=b"]")
    assert writer.size_with(b"xx") == writer.size_bytes + 1 + 2 + 1
    assert list((tmp_path / "batches").glob("chunk-*")) == []  # hidden until sealed
    sealed = writer.seal()
    assert sealed.path == chunk_file(tmp_path, 3, "requests")
    assert json.loads(sealed.path.read_bytes()) == [{"row": 4}, {"row": 5}]
    assert sealed.size_bytes == sealed.path.stat().st_size and sealed.requests == 2
    assert file_digest(sealed.path) == sealed.sha256
    assert read_index(tmp_path, 3) == {"w4": (4, "id 4"), "w5": (5, "w5")}
    remove_request_file(tmp_path, sealed.path.name)
    assert not sealed.path.exists() and chunk_file(tmp_path, 3, "index").exists()

    discarded = seal_chunk(tmp_path, 4, [6])
    discarded.discard()
    assert not chunk_file(tmp_path, 4, "requests").exists()
    assert list((tmp_path / "batches").glob(".*")) == []


def test_downloads_are_renamed_into_place_and_swept(tmp_path: Path) -> None:
    download = Download(tmp_path, 2, "output")
    download.write(b'{"a":1}\n\n')
    download.write(b'{"b":2}\n')
    assert not download.path.exists()
    path = download.finish()
    assert list(iter_lines(path)) == [b'{"a":1}\n', b'{"b":2}\n']
    left = Download(tmp_path, 2, "errors")
    left.write(b"partial")  # a crash mid-download leaves the hidden file
    sweep_temporary(tmp_path)
    assert sorted(p.name for p in (tmp_path / "batches").iterdir()) == [path.name]
    remove_chunk_files(tmp_path, 2)
    assert list((tmp_path / "batches").iterdir()) == []
    assert file_digest(path) is None
