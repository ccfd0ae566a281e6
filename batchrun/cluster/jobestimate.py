"""The whole job's estimate on a cluster, logged once, as a local run logs its input's.

A local run logs its estimate once its first pass has counted the input. On a cluster each
shard counts and estimates its own rows (`OUT/shards/<id>/estimate.json`); the driver reads each
one as the shard's figures say it has counted (no call per row, one small read per shard) and,
once every shard's is in, logs their sum (`merge_estimates`) in the same line.

Guarantees:
- Logged at most once per run, and only when the last shard's estimate arrives during this run:
  a resume whose shards were all counted before logs nothing, as a local resume does.
- Nothing is logged while any shard's estimate is missing or damaged (then `batchrun report`
  says why): a sum over some shards would read as the whole job's.
"""

from __future__ import annotations

from collections.abc import Iterable

from batchrun.cluster.shardrun import shard_prefix
from batchrun.cost.estimate import ESTIMATE_NAME, Estimate, EstimateError, merge_estimates
from batchrun.runner.preflight import log_estimate
from batchrun.store.remote import OutputLocation

__all__ = ["JobEstimate"]


class JobEstimate:
    """The shards' estimates read so far; `look` at shards that have counted their rows."""

    def __init__(self, location: OutputLocation, shard_ids: list[str], *, enabled: bool) -> None:
        self._location = location
        self._order = shard_ids
        self._found: dict[str, Estimate] = {}
        self._damaged: set[str] = set()
        self._logged = not enabled or not shard_ids

    def prime(self, counted: Iterable[str]) -> None:
        """At the start: the shards counted before this run. Complete already: not logged."""
        if self._logged:
            return
        self._read(counted)
        self._logged = self._complete()

    def look(self, counted: Iterable[str]) -> None:
        """Shards whose figures show a row count: read the estimates not read yet; log the
        job's once the last one is in."""
        if self._logged:
            return
        self._read(counted)
        if self._complete():
            self._logged = True
            job = merge_estimates([self._found[i] for i in self._order])
            assert job is not None
            log_estimate(job, f"{self._location.uri}/shards/*/{ESTIMATE_NAME}")

    def _complete(self) -> bool:
        return len(self._found) == len(self._order)

    def _read(self, shard_ids: Iterable[str]) -> None:
        for shard_id in shard_ids:
            if shard_id in self._found or shard_id in self._damaged:
                continue
            raw = self._location.read_bytes(f"{shard_prefix(shard_id)}/{ESTIMATE_NAME}")
            if raw is None:
                continue  # counted, not saved (or not copied out) yet: the next look
            try:
                self._found[shard_id] = Estimate.from_json(raw)
            except EstimateError:
                self._damaged.add(shard_id)
