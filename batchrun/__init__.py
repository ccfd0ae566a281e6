"""batchrun: bulk requests to OpenAI-compatible APIs, rate-limited, resumable, into Parquet.

import batchrun
summary = batchrun.run_sync(batchrun.RunConfig(input_path="in.jsonl", out_dir="out"))
"""

from batchrun.common.version import __version__
from batchrun.config import RunConfig
from batchrun.inputs.reader import InputError
from batchrun.inputs.template import Template, TemplateError, load_template, shortcut_template
from batchrun.models import ErrorType, Record, Request, RowError
from batchrun.runner.export import ExportConfig, ExportError, ExportSummary, export
from batchrun.runner.pipeline import RunControl, run, run_sync
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
