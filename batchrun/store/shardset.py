"""A cluster run's output read as one: `OUT/cluster.json` and `OUT/shards/<id>/` seen as one OUT.

    with merged_view(OUT) as view:   # a scratch directory: results/part-*.parquet, checkpoint.json
        ... read `view` as a local run's output (report, export)

Guarantees:
- `view/results` holds links to every shard's committed parts, shard after shard in the plan's
  order (the input's), renumbered; `view/checkpoint.json` sums the shards' checkpoints: done
  rows, row count (known when every shard's is), ok / error counts, cost, stale records.
- The input's rows keep their numbers: a plan over one file gives one dataset in input order.
  Over several files rows are numbered per file, so `single_file` is False and only what does
  not need row order (sums) may be read from the view.
- OUT may be an object store (`s3://...`, through pyarrow's filesystems): then each shard's
  checkpoint, estimate and the parts its checkpoint counts (nothing else: a part the run is
  writing meanwhile is not counted yet) are copied into the scratch directory and read there.
  The view costs the disk of the committed parts; memory does not grow with them.
- Nothing under OUT is written; the scratch directory is removed on leaving.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from batchrun.common.ranges import RangeSet
from batchrun.store.checkpoint import CHECKPOINT_NAME, Checkpoint, CheckpointError, Fingerprint
from batchrun.store.ordered import committed_parts
from batchrun.store.remote import OutputLocation, is_remote
from batchrun.store.writer import RESULTS_DIR, part_name

__all__ = ["PLAN_NAME", "SHARDS_DIR", "MergedView", "merged_view", "shard_dirs"]

PLAN_NAME = "cluster.json"
SHARDS_DIR = "shards"
_ESTIMATE_NAME = "estimate.json"  # cost.estimate.ESTIMATE_NAME (cost sits above store)
_MIXED = Fingerprint(size=-1, digest="", method="shards of several files")


@dataclass(frozen=True, slots=True)
class MergedView:
    path: Path  # read it as an output directory
    single_file: bool  # the plan cuts one input file: rows are unique and in input order
    shards: list[Path]  # each shard's output directory (a local copy when OUT is remote)
    top: Path  # where OUT's own files are (estimate.json): OUT itself, or a local copy
    inputs: frozenset[str] = frozenset()  # the input files the plan cuts, as it names them


def shard_dirs(out_dir: Path) -> tuple[list[Path], set[str]] | None:
    """The shards' directories in plan order and the input files they cut, or None when
    `out_dir` is not a cluster run's output."""
    plan_path = Path(out_dir) / PLAN_NAME
    if not plan_path.is_file():
        return None
    ids, files = _read_plan(plan_path.read_bytes(), str(plan_path))
    return [Path(out_dir) / SHARDS_DIR / i for i in ids], files


def _read_plan(raw: bytes, name: str) -> tuple[list[str], set[str]]:
    try:
        plan = json.loads(raw)
        shards = [(str(s["id"]), str(s["path"])) for s in plan["shards"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{name} is damaged ({exc})") from exc
    return [i for i, _ in shards], {p for _, p in shards}


@contextmanager
def merged_view(out: Path | str) -> Iterator[MergedView | None]:
    """The cluster output `out` (a directory, or an object-store URI) as one output directory
    (None: a local directory that is not a cluster output)."""
    scratch = Path(tempfile.mkdtemp(prefix="batchrun-shards-"))
    try:
        if isinstance(out, str) and is_remote(out):
            dirs, files = _fetch(OutputLocation(out), scratch / "out")
            top = scratch / "out"
        else:
            found = shard_dirs(Path(out))
            if found is None:
                yield None
                return
            (dirs, files), top = found, Path(out)
        results = scratch / RESULTS_DIR
        results.mkdir()
        checkpoints = [(d, c) for d in dirs if (c := Checkpoint.load(d)) is not None]
        parts = 0
        for shard_dir, checkpoint in checkpoints:
            for part in committed_parts(shard_dir, checkpoint):
                (results / part_name(parts)).symlink_to(part.resolve())
                parts += 1
        if checkpoints:
            _merged(checkpoints, parts, files).save(scratch)
        yield MergedView(
            path=scratch, single_file=len(files) == 1, shards=dirs, top=top,
            inputs=frozenset(files),
        )  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fetch(location: OutputLocation, copy: Path) -> tuple[list[Path], set[str]]:
    """Copy what a remote cluster output has committed into `copy`: the plan's shards'
    checkpoints and estimates, then the parts each checkpoint counts (written whole before it)."""
    raw = location.read_bytes(PLAN_NAME)
    if raw is None:
        raise CheckpointError(
            f"{location.uri} holds no {PLAN_NAME}: on an object store only a cluster run's "
            "output (batchrun run --ray) can be read"
        )
    ids, files = _read_plan(raw, f"{location.uri}/{PLAN_NAME}")
    copy.mkdir(parents=True)
    if (estimate := location.read_bytes(_ESTIMATE_NAME)) is not None:
        (copy / _ESTIMATE_NAME).write_bytes(estimate)
    dirs = []
    for shard_id in ids:
        prefix = f"{SHARDS_DIR}/{shard_id}"
        shard = copy / SHARDS_DIR / shard_id
        (shard / RESULTS_DIR).mkdir(parents=True)
        dirs.append(shard)
        for name in (CHECKPOINT_NAME, _ESTIMATE_NAME):
            if (data := location.read_bytes(f"{prefix}/{name}")) is not None:
                (shard / name).write_bytes(data)
        checkpoint = Checkpoint.load(shard)
        if checkpoint is None:
            continue
        for i in range(checkpoint.first_part, checkpoint.parts):
            name = f"{RESULTS_DIR}/{part_name(i)}"
            try:
                location.download(f"{prefix}/{name}", shard / name)
            except OSError as exc:
                raise CheckpointError(
                    f"cannot read {location.uri}/{prefix}/{name}, which its checkpoint "
                    f"counts: {exc}"
                ) from exc
    return dirs, files


def _merged(checkpoints: list[tuple[Path, Checkpoint]], parts: int, files: set[str]) -> Checkpoint:
    first = checkpoints[0][1]
    fingerprints = {c.fingerprint for _, c in checkpoints}
    done = RangeSet()
    counts = {"ok": 0, "error": 0}
    totals = [c.total_rows for _, c in checkpoints]
    for _, c in checkpoints:
        for start, end in c.done.ranges():
            done.add_range(start, end)
        for kind, n in c.counts.items():
            counts[kind] = counts.get(kind, 0) + n
    duplicates = [c.duplicates for _, c in checkpoints]
    return Checkpoint(
        input_path=next(iter(files)) if len(files) == 1 else first.input_path,
        fingerprint=first.fingerprint if len(fingerprints) == 1 else _MIXED,
        settings=first.settings,
        parts=parts,
        done=done,
        total_rows=None if None in totals else sum(t or 0 for t in totals),
        duplicates=None if None in duplicates else sum(d or 0 for d in duplicates),
        counts=counts,
        cost_usd=sum(c.cost_usd for _, c in checkpoints),
        stale_records=sum(c.stale_records for _, c in checkpoints),
    )
