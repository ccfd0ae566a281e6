"""The first pass over a new input: its own process, at low priority, while the run sends.

    python -m batchrun.runner.scan SETTINGS_JSON      (started by `batchrun.runner.firstpass`)

One read of the input does everything the run used to do before its first request: count the
rows, judge every row's custom_id (`IdBuckets`: which rows repeat an earlier row's id), estimate
tokens and cost, and collect the models the rows name. It tells the parent on stdout, one JSON
object a line:

    {"event": "progress", "rows": N}                          about every second
    {"event": "models", "models": [...]}                      once, after the first rows
    {"event": "counted", "rows": N, "estimate": {...}|null, "models": [...]}
    {"event": "judged", "duplicates": K, "file": PATH|null}   PATH: the list, in the scratch dir
    {"event": "error", "message": "..."}                      the input cannot be read (exit 2)

Why a process and not a thread (measured on this project's 2-core machine, a bare aiohttp loop
at C=64 against the mock, with a 1M-row estimating pass alongside, both pinned to one core):
4,890-5,260 req/s alone; 2,280-2,330 with the pass in a thread (the GIL); 2,200-2,300 with it in
a process at the same priority; 4,730-4,860 with it in a process at nice 10. On a second core it
costs the sender nothing at all.

Guarantees:
- It writes only in the scratch directory it is given (under OUT, which the parent has locked)
  and never sends anything.
- It ends when the parent does: it exits as soon as its stdin reaches end of file (the parent
  closes it to stop it early, and the kernel closes it if the parent is killed).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchrun.inputs.template import Template

__all__ = ["ScanSettings", "Stopped", "main", "run_pass"]

_PROGRESS_EVERY_S = 1.0
_EARLY_MODELS_ROWS = 2000
_MAX_MODELS = 1000  # distinct names reported: enough for any real input, bounded for any other
_NICE = 10

Emit = Callable[[dict[str, Any]], None]


class Stopped(Exception):
    """`run_pass` was asked to stop (in a thread: a process is simply ended)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanSettings:
    input_path: Path
    scratch_dir: Path
    endpoint: str
    max_row_bytes: int
    estimate: bool
    prices_file: Path | None = None
    max_output_tokens: int | None = None  # --max-output-tokens: the ceiling of unlimited rows
    memory_bytes: int = 8 << 20  # id entries held before spilling to bucket files
    # A template's body, endpoint, id column and source (the child compiles it again).
    template: dict[str, Any] | None = None
    files_root: Path | None = None  # --files-root: where the estimate reads whisper's audio

    @staticmethod
    def template_spec(template: Template | None) -> dict[str, Any] | None:
        if template is None:
            return None
        return {
            "body": template.body,
            "endpoint": template.endpoint,
            "id_column": template.id_column,
            "source": template.source,
        }

    def load_template(self) -> Template | None:
        if self.template is None:
            return None
        from batchrun.inputs.template import Template

        spec = self.template
        return Template(
            spec["body"],
            endpoint=spec["endpoint"],
            id_column=spec["id_column"],
            source=spec["source"],
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "input_path": str(self.input_path),
                "scratch_dir": str(self.scratch_dir),
                "endpoint": self.endpoint,
                "max_row_bytes": self.max_row_bytes,
                "estimate": self.estimate,
                "prices_file": None if self.prices_file is None else str(self.prices_file),
                "max_output_tokens": self.max_output_tokens,
                "memory_bytes": self.memory_bytes,
                "template": self.template,
                "files_root": None if self.files_root is None else str(self.files_root),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ScanSettings:
        data = json.loads(text)
        prices = data.get("prices_file")
        files_root = data.get("files_root")
        return cls(
            input_path=Path(data["input_path"]),
            scratch_dir=Path(data["scratch_dir"]),
            endpoint=str(data["endpoint"]),
            max_row_bytes=int(data["max_row_bytes"]),
            estimate=bool(data["estimate"]),
            prices_file=None if prices is None else Path(prices),
            max_output_tokens=data.get("max_output_tokens"),
            memory_bytes=int(data["memory_bytes"]),
            template=data.get("template"),
            files_root=None if files_root is None else Path(files_root),
        )


def run_pass(
    settings: ScanSettings, emit: Emit, *, should_stop: Callable[[], bool] = lambda: False
) -> None:
    """The pass itself, in the calling thread (`batchrun.runner.firstpass` runs it so for small
    inputs). Raises `InputError`, or `Stopped` soon after `should_stop` turns true."""
    from batchrun.inputs.idcheck import IdBuckets
    from batchrun.inputs.reader import iter_rows
    from batchrun.inputs.rows import ParsedRow
    from batchrun.store.duplicates import write_duplicates

    builder = _estimate_builder(settings) if settings.estimate else None
    models: dict[str, None] = {}
    early_sent = False
    next_progress = time.monotonic() + _PROGRESS_EVERY_S
    with IdBuckets(settings.scratch_dir, memory_bytes=settings.memory_bytes) as ids:
        rows = iter_rows(
            settings.input_path,
            endpoint=settings.endpoint,
            max_row_bytes=settings.max_row_bytes,
            raw=False,
            template=settings.load_template(),
        )
        for item in rows:
            ids.add(item.custom_id, item.row)
            if builder is not None:
                builder.add(item)
            if isinstance(item, ParsedRow):
                model = item.body.get("model")
                if isinstance(model, str) and model not in models and len(models) < _MAX_MODELS:
                    models[model] = None
            if item.row % 512 == 0:
                if should_stop():
                    raise Stopped
                if not early_sent and item.row >= _EARLY_MODELS_ROWS:
                    emit({"event": "models", "models": list(models)})
                    early_sent = True
                if time.monotonic() >= next_progress:
                    emit({"event": "progress", "rows": item.row})
                    next_progress = time.monotonic() + _PROGRESS_EVERY_S
        estimate = builder.result().to_dict() if builder is not None else None
        emit({"event": "counted", "rows": ids.total_rows, "estimate": estimate,
              "models": list(models)})  # fmt: skip
        listed = settings.scratch_dir / "duplicates.bin"
        found = write_duplicates(listed, ids.duplicates(should_stop=should_stop))
        if should_stop():
            raise Stopped
    if not found:
        listed.unlink()
    emit({"event": "judged", "duplicates": found, "file": str(listed) if found else None})


def _estimate_builder(settings: ScanSettings) -> Any:
    from batchrun.cost.estimate import EstimateBuilder
    from batchrun.cost.pricebook import PriceBook

    prices = PriceBook.load(settings.prices_file, max_output_tokens=settings.max_output_tokens)
    return EstimateBuilder(prices, input=str(settings.input_path), files_root=settings.files_root)


def _exit_with_the_parent() -> None:
    """Stop at once when stdin ends: the parent closed it, or the parent is gone."""

    def watch() -> None:
        # The raw descriptor, not sys.stdin: a buffered reader's lock held by this thread would
        # abort the interpreter's shutdown.
        while os.read(0, 4096):
            pass
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _stdout_emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    settings = ScanSettings.from_json(args[0])
    if hasattr(os, "nice"):
        os.nice(_NICE)  # sending goes first when both want the same core
    _exit_with_the_parent()
    from batchrun.inputs.rows import InputError

    try:
        run_pass(settings, _stdout_emit)
    except InputError as exc:
        _stdout_emit({"event": "error", "message": str(exc)})
        return 2
    except BrokenPipeError:
        return 0  # the parent is gone
    return 0


if __name__ == "__main__":
    sys.exit(main())
