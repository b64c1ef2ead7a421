"""Hand-written inline SVG plots for the report: intervals, heatmaps, scatters.

Every function returns one ``<svg>`` element as a string, with every label HTML-escaped and
hover text in ``<title>`` children. Nothing here reads files or knows what a metric means;
callers pass labels, directions and colours.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Literal, TypeGuard

# Okabe-Ito and Tol colours: distinguishable by colour-blind readers, readable on white.
PALETTE: tuple[str, ...] = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#882255",
    "#44AA99",
    "#999933",
    "#332288",
)
SLICE_COLOURS: dict[str, str] = {"prompt": "#0072B2", "chosen": "#009E73", "rejected": "#D55E00"}
PREFERENCE_COLOUR = "#444444"

_CHAR_PX = 6.6  # mean glyph width of 12px system-ui, to size label margins


def colour_for(index: int) -> str:
    """The ``index``-th categorical colour, cycling."""
    return PALETTE[index % len(PALETTE)]


def finite(x: object) -> TypeGuard[float]:
    """True for a real, finite number (bools excluded)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def fmt_num(x: object) -> str:
    """A number for people: 3 decimals near 1, thousands separators, '—' for missing."""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, numbers.Integral):
        return f"{int(x):,}"
    if not isinstance(x, numbers.Real):
        return "—" if x is None else str(x)
    v = float(x)
    if math.isnan(v):
        return "—"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e6 or a < 1e-3:
        return f"{v:.2e}"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    return f"{v:.3f}"


def _fmt_tick(x: float, step: float) -> str:
    if step >= 1 and abs(x) < 1e6:
        return f"{x:,.0f}"
    decimals = min(6, max(0, -math.floor(math.log10(step) + 1e-9)))
    return f"{x:.{decimals}f}"


def nice_step(span: float, n_ticks: int = 5) -> float:
    """A 1-2-2.5-5 x 10^k step giving about ``n_ticks`` ticks over ``span``."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(1, n_ticks)
    base = 10 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= base * m:
            return base * m
    return base * 10


def axis_extent(
    values: Sequence[float | None], bounds: tuple[float, float] | None = None
) -> tuple[float, float, float]:
    """(low, high, tick step) covering ``values`` on nice ticks, clipped to ``bounds``."""
    xs = [float(v) for v in values if finite(v)]
    if not xs:
        lo, hi = bounds if bounds else (0.0, 1.0)
    else:
        lo, hi = min(xs), max(xs)
        if hi - lo < 1e-12:
            pad = abs(lo) * 0.1 or 0.5
            lo, hi = lo - pad, hi + pad
        else:
            pad = (hi - lo) * 0.05
            lo, hi = lo - pad, hi + pad
        if bounds:
            lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
            if hi <= lo:
                lo, hi = bounds
    step = nice_step(hi - lo)
    return math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step, step


def _ticks(lo: float, hi: float, step: float) -> list[float]:
    n = round((hi - lo) / step)
    return [lo + i * step for i in range(n + 1)]


def _clip_label(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def _label_width(
    labels: Sequence[str], max_chars: int, tags: Mapping[str, str] | None = None
) -> float:
    tags = tags or {}
    longest = max(
        (len(_clip_label(s, max_chars)) + (len(tags[s]) + 3 if s in tags else 0) for s in labels),
        default=4,
    )
    return 12 + longest * _CHAR_PX


def _label(text: str, max_chars: int, tag: str | None) -> str:
    """A row label's content: the clipped name, a muted `` · tag`` after it, the full name."""
    suffix = f'<tspan class="tag"> · {escape(tag)}</tspan>' if tag else ""
    return f"{escape(_clip_label(text, max_chars))}{suffix}<title>{escape(text)}</title>"


# -- interval ("forest") plot ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IntervalPoint:
    """One estimate to draw: a dot in ``category``'s row, coloured by ``series``."""

    category: str
    series: str
    value: float | None
    low: float | None = None
    high: float | None = None
    shape: Literal["circle", "diamond"] = "circle"


def interval_plot(
    points: Sequence[IntervalPoint],
    *,
    categories: Sequence[str],
    series_colours: dict[str, str],
    x_label: str,
    closer_when: Literal["higher", "lower"] | None = None,
    good: str = "closer",
    bounds: tuple[float, float] | None = None,
    width: int = 356,
    title: str = "",
    tags: Mapping[str, str] | None = None,
) -> str:
    """Dots with interval whiskers: one row per category, one dot per series within it.

    ``tags`` adds a muted word after a category's label (the corpus origin).
    """
    tags = tags or {}
    series = [s for s in series_colours if any(p.series == s for p in points)]
    n_series = max(1, len(series))
    sub_h = 11.0
    row_h = 10 + sub_h * n_series
    left = _label_width(categories, 28, tags)
    right, top, bottom = 14.0, 8.0, 44.0
    height = top + row_h * len(categories) + bottom
    plot_w = width - left - right
    lo, hi, step = axis_extent(
        [v for p in points for v in (p.value, p.low, p.high)],
        bounds,
    )

    def sx(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot_w

    out = [
        f'<svg class="plot" role="img" width="{width}" height="{height:.0f}" '
        f'viewBox="0 0 {width} {height:.0f}">'
    ]
    if title:
        out.append(f"<title>{escape(title)}</title>")
    for i, cat in enumerate(categories):
        y0 = top + i * row_h
        if i % 2 == 0:
            out.append(
                f'<rect x="{left:.1f}" y="{y0:.1f}" width="{plot_w:.1f}" height="{row_h:.1f}" '
                'fill="#f3f4f6"/>'
            )
        out.append(
            f'<text x="{left - 6:.1f}" y="{y0 + row_h / 2 + 4:.1f}" text-anchor="end" '
            f'class="lbl">{_label(cat, 28, tags.get(cat))}</text>'
        )
    y_axis = top + row_h * len(categories)
    for t in _ticks(lo, hi, step):
        x = sx(t)
        out.append(
            f'<line x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{y_axis:.1f}" class="grid"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{y_axis + 15:.1f}" text-anchor="middle" class="tick">'
            f"{escape(_fmt_tick(t, step))}</text>"
        )
    out.append(
        f'<line x1="{left:.1f}" y1="{y_axis:.1f}" x2="{left + plot_w:.1f}" y2="{y_axis:.1f}" '
        'class="axis"/>'
    )
    arrow = {"higher": f"  ({good} →)", "lower": f"  (← {good})", None: ""}[closer_when]
    out.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 8:.1f}" text-anchor="middle" '
        f'class="axlbl">{escape(x_label + arrow)}</text>'
    )
    cat_index = {c: i for i, c in enumerate(categories)}
    ser_index = {s: j for j, s in enumerate(series)}
    for p in points:
        if p.category not in cat_index or p.series not in ser_index:
            continue
        y = top + cat_index[p.category] * row_h + 5 + sub_h * (ser_index[p.series] + 0.5)
        colour = series_colours[p.series]
        tip = f"{p.category} · {p.series}: {fmt_num(p.value)}"
        if finite(p.low) and finite(p.high):
            tip += f" [{fmt_num(p.low)}, {fmt_num(p.high)}]"
        out.append("<g>")
        out.append(f"<title>{escape(tip)}</title>")
        if not finite(p.value):
            out.append(
                f'<text x="{left + 4:.1f}" y="{y + 4:.1f}" class="na">'
                f"n/a ({escape(p.series)})</text>"
            )
            out.append("</g>")
            continue
        if finite(p.low) and finite(p.high):
            x1, x2 = sx(max(lo, float(p.low))), sx(min(hi, float(p.high)))
            out.append(
                f'<line x1="{x1:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{y:.1f}" '
                f'stroke="{colour}" stroke-width="1.6"/>'
            )
            for xc in (x1, x2):
                out.append(
                    f'<line x1="{xc:.1f}" y1="{y - 3:.1f}" x2="{xc:.1f}" y2="{y + 3:.1f}" '
                    f'stroke="{colour}" stroke-width="1.6"/>'
                )
        x = sx(min(hi, max(lo, float(p.value))))
        if p.shape == "diamond":
            out.append(
                f'<path d="M{x:.1f},{y - 5:.1f} L{x + 5:.1f},{y:.1f} L{x:.1f},{y + 5:.1f} '
                f'L{x - 5:.1f},{y:.1f} Z" fill="#fff" stroke="{colour}" stroke-width="1.8"/>'
            )
        else:
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.8" fill="{colour}" stroke="#fff" '
                'stroke-width="0.8"/>'
            )
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


# -- heatmap --------------------------------------------------------------------------------

_SEQ = ((247, 251, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107))


def seq_colour(t: float) -> str:
    """Sequential blue for ``t`` in [0, 1] (0 = pale, 1 = dark)."""
    t = min(1.0, max(0.0, t)) * (len(_SEQ) - 1)
    i = min(len(_SEQ) - 2, int(t))
    f = t - i
    r, g, b = (round(a + (c - a) * f) for a, c in zip(_SEQ[i], _SEQ[i + 1], strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(
    cells: dict[tuple[str, str], float | None],
    *,
    rows: Sequence[str],
    columns: Sequence[str],
    closer_when: Literal["higher", "lower"] | None,
    value_label: str,
    good: str = "closer",
    value_range: tuple[float, float] | None = None,
    cell_w: int = 54,
    cell_h: int = 28,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Rows x columns of coloured cells with their values; darker = closer.

    ``value_range`` fixes the colour scale (to share it between heatmaps); by default it is
    the range of ``cells``. ``tags`` adds a muted word after a row's label.
    """
    tags = tags or {}
    vals = [v for v in cells.values() if finite(v)]
    if value_range is not None:
        lo, hi = value_range
    else:
        lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    left = _label_width(rows, 28, tags)
    # Column labels are rotated 50 degrees: each reaches cos 50 * length right of its cell's
    # centre and sin 50 * length above the grid.
    label_px = [len(_clip_label(c, 26)) * _CHAR_PX for c in columns]
    top = 14 + max(label_px, default=0) * 0.77
    reach = max(
        (left + j * cell_w + cell_w / 2 + px * 0.64 for j, px in enumerate(label_px)),
        default=left,
    )
    legend_text = len(value_label) + 26
    legend_h = 46.0
    width = max(left + cell_w * len(columns) + 8, reach + 8, left + 130 + legend_text * 6.0)
    height = top + cell_h * len(rows) + legend_h
    out = [
        f'<svg class="plot heatmap" role="img" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}">'
    ]
    for j, col in enumerate(columns):
        x = left + j * cell_w + cell_w / 2
        out.append(
            f'<text transform="translate({x:.1f},{top - 6:.1f}) rotate(-50)" class="lbl">'
            f"{escape(_clip_label(col, 26))}<title>{escape(col)}</title></text>"
        )
    for i, row in enumerate(rows):
        y = top + i * cell_h
        out.append(
            f'<text x="{left - 6:.1f}" y="{y + cell_h / 2 + 4:.1f}" text-anchor="end" '
            f'class="lbl">{_label(row, 28, tags.get(row))}</text>'
        )
        for j, col in enumerate(columns):
            v = cells.get((row, col))
            x = left + j * cell_w
            tip = f"{row} · {col}: {fmt_num(v)}"
            if finite(v):
                t = (float(v) - lo) / (hi - lo) if hi > lo else 0.5
                if closer_when == "lower":
                    t = 1 - t
                fill, ink = seq_colour(t), ("#fff" if t > 0.55 else "#111")
                text = _short(float(v))
            else:
                fill, ink, text = "#e5e7eb", "#6b7280", "n/a"
            out.append(
                f'<g><title>{escape(tip)}</title><rect x="{x + 1:.1f}" y="{y + 1:.1f}" '
                f'width="{cell_w - 2}" height="{cell_h - 2}" fill="{fill}" rx="2"/>'
                f'<text x="{x + cell_w / 2:.1f}" y="{y + cell_h / 2 + 4:.1f}" '
                f'text-anchor="middle" class="cell" fill="{ink}">{escape(text)}</text></g>'
            )
    # Legend: five swatches from the far to the close end of the observed range.
    ly = top + cell_h * len(rows) + 14
    far, close = (hi, lo) if closer_when == "lower" else (lo, hi)
    out.append(
        f'<text x="{left:.1f}" y="{ly + 12:.1f}" class="tick" text-anchor="end">'
        f"{escape(_short(far) if vals else '')}</text>"
    )
    for k in range(5):
        out.append(
            f'<rect x="{left + 6 + k * 22:.1f}" y="{ly:.1f}" width="22" height="16" '
            f'fill="{seq_colour(k / 4)}"/>'
        )
    arrow = f" (darker = {good})" if closer_when else ""
    out.append(
        f'<text x="{left + 6 + 5 * 22 + 6:.1f}" y="{ly + 12:.1f}" class="tick">'
        f"{escape((_short(close) if vals else '') + '   ' + value_label + arrow)}</text>"
    )
    out.append("</svg>")
    return "".join(out)


def _short(v: float) -> str:
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000 or a < 0.01:
        return f"{v:.1e}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


# -- scatter --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScatterGroup:
    """Points of one legend entry."""

    name: str
    xs: Sequence[float]
    ys: Sequence[float]
    colour: str
    labels: Sequence[str] | None = None
    radius: float = 2.6
    opacity: float = 0.55


def scatter_plot(
    groups: Sequence[ScatterGroup],
    *,
    x_label: str,
    y_label: str,
    width: int = 720,
    height: int = 480,
    diagonal: bool = False,
    equal_axes: bool = False,
) -> str:
    """A scatter of several groups with axes, a legend and optional y = x line."""
    all_x = [x for g in groups for x in g.xs]
    all_y = [y for g in groups for y in g.ys]
    if equal_axes:
        both = all_x + all_y
        xlo, xhi, xstep = axis_extent(both)
        ylo, yhi, ystep = xlo, xhi, xstep
    else:
        xlo, xhi, xstep = axis_extent(all_x)
        ylo, yhi, ystep = axis_extent(all_y)
    legend_w = min(220.0, 40 + max((len(g.name) for g in groups), default=4) * _CHAR_PX)
    left, right, top, bottom = 58.0, legend_w + 10, 12.0, 46.0
    pw, ph = width - left - right, height - top - bottom

    def sx(v: float) -> float:
        return left + (v - xlo) / (xhi - xlo) * pw

    def sy(v: float) -> float:
        return top + ph - (v - ylo) / (yhi - ylo) * ph

    out = [
        f'<svg class="plot" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f'<rect x="{left}" y="{top}" width="{pw:.1f}" height="{ph:.1f}" fill="#fafafa" '
        'stroke="#d1d5db"/>',
    ]
    for t in _ticks(xlo, xhi, xstep):
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph:.1f}" class="grid"/>')
        out.append(
            f'<text x="{x:.1f}" y="{top + ph + 15:.1f}" text-anchor="middle" class="tick">'
            f"{escape(_fmt_tick(t, xstep))}</text>"
        )
    for t in _ticks(ylo, yhi, ystep):
        y = sy(t)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw:.1f}" y2="{y:.1f}" class="grid"/>'
        )
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
            f"{escape(_fmt_tick(t, ystep))}</text>"
        )
    out.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle" class="axlbl">'
        f"{escape(x_label)}</text>"
    )
    out.append(
        f'<text transform="translate(14,{top + ph / 2:.1f}) rotate(-90)" text-anchor="middle" '
        f'class="axlbl">{escape(y_label)}</text>'
    )
    if diagonal:
        a, b = max(xlo, ylo), min(xhi, yhi)
        out.append(
            f'<line x1="{sx(a):.1f}" y1="{sy(a):.1f}" x2="{sx(b):.1f}" y2="{sy(b):.1f}" '
            'stroke="#9ca3af" stroke-dasharray="4 3"/>'
        )
    for g in groups:
        out.append(
            f'<g fill="{g.colour}" fill-opacity="{g.opacity}"><title>{escape(g.name)}</title>'
        )
        for k, (x, y) in enumerate(zip(g.xs, g.ys, strict=True)):
            if not (finite(x) and finite(y)):
                continue
            if g.labels is not None:
                out.append(
                    f'<g><title>{escape(g.labels[k])}</title><circle cx="{sx(x):.1f}" '
                    f'cy="{sy(y):.1f}" r="{g.radius}"/></g>'
                )
                out.append(
                    f'<text x="{sx(x) + g.radius + 3:.1f}" y="{sy(y) + 4:.1f}" class="ptlbl" '
                    f'fill="#111" fill-opacity="1">{escape(_clip_label(g.labels[k], 24))}</text>'
                )
            else:
                out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{g.radius}"/>')
        out.append("</g>")
    lx = left + pw + 14
    for k, g in enumerate(groups):
        y = top + 10 + k * 18
        out.append(
            f'<circle cx="{lx + 6:.1f}" cy="{y:.1f}" r="5" fill="{g.colour}"/>'
            f'<text x="{lx + 16:.1f}" y="{y + 4:.1f}" class="lbl">'
            f"{escape(_clip_label(g.name, 26))}<title>{escape(g.name)}</title></text>"
        )
    out.append("</svg>")
    return "".join(out)
