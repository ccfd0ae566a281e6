"""An input cut into shards: contiguous row ranges that can be sent, and resumed, on their own.

A cluster run (`batchrun.cluster`) sends each shard with the same pool a local run uses; this
module only says where the shards are, and it reads no row's content.

Guarantees:
- A shard is a `[start_row, end_row)` range of one input file, with the same row numbers a local
  run gives those rows (`batchrun.inputs.reader`), so custom_ids, the checkpoint's done rows and
  the output's `row` column mean what they mean locally.
- Plain JSONL is cut into byte ranges of about `target_bytes`, each ending at a line end; its
  shards carry the `Offset` of their first line, and a reader seeks there. Parquet is cut at row
  group boundaries (a reader never splits a row group). A compressed file, a CSV or a TSV is one
  shard: there is no offset to seek to.
- Shard ids are stable: derived from the file's name and the shard's row range, so the same input
  gives the same ids on every plan. Planning reads a JSONL file once (line ends only) and a
  Parquet file's footer only.
- Files are read through a pyarrow filesystem: a local path, or an object store (`s3://...`).
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from batchrun.common.ranges import RangeSet
from batchrun.inputs.rows import InputError, Offset
from batchrun.inputs.tables import table_format

__all__ = ["DEFAULT_SHARD_BYTES", "RowSpan", "Shard", "plan_shards"]

DEFAULT_SHARD_BYTES = 64 << 20
_BOM = b"\xef\xbb\xbf"
_NO_END = 1 << 62
_COMPRESSED = (".gz", ".zst", ".zstd")
_READ_BLOCK = 1 << 20
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class RowSpan:
    """Rows `[start_row, end_row)` of an input; `offset`: where the first of them starts."""

    start_row: int
    end_row: int
    offset: Offset | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.start_row <= self.end_row:
            raise ValueError(f"a row span needs 0 <= start_row <= end_row, got {self}")
        if self.offset is not None and self.offset.row != self.start_row:
            raise ValueError(f"the offset's row must be start_row: {self}")

    @property
    def rows(self) -> int:
        return self.end_row - self.start_row

    def outside(self) -> RangeSet:
        """Every row number not in the span: what a reader of the whole file skips."""
        return RangeSet([(0, self.start_row), (self.end_row, _NO_END)])

    def clip(self, items: Iterable[_T], row_of: Any = lambda item: item.row) -> Iterator[_T]:
        """`items` (in row order) up to the span's end: a reader stops there, not at EOF."""
        for item in items:
            if row_of(item) >= self.end_row:
                return
            yield item

    def to_json(self) -> dict[str, Any]:
        offset = self.offset
        return {
            "start_row": self.start_row,
            "end_row": self.end_row,
            "offset": None if offset is None else [offset.byte, offset.row, offset.line],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RowSpan:
        offset = data.get("offset")
        return cls(
            start_row=int(data["start_row"]),
            end_row=int(data["end_row"]),
            offset=None
            if offset is None
            else Offset(byte=int(offset[0]), row=int(offset[1]), line=int(offset[2])),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Shard:
    """One unit of cluster work: rows of one file (`path`: local path or object-store URI)."""

    id: str
    path: str
    span: RowSpan
    end_byte: int | None = None  # a JSONL byte range ends here (exclusive)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "span": self.span.to_json(),
            "end_byte": self.end_byte,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Shard:
        end = data.get("end_byte")
        return cls(
            id=str(data["id"]),
            path=str(data["path"]),
            span=RowSpan.from_json(data["span"]),
            end_byte=None if end is None else int(end),
        )


def plan_shards(
    uri: str, *, target_bytes: int = DEFAULT_SHARD_BYTES, with_template: bool = False
) -> list[Shard]:
    """The shards of a file, or of every input file in a directory (in name order).

    `with_template`: rows are records for a template; JSONL is then still cut by byte ranges.
    Raises `InputError` for a missing input or a directory without input files.
    """
    if target_bytes <= 0:
        raise ValueError(f"target_bytes must be positive, got {target_bytes}")
    fs, path = _filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"input not found: {uri}")
    if info.type == pafs.FileType.Directory:
        files = sorted(
            f.path
            for f in fs.get_file_info(pafs.FileSelector(path, recursive=True))
            if f.type == pafs.FileType.File and not f.base_name.startswith((".", "_"))
        )
        if not files:
            raise InputError(f"the input directory {uri} holds no files")
    else:
        files = [path]
    shards: list[Shard] = []
    for file in files:
        shards.extend(_plan_file(fs, file, _uri_of(uri, file), target_bytes))
    return shards


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path
    return pafs.LocalFileSystem(), posixpath.abspath(uri)


def _uri_of(uri: str, file: str) -> str:
    """`file` (a path inside the filesystem) named as the user named the input: with the
    scheme, and the options of the URI (`?endpoint_override=...`), if any."""
    if "://" not in uri:
        return file
    scheme = uri.split("://", 1)[0]
    query = uri.partition("?")[2]
    return f"{scheme}://{file}" + (f"?{query}" if query else "")


def _plan_file(fs: pafs.FileSystem, path: str, uri: str, target_bytes: int) -> list[Shard]:
    name = posixpath.basename(path)
    kind = table_format(Path(name))
    if kind == "parquet":
        return _plan_parquet(fs, path, uri, target_bytes)
    if kind == "jsonl" and not name.lower().endswith(_COMPRESSED):
        return _plan_jsonl(fs, path, uri, target_bytes)
    rows = _count_rows_whole(fs, path, kind)
    return [_shard(uri, RowSpan(start_row=0, end_row=rows), None)]


def _shard(uri: str, span: RowSpan, end_byte: int | None) -> Shard:
    digest = hashlib.sha256(uri.encode()).hexdigest()[:10]
    stem = posixpath.basename(uri).split(".")[0][:40] or "input"
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)
    return Shard(
        id=f"{safe}-{digest}-{span.start_row:012d}-{span.end_row:012d}",
        path=uri,
        span=span,
        end_byte=end_byte,
    )


def _plan_jsonl(fs: pafs.FileSystem, path: str, uri: str, target_bytes: int) -> list[Shard]:
    """Byte ranges ending at line ends; rows counted as the reader counts them (non-blank)."""
    shards: list[Shard] = []
    start = Offset(byte=0, row=0, line=1)
    byte, row, line = 0, 0, 1
    with fs.open_input_stream(path) as f:
        pending = b""
        while block := f.read(_READ_BLOCK):
            lines = (pending + block).split(b"\n")
            pending = lines.pop()  # the unfinished last line waits for the next block
            for raw in lines:
                if _is_row(raw, line):
                    row += 1
                byte += len(raw) + 1
                line += 1
                if byte - start.byte >= target_bytes and row > start.row:
                    shards.append(_cut(uri, start, row, byte))
                    start = Offset(byte=byte, row=row, line=line)
        if _is_row(pending, line):
            row += 1
        byte += len(pending)
    if row > start.row or not shards:
        shards.append(_cut(uri, start, row, byte))
    return shards


def _is_row(raw: bytes, line: int) -> bool:
    if line == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    return bool(raw.strip())


def _cut(uri: str, start: Offset, end_row: int, end_byte: int) -> Shard:
    return _shard(uri, RowSpan(start_row=start.row, end_row=end_row, offset=start), end_byte)


def _plan_parquet(fs: pafs.FileSystem, path: str, uri: str, target_bytes: int) -> list[Shard]:
    try:
        with fs.open_input_file(path) as f:
            meta = pq.ParquetFile(f).metadata
    except OSError as exc:
        raise InputError(f"{uri} is not a readable Parquet file: {exc}") from exc
    shards: list[Shard] = []
    start = row = size = 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        row += group.num_rows
        size += group.total_byte_size
        if size >= target_bytes:
            shards.append(_shard(uri, RowSpan(start_row=start, end_row=row), None))
            start, size = row, 0
    if row > start or not shards:
        shards.append(_shard(uri, RowSpan(start_row=start, end_row=row), None))
    return shards


def _count_rows_whole(fs: pafs.FileSystem, path: str, kind: str) -> int:
    """A file that is one shard: its rows are counted by the shard's own first pass, so the
    plan records no end (the span runs to the end of the file)."""
    del fs, path, kind
    return _NO_END
