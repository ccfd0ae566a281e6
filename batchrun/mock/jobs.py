"""What every endpoint family of the mock shares: a validated request (`Job`) and its checks.

A family's module turns a decoded request into a `Job`: what it charges the TPM budget, and how
to build the answer (its bytes, its content type, the tokens it reports). The ladder that runs
it (auth, rate limit, faults, latency) is the same for every family (`batchrun.mock.app`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchrun.mock.http import JSON

__all__ = ["Invalid", "Job", "model_of", "optional_int"]


@dataclass(slots=True)
class Job:
    """A validated API request: what it costs the TPM budget, and how to answer it."""

    model: str
    charge: int
    build: Callable[[bool], tuple[bytes, int, int]]  # with_usage -> body, prompt, completion
    content_type: bytes = JSON
    status: int = 200  # a family whose refusals are answers of their own (Midjourney's code 4)
    hang: bool = False  # built (a task created), then the connection hangs: the client times out


class Invalid(ValueError):
    """A request the API refuses with a 400, naming the parameter."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def optional_int(data: dict[str, Any], name: str, low: int, high: int | None = None) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise Invalid(f"Invalid '{name}': expected an integer >= {low}.", name)
    if high is not None and value > high:
        raise Invalid(f"Invalid '{name}': expected an integer <= {high}.", name)
    return value


def model_of(data: dict[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise Invalid("you must provide a model parameter", "model")
    return model
