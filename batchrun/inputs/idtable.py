"""Judging custom_ids as rows are read for sending: is this id new, or which earlier row had it?

    IdTable(max_rows).add(custom_id, row) -> None (first use) | the earlier row's number

The reader asks an `IdJudge` about every row in file order (`batchrun.inputs.reader`), and
turns a repeat into a `bad_input` row error, so that every record's custom_id tells it apart.
A judge may not know yet (`PENDING`): the reader then hands out nothing more until it does.

Guarantees:
- Ids are compared by 128-bit BLAKE2b digests: two different ids are taken for one only if
  their digests collide, a chance below 1e-20 for 10^9 rows. The first pass on disk
  (`batchrun.inputs.idcheck.IdBuckets`) uses the same digests, so both always agree.
- `IdTable` holds at most `max_rows` ids, in ~20 bytes each (dense digests and rows, and a slot
  table at most 3/4 full), never a Python object per row: 393,216 rows take ~10 MB.
"""

from __future__ import annotations

import hashlib
from array import array
from typing import Final, Protocol

__all__ = [
    "DIGEST_BYTES",
    "MAX_TABLE_ROWS",
    "PENDING",
    "IdJudge",
    "IdTable",
    "Pending",
    "TableJudge",
    "id_digest",
]

DIGEST_BYTES = 16
_MAX_LOAD = 0.75  # linear probing: ~8 probes for a new id; 0.5 saves ~1 us a row for 4 MB more
_FIRST_SLOTS = 1 << 10
MAX_TABLE_ROWS = (1 << 32) - 1  # rows and slots are held as 4-byte numbers


class Pending:
    """The answer of a judge that cannot judge a row yet."""

    def __repr__(self) -> str:
        return "PENDING"


PENDING: Final = Pending()


def id_digest(custom_id: str) -> bytes:
    # surrogatepass: a RowError's id may be text the reader refused to send; it still counts.
    data = custom_id.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


class IdJudge(Protocol):
    """What the reader asks about each row, in increasing row order."""

    def verdict(self, row: int, custom_id: str) -> int | Pending | None:
        """None: the first row with this id; an int: the earlier row that has it; PENDING."""
        ...

    def seen_below(self) -> int:
        """Rows below this that the reader skips (already done) must still be `seen`."""
        ...

    def seen(self, row: int, custom_id: str) -> None:
        """A row not read again (done in an earlier run): its id still counts for later rows."""
        ...


class IdTable:
    """An exact set of ids (as digests) with the first row of each, filled in row order."""

    def __init__(self, max_rows: int) -> None:
        if not 0 < max_rows <= MAX_TABLE_ROWS:
            raise ValueError(f"max_rows must be between 1 and {MAX_TABLE_ROWS:,}, got {max_rows}")
        self.max_rows = max_rows
        self._hi = array("Q")  # digest halves and row, one entry per distinct id
        self._lo = array("Q")
        self._rows = array("I")
        self._slots = array("I", bytes(4 * _FIRST_SLOTS))  # entry index + 1; 0 is empty
        self._mask = _FIRST_SLOTS - 1

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def full(self) -> bool:
        return len(self._rows) >= self.max_rows

    def add(self, custom_id: str, row: int) -> int | None:
        """None if `custom_id` is new (it is then held, unless the table is full); else the
        first row that had it. Raises `OverflowError` when full and the id is new."""
        digest = id_digest(custom_id)
        hi = int.from_bytes(digest[:8], "little")
        lo = int.from_bytes(digest[8:], "little")
        his, los, slots, mask = self._hi, self._lo, self._slots, self._mask
        i = hi & mask
        while (entry := slots[i]) != 0:
            if his[entry - 1] == hi and los[entry - 1] == lo:
                return self._rows[entry - 1]
            i = (i + 1) & mask
        if self.full:
            raise OverflowError(f"the id table holds {self.max_rows:,} ids already")
        his.append(hi)
        los.append(lo)
        self._rows.append(row)
        slots[i] = len(self._rows)
        if len(self._rows) > _MAX_LOAD * len(slots):
            self._grow()
        return None

    def _grow(self) -> None:
        size = 2 * len(self._slots)
        slots = array("I", bytes(4 * size))
        mask = size - 1
        for entry, hi in enumerate(self._hi, start=1):
            i = hi & mask
            while slots[i] != 0:
                i = (i + 1) & mask
            slots[i] = entry
        self._slots, self._mask = slots, mask


class TableJudge:
    """Judges rows below `horizon` with an `IdTable`; rows at or past it are `PENDING`."""

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        self._table = IdTable(horizon)

    def verdict(self, row: int, custom_id: str) -> int | Pending | None:
        if row >= self.horizon:
            return PENDING
        return self._table.add(custom_id, row)

    def seen_below(self) -> int:
        return self.horizon

    def seen(self, row: int, custom_id: str) -> None:
        if row < self.horizon:
            self._table.add(custom_id, row)
