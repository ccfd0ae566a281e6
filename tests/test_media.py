"""batchrun.store.media: safe, unique, atomic media files under OUT/media."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrun.store.media import MediaStore, extension_for


@pytest.mark.parametrize(
    ("content_type", "ext"),
    [
        ("audio/mpeg", ".mp3"),
        ("Audio/MPEG; charset=binary", ".mp3"),
        ("image/png", ".png"),
        ("video/mp4", ".mp4"),
        ("application/octet-stream", ".bin"),
        ("what/ever", ".bin"),
        (None, ".bin"),
        ("", ".bin"),
    ],
)
def test_extension_for(content_type: str | None, ext: str) -> None:
    assert extension_for(content_type) == ext


def test_write_puts_the_bytes_in_place(tmp_path: Path) -> None:
    media = MediaStore(tmp_path)
    relative = media.write("row-1", 0, "audio/mpeg", b"ID3\x00data")
    assert relative.startswith("media/") and relative.endswith("-0.mp3")
    assert (tmp_path / relative).read_bytes() == b"ID3\x00data"
    assert "row-1" in Path(relative).name


def test_streamed_write(tmp_path: Path) -> None:
    media = MediaStore(tmp_path)
    with media.open("a", 2, "video/mp4") as f:
        for _ in range(100):
            f.write(b"x" * 1000)
    assert f.size == 100_000
    assert (tmp_path / f.relative_path).stat().st_size == 100_000


def test_an_error_while_writing_leaves_nothing(tmp_path: Path) -> None:
    media = MediaStore(tmp_path)
    with pytest.raises(RuntimeError), media.open("a", 0, "image/png") as f:
        f.write(b"half")
        raise RuntimeError("cut short")
    assert not (tmp_path / f.relative_path).exists()
    assert [p for p in (tmp_path / "media").rglob("*") if p.is_file()] == []


def test_the_same_row_replaces_its_file(tmp_path: Path) -> None:
    media = MediaStore(tmp_path)
    first = media.write("r", 0, "image/png", b"old")
    second = media.write("r", 0, "image/png", b"new")
    assert first == second
    assert (tmp_path / second).read_bytes() == b"new"


def test_sweep_removes_temporary_files_of_an_interrupted_write(tmp_path: Path) -> None:
    media = MediaStore(tmp_path)
    f = media.open("r", 0, "image/png")
    f.write(b"partial")  # a crash here: never committed, never aborted
    assert media.sweep() == 1
    assert [p for p in (tmp_path / "media").rglob("*") if p.is_file()] == []
    assert MediaStore(tmp_path / "nothing").sweep() == 0


HOSTILE = [
    "../../x",
    "/etc/passwd",
    "a\x00b",
    "x" * 300,
    "..",
    ".",
    "",
    ".hidden",
    "C:\\Windows\\win.ini",
    "dir/../../../escape",
    "\ud800",  # a lone surrogate (JSON can carry one)
    "名前",
]


@pytest.mark.parametrize("custom_id", HOSTILE, ids=repr)
def test_no_custom_id_escapes_out_media(tmp_path: Path, custom_id: str) -> None:
    media = MediaStore(tmp_path)
    relative = media.write(custom_id, 0, "image/png", b"png")
    path = (tmp_path / relative).resolve()
    assert path.is_relative_to((tmp_path / "media").resolve())
    assert path.parent.parent == (tmp_path / "media").resolve()
    assert not path.name.startswith(".")
    assert len(path.name) < 100
    assert "\x00" not in relative and "/" not in path.name


def test_ids_that_differ_only_in_case_or_in_unsafe_characters_never_share_a_file(
    tmp_path: Path,
) -> None:
    media = MediaStore(tmp_path)
    ids = ["Row", "row", "ROW", "a/b", "a_b", "a b", "a\\b", *HOSTILE]
    paths = [media.relative_path(cid, 0, "image/png") for cid in ids]
    assert len({p.lower() for p in paths}) == len(ids)  # unique even on a case-blind disk


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400), st.integers(0, 1000))
def test_any_id_gives_a_safe_name(custom_id: str, index: int) -> None:
    relative = MediaStore(Path("/out")).relative_path(custom_id, index, "audio/mpeg")
    parts = relative.split("/")
    assert parts[0] == "media" and len(parts) == 3
    assert parts[2].endswith(f"-{index}.mp3")
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in parts[2])
    assert not parts[2].startswith(".")


def test_a_negative_index_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="index"):
        MediaStore(tmp_path).open("r", -1, None)
