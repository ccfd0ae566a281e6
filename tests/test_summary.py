"""batchrun.runner.summary: exit codes and the lines printed at the end."""

from __future__ import annotations

from pathlib import Path

from batchrun.models import Record
from batchrun.runner.summary import RunSummary, RunTotals, render_summary


def summary(**fields: object) -> RunSummary:
    settings: dict[str, object] = {
        "out_dir": Path("/data/runs/june"),
        "total_rows": 10,
        "done_rows": 10,
        "ok": 8,
        "errors": 2,
        "session": RunTotals(),
        "elapsed_s": 2.0,
        "stopped": None,
    }
    settings.update(fields)
    return RunSummary(**settings)  # type: ignore[arg-type]


def test_exit_code_4_only_when_asked_and_the_output_holds_errors() -> None:
    assert summary().exit_code == 0
    assert summary(fail_on_errors=True).exit_code == 4
    assert summary(fail_on_errors=True, ok=10, errors=0).exit_code == 0
    assert summary(fail_on_errors=True, done_rows=5, stopped="interrupted").exit_code == 3
    text = render_summary(summary(fail_on_errors=True), command="batchrun run x")
    assert "  2 rows ended in error: exit code 4 (--fail-on-errors)" in text


def test_a_resume_shows_this_runs_cost_next_to_the_whole_outputs() -> None:
    totals = RunTotals()
    record = Record(custom_id="1", row=1, status="ok", attempts=1)
    totals.add(record)
    totals.add_costs([record], [0.25])  # priced as the run commits it
    text = render_summary(
        summary(session=totals, cost_usd=1.0, done_before=6), command="batchrun run x"
    )
    assert "  whole output: 8 ok, 2 errors (resumed at 6 done)" in text
    assert "  cost: $0.2500 this run; $1.0000 whole output" in text
    assert "  results: /data/runs/june/results" in text
