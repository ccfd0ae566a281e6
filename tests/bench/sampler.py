"""The mock server's counters over time, to see when requests arrived and at what rate.

A `StatsSampler` is passed as the `tick` of `Child.wait`: it reads `GET /mock/stats` at most every
`every_s` and keeps `(time, counters)` samples. From them: when the first request arrived (an
upper bound, within one interval), and the rate of any counter between two of its values
(interpolated), which leaves out a run's start-up and its tail.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

from tests.bench.procs import MockServer

__all__ = ["CHAT_PATH", "Sample", "StatsSampler", "counters"]

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # time.perf_counter() halfway through the stats call
    total: int  # chat completion requests that arrived (any status)
    ok: int  # answered 200 (the mock runs with --no-billing: only chat requests can be 200s)
    limited: int  # answered 429
    tpm_charged: int  # tokens admitted requests cost the mock's TPM budget


def counters(stats: dict[str, Any]) -> tuple[int, int, int, int]:
    """(total, ok, limited, tpm_charged) out of a `/mock/stats` answer.

    `total` counts chat completions only: batchrun also asks the billing endpoints once at start,
    and `GET /v1/models`, which the bench's mock answers with 200: those 200s are not counted.
    """
    requests = stats.get("requests", {})
    by_status = requests.get("by_status", {})
    by_path = requests.get("by_path", {})
    return (
        int(by_path.get(CHAT_PATH, 0)),
        int(by_status.get("200", 0)) - int(by_path.get(MODELS_PATH, 0)),
        int(by_status.get("429", 0)),
        int(stats.get("tokens", {}).get("tpm_charged", 0)),
    )


class StatsSampler:
    def __init__(self, mock: MockServer, *, every_s: float) -> None:
        self._mock = mock
        self._every_s = every_s
        self._next = 0.0
        self.samples: list[Sample] = []

    def __call__(self) -> None:
        if time.perf_counter() >= self._next:
            self.take()

    def take(self) -> Sample:
        before = time.perf_counter()
        total, ok, limited, charged = counters(self._mock.stats())
        after = time.perf_counter()
        sample = Sample((before + after) / 2, total, ok, limited, charged)
        self.samples.append(sample)
        self._next = before + self._every_s
        return sample

    def first_arrival(self) -> float | None:
        """Time of the first sample that had seen a request (at most one interval late)."""
        for sample in self.samples:
            if sample.total > 0:
                return sample.t
        return None

    def time_at(self, field: str, value: float) -> float | None:
        """When counter `field` reached `value`, interpolated between the samples around it."""
        previous: Sample | None = None
        for sample in self.samples:
            reached = getattr(sample, field)
            if reached >= value:
                if previous is None:
                    return sample.t
                before = getattr(previous, field)
                share = (value - before) / (reached - before) if reached > before else 1.0
                return previous.t + share * (sample.t - previous.t)
            previous = sample
        return None

    def longest_gap_s(self) -> float | None:
        """The longest stretch in which no request arrived, between the first and the last
        (within two sampling intervals)."""
        changes = [b.t for a, b in itertools.pairwise(self.samples) if b.total > a.total]
        if len(changes) < 2:
            return None
        return max(b - a for a, b in itertools.pairwise(changes))

    def rate_between(self, field: str, low: float, high: float) -> float | None:
        """Counter `field` per second while it went from `low` to `high`."""
        t_low, t_high = self.time_at(field, low), self.time_at(field, high)
        if t_low is None or t_high is None or t_high <= t_low:
            return None
        return (high - low) / (t_high - t_low)
