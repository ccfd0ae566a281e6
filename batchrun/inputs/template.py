"""A request template: how one row's columns become one request body.

A template is a TOML or JSON file with the endpoint, the id column and the body:

    endpoint = "/v1/chat/completions"   # optional: else --endpoint
    id = "question_id"                  # optional: else the row number
    [body]
    model = "gpt-4o-mini"
    messages = [{ role = "user", content = "Answer briefly: {{ question }}" }]

Guarantees:
- The body is built as a JSON *structure*: the template's own structure, with each string leaf
  rendered by a sandboxed Jinja2 environment. Rendered text only ever becomes a string value
  (escaped when the body is serialised), never JSON source, so a value holding quotes,
  newlines or `{{` cannot break or inject into the body, and is not rendered a second time.
- A leaf that is exactly one placeholder (`"{{ n }}"`) takes the value itself, with its own
  type: a number stays a number, a list a list. Any other leaf is a string; a number inside
  text is written as itself, a boolean, list or object as JSON (`true`, `["a"]`).
- A row that cannot fill the template (a missing column, a null where a value is needed, a
  type error) raises `RowProblem` naming the leaf and the column; the caller adds the line.
- Every leaf is compiled once, when the template is loaded; a syntax error is a
  `TemplateError` (a ValueError) naming the file and the leaf, before anything is read.
- `digest` identifies what the template builds (the id column and the body), not how it was
  given: a file and the equivalent command-line shortcuts have the same digest. The endpoint
  is not part of it: a run records the endpoint rows go to (the template's, else --endpoint)
  on its own, so the same requests to the same endpoint resume whichever way they were named.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from batchrun.inputs.rows import RowProblem

__all__ = ["COLUMNS_NAME", "Template", "TemplateError", "load_template", "shortcut_template"]

COLUMNS_NAME = "columns"  # every column by name: {{ columns["Question Text"] }}
_KEYS = ("endpoint", "id", "body")
_MARKERS = ("{{", "{%", "{#")
# A leaf that is one placeholder and nothing else, not even spaces around it.
_ONE_PLACEHOLDER = re.compile(r"\{\{-?(?P<expr>.*?)-?\}\}", re.DOTALL)
# What a user template may raise while rendering one row (besides our own errors): the row's
# values did not fit what the template does with them.
_RENDER_ERRORS = (
    jinja2.TemplateError,
    TypeError,
    ValueError,
    ArithmeticError,
    LookupError,
    RecursionError,
)

_Render = Callable[[dict[str, Any]], Any]


class TemplateError(ValueError):
    """The template file cannot be used: nothing is read or sent."""


class _Null(Exception):
    """A placeholder gave null (None): never sent as the text "None"."""


class _Columns(dict[str, Any]):
    """The row's columns as `columns`; its own type so a missing key names the column."""


class _MissingColumn(jinja2.StrictUndefined):
    """StrictUndefined whose error names the column: "the row has no column 'question'"."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_obj is missing or isinstance(self._undefined_obj, _Columns):
            return f"the row has no column {self._undefined_name!r}"
        message: str = jinja2.StrictUndefined._undefined_message.fget(self)  # type: ignore[attr-defined]
        return message


def _finalize(value: Any) -> Any:
    """What `{{ ... }}` writes into text: never "None", JSON for what Python would repr."""
    if isinstance(value, str):
        return value
    if value is None:
        raise _Null
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def _strict_int(value: Any) -> int:
    # Jinja's own `int` turns "5x" into 0 without a word: a wrong body sent, silently.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"cannot make an integer of {value!r}")


def _strict_float(value: Any) -> float:
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    raise ValueError(f"cannot make a finite number of {value!r}")


def _tojson(value: Any) -> str:
    # Jinja's own `tojson` escapes < > & ' for HTML: "\u003c" would reach the model as text.
    return json.dumps(value, ensure_ascii=False)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=_MissingColumn,
        finalize=_finalize,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters.update(int=_strict_int, float=_strict_float, tojson=_tojson)
    return env


_ENV = _environment()


class Template:
    """A loaded, compiled template (see the module docstring); equal when digest and endpoint
    are."""

    __slots__ = (
        "_render",
        "all_columns",
        "body",
        "columns",
        "digest",
        "endpoint",
        "id_column",
        "source",
    )

    def __init__(
        self,
        body: Mapping[str, Any],
        *,
        endpoint: str | None = None,
        id_column: str | None = None,
        source: str = "template",
    ) -> None:
        if not isinstance(body, Mapping):
            raise TemplateError(f"{source}: 'body' must be a table (object), got {_kind(body)}")
        if endpoint is not None and (not isinstance(endpoint, str) or not endpoint.startswith("/")):
            raise TemplateError(
                f"{source}: 'endpoint' must be a path such as \"/v1/chat/completions\", "
                f"got {endpoint!r}"
            )
        if id_column is not None and (not isinstance(id_column, str) or not id_column):
            raise TemplateError(f"{source}: 'id' must be a column name, got {id_column!r}")
        self.body = body
        self.endpoint = endpoint
        self.id_column = id_column
        self.source = source
        names: set[str] = set()
        uses: list[bool] = [False]
        self._render = _compile(dict(body), "body", source, names, uses)
        self.columns = frozenset(names)  # the columns the body names directly
        self.all_columns = uses[0]  # it reads `columns[...]`: any column may be needed
        spec = {"id": id_column, "body": body}
        canonical = json.dumps(spec, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        self.digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()

    def needed_columns(self) -> frozenset[str] | None:
        """The columns a row must provide (None: all of them), the id column included."""
        if self.all_columns:
            return None
        return self.columns | {self.id_column} if self.id_column else self.columns

    def render(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The body for one row's columns; RowProblem if the row cannot fill the template.

        Parts of the body without placeholders are shared between rows: do not mutate them."""
        context = dict(row)
        context[COLUMNS_NAME] = _Columns(row)
        body: dict[str, Any] = self._render(context)
        return body

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Template):
            return NotImplemented
        return (other.digest, other.endpoint) == (self.digest, self.endpoint)

    def __hash__(self) -> int:
        return hash((self.digest, self.endpoint))

    def __repr__(self) -> str:
        return f"<Template {self.source} sha256:{self.digest[:12]}>"


def load_template(path: Path, *, id_column: str | None = None) -> Template:
    """A template from a TOML (`.toml`) or JSON file; `id_column` overrides the file's `id`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TemplateError(f"cannot read the template {path}: {exc.strerror or exc}") from exc
    try:
        if path.suffix.lower() == ".json":
            doc = json.loads(data.decode("utf-8"))
        else:
            doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise TemplateError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"{path}: not valid TOML: {exc}") from None
    except json.JSONDecodeError as exc:
        raise TemplateError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(doc, dict):
        raise TemplateError(f"{path}: expected a table (object) at the top, got {_kind(doc)}")
    unknown = sorted(set(doc) - set(_KEYS))
    if unknown:
        raise TemplateError(
            f"{path}: unknown key {', '.join(map(repr, unknown))}; a template has "
            + ", ".join(map(repr, _KEYS))
        )
    if "body" not in doc:
        raise TemplateError(f"{path}: no 'body': the request body to build for each row")
    return Template(
        doc["body"],
        endpoint=doc.get("endpoint"),
        id_column=id_column if id_column is not None else doc.get("id"),
        source=str(path),
    )


def shortcut_template(
    *,
    model: str,
    prompt: str,
    system: str | None = None,
    max_tokens: int | None = None,
    endpoint: str = "/v1/chat/completions",
    id_column: str | None = None,
) -> Template:
    """The template `--model M --prompt P [--system S] [--max-tokens N]` stand for.

    Chat: `{"model", "messages": [system?, user], "max_tokens"?}`; Anthropic's Messages API
    (`/v1/messages`): `{"model", "max_tokens", "system"?, "messages": [user]}`, where max_tokens
    is required; embeddings: `{"model", "input"}`. It names no endpoint of its own: rows go to
    `endpoint` (--endpoint), as with a template file that names none. The same body in a file
    has the same digest."""
    source = "--prompt"
    if not model:
        raise TemplateError("--prompt needs --model: the model each request is sent to")
    body: dict[str, Any] = {"model": model}
    if endpoint == "/v1/embeddings":
        if system is not None or max_tokens is not None:
            raise TemplateError("--system and --max-tokens do not apply to /v1/embeddings")
        body["input"] = prompt
    elif endpoint == "/v1/chat/completions":
        system_message = [{"role": "system", "content": system}] if system is not None else []
        body["messages"] = [*system_message, {"role": "user", "content": prompt}]
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
    elif endpoint == "/v1/messages":
        if max_tokens is None:
            raise TemplateError(
                "--prompt for /v1/messages (Anthropic's Messages API) needs --max-tokens: "
                "the API requires max_tokens"
            )
        body["max_tokens"] = max_tokens
        if system is not None:
            body["system"] = system
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        raise TemplateError(
            f"--prompt builds chat, Messages API or embeddings requests, not {endpoint} ones; "
            "write a template file (--template) for that endpoint"
        )
    return Template(body, id_column=id_column, source=source)


# --- compiling ------------------------------------------------------------------------------


def _compile(value: Any, path: str, source: str, names: set[str], uses: list[bool]) -> _Render:
    """A function from a row's context to the value at `path`, compiled once."""
    if isinstance(value, Mapping):
        items = [(k, _compile(v, f"{path}.{k}", source, names, uses)) for k, v in value.items()]
        if all(getattr(f, "static", False) for _, f in items):
            return _static(value)
        return lambda ctx: {k: f(ctx) for k, f in items}
    if isinstance(value, list):
        parts = [_compile(v, f"{path}[{i}]", source, names, uses) for i, v in enumerate(value)]
        if all(getattr(f, "static", False) for f in parts):
            return _static(value)
        return lambda ctx: [f(ctx) for f in parts]
    if isinstance(value, str):
        if any(marker in value for marker in _MARKERS):
            return _compile_text(value, path, source, names, uses)
        return _static(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return _static(value)
    if isinstance(value, float) and math.isfinite(value):
        return _static(value)
    got = "a number that is not finite" if isinstance(value, float) else _kind(value)
    raise TemplateError(f"{source}: {_leaf(path)}: JSON cannot carry {got}; write it as a string")


def _static(value: Any) -> _Render:
    def render(ctx: dict[str, Any]) -> Any:
        return value

    render.static = True  # type: ignore[attr-defined]
    return render


def _compile_text(text: str, path: str, source: str, names: set[str], uses: list[bool]) -> _Render:
    where = _leaf(path)
    whole = _ONE_PLACEHOLDER.fullmatch(text)
    expr = whole.group("expr") if whole else None
    if expr is not None and any(m in expr for m in ("{{", "}}", "{%", "{#")):
        expr = None  # "{{ a }} and {{ b }}" also starts with {{ and ends with }}
    try:
        parsed = _ENV.parse(text)
        referenced = jinja2.meta.find_undeclared_variables(parsed)
        if expr is not None:
            expression = _ENV.compile_expression(expr, undefined_to_none=False)
        else:
            template = _ENV.from_string(parsed)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{source}: {where}: template syntax error: {exc.message}") from None
    uses[0] = uses[0] or COLUMNS_NAME in referenced
    leaf_names = sorted(referenced - {COLUMNS_NAME})
    names.update(leaf_names)

    def fail(exc: Exception, ctx: dict[str, Any]) -> RowProblem:
        if isinstance(exc, _Null):
            nulls = [n for n in leaf_names if n in ctx and ctx[n] is None]
            if len(nulls) == 1:
                return RowProblem(f"{where}: column {nulls[0]!r} is null (empty)")
            if nulls:
                return RowProblem(f"{where}: columns {', '.join(map(repr, nulls))} are null")
            return RowProblem(f"{where}: {_short(text)} gave null")
        return RowProblem(f"{where}: {exc}")

    if expr is not None:

        def render_value(ctx: dict[str, Any]) -> Any:
            try:
                value = expression(ctx)
                if isinstance(value, jinja2.Undefined):
                    str(value)  # raises, naming what is missing
                if value is None:
                    raise _Null
            except (_Null, *_RENDER_ERRORS) as exc:
                raise fail(exc, ctx) from None
            return value

        return render_value

    def render_text(ctx: dict[str, Any]) -> str:
        try:
            return template.render(ctx)
        except (_Null, *_RENDER_ERRORS) as exc:
            raise fail(exc, ctx) from None

    return render_text


def _leaf(path: str) -> str:
    return path.removeprefix("body.") if path != "body" else path


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _kind(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"
