"""Benchmark 8: what a first pass running alongside costs the sender, by where it runs.

    python -m tests.bench.contention MODE INPUT BIG BASE_URL    (one measurement; MODE below)

A bare aiohttp loop (`tests.bench.bare`) sends INPUT at C=64 while batchrun's first pass
(`batchrun.runner.scan.run_pass`: ids, estimate, models) reads BIG: not at all (`alone`), in a
thread of the same process (`thread`: the GIL), or in a child process at nice 0 or nice 10
(`process`, `process-nice10`). Both run on the client's core, as `make bench` pins them, which
is the worst case: on a second free core a process costs the sender nothing. Prints one JSON
line `{"mode", "requests", "rate"}`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import anyio

from tests.bench import bare
from tests.bench.context import Context
from tests.bench.report import Row, median

__all__ = ["MODES", "contention"]

MODES = ("alone", "thread", "process", "process-nice10")


def _scan(big: Path) -> None:
    from batchrun.runner.scan import ScanSettings, run_pass

    with tempfile.TemporaryDirectory() as scratch:
        settings = ScanSettings(
            input_path=big,
            scratch_dir=Path(scratch),
            endpoint="/v1/chat/completions",
            max_row_bytes=16 << 20,
            estimate=True,
        )
        run_pass(settings, lambda event: None)


def _measure(mode: str, path: Path, big: Path, base_url: str) -> dict[str, object]:
    child: subprocess.Popen[bytes] | None = None
    if mode == "thread":
        threading.Thread(target=_scan, args=(big,), daemon=True).start()
    elif mode.startswith("process"):
        nice = 10 if mode.endswith("nice10") else 0
        code = (
            f"import os; os.nice({nice}); "
            f"from tests.bench.contention import _scan; _scan({str(big)!r})"
        )
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)
    time.sleep(0.6)  # the pass is under way (imports, encodings) before the first request
    try:
        result = anyio.run(bare.run, path, base_url, 64, backend_options=bare._loop_options())
    finally:
        if child is not None:
            child.kill()
            child.wait()
    requests, elapsed_s = result["requests"], result["elapsed_s"]
    assert isinstance(requests, int) and isinstance(elapsed_s, float)
    return {"mode": mode, "requests": requests, "rate": requests / elapsed_s}


def contention(ctx: Context) -> list[Row]:
    rows = 10_000 if ctx.settings.quick else 50_000
    ctx.log(f"[contention] bare aiohttp loop, {rows:,} requests, C=64, with a 1M-row first pass")
    path = ctx.chat_input(rows)
    big = ctx.chat_input(1_000_000)
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    with ctx.mock() as mock:
        for k in range(ctx.settings.repeat):
            for mode in MODES:  # interleaved, so that the machine's load hits every mode alike
                mock.reset()
                child = ctx.bench_module(
                    "tests.bench.contention", mode, str(path), str(big), mock.base_url
                )
                ctx.finish(child, rows / 50 + 120)
                rate = float(json.loads(ctx.output(child).splitlines()[-1])["rate"])
                rates[mode].append(rate)
                ctx.log(f"  round {k + 1} {mode:15s} {rate:,.0f} req/s")
    alone = median(rates["alone"])
    return [
        Row(
            bench="contention",
            measure=f"bare loop with a first pass alongside, same core: {mode}",
            value=f"{median(rates[mode]):,.0f} req/s = {median(rates[mode]) / alone:.2f}x alone",
            data={"rates": rates[mode]},
        )
        for mode in MODES
    ]


def main() -> int:
    mode, path, big, base_url = sys.argv[1:5]
    if mode not in MODES:
        raise SystemExit(f"MODE must be one of {', '.join(MODES)}")
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    print(json.dumps(_measure(mode, Path(path), Path(big), base_url)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
