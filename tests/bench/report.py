"""The one table `make bench` prints, its JSON twin, and the machine it was measured on."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["Row", "commit", "machine", "median", "met", "render", "to_json"]

_PACKAGES = ("batchrun", "aiohttp", "uvloop", "httpx2", "anyio", "pyarrow")


@dataclass(slots=True, kw_only=True)
class Row:
    """One line of the table; `data` holds the raw figures for the JSON."""

    bench: str
    measure: str
    value: str
    target: str = ""
    met: str = ""  # "yes", "NO", or "" when there is no target
    data: dict[str, Any] = field(default_factory=dict)


def met(ok: bool) -> str:
    return "yes" if ok else "NO"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def commit() -> str:
    """`git describe` of the checkout being measured: the code changes under a long run."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "commit": commit(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "versions": {p: _version(p) for p in _PACKAGES},
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _load(values: list[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in values)


def render(info: dict[str, Any], rows: list[Row]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    lines = [
        f"batchrun benchmarks, {info['started']}"
        + (" (--quick)" if info.get("quick") else "")
        + f", medians of {info.get('repeat', 1)} runs where repeated",
        f"machine: {info['cpu']}, {info['cores']} cores ({info.get('layout', '')}), "
        f"Linux {info['kernel']}",
        f"software: Python {info['python']}, {versions}; commit {info['commit']} at start, "
        f"{info.get('commit_end', '?')} at end",
        f"load average (1/5/15 min): {_load(info['load_average_start'])} at start, "
        f"{_load(info.get('load_average_end', []))} at end; a shared machine: read the ratios",
        "",
    ]
    header = ("benchmark", "measure", "value", "target", "met")
    table = [header] + [(r.bench, r.measure, r.value, r.target, r.met) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def to_json(info: dict[str, Any], rows: list[Row]) -> str:
    return json.dumps({"machine": info, "rows": [asdict(r) for r in rows]}, indent=2) + "\n"
