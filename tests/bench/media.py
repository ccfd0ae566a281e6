"""Benchmark: peak RSS of a run whose one answer is a 200 MB audio file vs one of 10 KB.

The mock streams the speech answer chunked as it makes it (`mock_audio_bytes`), so neither end
holds the answer: batchrun streams it into `OUT/media/`. Memory must not grow with the size of
a media answer (DESIGN.md, invariant 4): peak RSS at 200 MB within 10% of that at 10 KB. Each
size runs `--repeat` times, each in a new process and a new output; the medians are compared.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.bench.context import Context
from tests.bench.procs import BenchError
from tests.bench.report import Row, median, met

__all__ = ["media_memory"]

_SIZES = (10_000, 200_000_000)
_MP3_FRAME_BYTES = 417


@dataclass(frozen=True, slots=True)
class MediaFigures:
    answer_bytes: int
    wall_s: float
    max_rss_mb: float

    def show(self) -> str:
        return (
            f"answer of {self.answer_bytes:,} bytes: {self.wall_s:.1f} s, "
            f"peak RSS {self.max_rss_mb:,.1f} MB"
        )


def _speech_input(ctx: Context, size: int) -> Path:
    path = ctx.tmp / f"media-{size}.jsonl"
    body = {"model": "tts-1", "input": "A long read.", "voice": "alloy", "mock_audio_bytes": size}
    line = {"custom_id": "big", "method": "POST", "url": "/v1/audio/speech", "body": body}
    path.write_text(json.dumps(line) + "\n")
    return path


def _one_run(ctx: Context, base_url: str, size: int) -> MediaFigures:
    out = ctx.out_dir("media")
    child = ctx.batchrun_run(_speech_input(ctx, size), out, base_url)
    try:
        result = ctx.finish(child, 120)
        saved = [p.stat().st_size for p in (out / "media").rglob("*") if p.is_file()]
    finally:
        ctx.remove(out)
    if len(saved) != 1 or not size - 2 * _MP3_FRAME_BYTES < saved[0] <= size:
        raise BenchError(f"the answer of {size:,} bytes was saved as files of {saved} bytes")
    return MediaFigures(
        answer_bytes=size, wall_s=result.wall_s, max_rss_mb=result.max_rss_kb / 1024
    )


def media_memory(ctx: Context) -> list[Row]:
    ctx.log(f"[media] peak RSS of a run whose answer is {_SIZES[0]:,} vs {_SIZES[1]:,} bytes")
    found: dict[int, list[MediaFigures]] = {size: [] for size in _SIZES}
    with ctx.mock() as mock:
        for _ in range(ctx.settings.repeat):
            for size in _SIZES:
                figures = _one_run(ctx, mock.base_url, size)
                ctx.log(f"  {figures.show()}")
                found[size].append(figures)
        requests = mock.stats()["requests"]["by_path"].get("/v1/audio/speech", 0)
    if requests != len(_SIZES) * ctx.settings.repeat:
        raise BenchError(f"the mock saw {requests} speech requests, one per run expected")
    peaks = {size: median([f.max_rss_mb for f in runs]) for size, runs in found.items()}
    small, large = (peaks[size] for size in _SIZES)
    ratio = large / small
    rows = [
        Row(
            bench="media",
            measure=f"batchrun peak RSS, one speech answer of {size / 1e6:,.2f} MB",
            value=f"{peaks[size]:,.1f} MB (median of {len(found[size])})",
            data={"runs": [asdict(f) for f in found[size]]},
        )
        for size in _SIZES
    ]
    rows.append(
        Row(
            bench="media",
            measure=f"peak RSS ratio, answer {_SIZES[1] / 1e6:,.0f} MB / {_SIZES[0] / 1e3:,.0f} KB",
            value=f"{ratio:.3f}x",
            target="<= 1.10x",
            met=met(ratio <= 1.10),
            data={"ratio": ratio},
        )
    )
    return rows
