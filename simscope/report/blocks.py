"""Plain data the report's templates lay out: table cells and tables, and JSON as blocks.

Nothing here writes markup. A ``Cell`` says what a table cell shows (its text, sort key, an
interval or a note under it, a bar, a corpus-origin tag); ``json_blocks`` turns any JSON value
(the CV summary's generic fields, the provenance) into paragraphs, tables, lists, headings and
preformatted text. ``templates/macros.html.j2`` draws both.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from simscope.report.plots import fmt_num

# -- cells and tables -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    """A horizontal bar drawn before a cell's text."""

    width_px: int
    negative: bool = False


@dataclass(frozen=True, slots=True)
class Cell:
    """One table cell; every string is shown as text (the template escapes it)."""

    text: str = ""
    cls: str = ""
    sort: str | None = None
    """The ``data-sort`` key the table script sorts by ("" = missing); None: sort by text."""
    sub: str = ""
    """A muted line under the text: an interval, or a description of a row's key."""
    title: str = ""
    bar: Bar | None = None
    lines: tuple[str, ...] = ()
    """Several short lines shown instead of ``text`` (a small mapping)."""
    code: bool = False
    origin: str = ""
    """A corpus-origin tag after the text ("imported", "sampled", "mixed"; "" = none)."""


@dataclass(frozen=True, slots=True)
class Header:
    """One column heading."""

    text: str
    cls: str = ""
    title: str = ""
    breakable: bool = False
    """Allow line breaks after dots and underscores (long metric names)."""
    arrow: str | None = None
    """A metric's direction (↑ or ↓; "" when unknown) after the text; None: not a metric."""


@dataclass(frozen=True, slots=True)
class Row:
    cells: list[Cell]
    cls: str = ""


@dataclass(frozen=True, slots=True)
class Table:
    """A table the report's script can sort by clicking a heading."""

    headers: list[Header]
    rows: list[Row]


def as_float(x: Any) -> float | None:
    """``x`` as a float when it is a real number (bools are not), else None."""
    if x is None or isinstance(x, bool):
        return None
    if isinstance(x, numbers.Real):
        return float(x)
    return None


def pct(v: float | None) -> str:
    """A share as a percentage with one decimal; '—' for missing."""
    if v is None or math.isnan(v):
        return "—"
    return f"{100 * v:.1f}%"


def sort_key(v: float | None) -> str:
    """A ``data-sort`` value: the float's repr, or "" for missing and NaN."""
    return "" if v is None or math.isnan(v) else repr(v)


def num_cell(x: Any, *, ci: tuple[Any, Any] | None = None, as_pct: bool = False) -> Cell:
    """A right-aligned number, sortable as a number, with its interval under it if finite."""
    v = as_float(x)
    text = pct(v) if as_pct else fmt_num(x if isinstance(x, numbers.Integral) else v)
    sub = ""
    if ci is not None:
        lo, hi = as_float(ci[0]), as_float(ci[1])
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            sub = f"[{fmt_num(lo)}, {fmt_num(hi)}]"
    return Cell(text, "num", sort=sort_key(v), sub=sub)


def _raw_sort_key(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(v)


def rows_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: set[int]) -> Table:
    """Columns in ``numeric`` as numbers, the others as text ('—' for None)."""
    return Table(
        [Header(h, "num" if i in numeric else "") for i, h in enumerate(headers)],
        [
            Row(
                [
                    Cell(fmt_num(v), "num", sort=_raw_sort_key(v))
                    if i in numeric
                    else Cell("—" if v is None else str(v))
                    for i, v in enumerate(row)
                ]
            )
            for row in rows
        ],
    )


# -- JSON values as blocks ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Paragraph:
    text: str
    kind: ClassVar[str] = "paragraph"


@dataclass(frozen=True, slots=True)
class Empty:
    """A muted placeholder saying what is missing."""

    text: str
    kind: ClassVar[str] = "empty"


@dataclass(frozen=True, slots=True)
class TableBlock:
    table: Table
    kind: ClassVar[str] = "table"


@dataclass(frozen=True, slots=True)
class Bullets:
    items: list[str]
    kind: ClassVar[str] = "bullets"


@dataclass(frozen=True, slots=True)
class Preformatted:
    text: str
    kind: ClassVar[str] = "preformatted"


@dataclass(frozen=True, slots=True)
class Heading:
    text: str
    level: int
    kind: ClassVar[str] = "heading"


Block = Paragraph | Empty | TableBlock | Bullets | Preformatted | Heading

_BAR_KEYS = ("weight", "coef", "importance")
"""A flat mapping of numbers under a key holding one of these is drawn as a weights table."""


def is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | bool | numbers.Real)


def humanize(key: Any) -> str:
    return str(key).replace("_", " ")


def to_json(v: Any) -> str:
    return json.dumps(v, indent=2, sort_keys=False, default=str, ensure_ascii=False)


def cellable(v: Any) -> bool:
    """Fits in one table cell: a scalar, a list of scalars or a flat mapping."""
    if is_scalar(v):
        return True
    if isinstance(v, list | tuple):
        return all(is_scalar(x) for x in v)
    return isinstance(v, Mapping) and all(is_scalar(x) for x in v.values())


def is_records(v: Any) -> bool:
    """A non-empty list or mapping of flat records (one table row each)."""
    if isinstance(v, Mapping):
        values = list(v.values())
    elif isinstance(v, list):
        values = v
    else:
        return False
    return bool(values) and all(
        isinstance(x, Mapping) and all(cellable(y) for y in x.values()) for x in values
    )


def _scalar_cell(v: Any) -> Cell:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return Cell("—" if v is None else ("yes" if v is True else "no" if v is False else v))
    return num_cell(v)


def _is_pair(v: Any) -> bool:
    return isinstance(v, list | tuple) and len(v) == 2 and all(as_float(x) is not None for x in v)


def _cell(v: Any) -> Cell:
    """A table cell for any JSON value: scalars as such, small containers compactly."""
    if is_scalar(v):
        return _scalar_cell(v)
    if _is_pair(v):
        return Cell(f"[{fmt_num(v[0])}, {fmt_num(v[1])}]", "num", sort=repr(as_float(v[0])))
    if isinstance(v, list | tuple) and all(is_scalar(x) for x in v):
        return Cell(", ".join(fmt_num(x) for x in v) or "—", "small")
    if isinstance(v, Mapping) and all(is_scalar(x) for x in v.values()):
        items = list(v.items())
        if all(as_float(x) is not None for _, x in items):
            items.sort(key=lambda kv: -abs(as_float(kv[1]) or 0.0))
        lines = tuple(f"{k}: {fmt_num(x)}" for k, x in items)
        return Cell("—", "small", lines=lines)
    return Cell(json.dumps(v, default=str), "small", code=True)


def _numeric_column(records: Sequence[Mapping[str, Any]], column: str) -> bool:
    vals = [r.get(column) for r in records if r.get(column) is not None]
    return bool(vals) and all(as_float(x) is not None for x in vals)


def _records_table(records: Sequence[Mapping[str, Any]], key_column: str | None = None) -> Table:
    """One row per record; ``x_ci`` pairs go under ``x``, a description under the key."""
    columns: list[str] = list(dict.fromkeys(k for r in records for k in r))
    paired = {c for c in columns if c.endswith("_ci") and c[:-3] in columns}
    described = key_column is not None and "description" in columns
    shown = [c for c in columns if c not in paired and not (described and c == "description")]
    headers = [Header(humanize(c), "num" if _numeric_column(records, c) else "") for c in shown]
    rows = []
    for r in records:
        cells = []
        for c in shown:
            if c == key_column:
                note = r.get("description") if described else None
                cells.append(Cell(str(r.get(c)), "key desc", sub=str(note) if note else ""))
            elif f"{c}_ci" in paired and _is_pair(r.get(f"{c}_ci")):
                cells.append(num_cell(r.get(c), ci=tuple(r[f"{c}_ci"])))
            else:
                cells.append(_cell(r.get(c)))
        rows.append(Row(cells))
    return Table(headers, rows)


def _weights_table(weights: Mapping[str, Any], key_title: Callable[[str], str]) -> Table:
    items = sorted(weights.items(), key=lambda kv: -abs(as_float(kv[1]) or 0.0))
    top = max((abs(as_float(x) or 0.0) for _, x in items), default=1.0) or 1.0
    rows = []
    for k, x in items:
        w = as_float(x) or 0.0
        bar = Bar(max(1, round(120 * abs(w) / top)), negative=w < 0)
        rows.append(
            Row(
                [
                    Cell(str(k), "key", title=key_title(str(k))),
                    num_cell(w),
                    Cell(sort=repr(abs(w)), bar=bar),
                ]
            )
        )
    return Table([Header("Feature"), Header("Weight", "num"), Header("|weight|")], rows)


def json_blocks(
    v: Any, *, depth: int, path: tuple[str, ...], key_title: Callable[[str], str]
) -> list[Block]:
    """Blocks showing the JSON value ``v`` found under ``path``; deeper than 4: as JSON text.

    ``key_title`` gives the hover text of a weights table's feature names.
    """
    if is_scalar(v):
        return [Paragraph(fmt_num(v) if isinstance(v, numbers.Real) else str(v))]
    if depth > 4:
        return [Preformatted(to_json(v))]
    if isinstance(v, Mapping):
        if not v:
            return [Empty("(empty)")]
        values = list(v.values())
        if all(is_scalar(x) for x in values):
            wants_bars = any(key in p.lower() for p in path[-1:] for key in _BAR_KEYS)
            if wants_bars and all(as_float(x) is not None for x in values):
                return [TableBlock(_weights_table(v, key_title))]
            return [
                TableBlock(
                    Table(
                        [Header("Key"), Header("Value")],
                        [Row([Cell(humanize(k), "key"), _scalar_cell(x)]) for k, x in v.items()],
                    )
                )
            ]
        if all(isinstance(x, Mapping) and all(cellable(y) for y in x.values()) for x in values):
            first = path[-1] if path else "name"
            records = [{first: k, **x} for k, x in v.items()]
            return [TableBlock(_records_table(records, key_column=first))]
        return mapping_blocks(v, depth=depth, path=path, key_title=key_title)
    if isinstance(v, list | tuple):
        if not v:
            return [Empty("(empty)")]
        if all(isinstance(x, Mapping) and all(cellable(y) for y in x.values()) for x in v):
            return [TableBlock(_records_table(list(v)))]
        if all(is_scalar(x) for x in v):
            if any(isinstance(x, str) and len(x) > 40 for x in v):
                return [Bullets([fmt_num(x) for x in v])]
            return [Paragraph(", ".join(fmt_num(x) for x in v))]
    return [Preformatted(to_json(v))]


def mapping_blocks(
    obj: Mapping[str, Any], *, depth: int, path: tuple[str, ...], key_title: Callable[[str], str]
) -> list[Block]:
    """The scalars of ``obj`` as one key/value table, each nested value under its heading."""
    scalars = {k: v for k, v in obj.items() if is_scalar(v)}
    out: list[Block] = []
    if scalars:
        out += json_blocks(scalars, depth=depth + 1, path=path, key_title=key_title)
    level = min(6, 3 + depth)
    for k, v in obj.items():
        if is_scalar(v):
            continue
        out.append(Heading(humanize(k), level))
        out += json_blocks(v, depth=depth + 1, path=(*path, str(k)), key_title=key_title)
    return out
