"""batchrun.runner.progress: the bar on a terminal, with "?" rows until they are counted."""

from __future__ import annotations

import io

import pytest

from batchrun.runner.progress import Progress
from batchrun.runner.summary import RunTotals


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_total_is_a_question_mark_until_the_first_pass_counts_the_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    screen = _Terminal()
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
