"""batchrun.inputs.files: upload files are read only from inside the files root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchrun.inputs.files import FilesRoot, UploadProblem


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "data"
    (base / "clips").mkdir(parents=True)
    (base / "clips" / "a.mp3").write_bytes(b"ID3" + b"\x00" * 100)
    (tmp_path / "secret.txt").write_text("do not upload")
    return base


def test_a_file_inside_the_root(root: Path) -> None:
    assert FilesRoot(root).resolve("clips/a.mp3") == (root / "clips" / "a.mp3").resolve()


def test_an_absolute_path_inside_the_root_is_fine(root: Path) -> None:
    path = str((root / "clips" / "a.mp3").resolve())
    assert FilesRoot(root).resolve(path) == Path(path)


@pytest.mark.parametrize("name", ["../secret.txt", "clips/../../secret.txt", "/etc/passwd"])
def test_a_path_out_of_the_root_is_refused(root: Path, name: str) -> None:
    with pytest.raises(UploadProblem, match="outside the files root"):
        FilesRoot(root).resolve(name)


def test_a_symlink_pointing_out_is_refused(root: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    with pytest.raises(UploadProblem, match="outside the files root"):
        FilesRoot(root).resolve("link.txt")


def test_a_symlinked_root_still_works(root: Path, tmp_path: Path) -> None:
    os.symlink(root, tmp_path / "alias")
    assert FilesRoot(tmp_path / "alias").resolve("clips/a.mp3").name == "a.mp3"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("clips/missing.mp3", "file not found"),
        ("clips", "not a regular file"),
        ("", "non-empty string"),
        (None, "non-empty string"),
        (["a"], "non-empty string"),
        ("a\x00b", "NUL"),
    ],
)
def test_bad_names(root: Path, name: object, reason: str) -> None:
    with pytest.raises(UploadProblem, match=reason):
        FilesRoot(root).resolve(name)


def test_a_file_over_the_limit(root: Path) -> None:
    with pytest.raises(UploadProblem, match="103 bytes, over this endpoint's limit of 100"):
        FilesRoot(root).resolve("clips/a.mp3", limit_bytes=100)
    assert FilesRoot(root).resolve("clips/a.mp3", limit_bytes=103).name == "a.mp3"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_file(root: Path) -> None:
    (root / "clips" / "a.mp3").chmod(0)
    with pytest.raises(UploadProblem, match="permission denied"):
        FilesRoot(root).resolve("clips/a.mp3")
