"""`batchrun export OUT`: the results next to the input's columns, in input order, or as the
output and error files of OpenAI's Batch API.

    summary = export(ExportConfig(out_dir=Path("runs/q"), to=Path("answers.parquet")))

A joined table (parquet, csv, jsonl) has one row per input row, in input order:

    row, custom_id | the input's columns | status, text, tool_calls, embedding, media,
    content_type, finish_reason, model,
    prompt_tokens, completion_tokens, total_tokens, cached_tokens, reasoning_tokens, cost_usd,
    error_type, error_message, http_status, attempts, latency_ms, endpoint

The result columns keep these names; an input column with one of them is renamed `input.NAME`.
A row with no committed record yet has status `pending` and nulls after it.

Guarantees:
- Only committed results are read (`store.ordered`), so an export may run while `batchrun run`
  still writes to OUT; it takes no lock and writes nothing under OUT but its own scratch
  directory, removed at the end.
- The input is the one the output was made from: the file given with `join` (by default the
  checkpoint's input path) must have the checkpoint's fingerprint, or nothing is written: its
  rows would pair with the wrong results.
- `to` (and the error file) appear complete or not at all (`store.exportfiles`); an existing one
  is replaced only with `force`; neither may be inside OUT/results or be the input.
- Memory does not grow with the rows: a window of results (`window_rows`, `window_bytes`), one
  chunk of the input, one row group of the output.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa

from batchrun.inputs.columns import InputColumns, input_columns
from batchrun.inputs.rows import InputError
from batchrun.runner.join import (
    READ_COLUMNS,
    SORTED,
    Cursor,
    chunks,
    joined,
    joined_schema,
    project,
    status_counts,
)
from batchrun.store.checkpoint import Checkpoint, CheckpointError, fingerprint_file
from batchrun.store.exportfiles import (
    BATCH_COLUMNS,
    TABLE_FORMATS,
    BatchOutputSink,
    ExportExistsError,
    ExportFile,
    table_sink,
)
from batchrun.store.ordered import ResultsError, RowOrder, sweep_scratch
from batchrun.store.remote import is_remote
from batchrun.store.shardset import merged_view
from batchrun.store.writer import RESULT_SCHEMA, RESULTS_DIR

__all__ = [
    "EXPORT_FORMATS",
    "ExportConfig",
    "ExportError",
    "ExportSummary",
    "export",
    "use_returning_allocator",
]

EXPORT_FORMATS = (*TABLE_FORMATS, "openai-batch")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl"}
_BATCH_SORTED = pa.schema([RESULT_SCHEMA.field(name).with_nullable(True) for name in BATCH_COLUMNS])


class ExportError(Exception):
    """The export cannot be made as asked; nothing was written."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ExportConfig:
    out_dir: Path  # or an object-store URI (str) of a cluster run's output: `s3://...`
    to: Path
    format: str | None = None  # None: from the suffix of `to`
    join: Path | None = None  # None: the checkpoint's input (unless no_join)
    no_join: bool = False  # the result columns alone, one row per input row all the same
    errors_to: Path | None = None  # openai-batch: None is `to` with "_errors" before the suffix
    force: bool = False
    window_rows: int = 16_384
    window_bytes: int = 16 << 20
    chunk_rows: int = 2048

    def __post_init__(self) -> None:
        for name in ("out_dir", "to", "join", "errors_to"):
            if name == "out_dir" and is_remote(str(self.out_dir)):
                continue  # a URI: Path() would fold its "//"
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        fmt = self.format
        if fmt is None:
            fmt = _SUFFIXES.get(self.to.suffix.lower())
            if fmt is None:
                raise ValueError(
                    f"cannot tell the format from the name of --to {self.to.name!r} (.parquet, "
                    ".csv, .jsonl); give --format (" + ", ".join(EXPORT_FORMATS) + ")"
                )
            object.__setattr__(self, "format", fmt)
        elif fmt not in EXPORT_FORMATS:
            raise ValueError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
        if self.join is not None and self.no_join:
            raise ValueError("--join and --no-join contradict each other; give one")
        if fmt == "openai-batch" and self.join is not None:
            raise ValueError("--join goes with a table format: openai-batch holds results only")
        if self.errors_to is not None and fmt != "openai-batch":
            raise ValueError("--errors-to goes with --format openai-batch")
        for name in ("window_rows", "window_bytes", "chunk_rows"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")

    @property
    def error_path(self) -> Path:
        if self.errors_to is not None:
            return Path(self.errors_to)
        return self.to.with_name(f"{self.to.stem}_errors{self.to.suffix}")


@dataclass(frozen=True, kw_only=True, slots=True)
class ExportSummary:
    format: str
    files: tuple[Path, ...]
    rows: int  # rows of the output (lines written, for openai-batch)
    ok: int
    errors: int
    pending: int  # input rows without a committed record
    duplicates: int  # records left out for a later one of their row, beyond the superseded
    input_path: Path | None
    seconds: float
    renamed: dict[str, str] = field(default_factory=dict)  # input column -> its name here


def use_returning_allocator() -> None:
    """Make pyarrow's allocations jemalloc's, for a process that only exports (the CLI's).

    pyarrow's default pool on Linux, mimalloc, kept the freed memory of each window: peak RSS
    grew with every window (309 MB at 200k rows against 240 MB at 20k; jemalloc: 225 against
    198). A choice made with ARROW_DEFAULT_MEMORY_POOL is left alone.
    """
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow built without jemalloc (Windows)
        pa.set_memory_pool(pa.system_memory_pool())


def export(config: ExportConfig) -> ExportSummary:
    """Write the export `config` asks for. Blocking; raises `ExportError` with the reason.

    A cluster run's output (`OUT/cluster.json`) is exported as one: every shard's results, in
    input order (`store.shardset`)."""
    try:
        with merged_view(config.out_dir) as view:
            if view is None:
                return _export(config)
            if not view.single_file:
                raise ExportError(
                    f"{config.out_dir} was made from several input files, whose rows are "
                    "numbered per file: there is no one input order to export them in; read "
                    f"{config.out_dir}/shards/*/results/part-*.parquet as one dataset instead"
                )
            remote = sorted(i for i in view.inputs if is_remote(i))
            if remote and config.join is None and not config.no_join:
                raise ExportError(
                    f"this output's input {remote[0]} is on an object store, and an export "
                    "joins only a local input: export the results alone with --no-join"
                )
            if not is_remote(str(config.out_dir)):
                _check_targets(config)
            return _export(replace(config, out_dir=view.path))
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None


def _export(config: ExportConfig) -> ExportSummary:
    started = time.perf_counter()
    checkpoint = _checkpoint(config.out_dir)
    _check_targets(config)
    config.to.parent.mkdir(parents=True, exist_ok=True)
    scratch = [config.out_dir, config.to.parent]
    for place in scratch:
        sweep_scratch(place)
    try:
        if config.format == "openai-batch":
            summary = _export_batch(config, checkpoint, scratch)
        else:
            summary = _export_table(config, checkpoint, scratch)
    except ExportExistsError as exc:
        raise ExportError(str(exc)) from None
    except (ResultsError, InputError) as exc:
        raise ExportError(f"{exc}; nothing was written") from None
    except OSError as exc:
        raise ExportError(f"cannot write the export: {exc}; nothing was written") from None
    return replace(summary, seconds=round(time.perf_counter() - started, 3))


def _checkpoint(out_dir: Path) -> Checkpoint:
    if not out_dir.is_dir():
        raise ExportError(f"{out_dir} is not a directory (give a run's --out directory)")
    try:
        checkpoint = Checkpoint.load(out_dir)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    if checkpoint is None:
        raise ExportError(
            f"{out_dir} has no checkpoint.json: it is not a batchrun output, or its first run "
            "has not finished reading the input yet"
        )
    return checkpoint


def _check_targets(config: ExportConfig) -> None:
    results = (config.out_dir / RESULTS_DIR).resolve()
    targets = [config.to]
    if config.format == "openai-batch":
        targets.append(config.error_path)
        if config.error_path.resolve() == config.to.resolve():
            raise ExportError("--errors-to is the same file as --to")
    for target in targets:
        if target.resolve().is_relative_to(results):
            raise ExportError(f"{target} is inside {results}, which holds only result parts")
        if target.exists() and not config.force:
            raise ExportError(f"{target} exists; add --force to replace it")


def _input(config: ExportConfig, checkpoint: Checkpoint) -> tuple[Path, InputColumns] | None:
    if config.no_join:
        return None
    path = config.join if config.join is not None else Path(checkpoint.input_path)
    if config.join is None and not path.exists():
        raise ExportError(
            f"this output's input {path} is not there (moved, or relative to another folder?); "
            "give it with --join FILE, or export the results alone with --no-join"
        )
    try:
        found = fingerprint_file(path)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    was = checkpoint.fingerprint
    if found != was:
        raise ExportError(
            f"{path} is not the input this output was made from ({found.size:,} bytes, sha256 "
            f"{found.digest[:12]}; the output's was {was.size:,} bytes, sha256 "
            f"{was.digest[:12]}): its rows would pair with the wrong results. Give the "
            "original file with --join, or export the results alone with --no-join"
        )
    if path.resolve() == config.to.resolve():
        raise ExportError(f"{config.to} is the input file; choose another --to")
    records = checkpoint.settings.get("template") is not None
    try:
        return path, input_columns(path, records=records, chunk_rows=config.chunk_rows)
    except InputError as exc:
        raise ExportError(str(exc)) from None


def _export_table(
    config: ExportConfig, checkpoint: Checkpoint, scratch: list[Path]
) -> ExportSummary:
    joined_input = _input(config, checkpoint)
    columns = joined_input[1] if joined_input is not None else None
    schema, renamed = joined_schema(columns.schema if columns is not None else pa.schema([]))
    order = RowOrder(
        config.out_dir,
        checkpoint,
        columns=READ_COLUMNS,
        project=project,
        schema=SORTED,
        scratch=scratch,
        window_rows=config.window_rows,
        window_bytes=config.window_bytes,
    )
    counts = {"ok": 0, "error": 0, "pending": 0}
    rows = 0
    assert config.format is not None
    # Closed at once on any failure: a suspended generator would keep its scratch files until
    # it is garbage-collected, which a traceback holding its frame can put off indefinitely.
    with (
        contextlib.closing(order.windows()) as windows,
        ExportFile(config.to, force=config.force) as target,
    ):
        cursor = Cursor(windows)
        sink = table_sink(config.format, target.tmp, schema)
        try:
            for start, stop, input_table in chunks(columns, order.total_rows, config.chunk_rows):
                table = joined(start, stop, input_table, cursor.take(start, stop), schema)
                for status, n in status_counts(table):
                    counts[status] = counts.get(status, 0) + n
                rows += table.num_rows
                sink.write(table)
        finally:
            sink.close()
        target.commit()
    return ExportSummary(
        format=config.format,
        files=(config.to,),
        rows=rows,
        ok=counts["ok"],
        errors=counts["error"],
        pending=counts["pending"],
        # Superseded by a retry pass and not compacted yet: left out, as they should be.
        duplicates=max(0, order.duplicates - checkpoint.stale_records),
        input_path=joined_input[0] if joined_input is not None else None,
        seconds=0.0,
        renamed={k: v for k, v in renamed.items() if k != v},
    )


def _export_batch(
    config: ExportConfig, checkpoint: Checkpoint, scratch: list[Path]
) -> ExportSummary:
    order = RowOrder(
        config.out_dir,
        checkpoint,
        columns=list(BATCH_COLUMNS),
        project=lambda batch: batch.select(list(BATCH_COLUMNS)),
        schema=_BATCH_SORTED,
        scratch=scratch,
        window_rows=config.window_rows,
        window_bytes=config.window_bytes,
    )
    errors_path = config.error_path
    with (
        contextlib.closing(order.windows()) as windows,
        ExportFile(config.to, force=config.force) as output,
        ExportFile(errors_path, force=config.force) as errors,
    ):
        sink = BatchOutputSink(output.tmp, errors.tmp, seed=checkpoint.fingerprint.digest)
        try:
            for window in windows:
                sink.write(window.table)
        finally:
            sink.close()
        output.commit()
        errors.commit()
    done = sink.ok_lines + sink.error_lines
    return ExportSummary(
        format="openai-batch",
        files=(config.to, errors_path),
        rows=done,
        ok=sink.ok_lines,
        errors=sink.error_lines,
        pending=order.total_rows - done,
        # Superseded by a retry pass and not compacted yet: left out, as they should be.
        duplicates=max(0, order.duplicates - checkpoint.stale_records),
        input_path=None,
        seconds=0.0,
    )
