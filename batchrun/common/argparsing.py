"""The command line's plumbing that argparse lacks: "did you mean", plain type errors, and the
command as it was typed (for "resume with: ...").

Used by `batchrun.cli` (and any subcommand parser mounted under it, such as the mock server's).
"""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

__all__ = [
    "Parser",
    "command_as_typed",
    "fraction",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors suggest the closest option for a mistyped one.

    Python 3.11's argparse says "unrecognized arguments: --rmp" and stops there; this adds
    "(did you mean --rpm?)", also when the typo made a required option look missing.
    """

    _seen: list[str]

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._seen = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        super().error(message + self._suggestion())

    def _suggestion(self) -> str:
        parser = self._chosen_subparser() or self
        known = _option_strings(parser)
        hints = []
        for token in getattr(self, "_seen", []):
            name = token.split("=", 1)[0]
            if not name.startswith("--") or name in known or _abbreviates(name, known):
                continue
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
            if close:
                hints.append(f"{name}: did you mean {close[0]}?")
        return f" ({'; '.join(hints)})" if hints else ""

    def _chosen_subparser(self) -> argparse.ArgumentParser | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for token in getattr(self, "_seen", []):
                    if token in action.choices:
                        chosen: argparse.ArgumentParser = action.choices[token]
                        return chosen
        return None


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {
        option
        for action in parser._actions
        if action.help is not argparse.SUPPRESS
        for option in action.option_strings
        if option.startswith("--")
    }


def _abbreviates(name: str, known: set[str]) -> bool:
    """argparse accepts an unambiguous prefix of an option (`--conc` for `--concurrency`)."""
    return sum(option.startswith(name) for option in known) == 1


def _checked(convert: Callable[[str], Any], ok: Callable[[Any], bool], wanted: str) -> Any:
    """A type function whose every refusal reads "must be ..., got X" (argparse would show a
    ValueError as "invalid _positive_float value", naming the function)."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    return parse


positive_int: Callable[[str], int] = _checked(int, lambda v: v > 0, "a positive whole number")
non_negative_int: Callable[[str], int] = _checked(int, lambda v: v >= 0, "zero or more")
positive_float: Callable[[str], float] = _checked(float, lambda v: v > 0, "a positive number")
non_negative_float: Callable[[str], float] = _checked(
    float, lambda v: v >= 0, "zero or more seconds"
)
fraction: Callable[[str], float] = _checked(float, lambda v: 0 <= v <= 1, "between 0 and 1")


def command_as_typed() -> str:
    """This process's command line as the user typed it, to run again: `.venv/bin/batchrun run
    ...`, `python -m batchrun run ...`, or plain `batchrun run ...` when that is what PATH finds."""
    argv = list(sys.orig_argv)
    if "-m" in argv[:-1]:
        at = argv.index("-m")
        words = [argv[0], "-m", argv[at + 1], *sys.argv[1:]]
    else:
        program = sys.argv[0]
        name = os.path.basename(program)
        found = shutil.which(name)
        if found and os.path.realpath(found) == os.path.realpath(program):
            program = name  # PATH finds this very script: say it as the user did
        words = [program, *sys.argv[1:]]
    return shlex.join(words)
