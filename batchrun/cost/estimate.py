"""What a run will cost before it is sent: tokens and USD per model and endpoint.

    iter_rows(input) ──► EstimateBuilder.add(item) ... ──► .result() ──► Estimate
                                                                        ├─► render_estimate() table
                                                                        ├─► to_json() / from_json()
                                                                        └─► save_estimate(OUT)

Per (model, endpoint) an `Estimate` holds: rows; prompt tokens (`batchrun.cost.tokens`, the
model's own tiktoken encoding and OpenAI's message overheads); max output tokens (`max_tokens` /
`max_completion_tokens` x `n`) summed over the rows that set one, and how many did not; expected
output tokens by a stated `OutputRule`; cost in USD from the `PriceBook`:

- low: the prompt only (no cached-input discount assumed, the book's rates: online unless it is a
  batch book);
- expected: prompt + expected output;
- high: prompt + max output. A row that sets no maximum counts its expected output here, so high
  is an upper bound only when `rows_without_max == 0` (`cost_high_is_upper_bound`); otherwise
  the table and the run's estimate line say "no upper bound" and how many rows set no limit.
  Always low <= expected <= high. For those rows `output_ceiling` says what `--max-cost` reserves
  per choice instead (`PriceBook.output_ceiling`).

Guarantees:
- With `batch_prices` (`batchrun estimate --backend openai-batch`), every group also carries its
  three costs at the Batch API's prices (`batch_cost_*_usd`, `batch_price_source`), from the same
  token counts, so online and batch can be shown side by side.
- An unknown price gives `None` costs ("unknown" in the table), never 0.
- `exact` is True only when every row of the group was counted with the model's own encoding by a
  published rule; otherwise `note` / `inexact_reasons` say what was approximated (the encoding it
  fell back to, the chars/4 heuristic, images of unknown size...).
- `add` costs one token count and a dict lookup per row: prices are applied per group when a price
  is linear, per row only for models with long-context price tiers. Memory is bounded by the number
  of (model, endpoint) groups, not by the number of rows.
- `to_json` / `from_json` round-trip; the keys are listed in `Estimate.to_dict`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from batchrun.cost.pricebook import PriceBook
from batchrun.cost.tokens import (
    DEFAULT_OUTPUT_RULE,
    OutputRule,
    count_request_tokens,
    expected_output_tokens,
    max_output_tokens,
    tokenizer_for,
)
from batchrun.cost.units import row_units
from batchrun.endpoints.profiles import profile_for
from batchrun.inputs.files import FilesRoot
from batchrun.inputs.reader import DEFAULT_ENDPOINT, ParsedRow, iter_rows, resolve_uploads
from batchrun.inputs.sniff import check_sendable
from batchrun.inputs.template import Template
from batchrun.models import RowError
from batchrun.store.checkpoint import atomic_write_bytes

__all__ = [
    "ESTIMATE_NAME",
    "Estimate",
    "EstimateBuilder",
    "EstimateError",
    "GroupEstimate",
    "estimate_file",
    "load_estimate",
    "merge_estimates",
    "save_estimate",
]

ESTIMATE_NAME = "estimate.json"
FORMAT = "batchrun-estimate"
FORMAT_VERSION = 1
_MAX_REASONS = 8
_MAX_BAD_EXAMPLES = 5
_MAX_SEEN_NOTES = 256
_DERIVED = ("inexact_reasons", "cost_high_is_upper_bound")  # rebuilt, or derived, on reading


class EstimateError(ValueError):
    """An estimate document that cannot be read (damaged, or of another format version)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupEstimate:
    """The estimate for one (model, endpoint): token counts, USD costs and how they were made."""

    model: str | None
    endpoint: str
    rows: int
    prompt_tokens: int
    max_output_tokens: int | None  # None: no row of the group set a maximum
    rows_without_max: int
    expected_output_tokens: int
    cost_low_usd: float | None  # None: price unknown, never 0
    cost_expected_usd: float | None
    cost_high_usd: float | None
    encoding: str | None  # None: the ceil(characters / 4) heuristic
    exact: bool
    inexact_rows: int
    note: str  # how the model's tokenizer was found, or what it fell back to
    inexact_reasons: tuple[str, ...] = ()
    price_source: str | None = None
    output_ceiling: int | None = None  # rows without a max: what --max-cost assumes per choice
    output_ceiling_source: str | None = None
    # At the Batch API's prices, when the builder had them (else None, as for unknown prices).
    batch_cost_low_usd: float | None = None
    batch_cost_expected_usd: float | None = None
    batch_cost_high_usd: float | None = None
    batch_price_source: str | None = None

    @property
    def priced(self) -> bool:
        return None not in (self.cost_low_usd, self.cost_expected_usd, self.cost_high_usd)

    @property
    def cost_high_is_upper_bound(self) -> bool:
        return self.rows_without_max == 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    """The estimate of a whole input: one `GroupEstimate` per (model, endpoint), plus bad rows."""

    groups: tuple[GroupEstimate, ...]
    bad_rows: int = 0
    bad_row_examples: tuple[RowError, ...] = ()  # the first few
    output_rule: OutputRule = DEFAULT_OUTPUT_RULE
    model_override: str | None = None
    input: str | None = None
    batch_backend: str | None = None  # the batch costs are this backend's (e.g. "openai-batch")

    @property
    def exact(self) -> bool:
        return all(g.exact for g in self.groups)

    def totals(self) -> dict[str, Any]:
        """Sums over the groups. A cost sums the groups that have it; None when none has it (and
        there are rows); `rows_unpriced` counts the rows whose cost is (partly) unknown."""
        groups = self.groups
        with_max = [g.max_output_tokens for g in groups if g.max_output_tokens is not None]
        totals: dict[str, Any] = {
            "rows": sum(g.rows for g in groups),
            "prompt_tokens": sum(g.prompt_tokens for g in groups),
            "max_output_tokens": sum(with_max) if with_max else None,
            "rows_without_max": sum(g.rows_without_max for g in groups),
            "expected_output_tokens": sum(g.expected_output_tokens for g in groups),
        }
        keys = ["cost_low_usd", "cost_expected_usd", "cost_high_usd"]
        if self.batch_backend is not None:
            keys += [f"batch_{key}" for key in keys]
        for key in keys:
            known = [getattr(g, key) for g in groups if getattr(g, key) is not None]
            totals[key] = sum(known) if known or not groups else None
        totals["rows_unpriced"] = sum(g.rows for g in groups if not g.priced)
        totals["cost_high_is_upper_bound"] = totals["rows_without_max"] == 0
        totals["exact"] = self.exact
        return totals

    def to_dict(self) -> dict[str, Any]:
        """The JSON document. Keys (stable within `version` 1):

        format, version, input, model_override, output_rule {fraction_of_max, tokens_without_max},
        exact, groups [{model, endpoint, rows, prompt_tokens, max_output_tokens, rows_without_max,
        expected_output_tokens, cost_low_usd, cost_expected_usd, cost_high_usd,
        cost_high_is_upper_bound, encoding, exact, inexact_rows, note, inexact_reasons,
        price_source, output_ceiling, output_ceiling_source, batch_cost_low_usd,
        batch_cost_expected_usd, batch_cost_high_usd, batch_price_source}], totals {rows,
        prompt_tokens, max_output_tokens, rows_without_max, expected_output_tokens, cost_low_usd,
        cost_expected_usd, cost_high_usd, rows_unpriced, cost_high_is_upper_bound, exact, and
        with batch_backend: batch_cost_low_usd, batch_cost_expected_usd, batch_cost_high_usd},
        bad_rows, bad_row_examples [{row, custom_id, message, line}], batch_backend (null, or
        the backend whose Batch API prices the batch_* costs are at). Costs are USD; null means
        unknown. cost_high_usd is an upper bound only where cost_high_is_upper_bound is true.
        """
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "input": self.input,
            "model_override": self.model_override,
            "output_rule": {
                "fraction_of_max": self.output_rule.fraction_of_max,
                "tokens_without_max": self.output_rule.tokens_without_max,
            },
            "exact": self.exact,
            "groups": [
                {
                    **asdict(g),
                    "inexact_reasons": list(g.inexact_reasons),
                    "cost_high_is_upper_bound": g.cost_high_is_upper_bound,
                }
                for g in self.groups
            ],
            "totals": self.totals(),
            "bad_rows": self.bad_rows,
            "bad_row_examples": [asdict(b) for b in self.bad_row_examples],
            "batch_backend": self.batch_backend,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Estimate:
        """The estimate `to_dict` made; raises EstimateError on another format or a damaged one."""
        if doc.get("format") != FORMAT or doc.get("version") != FORMAT_VERSION:
            raise EstimateError(
                f"not a {FORMAT} version {FORMAT_VERSION} document "
                f"(format={doc.get('format')!r}, version={doc.get('version')!r})"
            )
        try:
            groups = tuple(
                GroupEstimate(
                    **{k: v for k, v in g.items() if k not in _DERIVED},
                    inexact_reasons=tuple(g.get("inexact_reasons", ())),
                )
                for g in doc["groups"]
            )
            rule = OutputRule(**doc["output_rule"])
            bad = tuple(RowError(**b) for b in doc.get("bad_row_examples", ()))
            return cls(
                groups=groups,
                bad_rows=int(doc["bad_rows"]),
                bad_row_examples=bad,
                output_rule=rule,
                model_override=doc.get("model_override"),
                input=doc.get("input"),
                batch_backend=doc.get("batch_backend"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EstimateError(f"damaged estimate document: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> Estimate:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise EstimateError(f"estimate is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise EstimateError("estimate is not a JSON object")
        return cls.from_dict(doc)


@dataclass(slots=True)
class _Group:
    """Running sums for one (model, endpoint); mutated only by its EstimateBuilder."""

    model: str | None
    endpoint: str
    tiered: bool  # long-context price tiers: costs are summed row by row in `costs`
    embeddings: bool
    rows: int = 0
    prompt: int = 0
    max_out: int = 0
    no_max: int = 0
    no_max_expected: int = 0  # expected output of the rows without a max (part of "high")
    expected: int = 0
    inexact: int = 0
    reasons: dict[str, None] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    costs: list[float | None] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # None: unknown
    batch_costs: list[float | None] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    units: dict[str, float] = field(default_factory=dict)  # billed besides tokens (cost.units)


class EstimateBuilder:
    """Feed it every row (`ParsedRow` or `RowError`) once; `result()` at any time.

    `model_override` counts and prices every row as that model (a what-if; the rows are not
    changed). `batch_prices` (with `batch_backend`, its name) prices every group a second time at
    the Batch API's rates. Not thread-safe: one builder per reader.
    """

    def __init__(
        self,
        prices: PriceBook,
        *,
        model_override: str | None = None,
        rule: OutputRule = DEFAULT_OUTPUT_RULE,
        input: str | None = None,
        batch_prices: PriceBook | None = None,
        batch_backend: str | None = None,
        files_root: Path | None = None,
    ) -> None:
        if (batch_prices is None) != (batch_backend is None):
            raise ValueError("batch_prices and batch_backend go together")
        self._prices = prices
        self._batch_prices = batch_prices
        self._batch_backend = batch_backend
        self._override = model_override
        self._rule = rule
        self._fraction = rule.fraction_of_max
        self._input = input
        # Files rows upload (whisper's audio) are read where the run reads them: --files-root,
        # by default the input's folder.
        if files_root is None:
            files_root = Path(input).parent if input is not None else Path()
        self._files_root = files_root
        self._files = FilesRoot(files_root)
        self._groups: dict[tuple[str | None, str], _Group] = {}
        self._bad_rows = 0
        self._bad_examples: list[RowError] = []

    def add(self, item: ParsedRow | RowError) -> None:
        if not isinstance(item, RowError) and profile_for(item.url).files:
            # A file outside the files root, missing or too large: the run would not send it.
            resolved = resolve_uploads(item, self._files)
            if isinstance(resolved, RowError):
                item = resolved
        if isinstance(item, RowError):
            self._bad_rows += 1
            if len(self._bad_examples) < _MAX_BAD_EXAMPLES:
                self._bad_examples.append(item)
            return
        body, url = item.body, item.url
        model = body.get("model")
        if self._override is not None and model != self._override:
            model = self._override
            body = {**body, "model": model}
        elif not isinstance(model, str):
            model = None
        group = self._groups.get((model, url))
        if group is None:
            group = self._groups[(model, url)] = self._new_group(model, url)
        units = row_units(url, body, self._files_root)
        if units is not None:  # speech, whisper, dall-e: priced by what they bill, not tokens
            group.rows += 1
            for unit, quantity in units.items():
                group.units[unit] = group.units.get(unit, 0.0) + quantity
            return
        count = count_request_tokens(url, body)
        group.rows += 1
        group.prompt += count.tokens
        if group.embeddings:
            maximum: int | None = 0
            expected = 0
        else:
            maximum = max_output_tokens(body)
            if maximum is None:
                group.no_max += 1
                expected = expected_output_tokens(body, self._rule)
                group.no_max_expected += expected
            else:
                group.max_out += maximum
                # expected_output_tokens' rule, without working out the maximum a second time
                expected = math.ceil(maximum * self._fraction)
            group.expected += expected
        if not count.exact:
            self._inexact(group, count.note)
        if group.tiered:
            high = expected if maximum is None else maximum
            self._add_row_costs(group, count.tokens, expected, high)

    def _new_group(self, model: str | None, url: str) -> _Group:
        books = [self._prices] if self._batch_prices is None else [self._prices, self._batch_prices]
        prices = [book.price_for(model) for book in books]
        tiered = any(price is not None and bool(price.tiers) for price in prices)
        return _Group(model, url, tiered, url.split("?", 1)[0].rstrip("/").endswith("/embeddings"))

    def _inexact(self, group: _Group, note: str) -> None:
        group.inexact += 1
        # Rows of one group repeat a handful of notes: each distinct one is split up only once.
        if note in group.seen or len(group.reasons) >= _MAX_REASONS:
            return
        if len(group.seen) < _MAX_SEEN_NOTES:
            group.seen.add(note)
        prefix = tokenizer_for(group.model).note
        # A row's note is the tokenizer's note followed by "; "-joined reasons of its own.
        for reason in note.removeprefix(prefix).removeprefix("; ").split("; "):
            if reason and len(group.reasons) < _MAX_REASONS:
                group.reasons[reason] = None

    def _add_row_costs(self, group: _Group, prompt: int, expected: int, maximum: int) -> None:
        books = [(self._prices, group.costs)]
        if self._batch_prices is not None:
            books.append((self._batch_prices, group.batch_costs))
        for book, costs in books:
            for i, completion in enumerate((0, expected, maximum)):
                so_far = costs[i]
                if so_far is None:
                    continue
                cost = book.cost_usd(
                    group.model, prompt_tokens=prompt, completion_tokens=completion
                )
                costs[i] = None if cost is None else so_far + cost

    def result(self) -> Estimate:
        """The estimate of every row added so far (groups sorted by model, then endpoint)."""
        groups = sorted(self._groups.values(), key=lambda g: (g.model or "", g.endpoint))
        return Estimate(
            groups=tuple(self._finish(g) for g in groups),
            bad_rows=self._bad_rows,
            bad_row_examples=tuple(self._bad_examples),
            output_rule=self._rule,
            model_override=self._override,
            input=self._input,
            batch_backend=self._batch_backend,
        )

    def _costs(self, group: _Group, book: PriceBook, tiered: list[float | None]) -> list[Any]:
        if group.units:  # billed by characters, audio, images: the same whatever the output
            billed = book.billed_cost(group.model, group.units)
            return [billed, billed, billed]
        if group.tiered:
            return list(tiered)
        # Linear rates: the cost of the sums is the sum of the per-row costs.
        return [
            book.cost_usd(group.model, prompt_tokens=group.prompt, completion_tokens=completion)
            for completion in (0, group.expected, group.max_out + group.no_max_expected)
        ]

    def _finish(self, group: _Group) -> GroupEstimate:
        info = tokenizer_for(group.model)
        price = self._prices.price_for(group.model)
        ceiling = self._prices.output_ceiling(group.model) if group.no_max else None
        low, expected, high = self._costs(group, self._prices, group.costs)
        batch: dict[str, Any] = {}
        if self._batch_prices is not None:
            costs = self._costs(group, self._batch_prices, group.batch_costs)
            batch_price = self._batch_prices.price_for(group.model)
            batch = {
                "batch_cost_low_usd": costs[0],
                "batch_cost_expected_usd": costs[1],
                "batch_cost_high_usd": costs[2],
                "batch_price_source": batch_price.source if batch_price is not None else None,
            }
        return GroupEstimate(
            model=group.model,
            endpoint=group.endpoint,
            rows=group.rows,
            prompt_tokens=group.prompt,
            max_output_tokens=None if group.no_max == group.rows else group.max_out,
            rows_without_max=group.no_max,
            expected_output_tokens=group.expected,
            cost_low_usd=low,
            cost_expected_usd=expected,
            cost_high_usd=high,
            encoding=info.encoding,
            exact=info.exact and group.inexact == 0,
            inexact_rows=group.inexact,
            note=info.note,
            inexact_reasons=tuple(group.reasons),
            price_source=price.source if price is not None else None,
            output_ceiling=ceiling.tokens if ceiling is not None else None,
            output_ceiling_source=ceiling.source if ceiling is not None else None,
            **batch,
        )


def estimate_file(
    path: Path,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    prices: PriceBook,
    model_override: str | None = None,
    rule: OutputRule = DEFAULT_OUTPUT_RULE,
    template: Template | None = None,
    batch_prices: PriceBook | None = None,
    batch_backend: str | None = None,
    files_root: Path | None = None,
) -> Estimate:
    """Stream `path` through the reader (as `run` does) and estimate every row; with a
    template, the bodies it renders, the same ones `run` sends; with `batch_prices`, also at
    the Batch API's prices of `batch_backend`. Files rows upload are read inside `files_root`
    (default: the input's folder), as `run` reads them; a row whose file is outside it, missing
    or too large is a bad row, as in the run.

    Raises `batchrun.inputs.reader.InputError` when the file as a whole cannot be read, or no
    row of it could be sent (`batchrun.inputs.sniff`).
    """
    check_sendable(path, endpoint=endpoint, template=template)
    builder = EstimateBuilder(
        prices,
        model_override=model_override,
        rule=rule,
        input=str(path),
        batch_prices=batch_prices,
        batch_backend=batch_backend,
        files_root=files_root,
    )
    add = builder.add
    for item in iter_rows(path, endpoint=endpoint, template=template):
        add(item)
    return builder.result()


def save_estimate(out_dir: Path, estimate: Estimate) -> Path:
    """Write `OUT/estimate.json` atomically (a reader sees the old file or the new one)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ESTIMATE_NAME
    atomic_write_bytes(path, estimate.to_json().encode("utf-8"))
    return path


def load_estimate(out_dir: Path) -> Estimate | None:
    """`OUT/estimate.json`, or None when there is none; EstimateError when it is damaged."""
    path = out_dir / ESTIMATE_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise EstimateError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return Estimate.from_json(data)
    except EstimateError as exc:
        raise EstimateError(f"{path}: {exc}") from exc


_SUMMED = {
    "rows", "prompt_tokens", "rows_without_max", "expected_output_tokens",
    "cost_low_usd", "cost_expected_usd", "cost_high_usd", "inexact_rows",
    "batch_cost_low_usd", "batch_cost_expected_usd", "batch_cost_high_usd",
}  # fmt: skip


def merge_estimates(parts: list[Estimate]) -> Estimate | None:
    """One estimate of the rows of `parts` (a cluster's shards), as one pass over all of them
    would make it: per (model, endpoint), counts and costs added (a cost unknown in any part
    is unknown), groups in the builder's order, the rest as the first part has it."""
    if not parts:
        return None
    groups: dict[tuple[str | None, str], GroupEstimate] = {}
    for part in parts:
        for g in part.groups:
            key = (g.model, g.endpoint)
            had = groups.get(key)
            if had is None:
                groups[key] = g
                continue
            changes: dict[str, Any] = {}
            for name in _SUMMED:
                a, b = getattr(had, name), getattr(g, name)
                changes[name] = None if a is None or b is None else a + b
            # None: no row of that part set a maximum, which says nothing of the other's rows.
            if had.max_output_tokens is not None or g.max_output_tokens is not None:
                changes["max_output_tokens"] = (had.max_output_tokens or 0) + (
                    g.max_output_tokens or 0
                )
            if had.output_ceiling is None:  # set only where some row has no maximum
                changes["output_ceiling"] = g.output_ceiling
                changes["output_ceiling_source"] = g.output_ceiling_source
            changes["exact"] = had.exact and g.exact
            reasons = had.inexact_reasons + g.inexact_reasons
            changes["inexact_reasons"] = tuple(dict.fromkeys(reasons))
            groups[key] = replace(had, **changes)
    first = parts[0]
    return replace(
        first,
        groups=tuple(sorted(groups.values(), key=lambda g: (g.model or "", g.endpoint))),
        bad_rows=sum(p.bad_rows for p in parts),
        bad_row_examples=tuple(e for p in parts for e in p.bad_row_examples)[:5],
    )
