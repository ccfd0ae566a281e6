"""batchrun: bulk requests to OpenAI-compatible APIs, rate-limited, resumable, into Parquet.

import batchrun
summary = batchrun.run_sync(batchrun.RunConfig(input_path="in.jsonl", out_dir="out"))

The public names are loaded on first use (PEP 562): `python -m batchrun.<module>` and the
commands that send nothing (`batchrun models`, `quota`, `estimate`) then import only what they
need, not the HTTP engines and the whole pipeline (~0.4 s).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from batchrun.common.version import __version__

if TYPE_CHECKING:
    from batchrun.config import RunConfig
    from batchrun.inputs.rows import InputError
    from batchrun.inputs.template import Template, TemplateError, load_template, shortcut_template
    from batchrun.models import ErrorType, Record, Request, RowError
    from batchrun.runner.control import RunControl
    from batchrun.runner.export import ExportConfig, ExportError, ExportSummary, export
    from batchrun.runner.pipeline import run, run_sync
    from batchrun.runner.summary import RunSummary
    from batchrun.store.checkpoint import CheckpointError, OutputLockedError

__all__ = [
    "CheckpointError",
    "ErrorType",
    "ExportConfig",
    "ExportError",
    "ExportSummary",
    "InputError",
    "OutputLockedError",
    "Record",
    "Request",
    "RowError",
    "RunConfig",
    "RunControl",
    "RunSummary",
    "Template",
    "TemplateError",
    "__version__",
    "export",
    "load_template",
    "run",
    "run_sync",
    "shortcut_template",
]

_WHERE = {
    "CheckpointError": "batchrun.store.checkpoint",
    "ErrorType": "batchrun.models",
    "InputError": "batchrun.inputs.rows",
    "OutputLockedError": "batchrun.store.checkpoint",
    "Record": "batchrun.models",
    "Request": "batchrun.models",
    "RowError": "batchrun.models",
    "RunConfig": "batchrun.config",
    "RunControl": "batchrun.runner.control",
    "RunSummary": "batchrun.runner.summary",
    "Template": "batchrun.inputs.template",
    "TemplateError": "batchrun.inputs.template",
    "load_template": "batchrun.inputs.template",
    "shortcut_template": "batchrun.inputs.template",
    "ExportConfig": "batchrun.runner.export",
    "ExportError": "batchrun.runner.export",
    "ExportSummary": "batchrun.runner.export",
    "export": "batchrun.runner.export",
    "run": "batchrun.runner.pipeline",
    "run_sync": "batchrun.runner.pipeline",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'batchrun' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later look-ups are ordinary attributes
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
