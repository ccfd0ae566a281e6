"""The driver of a cluster run: plan the shards, start the actors, hand out shards, sum up.

Guarantees:
- The plan is made once per output and kept in `OUT/cluster.json`; a resume reads it back, so
  shard ids (and the rows each owns) never change under a half-finished output. A different
  input for the same OUT is refused.
- A shard whose output is finished is not sent again. Every other shard goes to a free worker;
  its committed parts stay where they are if its worker or node dies, and the shard is given to
  another worker, which resumes it from its checkpoint: what is redone is what was in flight.
- A shard that keeps failing (its worker dies `max_attempts` times, or its rows cannot be read)
  ends as error records for its pending rows, like a bad row in a local run; the job goes on.
- A fatal stop in one shard (a refused key, exhausted quota) stops every shard, as it stops a
  local run; the rest stays resumable.
- The driver holds no row: memory does not depend on the input's size.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from batchrun.cluster.budget import DEFAULT_LEASE_S, SharedBudget
from batchrun.cluster.failed import fail_shard
from batchrun.cluster.jobestimate import JobEstimate
from batchrun.cluster.progress import REPORT_EVERY_S, ClusterProgress, ShardProgress, shard_figures
from batchrun.cluster.shardrun import ShardResult, ShardTask, shard_prefix
from batchrun.config import RunConfig
from batchrun.inputs.shards import DEFAULT_SHARD_BYTES, Shard, plan_shards
from batchrun.runner.summary import RunSummary, RunTotals
from batchrun.store.checkpoint import CHECKPOINT_NAME, Checkpoint, CheckpointError
from batchrun.store.remote import OutputLocation
from batchrun.store.shardset import PLAN_NAME

__all__ = ["PLAN_NAME", "ClusterSettings", "run_on_ray"]

_PLAN_VERSION = 1
_NO_END = 1 << 62  # a span that ends where its file does (rows not counted when planned)
log = logging.getLogger("batchrun")


@dataclass(frozen=True, kw_only=True, slots=True)
class ClusterSettings:
    address: str  # "local", "auto", "ray://host:port" or "host:port"
    input_uri: str
    out_uri: str
    workers: int | None = None  # shard workers; None: one per CPU of the cluster
    worker_cpus: float = 1.0  # CPUs Ray reserves for each worker
    shard_bytes: int = DEFAULT_SHARD_BYTES
    max_attempts: int = 3
    lease_s: float = DEFAULT_LEASE_S
    scratch_dir: str | None = None  # where workers stage object-store shards (default: /tmp)

    def __post_init__(self) -> None:
        if not self.address:
            raise ValueError("address (--ray) must name a cluster: local, auto or host:port")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers (--ray-workers) must be positive, got {self.workers}")
        if not self.worker_cpus > 0:
            raise ValueError(f"worker_cpus must be positive, got {self.worker_cpus}")
        if self.shard_bytes < 1:
            raise ValueError(f"shard_bytes (--shard-mb) must be positive, got {self.shard_bytes}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be positive, got {self.max_attempts}")
        if not self.lease_s > 0:
            raise ValueError(f"lease_s must be positive, got {self.lease_s}")


@dataclass(slots=True)
class _Tally:
    total_rows: int = 0
    done_rows: int = 0
    done_before: int = 0
    ok: int = 0
    errors: int = 0
    cost_usd: float = 0.0
    session: RunTotals = field(default_factory=RunTotals)
    unfinished: list[str] = field(default_factory=list)
    bar: ClusterProgress | None = None  # while shards are sent

    def add(self, result: ShardResult) -> None:
        self.total_rows += result.total_rows
        self.done_rows += result.done_rows
        self.ok += result.ok
        self.errors += result.errors
        self.cost_usd += result.cost_usd
        _merge(self.session, result.session)
        if not result.finished:
            self.unfinished.append(result.shard_id)
        if self.bar is not None:
            self.bar.update([
                ShardProgress(
                    shard_id=result.shard_id, total_rows=result.total_rows,
                    done_rows=result.done_rows, ok=result.ok, errors=result.errors,
                    cost_usd=result.cost_usd, session=result.session,
                )
            ])  # fmt: skip


def run_on_ray(config: RunConfig, settings: ClusterSettings) -> RunSummary:
    """Send every pending row of the input on the Ray cluster at `settings.address`.

    `config` holds the job's settings as for a local run (its input_path and out_dir are
    replaced by each shard's). Raises `InputError` / `CheckpointError` before anything is sent,
    `ValueError` for a setting a cluster run does not take.
    """
    # A shard's rows start where its span does, and a retry pass or an update (listing, then
    # compacting the rows to re-send) reads an output as rows 0..total_rows; an update would
    # also meet shards cut from the old file. Refused, not half done.
    if config.retry_errors is not None:
        raise ValueError(
            "--retry-errors does not run on Ray yet: a cluster output's error records stay as "
            "they are (`batchrun report OUT` counts them by type); leave out --retry-errors"
        )
    if config.update:
        raise ValueError(
            "--update does not run on Ray yet: its shards were cut from the input as it was; "
            "give the changed input a new --out"
        )
    import ray

    started = time.monotonic()
    location = OutputLocation(settings.out_uri)
    shards = _plan(location, settings)
    tally = _Tally()
    pending: deque[tuple[Shard, int]] = deque()
    spent_usd = 0.0  # the whole output's, for --max-cost
    start: list[ShardProgress] = []
    estimate = JobEstimate(location, [s.id for s in shards], enabled=config.estimate)
    for shard in shards:
        checkpoint = _checkpoint(location, shard)
        start.append(shard_figures(shard.id, checkpoint))
        spent_usd += checkpoint.cost_usd if checkpoint is not None else 0.0
        done = _finished(shard, checkpoint)
        if done is not None:
            tally.add(done)
            tally.done_before += done.done_rows
        else:
            pending.append((shard, 0))
    estimate.prime(s.shard_id for s in start if s.total_rows is not None)
    log.info("%s shards, %s to send", f"{len(shards):,}", f"{len(pending):,}")
    stopped: str | None = None
    fatal = False
    if pending:
        owned = not ray.is_initialized()
        if owned:
            _connect(ray, settings.address)
        planned = {s.id: s.span.rows if s.span.end_row < _NO_END else None for s in shards}
        tally.bar = bar = ClusterProgress(start, planned, enabled=config.progress)
        try:
            stopped, fatal = _dispatch(
                ray, config, settings, location, pending, tally, spent_usd, bar, estimate
            )
        finally:
            tally.bar = None
            bar.close()
            if owned:
                ray.shutdown()
    if stopped is None and tally.unfinished:
        stopped = (
            f"{len(tally.unfinished)} shards did not finish: {', '.join(tally.unfinished[:3])}"
        )
    return RunSummary(
        out_dir=location.local or config.out_dir,
        total_rows=tally.total_rows,
        done_rows=tally.done_rows,
        ok=tally.ok,
        errors=tally.errors,
        session=tally.session,
        elapsed_s=time.monotonic() - started,
        stopped=stopped,
        fatal=fatal,
        cost_usd=tally.cost_usd,
        done_before=tally.done_before,
        fail_on_errors=config.fail_on_errors,
    )


def _connect(ray: Any, address: str) -> None:
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address == "local":
        ray.init(num_cpus=os.cpu_count() or 1, **options)
    else:
        ray.init(address=address, **options)


def _dispatch(
    ray: Any,
    config: RunConfig,
    settings: ClusterSettings,
    location: OutputLocation,
    pending: deque[tuple[Shard, int]],
    tally: _Tally,
    spent_usd: float,
    bar: ClusterProgress,
    estimate: JobEstimate,
) -> tuple[str | None, bool]:
    """Hand the pending shards to workers until every one has an end; (stop reason, fatal)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from batchrun.cluster.actors import BudgetActor, ShardWorker

    # On the driver's node: a node lost with the budget on it would fail every shard, while
    # the driver's own node lost ends the run anyway (and a rerun resumes it).
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    budget = BudgetActor.options(scheduling_strategy=here).remote(
        config.max_requests_per_minute, config.max_tokens_per_minute, config.burst_s
    )
    lease_usd = 0.0
    if config.max_cost_usd is not None:
        ray.get(budget.set_cost_cap.remote(config.max_cost_usd, spent_usd))
        lease_usd = config.max_cost_usd / 100
    lease_requests, lease_tokens = SharedBudget(
        max_requests_per_minute=config.max_requests_per_minute,
        max_tokens_per_minute=config.max_tokens_per_minute,
        burst_s=config.burst_s,
    ).lease_size(settings.lease_s)
    cpus = float(ray.cluster_resources().get("CPU", 1))
    count = settings.workers or max(1, int(cpus // settings.worker_cpus))
    count = min(count, len(pending))
    worker_cpus = min(settings.worker_cpus, cpus / count)

    def new_worker() -> Any:
        return ShardWorker.options(num_cpus=worker_cpus, scheduling_strategy="SPREAD").remote(
            budget, settings.scratch_dir
        )

    idle = [new_worker() for _ in range(count)]
    running: dict[Any, tuple[Shard, int, Any]] = {}
    next_poll = time.monotonic() + REPORT_EVERY_S
    stopped: str | None = None
    fatal = False
    while pending or running:
        while pending and idle and stopped is None:
            shard, attempt = pending.popleft()
            worker = idle.pop()
            task = ShardTask(
                shard=shard,
                config=config,
                out_uri=settings.out_uri,
                lease_requests=lease_requests,
                lease_tokens=lease_tokens,
                lease_usd=lease_usd,
            )
            running[worker.run.remote(task)] = (shard, attempt, worker)
        if not running:
            break
        ready, _ = ray.wait(list(running), num_returns=1, timeout=REPORT_EVERY_S)
        if time.monotonic() >= next_poll or not ready:
            next_poll = time.monotonic() + REPORT_EVERY_S
            reports: list[ShardProgress] = ray.get(budget.reports.remote())
            bar.update(reports)
            estimate.look(r.shard_id for r in reports if r.total_rows is not None)
        if not ready:
            continue
        ref = ready[0]
        shard, attempt, worker = running.pop(ref)
        try:
            result: ShardResult = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            # The worker, or its node, is gone; what the shard committed stays.
            log.warning("shard %s: its worker died (%s); sending it again", shard.id, exc)
            # A replacement only where there is room for it: one that waits for a lost node's
            # CPUs would hold its shard forever. With no worker left, one waits for room.
            room = ray.available_resources().get("CPU", 0.0) >= worker_cpus
            if room or not (idle or running):
                idle.append(new_worker())
            _again(pending, shard, attempt + 1, settings, location, config, tally, str(exc))
            continue
        except ray.exceptions.RayTaskError as exc:
            idle.append(worker)
            _again(pending, shard, attempt + 1, settings, location, config, tally, str(exc))
            continue
        idle.append(worker)
        if result.busy:
            pending.append((shard, attempt))  # not a failure of the shard
            continue
        if result.input_fault is not None:
            _again(pending, shard, attempt + 1, settings, location, config, tally,
                   result.input_fault)  # fmt: skip
            continue
        if result.fatal and stopped is None:
            stopped, fatal = result.stopped, True
            ray.get(budget.stop.remote(result.stopped or "stopped"))
        elif result.stopped is not None and stopped is None:
            # --max-cost reached: the shards running finish what their leases allow, no new
            # shard starts, and a resume goes on from there.
            stopped = result.stopped
        tally.add(result)
        estimate.look([result.shard_id])
        log.info(
            "shard %s: %s of %s rows done (%s ok, %s errors); %s shards to go",
            shard.id, f"{result.done_rows:,}", f"{result.total_rows:,}", f"{result.ok:,}",
            f"{result.errors:,}", f"{len(pending) + len(running):,}",
        )  # fmt: skip
    for shard, _ in pending:  # a fatal stop left these untouched: resumable
        tally.unfinished.append(shard.id)
    return stopped, fatal


def _again(
    pending: deque[tuple[Shard, int]],
    shard: Shard,
    attempt: int,
    settings: ClusterSettings,
    location: OutputLocation,
    config: RunConfig,
    tally: _Tally,
    reason: str,
) -> None:
    if attempt < settings.max_attempts:
        pending.append((shard, attempt))
        return
    log.warning("shard %s failed %d times; its pending rows become errors", shard.id, attempt)
    tally.add(fail_shard(shard, config, location, f"failed {attempt} times: {reason}"))


def _plan(location: OutputLocation, settings: ClusterSettings) -> list[Shard]:
    raw = location.read_bytes(PLAN_NAME)
    if raw is not None:
        try:
            plan = json.loads(raw)
            if plan.get("version") != _PLAN_VERSION:
                raise ValueError(f"version {plan.get('version')!r}")
            shards = [Shard.from_json(s) for s in plan["shards"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{location.uri}/{PLAN_NAME} is damaged ({exc}); use a new --out"
            ) from exc
        if plan.get("input") != settings.input_uri:
            raise CheckpointError(
                f"{location.uri} was started for the input {plan.get('input')}, not "
                f"{settings.input_uri}; use the same input to resume, or a new --out"
            )
        return shards
    log.info("planning shards of %s", settings.input_uri)
    shards = plan_shards(settings.input_uri, target_bytes=settings.shard_bytes)
    plan = {
        "version": _PLAN_VERSION,
        "input": settings.input_uri,
        "shards": [s.to_json() for s in shards],
    }
    location.write_whole(PLAN_NAME, json.dumps(plan, separators=(",", ":")).encode() + b"\n")
    return shards


def _checkpoint(location: OutputLocation, shard: Shard) -> Checkpoint | None:
    raw = location.read_bytes(f"{shard_prefix(shard.id)}/{CHECKPOINT_NAME}")
    if raw is None:
        return None
    try:
        return Checkpoint.from_json(json.loads(raw))
    except (ValueError, CheckpointError, KeyError, TypeError):
        return None  # the worker's own load names the damage


def _finished(shard: Shard, checkpoint: Checkpoint | None) -> ShardResult | None:
    """The shard's result when its output is finished, None when it has rows to send."""
    if checkpoint is None:
        return None
    total = checkpoint.total_rows or 0
    if len(checkpoint.done) < total:
        return None
    return ShardResult(
        shard_id=shard.id,
        total_rows=total,
        done_rows=len(checkpoint.done),
        ok=checkpoint.counts.get("ok", 0),
        errors=checkpoint.counts.get("error", 0),
        cost_usd=checkpoint.cost_usd,
        session=RunTotals(),
        stopped=None,
        fatal=False,
    )


def _merge(into: RunTotals, other: RunTotals) -> None:
    for name in (
        "ok", "errors", "requests", "retries", "prompt_tokens", "completion_tokens",
        "cached_tokens", "reasoning_tokens", "cost_usd", "unpriced",
    ):  # fmt: skip
        setattr(into, name, getattr(into, name) + getattr(other, name))
    for kind, n in other.errors_by_type.items():
        into.errors_by_type[kind] = into.errors_by_type.get(kind, 0) + n
