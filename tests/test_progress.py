"""batchrun.runner.progress: the bar on a terminal, its clock, its note, "?" rows until counted."""

from __future__ import annotations

import io
import logging

import pytest

from batchrun.runner import progress as progress_module
from batchrun.runner.progress import Progress
from batchrun.runner.summary import RunTotals


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_bar_unless_stderr_is_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(total=10, initial=0, enabled=True, stream=stream)
    progress.tick("cannot connect to h:1, waiting up to 3 s (--max-outage)")
    progress.update(RunTotals())
    progress.close()
    assert stream.getvalue() == ""


def test_tick_redraws_with_the_note_in_front_and_drops_it_when_it_goes() -> None:
    stream = Terminal()
    progress = Progress(total=10, initial=0, enabled=True, stream=stream)
    progress.tick("cannot connect to h:1, waiting up to 3 s (--max-outage)")
    drawn = stream.getvalue().rsplit("\r", 1)[-1]
    assert drawn.startswith("cannot connect to h:1, waiting up to 3 s (--max-outage):")
    assert "0/10 [00:00<?" in drawn
    progress.tick(None)
    assert stream.getvalue().rsplit("\r", 1)[-1].lstrip().startswith("0%")
    progress.close()


class _Done(Exception):
    pass


@pytest.mark.anyio
async def test_keep_time_logs_an_outage_once_when_it_begins_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress_module, "_REFRESH_S", 0.0)
    notes = iter([None, "down", "down", "down", None, None])

    def note() -> str | None:
        try:
            return next(notes)
        except StopIteration:
            raise _Done from None

    progress = Progress(total=1, initial=0, enabled=False)
    caplog.set_level(logging.INFO, logger="batchrun")
    with pytest.raises(_Done):
        await progress.keep_time(note, lambda: "down (why)")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "down (why)"
    assert messages[1].startswith("the server answers again, after ")
    assert len(messages) == 2


def test_the_total_is_a_question_mark_until_the_first_pass_counts_the_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    progress = Progress(total=None, initial=3, enabled=True)
    assert screen.getvalue().endswith("3/? row [00:00, ?row/s]")
    progress.set_total(10)  # redrawn at once
    assert "3/10 [00:00<?, ?row/s]" in screen.getvalue().rsplit("\r", 1)[-1]
    progress.close()


def test_no_bar_when_not_a_terminal_or_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr("sys.stderr", screen)
    for enabled in (True, False):
        progress = Progress(total=None, initial=0, enabled=enabled)
        progress.update(RunTotals())
        progress.set_total(3)
        progress.close()
    assert screen.getvalue() == ""
