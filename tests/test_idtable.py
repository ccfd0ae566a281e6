"""batchrun.inputs.idtable: the reader's exact in-memory judge of custom_ids."""

from __future__ import annotations

import random

import pytest

from batchrun.inputs import idtable as idtable_mod
from batchrun.inputs.idtable import PENDING, IdTable, TableJudge, id_digest


def test_first_use_is_none_and_a_repeat_names_the_first_row() -> None:
    table = IdTable(100)
    assert table.add("a", 0) is None
    assert table.add("b", 1) is None
    assert table.add("a", 2) == 0
    assert table.add("a", 3) == 0  # always the first row, not the latest
    assert table.add("b", 4) == 1
    assert len(table) == 2  # repeats are not held


def test_many_ids_survive_the_table_growing_and_match_a_plain_dict() -> None:
    rng = random.Random(7)
    ids = [f"id-{rng.randrange(30_000)}" for _ in range(50_000)]
    table = IdTable(50_000)
    expected: dict[str, int] = {}
    for row, cid in enumerate(ids):
        assert table.add(cid, row) == expected.get(cid), row
        expected.setdefault(cid, row)
    assert len(table) == len(expected)


def test_a_collision_of_the_slot_is_not_a_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every id lands on the same slot and shares the first 8 digest bytes: only the other 8
    # bytes tell them apart, and they must.
    real = idtable_mod.id_digest
    monkeypatch.setattr(idtable_mod, "id_digest", lambda cid: b"\x01" * 8 + real(cid)[8:])
    table = IdTable(10)
    assert [table.add(f"x{i}", i) for i in range(5)] == [None] * 5
    assert table.add("x3", 5) == 3


def test_a_full_table_refuses_a_new_id_but_still_finds_repeats() -> None:
    table = IdTable(2)
    table.add("a", 0)
    table.add("b", 1)
    assert table.full and table.add("a", 2) == 0
    with pytest.raises(OverflowError):
        table.add("c", 3)


def test_digests_are_16_bytes_and_take_text_the_reader_refused() -> None:
    assert len(id_digest("req-1")) == 16 and id_digest("req-1") != id_digest("req-2")
    assert len(id_digest("\ud800")) == 16  # a lone surrogate: a RowError's id still counts


def test_the_table_judge_is_pending_from_the_horizon_on_and_learns_skipped_rows() -> None:
    judge = TableJudge(3)
    judge.seen(0, "done-row")  # done in an earlier run: not read again
    assert judge.seen_below() == 3
    assert judge.verdict(1, "done-row") == 0
    assert judge.verdict(2, "new") is None
    assert judge.verdict(3, "new") is PENDING
    judge.seen(5, "ignored")  # past the horizon: the first pass's list covers it


def test_horizon_and_size_are_checked() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        IdTable(0)
