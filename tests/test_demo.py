"""`make demo` (`python -m batchrun.demo`): it runs, and its summary lists what it saved."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import read_results

FAMILIES = [
    "/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings",
    "/v1/audio/speech", "/v1/audio/transcriptions", "/v1/audio/translations",
    "/v1/images/generations", "/v1/images/edits", "/v1/messages", "/v1beta/models/gemini",
]  # fmt: skip
_MEDIA_LINE = re.compile(r"^  (media/\S+)\s+([\d,]+) bytes  \((\S+)\)$")


@pytest.mark.slow
def test_the_demo_runs_every_family_and_lists_the_media_files_it_saved(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "batchrun.demo"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    shown = done.stdout
    families = tmp_path / "demo-out" / "families"
    records = read_results(families)
    assert [r["status"] for r in records] == ["ok"] * len(records)
    endpoints = {r["endpoint"] for r in records}
    assert all(any(e.startswith(f) for e in endpoints) for f in FAMILIES), endpoints
    assert "tool_calls: get_weather(" in shown
    assert "embedding: 2 vectors of 8" in shown
    assert "$ batchrun models" in shown and "whisper-1" in shown  # GET /v1/models
    listed = [m.groups() for line in shown.splitlines() if (m := _MEDIA_LINE.match(line))]
    saved = {(m, r["custom_id"]) for r in records for m in (r["media"] or [])}
    assert f"media files saved under {families.relative_to(tmp_path)}/media (5):" in shown
    assert {(path, custom_id) for path, _, custom_id in listed} == saved
    for path, size, _ in listed:
        assert (families / path).stat().st_size == int(size.replace(",", ""))
    on_disk = {str(p.relative_to(families)) for p in (families / "media").rglob("*") if p.is_file()}
    assert on_disk == {m for m, _ in saved}
