"""batchrun.runner.groupcommit: one write per turn of the loop, syncs at a bounded rate."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Sequence

import anyio
import pytest

from batchrun.models import Record
from batchrun.runner.groupcommit import GroupCommit

pytestmark = pytest.mark.anyio

GENEROUS_S = 20.0  # bounds a wait that should end at once; never reached unless broken


def record(row: int) -> Record:
    return Record(custom_id=f"r{row}", row=row, status="ok")


class Disk:
    """A fake journal: `write` remembers each group, `sync` when it started; either can fail,
    and `sync` can be made slow."""

    def __init__(self, *, write_error: OSError | None = None, sync_error: OSError | None = None):
        self.groups: list[list[int]] = []
        self.syncs: list[float] = []
        self.gate = threading.Event()
        self.gate.set()
        self.write_error, self.sync_error = write_error, sync_error
        self.sync_started: anyio.Event | None = None  # set on the loop as each sync starts

    def write(self, records: Sequence[Record]) -> None:
        if self.write_error is not None:
            raise self.write_error
        self.groups.append([r.row for r in records])

    def sync(self) -> None:
        self.syncs.append(time.monotonic())
        if self.sync_started is not None:
            anyio.from_thread.run_sync(self.sync_started.set)
        self.gate.wait(GENEROUS_S)
        if self.sync_error is not None:
            raise self.sync_error

    def commits(self, sync_interval_s: float) -> GroupCommit[Record]:
        return GroupCommit(self.write, self.sync, sync_interval_s=sync_interval_s)


async def test_the_answers_of_one_turn_of_the_loop_share_one_write() -> None:
    disk = Disk()
    commits = disk.commits(3600)
    done: list[int] = []

    async def worker(row: int) -> None:
        await commits.put(record(row))
        done.append(row)

    with anyio.fail_after(GENEROUS_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(commits.run_writes, pytest.fail)
            await anyio.wait_all_tasks_blocked()
            for row in range(5):  # five answers that came back together
                tg.start_soon(worker, row)
            await anyio.wait_all_tasks_blocked()
            assert disk.groups == [[0, 1, 2, 3, 4]] and sorted(done) == [0, 1, 2, 3, 4]
            await commits.put(record(5))  # later: a write of its own, at once
            assert disk.groups[-1] == [5]
            commits.close()


async def test_put_returns_only_once_the_record_is_written() -> None:
    disk = Disk()
    commits = disk.commits(3600)
    async with anyio.create_task_group() as tg:
        written = commits.add(record(0))
        assert not written.is_set() and disk.groups == []
        tg.start_soon(commits.run_writes, pytest.fail)
        with anyio.fail_after(GENEROUS_S):
            await written.wait()
        assert disk.groups == [[0]]
        commits.close()


async def test_a_failed_write_is_reported_once_and_nobody_is_left_waiting() -> None:
    disk = Disk(write_error=OSError(errno.ENOSPC, "No space left on device"))
    errors: list[OSError] = []
    commits = disk.commits(3600)
    with anyio.fail_after(GENEROUS_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(commits.run_writes, errors.append)
            await commits.put(record(0))
            await commits.put(record(1))  # not written: the journal failed
            commits.close()
    assert [e.strerror for e in errors] == ["No space left on device"]
    assert commits.error is errors[0] and commits.writes == 1


async def test_syncs_start_at_once_after_a_quiet_spell_then_at_most_one_per_interval() -> None:
    disk = Disk()
    interval_s = 0.05
    commits = disk.commits(interval_s)
    async with anyio.create_task_group() as tg:
        tg.start_soon(commits.run_writes, pytest.fail)
        tg.start_soon(commits.run_syncs, pytest.fail)
        started = anyio.current_time()
        for row in range(300):  # an answer every millisecond or so
            await commits.put(record(row))
            await anyio.sleep(0.001)
        elapsed_s = anyio.current_time() - started
        commits.close()
    assert [row for group in disk.groups for row in group] == list(range(300))
    assert 2 <= len(disk.syncs) <= elapsed_s / interval_s + 2
    gaps = [b - a for a, b in zip(disk.syncs, disk.syncs[1:-1], strict=False)]
    # The close's last sync left out. Not one per answer (1 ms apart): spaced by the interval,
    # less what a loaded machine's thread scheduling takes off one of them.
    assert all(gap >= interval_s * 0.5 for gap in gaps)


async def test_nobody_waits_for_a_slow_sync() -> None:
    disk = Disk()
    disk.gate.clear()  # a disk that takes its time
    disk.sync_started = anyio.Event()
    commits = disk.commits(0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(commits.run_writes, pytest.fail)
        tg.start_soon(commits.run_syncs, pytest.fail)
        with anyio.fail_after(GENEROUS_S):
            await commits.put(record(0))
            await disk.sync_started.wait()
            for row in range(1, 20):
                await commits.put(record(row))  # written and returned, the sync still under way
        assert len(disk.syncs) == 1  # one at a time
        disk.gate.set()
        commits.close()
    assert [row for group in disk.groups for row in group] == list(range(20))


async def test_a_failed_sync_is_reported_and_ends_the_syncs() -> None:
    disk = Disk(sync_error=OSError(errno.EIO, "Input/output error"))
    errors: list[OSError] = []
    commits = disk.commits(0)
    with anyio.fail_after(GENEROUS_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(commits.run_writes, errors.append)
            tg.start_soon(commits.run_syncs, errors.append)
            await commits.put(record(0))
            await anyio.sleep(0.05)
            await commits.put(record(1))  # still written: a resume may yet use it
            commits.close()
    assert [e.strerror for e in errors] == ["Input/output error"]
    assert commits.sync_error is errors[0] and commits.error is None
    assert len(disk.syncs) == 1 and disk.groups == [[0], [1]]


async def test_close_writes_what_is_pending_and_syncs_at_once() -> None:
    disk = Disk()
    commits = disk.commits(3600)
    with anyio.fail_after(GENEROUS_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(commits.run_writes, pytest.fail)
            tg.start_soon(commits.run_syncs, pytest.fail)
            await commits.put(record(0))
            await anyio.wait_all_tasks_blocked()  # its sync is done; the next one is an hour away
            commits.add(record(1))
            commits.close()
    assert disk.groups == [[0], [1]] and len(disk.syncs) == 2


async def test_write_now_writes_at_once_for_the_instant_before_a_hard_exit() -> None:
    disk = Disk()
    commits = disk.commits(3600)
    written = commits.add(record(7))
    commits.write_now(pytest.fail)  # no task needed: called from the signal handler's task
    assert written.is_set() and disk.groups == [[7]]


def test_sync_before_exit_does_not_wait_for_a_disk_that_hangs() -> None:
    disk = Disk()
    commits = disk.commits(0)
    assert commits.sync_before_exit(timeout_s=GENEROUS_S) is True
    disk.gate.clear()
    started = time.monotonic()
    assert commits.sync_before_exit(timeout_s=0.2) is False
    assert time.monotonic() - started < GENEROUS_S / 2
    disk.gate.set()


def test_sync_before_exit_reports_a_failed_sync() -> None:
    commits = Disk(sync_error=OSError(errno.EIO, "Input/output error")).commits(0)
    assert commits.sync_before_exit(timeout_s=GENEROUS_S) is False


def test_the_sync_interval_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="sync_interval_s must be zero or more, got -1"):
        Disk().commits(-1)


async def test_put_synced_returns_only_after_a_sync_that_started_after_its_write() -> None:
    disk = Disk()
    commits = disk.commits(0.02)
    order: list[tuple[int, int]] = []  # (row, syncs started when its put_synced returned)

    async def intent(row: int) -> None:
        await commits.put_synced(record(row))
        order.append((row, len(disk.syncs)))

    with anyio.fail_after(GENEROUS_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(commits.run_writes, pytest.fail)
            tg.start_soon(commits.run_syncs, pytest.fail)
            disk.gate.clear()  # the first sync hangs until let go
            disk.sync_started = anyio.Event()
            tg.start_soon(intent, 0)
            await disk.sync_started.wait()
            tg.start_soon(intent, 1)  # written while the first sync is on the disk
            await anyio.wait_all_tasks_blocked()
            assert order == [] and disk.groups == [[0], [1]]
            disk.sync_started = None
            disk.gate.set()
            await anyio.sleep(0.2)
            commits.close()
    # Row 1 was written during the first sync: only the second one covers it.
    assert sorted(order)[0][1] >= 1 and sorted(order)[1] == (1, 2)


async def test_put_synced_raises_when_the_sync_fails() -> None:
    disk = Disk(sync_error=OSError(errno.EIO, "Input/output error"))
    commits = disk.commits(0)
    errors: list[OSError] = []
    with anyio.fail_after(GENEROUS_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(commits.run_writes, errors.append)
            tg.start_soon(commits.run_syncs, errors.append)
            with pytest.raises(OSError, match="Input/output"):
                await commits.put_synced(record(0))
            with pytest.raises(OSError, match="Input/output"):
                await commits.put_synced(record(1))  # after the syncs ended: not left waiting
            commits.close()
