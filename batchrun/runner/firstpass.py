"""The first pass over a new input, run alongside sending, and the id judge the reader asks.

    FirstPass(settings).run()  ──►  child: python -m batchrun.runner.scan   (nice 10)
         │ .rows_read, .early_models, .counted (rows, estimate, models), .judged (repeats)
         ▼
    Verdicts: the reader's judge of custom_ids
         rows below the horizon: its own table, at once (`batchrun.inputs.idtable`)
         every row, once the first pass has judged them all: the list under OUT

Guarantees:
- The pass is owned by the task that runs `FirstPass.run`: when that task ends (the run
  finished, stopped, or was cancelled) the child process (or the worker thread, for a small
  input) is stopped and waited for, shielded from the cancellation, and its scratch directory
  removed. A child that dies or cannot read the input
  is reported in `failure`; `counted` and `judged` are set either way, so nobody waits forever.
- A row is judged exactly as the child judges it (same digests, same reader), so switching the
  judge from the table to the list mid-run cannot change a verdict. The switch happens only
  between the reader's chunks (`Verdicts.adopt_offer`), never while a chunk is being read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from batchrun.cost.estimate import Estimate
from batchrun.inputs.idtable import Pending, TableJudge
from batchrun.inputs.rows import InputError
from batchrun.runner.scan import ScanSettings, Stopped, run_pass
from batchrun.store.duplicates import DuplicateCursor, install_duplicates

__all__ = ["FirstPass", "Verdicts"]

log = logging.getLogger("batchrun")

_MAX_EVENT_BYTES = 64 << 20  # an estimate with very many (model, endpoint) groups still fits
_STDERR_TAIL = 2000
_STOP_GRACE_S = 5.0


class FirstPass:
    """The first pass (`batchrun.runner.scan.run_pass`), and what it has said so far.

    `in_process`: in a worker thread of this process, for small inputs (no second interpreter
    to start, and the pass is over in well under a second); else in a child process.
    """

    def __init__(self, settings: ScanSettings, *, in_process: bool = False) -> None:
        self.settings = settings
        self.in_process = in_process
        self.rows_read = 0
        self.early_models: list[str] | None = None
        self.total_rows: int | None = None
        self.estimate: Estimate | None = None
        self.models: list[str] = []
        self.duplicates: int | None = None
        self.duplicates_file: Path | None = None  # in OUT, moved out of the scratch directory
        self.failure: str | None = None
        self.first_models = anyio.Event()  # early models, counted, or failure
        self.counted = anyio.Event()
        self.judged = anyio.Event()
        self._stderr = b""

    @property
    def done(self) -> bool:
        """Every row judged, and the pass ended well."""
        return self.judged.is_set() and self.failure is None

    async def run(self) -> None:
        """Run the pass to its end; stop it if cancelled. Never raises: see `failure`."""
        try:
            if self.in_process:
                await self._run_in_a_thread()
            else:
                await self._run_in_a_process()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(
                    lambda: shutil.rmtree(self.settings.scratch_dir, ignore_errors=True)
                )
            if self.failure is None and not self.judged.is_set():
                self.failure = "the first pass over the input was stopped"
            for event in (self.first_models, self.counted, self.judged):
                event.set()

    async def _run_in_a_thread(self) -> None:
        stop = threading.Event()
        ended = threading.Event()
        started = False  # under `lock`, with `stop`: a thread that never started is not waited for
        lock = threading.Lock()

        def emit(event: dict[str, Any]) -> None:
            anyio.from_thread.run_sync(self._handle, self._install(event))

        def work() -> None:
            nonlocal started
            with lock:
                if stop.is_set():
                    return
                started = True
            try:
                run_pass(self.settings, emit, should_stop=stop.is_set)
            except Stopped:
                pass
            except InputError as exc:
                anyio.from_thread.run_sync(self._handle, {"event": "error", "message": str(exc)})
            finally:
                ended.set()

        try:
            await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
        finally:
            with lock:
                stop.set()  # a cancelled run: the thread stops within a few hundred rows
                running = started
            if running:  # else `work` never runs, or returns at once: nothing to wait for
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(ended.wait)

    async def _run_in_a_process(self) -> None:
        command = [sys.executable, "-m", "batchrun.runner.scan", self.settings.to_json()]
        try:
            process = await anyio.open_process(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as exc:
            self.failure = f"cannot start the first pass over the input: {exc}"
            return
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_stderr, process)
                await self._follow(process)
            code = await process.wait()
            if not self.judged.is_set() and self.failure is None:
                tail = self._stderr.decode("utf-8", "replace").strip().splitlines()
                detail = tail[-1] if tail else f"exit status {code}"
                self.failure = f"the first pass over the input stopped unexpectedly: {detail}"
        finally:
            with anyio.CancelScope(shield=True):
                await _stop(process)

    async def _follow(self, process: Process) -> None:
        assert process.stdout is not None
        lines = BufferedByteReceiveStream(process.stdout)
        while True:
            try:
                line = await lines.receive_until(b"\n", _MAX_EVENT_BYTES)
            except (anyio.EndOfStream, anyio.IncompleteRead):
                return
            event = json.loads(line)
            if event.get("event") == "judged" and event.get("file"):
                event = await anyio.to_thread.run_sync(self._install, event)
            self._handle(event)

    def _install(self, event: dict[str, Any]) -> dict[str, Any]:
        """Blocking. The list of repeated rows moves out of the scratch directory (removed at
        the end) before anyone is told: OUT/duplicates.bin is in place before a checkpoint can
        count it."""
        if event.get("event") == "judged" and event.get("file"):
            out_dir = self.settings.scratch_dir.parent
            event = {**event, "file": str(install_duplicates(out_dir, Path(event["file"])))}
        return event

    async def _keep_stderr(self, process: Process) -> None:
        assert process.stderr is not None
        async for chunk in process.stderr:
            self._stderr = (self._stderr + chunk)[-_STDERR_TAIL:]

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.rows_read = int(event["rows"])
        elif kind == "models":
            self.early_models = [str(m) for m in event["models"]]
            self.first_models.set()
        elif kind == "counted":
            self.total_rows = self.rows_read = int(event["rows"])
            estimate = event.get("estimate")
            self.estimate = Estimate.from_dict(estimate) if estimate is not None else None
            self.models = [str(m) for m in event["models"]]
            self.first_models.set()
            self.counted.set()
        elif kind == "judged":
            self.duplicates = int(event["duplicates"])
            file = event.get("file")
            self.duplicates_file = Path(file) if file else None
            self.judged.set()
        elif kind == "error":
            self.failure = str(event["message"])


async def _stop(process: Process) -> None:
    """Close its stdin (it exits at once), wait a little, then kill it."""
    if process.returncode is None and process.stdin is not None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await process.stdin.aclose()
        with anyio.move_on_after(_STOP_GRACE_S):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
    await process.aclose()


class Verdicts:
    """The reader's judge: a table of the rows below `horizon`, or the first pass's list.

    `Verdicts.known(cursor)` starts from a finished list (a resumed output); `Verdicts(horizon)`
    from the table, until `offer` hands it the list (None: no row repeats an id).
    """

    def __init__(self, horizon: int) -> None:
        self._table: TableJudge | None = TableJudge(horizon)
        self._cursor: DuplicateCursor | None = None
        self._offer: DuplicateCursor | None = None
        self._offered = anyio.Event()
        self.horizon = horizon

    @classmethod
    def known(cls, cursor: DuplicateCursor) -> Verdicts:
        verdicts = cls(1)
        verdicts._table = None
        verdicts._cursor = cursor
        return verdicts

    @property
    def waiting_for_the_list(self) -> bool:
        return self._table is not None

    def verdict(self, row: int, custom_id: str) -> int | Pending | None:
        if self._table is not None:
            return self._table.verdict(row, custom_id)
        if self._cursor is not None:
            return self._cursor.first_row_of(row)
        return None

    def seen_below(self) -> int:
        return self.horizon if self._table is not None else 0

    def seen(self, row: int, custom_id: str) -> None:
        if self._table is not None:
            self._table.seen(row, custom_id)

    def offer(self, cursor: DuplicateCursor | None) -> None:
        """The first pass has judged every row: its list (None when no row repeats an id)."""
        self._offer = cursor
        self._offered.set()

    def adopt_offer(self) -> bool:
        """Between chunks only: switch to the offered list, if there is one. True if switched."""
        if self._table is None or not self._offered.is_set():
            return False
        self._table = None  # its memory goes back: the list covers every row
        self._cursor = self._offer
        return True

    async def wait_offer(self) -> None:
        await self._offered.wait()

    def close(self) -> None:
        for cursor in (self._cursor, self._offer):
            if cursor is not None:
                cursor.close()
