"""batchrun.common.ranges: RangeSet, against a plain set."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrun.common.ranges import RangeSet


def test_rangeset_empty() -> None:
    rs = RangeSet()
    assert rs.ranges() == []
    assert len(rs) == 0
    assert 0 not in rs
    assert rs.covers(3, 3)  # an empty range is covered by anything
    assert not rs.covers(0, 1)


def test_rangeset_add_single_values_merge_into_one_range() -> None:
    rs = RangeSet()
    for v in (0, 1, 2, 3):
        rs.add(v)
    assert rs.ranges() == [(0, 4)]
    assert len(rs) == 4


def test_rangeset_out_of_order_adds_close_the_gap() -> None:
    rs = RangeSet()
    rs.add(0)
    rs.add(2)
    assert rs.ranges() == [(0, 1), (2, 3)]
    rs.add(1)
    assert rs.ranges() == [(0, 3)]


@pytest.mark.parametrize(
    ("initial", "added", "expected"),
    [
        ([(0, 5)], (5, 8), [(0, 8)]),  # adjacent after
        ([(5, 8)], (0, 5), [(0, 8)]),  # adjacent before
        ([(0, 5)], (3, 10), [(0, 10)]),  # overlapping
        ([(0, 10)], (3, 4), [(0, 10)]),  # inside
        ([(3, 4)], (0, 10), [(0, 10)]),  # swallowing
        ([(0, 2), (4, 6), (8, 10)], (1, 9), [(0, 10)]),  # bridging several
        ([(0, 2), (4, 6), (8, 10)], (2, 4), [(0, 6), (8, 10)]),  # filling one gap exactly
        ([(0, 2), (8, 10)], (4, 6), [(0, 2), (4, 6), (8, 10)]),  # disjoint in the middle
        ([(4, 6)], (0, 1), [(0, 1), (4, 6)]),  # disjoint before
        ([(0, 2)], (5, 5), [(0, 2)]),  # empty range ignored
        ([(0, 2)], (5, 3), [(0, 2)]),  # reversed range ignored
    ],
)
def test_rangeset_add_range(
    initial: list[tuple[int, int]], added: tuple[int, int], expected: list[tuple[int, int]]
) -> None:
    rs = RangeSet(initial)
    rs.add_range(*added)
    assert rs.ranges() == expected


def test_rangeset_constructor_merges_unsorted_overlapping_input() -> None:
    rs = RangeSet([(10, 12), (0, 3), (2, 5), (5, 6)])
    assert rs.ranges() == [(0, 6), (10, 12)]
    assert list(rs) == [(0, 6), (10, 12)]
    assert len(rs) == 8


def test_rangeset_contains_and_covers() -> None:
    rs = RangeSet([(0, 3), (10, 20)])
    assert [v in rs for v in (0, 2, 3, 9, 10, 19, 20, -1)] == [
        True,
        True,
        False,
        False,
        True,
        True,
        False,
        False,
    ]
    assert "1" not in rs  # not an int
    assert rs.covers(0, 3)
    assert rs.covers(12, 18)
    assert rs.covers(10, 20)
    assert not rs.covers(0, 4)
    assert not rs.covers(2, 11)  # spans the gap
    assert not rs.covers(19, 21)
    assert not rs.covers(-2, 1)


def test_rangeset_equality_and_repr() -> None:
    assert RangeSet([(0, 2), (2, 4)]) == RangeSet([(0, 4)])
    assert RangeSet([(0, 2)]) != RangeSet([(0, 3)])
    assert RangeSet([(0, 2)]) != [(0, 2)]
    many = RangeSet([(i * 10, i * 10 + 1) for i in range(6)])
    assert repr(many) == "RangeSet([0, 1), [10, 11), [20, 21), [30, 31), ... 2 more)"


def test_rangeset_stays_small_when_rows_finish_roughly_in_order() -> None:
    rs = RangeSet()
    # Rows finish out of order within a window of 8, as concurrent workers do.
    for base in range(0, 10_000, 8):
        for v in (3, 1, 0, 7, 2, 6, 5, 4):
            rs.add(base + v)
    assert rs.ranges() == [(0, 10_000)]


_ops = st.lists(
    st.tuples(st.integers(0, 200), st.integers(0, 30)),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=_ops, probe=st.tuples(st.integers(0, 240), st.integers(0, 40)))
def test_rangeset_behaves_like_a_set(ops: list[tuple[int, int]], probe: tuple[int, int]) -> None:
    rs = RangeSet()
    model: set[int] = set()
    for start, length in ops:
        if length == 1:
            rs.add(start)
        else:
            rs.add_range(start, start + length)
        model.update(range(start, start + length))
    assert len(rs) == len(model)
    assert all((v in rs) == (v in model) for v in range(0, 250))
    ranges = rs.ranges()
    # Sorted, disjoint, non-adjacent, non-empty, and exactly the model's members.
    assert all(s < e for s, e in ranges)
    assert all(e1 < s2 for (_, e1), (s2, _) in itertools.pairwise(ranges))
    assert {v for s, e in ranges for v in range(s, e)} == model
    start, length = probe
    assert rs.covers(start, start + length) == all(v in model for v in range(start, start + length))
    assert RangeSet(ranges) == rs
