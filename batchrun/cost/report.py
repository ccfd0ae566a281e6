"""What a run did and cost, read back from `OUT/results/part-*.parquet`.

    build_report(OUT) ──► Report ──► render_report() table / to_json()

A `Report` holds: rows ok / error (errors by `error_type`); tokens by kind (prompt, cached,
completion, reasoning) over ok rows; per model the ok rows, tokens and cost (sum of `cost_usd`, and
how many ok rows had no cost: their price is unknown, so the total is a lower bound); latency
p50/p90/p99 of ok rows (the last attempt's `latency_ms`); HTTP requests (sum of `attempts`) and
retries (sum of `attempts - 1` over rows that were sent); and, when `OUT/estimate.json` exists
(`batchrun estimate --out OUT`, or a run that stored its estimate), the estimate next to the
actual figures per endpoint and in total.

Guarantees:
- The results are read one part file and one batch at a time, only the columns needed (never
  `response`): memory depends on the batch size and on the number of (endpoint, model) pairs, not
  on the number of rows (measured peak RSS: ~260 MB for 4M rows, ~225 MB for 250k). A part
  written before a column existed reads that column as nulls.
- Percentiles come from a fixed-size log-bucket histogram (`LogHistogram`): each is within 1%
  (relative) of the exact nearest-rank percentile, or within 0.001 ms for latencies below that.
- Each row counts once, with its current record: only the parts the checkpoint counts are read,
  and while a `--retry-errors` pass has left superseded records (before `batchrun compact`) the
  records are read in row order through `RowOrder`, which keeps the latest of each row (its
  scratch files under OUT, or the temporary directory if OUT is read-only). `passes` says what
  each retry pass re-sent and fixed.
- Nothing is written but that scratch. A missing or empty OUT raises `ReportError`.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchrun.cost.estimate import Estimate, EstimateError, load_estimate, merge_estimates
from batchrun.store.checkpoint import Checkpoint, CheckpointError, RerunPass
from batchrun.store.ordered import ResultsError, RowOrder, committed_parts
from batchrun.store.remote import is_remote
from batchrun.store.shardset import MergedView, merged_view
from batchrun.store.writer import RESULT_SCHEMA, RESULTS_DIR

__all__ = [
    "Comparison",
    "LogHistogram",
    "ModelUsage",
    "Report",
    "ReportError",
    "build_report",
]

_TOKEN_KINDS = ("prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens")
_COLUMNS = ["status", "endpoint", "model", "error_type", *_TOKEN_KINDS]
_COLUMNS += ["attempts", "latency_ms", "cost_usd"]
_BATCH_ROWS = 65_536
_PERCENTILES = (50, 90, 99)


class ReportError(Exception):
    """OUT holds no results to report on (missing, empty, or unreadable)."""


class LogHistogram:
    """Counts of positive values in buckets whose bounds grow by a fixed ratio.

    Bucket i holds (min_value * g**(i-1), min_value * g**i] with g = (1 + a) / (1 - a); reporting a
    bucket as 2 * min_value * g**i / (g + 1) is within `relative_error` a of every value in it.
    Values at or below `min_value` count as 0; values above `max_value` as `max_value`. The size
    is fixed (about 1,300 buckets for the defaults), whatever the number of values.
    """

    def __init__(
        self, *, relative_error: float = 0.01, min_value: float = 1e-3, max_value: float = 1e8
    ) -> None:
        self.relative_error = relative_error
        self.min_value = min_value
        self._gamma = (1 + relative_error) / (1 - relative_error)
        self._log_gamma = math.log(self._gamma)
        self._size = math.ceil(math.log(max_value / min_value) / self._log_gamma) + 1
        self.max_value = min_value * self._gamma ** (self._size - 1)
        self._counts = [0] * (self._size + 1)  # [0]: values <= min_value
        self.count = 0

    def add_array(self, values: pa.Array | pa.ChunkedArray) -> None:
        """Add every non-null value of a float array (vectorised)."""
        values = pc.drop_null(values)
        if len(values) == 0:
            return
        self.count += len(values)
        low = pc.less_equal(values, self.min_value)
        self._counts[0] += pc.sum(low).as_py() or 0
        high = pc.filter(values, pc.invert(low))
        if len(high) == 0:
            return
        index = pc.ceil(pc.divide(pc.ln(pc.divide(high, self.min_value)), self._log_gamma))
        index = pc.min_element_wise(pc.max_element_wise(index, 1.0), float(self._size))
        counted = pc.value_counts(pc.cast(index, pa.int64()))
        for bucket, n in zip(
            counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True
        ):
            self._counts[bucket] += n

    def percentile(self, p: float) -> float | None:
        """The nearest-rank p-th percentile (0 < p <= 100), or None when there are no values."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(p / 100 * self.count))
        seen = 0
        for bucket, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                if bucket == 0:
                    return 0.0
                return 2 * self.min_value * self._gamma**bucket / (self._gamma + 1)
        raise AssertionError("unreachable: the counts add up to self.count")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelUsage:
    """Ok rows of one model (as the response named it): tokens, and cost where it is known."""

    model: str | None
    rows_ok: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cost_usd: float | None  # None: no ok row of this model had a cost (price unknown)
    rows_without_cost: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """Estimate next to actual for one endpoint (or "total"). Actual figures are for ok rows."""

    scope: str
    rows_estimated: int
    rows_ok: int
    rows_error: int
    prompt_tokens_estimated: int
    prompt_tokens_actual: int
    completion_tokens_expected: int
    completion_tokens_max: int | None
    completion_tokens_actual: int
    cost_expected_usd: float | None
    cost_high_usd: float | None
    cost_actual_usd: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """Everything `batchrun report` shows. Token counts are summed over ok rows."""

    out_dir: str
    rows: int
    rows_ok: int
    rows_error: int
    errors_by_type: dict[str, int]
    tokens: dict[str, int]  # prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens
    rows_without_usage: int  # ok rows whose response reported no usage
    by_model: tuple[ModelUsage, ...]
    cost_usd: float | None
    rows_without_cost: int
    latency_ms: dict[str, float | None]  # p50, p90, p99
    latency_relative_error: float
    requests: int
    retries: int
    comparison: tuple[Comparison, ...] | None = None  # None: no estimate.json in OUT
    notes: tuple[str, ...] = ()
    # Retry passes, oldest first: number, error_types, rows (to re-send), resent, fixed, finished.
    passes: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: this dataclass's fields; costs in USD, null when unknown."""
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"


class _Sums:
    """Ok-row sums for one (endpoint, model)."""

    __slots__ = ("cost", "costed", "rows", "tokens", "with_usage")

    def __init__(self) -> None:
        self.rows = self.costed = self.with_usage = 0
        self.cost = 0.0
        self.tokens = dict.fromkeys(_TOKEN_KINDS, 0)


def _part_files(out_dir: Path, checkpoint: Checkpoint | None) -> list[Path]:
    if not out_dir.is_dir():
        raise ReportError(f"no output directory at {out_dir}")
    if checkpoint is not None:
        parts = committed_parts(out_dir, checkpoint)
    else:
        parts = sorted((out_dir / RESULTS_DIR).glob("part-*.parquet"))
    if not parts:
        raise ReportError(
            f"{out_dir} holds no results ({out_dir / RESULTS_DIR}/part-*.parquet): "
            "nothing has been committed yet, or this is not a batchrun output directory"
        )
    return parts


def _current(out_dir: Path, checkpoint: Checkpoint) -> Iterator[pa.RecordBatch]:
    """The needed columns of each row's current record, in row order (see `_batches`)."""
    schema = pa.schema([RESULT_SCHEMA.field(name).with_nullable(True) for name in _COLUMNS])
    order = RowOrder(
        out_dir,
        checkpoint,
        columns=_COLUMNS,
        project=lambda batch: batch.select(["row", *_COLUMNS]),
        schema=schema.insert(0, pa.field("row", pa.int64())),
        scratch=[out_dir, Path(tempfile.gettempdir())],
    )
    for window in order.windows():
        table = window.table.drop_columns(["row"])
        yield from table.to_batches()


def _batches(parts: list[Path], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The needed columns of every part, one batch at a time, as RESULT_SCHEMA types.

    One file after the other with `ParquetFile.iter_batches`: a dataset scanner reads ahead of a
    slow consumer without a firm bound, which would let memory grow with the dataset."""
    schema = pa.schema([RESULT_SCHEMA.field(name) for name in _COLUMNS])
    for path in parts:
        with pq.ParquetFile(path) as part:
            present = [name for name in _COLUMNS if name in part.schema_arrow.names]
            for batch in part.iter_batches(batch_size=batch_rows, columns=present):
                n = batch.num_rows
                columns = [
                    batch.column(name).cast(field.type)
                    if name in present
                    else pa.nulls(n, field.type)
                    for name, field in zip(_COLUMNS, schema, strict=True)
                ]
                yield pa.RecordBatch.from_arrays(columns, schema=schema)


def build_report(out_dir: Path | str, *, batch_rows: int = _BATCH_ROWS) -> Report:
    """Read `OUT/results` batch by batch and sum it up (see the module docstring). A cluster
    run's output (`OUT/cluster.json`, in a directory or on an object store: `s3://...`) is
    read as one: every shard's results, one estimate."""
    try:
        with merged_view(out_dir if is_remote(str(out_dir)) else Path(out_dir)) as view:
            if view is None:
                out = Path(out_dir)
                return _build(out, out, batch_rows, lambda: load_estimate(out))
            return _build(out_dir, view.path, batch_rows, lambda: _shards_estimate(view))
    except CheckpointError as exc:
        raise ReportError(str(exc)) from exc


def _shards_estimate(view: MergedView) -> Estimate | None:
    """`batchrun estimate --out OUT`'s, else the sum of the shards' own."""
    saved = load_estimate(view.top)
    if saved is not None:
        return saved
    found = [e for d in view.shards if (e := load_estimate(d)) is not None]
    return merge_estimates(found) if len(found) == len(view.shards) else None


def _build(
    out_dir: Path | str, data: Path, batch_rows: int, estimated: Callable[[], Estimate | None]
) -> Report:
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    errors_by_endpoint: Counter[str | None] = Counter()
    sums: dict[tuple[str | None, str | None], _Sums] = {}
    latency = LogHistogram()
    requests = retries = 0
    checkpoint, notes = _checkpoint(data)
    parts = _part_files(data, checkpoint)
    if checkpoint is not None and checkpoint.stale_records:
        batches = _current(data, checkpoint)
    else:
        batches = _batches(parts, batch_rows)
    try:
        for batch in batches:
            for status, n in _counts(batch.column("status")):
                statuses[status or "unknown"] += n
            attempts = batch.column("attempts")
            requests += pc.sum(attempts).as_py() or 0
            retries += pc.sum(pc.max_element_wise(pc.subtract(attempts, 1), 0)).as_py() or 0
            is_error = pc.equal(batch.column("status"), "error")
            failed = batch.filter(is_error)
            for error_type, n in _counts(failed.column("error_type")):
                errors[error_type or "unknown"] += n
            for endpoint, n in _counts(failed.column("endpoint")):
                errors_by_endpoint[endpoint] += n
            ok = batch.filter(pc.equal(batch.column("status"), "ok"))
            latency.add_array(ok.column("latency_ms"))
            _add_ok(sums, ok)
    except (OSError, pa.ArrowException, ResultsError) as exc:
        raise ReportError(f"cannot read the results in {out_dir}/{RESULTS_DIR}: {exc}") from exc
    by_model = _by_model(sums)
    costs = [m.cost_usd for m in by_model if m.cost_usd is not None]
    rows_ok = statuses.get("ok", 0)
    comparison = None
    try:
        estimate = estimated()
    except EstimateError as exc:
        estimate = None
        notes.append(f"estimate not compared: {exc}")
    if estimate is not None:
        comparison = _compare(estimate, sums, errors_by_endpoint)
    return Report(
        out_dir=str(out_dir),
        rows=sum(statuses.values()),
        rows_ok=rows_ok,
        rows_error=statuses.get("error", 0),
        errors_by_type=dict(errors.most_common()),
        tokens={kind: sum(m.tokens[kind] for m in sums.values()) for kind in _TOKEN_KINDS},
        rows_without_usage=rows_ok - sum(m.with_usage for m in sums.values()),
        by_model=by_model,
        cost_usd=sum(costs) if costs else (0.0 if rows_ok == 0 else None),
        rows_without_cost=sum(m.rows_without_cost for m in by_model),
        latency_ms={f"p{p}": latency.percentile(p) for p in _PERCENTILES},
        latency_relative_error=latency.relative_error,
        requests=requests,
        retries=retries,
        comparison=comparison,
        notes=tuple(notes),
        passes=tuple(_pass(p) for p in checkpoint.passes) if checkpoint is not None else (),
    )


def _checkpoint(out_dir: Path) -> tuple[Checkpoint | None, list[str]]:
    """OUT's checkpoint (None in a folder of parts without one), and a note if it is damaged."""
    if not out_dir.is_dir():
        raise ReportError(f"no output directory at {out_dir}")
    try:
        return Checkpoint.load(out_dir), []
    except CheckpointError as exc:
        return None, [f"checkpoint not read ({exc}): every part file counted"]


def _pass(rerun: RerunPass) -> dict[str, Any]:
    return {
        "number": rerun.number,
        "error_types": list(rerun.error_types),
        "rows": rerun.rows,
        "resent": len(rerun.done),
        "fixed": rerun.fixed,
        "finished": rerun.finished,
    }


def _counts(column: pa.Array) -> list[tuple[Any, int]]:
    counted = pc.value_counts(column)
    return list(
        zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True)
    )


def _add_ok(sums: dict[tuple[str | None, str | None], _Sums], ok: pa.RecordBatch) -> None:
    if ok.num_rows == 0:
        return
    aggregates: list[tuple[str | list[str], str]] = [(kind, "sum") for kind in _TOKEN_KINDS]
    aggregates += [("cost_usd", "sum"), ("cost_usd", "count"), ("prompt_tokens", "count")]
    aggregates.append(([], "count_all"))
    grouped = pa.Table.from_batches([ok]).group_by(["endpoint", "model"]).aggregate(aggregates)
    for row in grouped.to_pylist():
        entry = sums.get((row["endpoint"], row["model"]))
        if entry is None:
            entry = sums[(row["endpoint"], row["model"])] = _Sums()
        entry.rows += row["count_all"]
        entry.costed += row["cost_usd_count"]
        entry.with_usage += row["prompt_tokens_count"]
        entry.cost += row["cost_usd_sum"] or 0.0
        for kind in _TOKEN_KINDS:
            entry.tokens[kind] += row[f"{kind}_sum"] or 0


def _by_model(sums: dict[tuple[str | None, str | None], _Sums]) -> tuple[ModelUsage, ...]:
    merged: dict[str | None, _Sums] = {}
    for (_, model), entry in sums.items():
        into = merged.setdefault(model, _Sums())
        into.rows += entry.rows
        into.costed += entry.costed
        into.cost += entry.cost
        for kind in _TOKEN_KINDS:
            into.tokens[kind] += entry.tokens[kind]
    return tuple(
        ModelUsage(
            model=model,
            rows_ok=entry.rows,
            **entry.tokens,
            cost_usd=entry.cost if entry.costed else None,
            rows_without_cost=entry.rows - entry.costed,
        )
        for model, entry in sorted(merged.items(), key=lambda item: item[0] or "")
    )


def _compare(
    estimate: Estimate,
    sums: dict[tuple[str | None, str | None], _Sums],
    errors_by_endpoint: Counter[str | None],
) -> tuple[Comparison, ...]:
    """One row per endpoint, then "total" (which also counts bad input rows, with no endpoint)."""
    named = {g.endpoint for g in estimate.groups} | {e for e, _ in sums} | set(errors_by_endpoint)
    endpoints = sorted(e for e in named if e is not None)
    rows = [_comparison(e, estimate, sums, errors_by_endpoint, {e}) for e in endpoints]
    rows.append(_comparison("total", estimate, sums, errors_by_endpoint, named))
    return tuple(rows)


def _comparison(
    scope: str,
    estimate: Estimate,
    sums: dict[tuple[str | None, str | None], _Sums],
    errors_by_endpoint: Counter[str | None],
    endpoints: set[str | None],
) -> Comparison:
    groups = [g for g in estimate.groups if g.endpoint in endpoints]
    actual = [s for (endpoint, _), s in sums.items() if endpoint in endpoints]
    maxima = [g.max_output_tokens for g in groups if g.max_output_tokens is not None]
    costed = [s.cost for s in actual if s.costed]

    def estimated_cost(key: str) -> float | None:
        known = [getattr(g, key) for g in groups if getattr(g, key) is not None]
        return sum(known) if known else None

    return Comparison(
        scope=scope,
        rows_estimated=sum(g.rows for g in groups),
        rows_ok=sum(s.rows for s in actual),
        rows_error=sum(errors_by_endpoint[e] for e in endpoints),
        prompt_tokens_estimated=sum(g.prompt_tokens for g in groups),
        prompt_tokens_actual=sum(s.tokens["prompt_tokens"] for s in actual),
        completion_tokens_expected=sum(g.expected_output_tokens for g in groups),
        completion_tokens_max=sum(maxima) if maxima else None,
        completion_tokens_actual=sum(s.tokens["completion_tokens"] for s in actual),
        cost_expected_usd=estimated_cost("cost_expected_usd"),
        cost_high_usd=estimated_cost("cost_high_usd"),
        cost_actual_usd=sum(costed) if costed else None,
    )
