"""`make demo`: the main job on the built-in example, with no key and no network.

Starts the mock server on a free 127.0.0.1 port (a little latency and a few injected 429s and
500s, so that retries show), runs `batchrun run samples/requests.jsonl` against it as a user
would, and shows how to read the results.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["main"]

_SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "requests.jsonl"


def main(out_dir: Path = Path("demo-out")) -> int:
    from batchrun.mock import MockConfig, MockServer

    if out_dir.exists():
        shutil.rmtree(out_dir)
    config = MockConfig(port=0, latency_ms=30, jitter_ms=20, faults={"429": 0.01, "500": 0.02})
    with MockServer(config) as server:
        print(f"mock OpenAI-compatible server on {server.base_url} (no key, no network)\n")
        command = [
            sys.executable, "-m", "batchrun", "run", str(_SAMPLES),
            "--out", str(out_dir), "--base-url", server.base_url, "--concurrency", "16",
        ]  # fmt: skip
        print("$ batchrun run samples/requests.jsonl --out demo-out --base-url", server.base_url)
        env = dict(os.environ, OPENAI_API_KEY="sk-demo-not-a-key")
        code = subprocess.call(command, env=env)
    if code != 0:
        return code
    _show_results(out_dir)
    return 0


def _show_results(out_dir: Path) -> None:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = ds.dataset(out_dir / "results", format="parquet").to_table()
    by_endpoint = table.group_by(["endpoint", "status"]).aggregate([("row", "count")])
    print("\nresults by endpoint and status:")
    for row in by_endpoint.sort_by("endpoint").to_pylist():
        print(f"  {row['endpoint']:<24} {row['status']:<6} {row['row_count']:>5}")
    print(f"  retried rows: {pc.sum(pc.greater(table['attempts'], 1)).as_py()}")
    print(
        f"""
read the results (an ordinary Parquet dataset, one record per input row, joinable by custom_id):
  python -c "import pyarrow.dataset as ds; print(ds.dataset('{out_dir}/results').to_table())"
  python -c "import pandas as pd; print(pd.read_parquet('{out_dir}/results').head())"
  duckdb -c "select status, count(*) from '{out_dir}/results/*.parquet' group by status"
run it again and nothing is sent twice:  batchrun run samples/requests.jsonl --out {out_dir} ..."""
    )


if __name__ == "__main__":
    raise SystemExit(main())
