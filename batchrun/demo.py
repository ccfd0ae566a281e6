"""`make demo`: the main job on the built-in example, with no key and no network.

Starts the mock server on a free 127.0.0.1 port (a little latency and a few injected 429s and
500s, so that retries show; prompt tokens counted as OpenAI counts them; replies that echo the
question), runs `batchrun run samples/requests.jsonl` against it as a user would, then shows the
estimate next to the actual usage (`batchrun report`), a few questions joined to their answers,
and how to read the results. Then `samples/families.jsonl` (speech, transcriptions, images,
Claude, Gemini, ...) into `demo-out/families`, the models the server lists (`GET /v1/models`),
and the answer of each row and the media files saved.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["main"]

_SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "requests.jsonl"
_FAMILIES = _SAMPLES.with_name("families.jsonl")


def main(out_dir: Path = Path("demo-out")) -> int:
    from batchrun.mock import MockConfig, MockServer

    if out_dir.exists():
        shutil.rmtree(out_dir)
    config = MockConfig(
        port=0,
        latency_ms=30,
        jitter_ms=20,
        faults={"429": 0.01, "500": 0.02},
        exact_tokens=True,  # so that the estimate and the actual prompt tokens agree
        echo=True,  # so that the join below is visibly right
    )
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
        print("\n$ batchrun report", out_dir)
        subprocess.call([sys.executable, "-m", "batchrun", "report", str(out_dir)])
        _show_results(out_dir)
        families = out_dir / "families"
        print(
            f"\n$ batchrun run samples/families.jsonl --out {families} --base-url", server.base_url
        )
        code = subprocess.call(
            [sys.executable, "-m", "batchrun", "run", str(_FAMILIES), "--out", str(families),
             "--base-url", server.base_url, "-q"],
            env=env,
        )  # fmt: skip
        if code == 0:  # the one family that is not a row: what the server lists
            print("\n$ batchrun models --base-url", server.base_url)
            models = [sys.executable, "-m", "batchrun", "models", "--base-url", server.base_url]
            code = subprocess.call(models, env=env)
    if code != 0:
        return code
    _show_families(families)
    return 0


def _show_families(out_dir: Path) -> None:
    import pyarrow.dataset as ds

    records = sorted(
        ds.dataset(out_dir / "results", format="parquet").to_table().to_pylist(),
        key=lambda r: r["row"],
    )
    print("\nevery endpoint family, its answer in typed columns:")
    for r in records:
        if r["status"] != "ok":
            shown = f"error: {r['error_message']}"
        elif r["embedding"]:
            shown = f"embedding: {len(r['embedding'])} vectors of {len(r['embedding'][0])}"
        elif r["tool_calls"]:
            calls = json.loads(r["tool_calls"])
            shown = "tool_calls: " + ", ".join(f"{c['name']}({c['arguments']})" for c in calls)
        elif r["media"]:
            shown = f"{len(r['media'])} media file" + ("s" if len(r["media"]) > 1 else "")
        else:
            shown = f"text {_short(r['text'] or '', 50)}"
        cost = "cost unknown" if r["cost_usd"] is None else f"${r['cost_usd']:.6f}"
        print(f"  {r['custom_id']:<16} {r['endpoint'][:38]:<38} {shown}  [{cost}]")
    media = [(r["custom_id"], m) for r in records for m in (r["media"] or [])]
    print(f"\nmedia files saved under {out_dir}/media ({len(media)}):")
    for custom_id, path in media:
        size = (out_dir / path).stat().st_size
        print(f"  {path}  {size:>9,} bytes  ({custom_id})")


def _show_results(out_dir: Path) -> None:
    import pyarrow.dataset as ds

    table = ds.dataset(out_dir / "results", format="parquet").to_table()
    by_endpoint = table.group_by(["endpoint", "status"]).aggregate([("row", "count")])
    print("\nresults by endpoint and status:")
    for row in by_endpoint.sort_by("endpoint").to_pylist():
        print(f"  {row['endpoint']:<24} {row['status']:<6} {row['row_count']:>5}")
    print(f"  retried rows: {pc.sum(pc.greater(table['attempts'], 1)).as_py()}")
    _show_join(table)
    print(
        f"""
read the results (an ordinary Parquet dataset, one record per input row, joinable by custom_id):
  python -c "import pyarrow.dataset as ds; print(ds.dataset('{out_dir}/results').to_table())"
  python -c "import pandas as pd; print(pd.read_parquet('{out_dir}/results').head())"
  duckdb -c "select status, count(*) from '{out_dir}/results/*.parquet' group by status"
run it again and nothing is sent twice:  batchrun run samples/requests.jsonl --out {out_dir} ..."""
    )


def _show_join(table: Any) -> None:
    """Three chat rows of the input next to their answers, joined on custom_id."""
    asked: dict[str, str] = {}
    with _SAMPLES.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            messages = row.get("body", {}).get("messages")
            if isinstance(messages, list) and isinstance(messages[-1].get("content"), str):
                asked[row["custom_id"]] = messages[-1]["content"]
            if len(asked) >= 3:
                break
    print("\nthe input joined to the results on custom_id (the mock echoes each question):")
    for record in table.filter(pc.is_in(table["custom_id"], pa.array(list(asked)))).to_pylist():
        answer = json.loads(record["response"])["choices"][0]["message"]["content"]
        print(f"  {record['custom_id']}: asked  {_short(asked[record['custom_id']])}")
        print(f"  {' ' * len(record['custom_id'])}  answer {_short(answer)}")


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


if __name__ == "__main__":
    raise SystemExit(main())
