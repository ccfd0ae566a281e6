"""Row numbers kept as sorted, merged ranges: the rows an output has done, the rows to skip.

Rows finish roughly in order, so the ranges merge and their number stays bounded by what was in
flight, not by the size of the input.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Protocol

__all__ = ["RangeSet", "RowFilter"]


class RowFilter(Protocol):
    """Rows a reader passes over (`skip`): a `RangeSet`, or a pass's list (store.rerun)."""

    def __contains__(self, value: object, /) -> bool: ...

    def covers(self, start: int, end: int) -> bool: ...


class RangeSet:
    """Non-negative integers kept as sorted, disjoint, non-adjacent `[start, end)` ranges."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in sorted(ranges):
            self.add_range(start, end)

    def add(self, value: int) -> None:
        self.add_range(value, value + 1)

    def add_range(self, start: int, end: int) -> None:
        if end <= start:
            return
        # Every range that touches or overlaps [start, end) merges into one.
        lo = bisect.bisect_left(self._ends, start)
        hi = bisect.bisect_right(self._starts, end)
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        i = bisect.bisect_right(self._starts, value) - 1
        return i >= 0 and value < self._ends[i]

    def covers(self, start: int, end: int) -> bool:
        """Whether every integer in `[start, end)` is in the set."""
        if end <= start:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and end <= self._ends[i]

    def __len__(self) -> int:
        """How many integers are in the set (not how many ranges)."""
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.ranges())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and self.ranges() == other.ranges()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"[{s}, {e})" for s, e in self.ranges()[:4])
        more = f", ... {len(self._starts) - 4} more" if len(self._starts) > 4 else ""
        return f"RangeSet({shown}{more})"
