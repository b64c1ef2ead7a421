"""The self-contained HTML report: the decision, the similarity profile and the evidence.

``render_report`` turns a ``ReportInputs`` into one HTML document; every style, script and
plot is inline (hand-written SVG), so the file opens offline in any browser. Every string that
comes from data is HTML-escaped. This module lays out the sections; ``plots`` draws.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any, Final

import polars as pl

from simscope import __version__
from simscope.errors import SimscopeError
from simscope.metrics import MetricSpec, spec
from simscope.records import PROFILE_SCHEMA, SELECTION_SCHEMA, SLICES, check_frame
from simscope.report.plots import (
    PREFERENCE_COLOUR,
    SLICE_COLOURS,
    IntervalPoint,
    ScatterGroup,
    colour_for,
    finite,
    fmt_num,
    heatmap,
    interval_plot,
    scatter_plot,
)
from simscope.report.select_view import select_sections
from simscope.select.summary import CVSummary
from simscope.storage import atomic_file

SECTIONS: Final = (
    ("decision", "Decision"),
    ("next", "What to measure next"),
    ("cost", "Cost and quality"),
    ("prior", "Prior and calibration"),
    ("profile", "Similarity profile"),
    ("topics", "Models \u00d7 topics"),
    ("examples", "Examples"),
    ("map", "Embedding map"),
    ("diagnostics", "Selection diagnostics"),
    ("provenance", "Provenance"),
)
"""(section id, heading) in page order; the ids are stable anchors."""

FAMILY_ORDER: Final = ("closeness", "likelihood", "transfer", "contamination", "undocumented")
FAMILY_NOTES: Final = {
    "closeness": (
        "How close the candidate's probe corpus lies to the preference data as a distribution. "
        "These are the numbers the selection uses to compare candidates."
    ),
    "likelihood": "How likely the candidate model finds the preference texts.",
    "transfer": (
        "How well a reward head on the frozen candidate separates chosen from rejected "
        "responses: a cheap forecast of fine-tuning, measured on the team's own pairs."
    ),
    "contamination": (
        "Copies, not closeness: exact n-gram containment and near-duplicates (↑ = higher means "
        "more copied text). A corpus that is close to the preference data but holds no copies "
        "of it scores near 0 here. Read these as a contamination check, apart from the "
        "closeness metrics above."
    ),
    "undocumented": "Metrics missing from the registry (simscope.metrics); shown as found.",
}
HEATMAP_PREFERENCE: Final = (
    "semantic.coverage_k*",
    "semantic.nn_cosine",
    "semantic.recall_k*",
    "semantic.topic_mass_ratio",
    "semantic.mauve",
    "lexical.hashed_ngram_jsd",
)
"""Default heatmap metric: the first of these patterns with topic rows in the profile."""

EXAMPLE_MAX_CHARS: Final = 6000
MAP_MAX_POINTS_PER_GROUP: Final = 3000
EXAMPLE_KEYS: Final = ("model", "slice", "preference_text", "probe_text", "score_label")


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows; only ``profile`` is required to hold rows."""

    profile: pl.DataFrame
    """records.PROFILE_SCHEMA; topic null = whole slice, topic rows feed the heatmap."""
    selection: pl.DataFrame | None
    """records.SELECTION_SCHEMA, or None when no selection was run."""
    cv_summary: CVSummary | None
    """The select stage's CV summary (``simscope.select.summary``), or None."""
    examples: list[dict[str, str]]
    """{"model", "slice", "preference_text", "probe_text", "score_label"} per example."""
    embedding_map: pl.DataFrame | None
    """2-D map: columns x, y, kind ("preference"|"probe"), model."""
    provenance: dict[str, Any]
    """Versions, parameters, input hashes, index manifests."""
    heatmap_metric: str | None = None
    """Metric shown first in the heatmap; None picks one (see HEATMAP_PREFERENCE)."""
    title: str = "simscope report"


def write_report(inputs: ReportInputs, path: Path) -> Path:
    """Render the report and write it to ``path`` atomically; returns ``path``."""
    document = render_report(inputs)
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(document, encoding="utf-8")
    return path


def render_report(inputs: ReportInputs) -> str:
    """The whole report as one self-contained HTML document."""
    profile = check_frame(inputs.profile, PROFILE_SCHEMA, "Profile", "report")
    selection = (
        check_frame(inputs.selection, SELECTION_SCHEMA, "Selection", "report")
        if inputs.selection is not None
        else None
    )
    emap = _check_map(inputs.embedding_map)
    examples = _check_examples(inputs.examples)
    models = _model_order(profile, selection)
    cv = inputs.cv_summary

    select_parts = select_sections(cv)
    body = [
        _section("decision", _decision(selection, cv)),
        *(_section(sid, select_parts[sid]) for sid in ("next", "cost", "prior")),
        _section("profile", _profile_section(profile, models)),
        _section("topics", _topics_section(profile, models, inputs.heatmap_metric)),
        _section("examples", _examples_section(examples)),
        _section("map", _map_section(emap)),
        _section("diagnostics", _diagnostics_section(cv, selection)),
        _section("provenance", _provenance_section(inputs.provenance)),
    ]
    toc = "".join(f'<a href="#{sid}">{escape(name)}</a>' for sid, name in SECTIONS)
    subtitle = _subtitle(profile, models, inputs.provenance)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(inputs.title)}</title>"
        f"<style>{_asset('report.css')}</style>"
        f"<script>{_ERROR_HOOK}</script>"
        "</head><body>"
        f'<header class="top"><div class="wrap"><h1>{escape(inputs.title)}</h1>'
        f'<p>{subtitle}</p><nav class="toc">{toc}</nav></div></header>'
        f"<main>{''.join(body)}</main>"
        f"<footer>Generated by simscope {escape(__version__)}. Self-contained: no network "
        "access is needed to view this file.</footer>"
        f"<script>{_asset('report.js')}</script>"
        "</body></html>\n"
    )


# Records errors before any other script runs, so a test can read them from the DOM.
_ERROR_HOOK: Final = (
    "(function(){var d=document.documentElement;"
    "function note(m){d.setAttribute('data-report-errors',"
    "(d.getAttribute('data-report-errors')||'')+String(m)+'\\n');}"
    "window.addEventListener('error',function(e){note(e.message);});"
    "var ce=console.error;console.error=function(){note(Array.prototype.join.call(arguments,' '));"
    "return ce.apply(console,arguments);};})();"
)


def _asset(name: str) -> str:
    text = resources.files("simscope.report").joinpath(name).read_text(encoding="utf-8")
    # An inline script or style must never contain its own closing tag.
    return re.sub(r"</(script|style)", r"<\\/\1", text, flags=re.IGNORECASE)


def _section(sid: str, content: str) -> str:
    heading = dict(SECTIONS)[sid]
    return f'<section id="{sid}"><h2>{escape(heading)}</h2>{content}</section>'


def _subtitle(profile: pl.DataFrame, models: list[str], provenance: Mapping[str, Any]) -> str:
    slices = _ordered_slices(profile)
    parts = [
        f"{len(models)} candidate model{'s' if len(models) != 1 else ''}",
        f"slices: {', '.join(slices) or '—'}",
    ]
    for key in ("created_at", "generated_at", "timestamp"):
        if isinstance(provenance.get(key), str):
            parts.append(f"generated {provenance[key]}")
            break
    return escape(" · ".join(parts))


# -- input checks ---------------------------------------------------------------------------


def _check_map(emap: pl.DataFrame | None) -> pl.DataFrame | None:
    if emap is None:
        return None
    missing = [c for c in ("x", "y", "kind", "model") if c not in emap.columns]
    if missing:
        raise SimscopeError(
            f"report: embedding map: missing column(s) {missing}; expected x, y, kind, model, "
            f"found {emap.columns}"
        )
    try:
        return emap.select(
            pl.col("x").cast(pl.Float64),
            pl.col("y").cast(pl.Float64),
            pl.col("kind").cast(pl.String),
            pl.col("model").cast(pl.String),
        )
    except pl.exceptions.InvalidOperationError as e:
        raise SimscopeError(f"report: embedding map: x and y must be numbers ({e})") from None


def _check_examples(examples: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    out = []
    for i, ex in enumerate(examples):
        for key in ("preference_text", "probe_text"):
            if not isinstance(ex.get(key), str):
                raise SimscopeError(
                    f"report: examples[{i}]: field {key!r}: expected a string, "
                    f"found {ex.get(key)!r}; each example needs {list(EXAMPLE_KEYS)}"
                )
        out.append({k: "" if ex.get(k) is None else str(ex.get(k)) for k in EXAMPLE_KEYS})
    return out


def _model_order(profile: pl.DataFrame, selection: pl.DataFrame | None) -> list[str]:
    """Models by selection rank when there is one, then the rest alphabetically."""
    ranked: list[str] = []
    if selection is not None and selection.height:
        ranked = selection.sort("rank", nulls_last=True).get_column("model").to_list()
    rest = sorted(set(profile.get_column("model").to_list()) - set(ranked))
    return [m for m in ranked if m is not None] + rest


def _ordered_slices(profile: pl.DataFrame) -> list[str]:
    found = set(profile.get_column("slice").drop_nulls().to_list())
    return [s for s in SLICES if s in found] + sorted(found - set(SLICES))


def _spec_or_none(metric: str) -> MetricSpec | None:
    try:
        return spec(metric)
    except SimscopeError:
        return None


def _family(metric: str) -> str:
    s = _spec_or_none(metric)
    return s.family if s else "undocumented"


def _metric_tooltip(metric: str) -> str:
    s = _spec_or_none(metric)
    if s is None:
        return f"{metric}: not documented in simscope.metrics"
    good = _good(metric)
    direction = f"higher = {good}" if s.closer_when == "higher" else f"lower = {good}"
    return f"{metric} ({direction}; {s.family}). {s.definition} Reference: {s.reference}"


def _good(metric: str) -> str:
    """What the metric's favourable direction means, for axis and legend labels."""
    return "more copies" if _family(metric) == "contamination" else "closer"


def _direction_arrow(metric: str) -> str:
    s = _spec_or_none(metric)
    if s is None:
        return ""
    return "↑" if s.closer_when == "higher" else "↓"


def _breakable(name: str) -> str:
    """Escape ``name`` and allow line breaks after dots and underscores."""
    return re.sub(r"([._@])", r"\1<wbr>", escape(name))


# -- formatting helpers ---------------------------------------------------------------------


def _num_cell(x: Any, *, ci: tuple[Any, Any] | None = None, pct: bool = False) -> str:
    v = _as_float(x)
    text = _pct(v) if pct else fmt_num(x if isinstance(x, numbers.Integral) else v)
    sort = "" if v is None or math.isnan(v) else repr(v)
    extra = ""
    if ci is not None:
        lo, hi = _as_float(ci[0]), _as_float(ci[1])
        if finite(lo) and finite(hi):
            extra = f'<span class="ci">[{fmt_num(lo)}, {fmt_num(hi)}]</span>'
    return f'<td class="num" data-sort="{sort}">{escape(text)}{extra}</td>'


def _as_float(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    if isinstance(x, numbers.Real):
        return float(x)
    return None


def _pct(v: float | None) -> str:
    if v is None or math.isnan(v):
        return "—"
    return f"{100 * v:.1f}%"


def _table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    header_html: Sequence[str] | None = None,
    sortable: bool = True,
    row_classes: Sequence[str] | None = None,
    cls: str = "",
) -> str:
    """A table; cells in ``rows`` are ready ``<td>`` strings, headers are plain text."""
    ths = header_html or [f"<th>{escape(h)}</th>" for h in headers]
    body = []
    for i, row in enumerate(rows):
        klass = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{klass}>{''.join(row)}</tr>")
    classes = " ".join(c for c in ("sortable" if sortable else "", cls) if c)
    return (
        f'<div class="scroll"><table class="{classes}"><thead><tr>{"".join(ths)}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _td(text: Any, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f"<td{klass}>{escape(str(text))}</td>"


def _empty(text: str) -> str:
    return f'<p class="empty">{escape(text)}</p>'


def _legend(items: Sequence[tuple[str, str]]) -> str:
    spans = "".join(
        f'<span><span class="sw" style="background:{colour}"></span>{escape(name)}</span>'
        for name, colour in items
    )
    return f'<div class="legend">{spans}</div>'


# -- decision -------------------------------------------------------------------------------


def _verdict(cv: CVSummary | None) -> str:
    if cv is not None and cv.verdict.strip():
        return f'<div class="verdict" id="verdict"><b>Verdict.</b> {escape(cv.verdict)}</div>'
    return ""


def _decision(selection: pl.DataFrame | None, cv: CVSummary | None) -> str:
    verdict = _verdict(cv)
    if selection is None or selection.height == 0:
        return verdict + _empty(
            "No selection run: the report shows the similarity profile only. Give measured RM "
            "results for some candidates to rank them all."
        )
    sel = selection.sort(["rank", "model"], nulls_last=True)
    rows = sel.to_dicts()
    best = rows[0]
    # Only a reliable ranking recommends; otherwise the top row is named as what it is.
    reliable = cv is not None and cv.verdict_status == "reliable_ranking"
    lead = (
        "Recommended base model"
        if reliable
        else "Top of the predicted ranking (no recommendation: see the verdict)"
    )
    headline = (
        f'<p class="headline">{escape(lead)}: <span class="model">'
        f"{escape(str(best['model']))}</span> — predicted {escape(fmt_num(best['predicted']))}"
    )
    if finite(best["pi_low"]) and finite(best["pi_high"]):
        headline += f" [{escape(fmt_num(best['pi_low']))}, {escape(fmt_num(best['pi_high']))}]"
    if best.get("observed") is not None and finite(best["observed"]):
        headline += f", observed {escape(fmt_num(best['observed']))}"
    headline += f", P(best) {escape(_pct(best['p_best']))}.</p>"
    headers = ["Rank", "Model", "Predicted", "Interval low", "Interval high", "P(best)", "Observed"]
    header_html = [
        f'<th class="{"num" if h not in ("Model",) else ""}">{escape(h)}</th>' for h in headers
    ]
    body = []
    for r in rows:
        p = _as_float(r["p_best"])
        bar_w = 0 if p is None or math.isnan(p) else max(1, round(60 * p))
        observed = (
            _num_cell(r["observed"])
            if r["observed"] is not None
            else '<td class="num" data-sort="">untried</td>'
        )
        body.append(
            [
                _num_cell(r["rank"]),
                _td(r["model"], "key"),
                _num_cell(r["predicted"]),
                _num_cell(r["pi_low"]),
                _num_cell(r["pi_high"]),
                f'<td class="num" data-sort="{"" if p is None else repr(p)}">'
                f'<span class="bar" style="width:{bar_w}px"></span>{escape(_pct(p))}</td>',
                observed,
            ]
        )
    table = _table(
        headers, body, header_html=header_html, row_classes=["best"] + [""] * (len(rows) - 1)
    )
    points = []
    for r in rows:
        points.append(
            IntervalPoint(r["model"], "predicted", r["predicted"], r["pi_low"], r["pi_high"])
        )
        if r["observed"] is not None:
            points.append(IntervalPoint(r["model"], "observed", r["observed"], shape="diamond"))
    colours = {"predicted": "#0072B2", "observed": "#D55E00"}
    plot = interval_plot(
        points,
        categories=[str(r["model"]) for r in rows],
        series_colours=colours,
        x_label="RM quality: predicted with interval; observed where measured",
        width=640,
    )
    return (
        verdict
        + headline
        + table
        + '<p class="note">Interval: the selection model\'s prediction interval. P(best): '
        "probability that the candidate is the best of those listed. Observed: the RM result "
        "measured for that candidate (untried = none yet). — : no finite interval (too few "
        "measured models for its level).</p>"
        + _legend(
            [("predicted (interval)", colours["predicted"]), ("observed", colours["observed"])]
        )
        + f"<figure>{plot}</figure>"
    )


# -- similarity profile ---------------------------------------------------------------------


def _profile_section(profile: pl.DataFrame, models: list[str]) -> str:
    whole = profile.filter(pl.col("topic").is_null())
    if whole.height == 0:
        return _empty("No whole-slice rows in the profile.")
    slices = _ordered_slices(whole)
    slice_colours = {s: SLICE_COLOURS.get(s, colour_for(i + 3)) for i, s in enumerate(slices)}
    metrics = sorted(set(whole.get_column("metric").to_list()))
    by_family: dict[str, list[str]] = {}
    for m in metrics:
        by_family.setdefault(_family(m), []).append(m)
    intro = (
        '<p class="note">One dot per slice of the preference data, with its bootstrap interval '
        "where computed. ↑ = higher is closer, ↓ = lower is closer; hover a metric for its "
        "definition.</p>" + _legend(list(slice_colours.items()))
    )
    rows = whole.to_dicts()
    index = {(r["model"], r["slice"], r["metric"]): r for r in rows}
    parts = [intro]
    for family in FAMILY_ORDER:
        fam_metrics = by_family.get(family)
        if not fam_metrics:
            continue
        figs = []
        for m in fam_metrics:
            s = _spec_or_none(m)
            points = [
                IntervalPoint(model, sl, r["value"], r["ci_low"], r["ci_high"])
                for model in models
                for sl in slices
                if (r := index.get((model, sl, m))) is not None
            ]
            plot = interval_plot(
                points,
                categories=models,
                series_colours=slice_colours,
                x_label=m,
                closer_when=s.closer_when if s else None,
                good=_good(m),
                bounds=s.range if s else None,
                title=_metric_tooltip(m),
            )
            figs.append(
                f'<figure><figcaption title="{escape(_metric_tooltip(m))}">{escape(m)} '
                f'<span class="dir">{_direction_arrow(m)}</span>'
                f'<span class="info">?</span></figcaption>{plot}</figure>'
            )
        header_html = ["<th>Model</th>", "<th>Slice</th>"] + [
            f'<th class="num metric" title="{escape(_metric_tooltip(m))}">{_breakable(m)} '
            f'<span class="dir">{_direction_arrow(m)}</span></th>'
            for m in fam_metrics
        ]
        body = []
        for model in models:
            for sl in slices:
                cells = [_td(model, "key"), _td(sl)]
                any_value = False
                for m in fam_metrics:
                    r = index.get((model, sl, m))
                    if r is None:
                        cells.append('<td class="num" data-sort="">—</td>')
                    else:
                        any_value = True
                        cells.append(_num_cell(r["value"], ci=(r["ci_low"], r["ci_high"])))
                if any_value:
                    body.append(cells)
        table = _table([], body, header_html=header_html)
        title = {"undocumented": "Undocumented metrics"}.get(family, f"{family.title()} metrics")
        parts.append(
            f'<div class="family {family}" id="family-{family}"><h3>{escape(title)}</h3>'
            f'<p class="note">{escape(FAMILY_NOTES[family])}</p>'
            f'<div class="plots">{"".join(figs)}</div>{table}</div>'
        )
    return "".join(parts)


# -- topics heatmap -------------------------------------------------------------------------


def _pick_heatmap_metric(metrics: Sequence[str], wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in metrics:
            raise SimscopeError(
                f"report: heatmap_metric {wanted!r} has no topic rows in the profile; "
                f"metrics with topic rows: {sorted(metrics)}"
            )
        return wanted
    from fnmatch import fnmatchcase

    for pattern in HEATMAP_PREFERENCE:
        for m in sorted(metrics):
            if fnmatchcase(m, pattern):
                return m
    closeness = [m for m in sorted(metrics) if _family(m) == "closeness"]
    return (closeness or sorted(metrics))[0]


def _topics_section(profile: pl.DataFrame, models: list[str], wanted: str | None) -> str:
    topical = profile.filter(pl.col("topic").is_not_null())
    if topical.height == 0:
        return _empty(
            "No topics: the profile has no per-topic rows (topics come from clustering the "
            "preference prompts in the semantic stage)."
        )
    metrics = sorted(set(topical.get_column("metric").to_list()))
    chosen = _pick_heatmap_metric(metrics, wanted)
    topics: list[str] = list(dict.fromkeys(topical.get_column("topic").to_list()))
    slices = _ordered_slices(topical)
    cells_by: dict[tuple[str, str], dict[tuple[str, str], float | None]] = {}
    for r in topical.iter_rows(named=True):
        cells_by.setdefault((r["metric"], r["slice"]), {})[(r["model"], r["topic"])] = r["value"]
    options = "".join(
        f'<option value="{escape(m)}"{" selected" if m == chosen else ""}>{escape(m)}</option>'
        for m in metrics
    )
    panels = []
    for m in metrics:
        s = _spec_or_none(m)
        maps = []
        shared = [v for sl in slices for v in cells_by.get((m, sl), {}).values() if finite(v)]
        value_range = (min(shared), max(shared)) if shared else None
        for sl in slices:
            cells = cells_by.get((m, sl))
            if not cells:
                continue
            row_models = [x for x in models if any(k[0] == x for k in cells)]
            svg = heatmap(
                cells,
                rows=row_models,
                columns=topics,
                closer_when=s.closer_when if s else None,
                good=_good(m),
                value_label=m,
                value_range=value_range,
            )
            maps.append(f"<figure><figcaption>slice: {escape(sl)}</figcaption>{svg}</figure>")
        hidden = "" if m == chosen else " hidden"
        panels.append(
            f'<div data-group="heatmap" data-key="{escape(m)}"{hidden}>'
            f'<p class="note" title="{escape(_metric_tooltip(m))}">{escape(_metric_tooltip(m))}</p>'
            f'<div class="heatmaps scroll">{"".join(maps)}</div></div>'
        )
    return (
        '<p class="note">Each cell: the metric on the preference texts of one topic. Darker = '
        "closer (for metrics where lower is closer the colour scale is reversed); one colour "
        "scale per metric across slices. Topics differ in size.</p>"
        f'<div class="controls"><label>Metric: <select data-switch="heatmap">{options}'
        "</select></label></div>" + "".join(panels)
    )


# -- examples -------------------------------------------------------------------------------

_WORD = re.compile(r"\w+")


def shared_ngram_spans(
    a: str, b: str, n: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Character spans of ``a`` and of ``b`` covered by word n-grams the two texts share.

    Words are ``\\w+`` runs compared case-insensitively; adjacent covered words merge into one
    span that includes the punctuation between them.
    """
    ta = [(m.group().lower(), m.start(), m.end()) for m in _WORD.finditer(a)]
    tb = [(m.group().lower(), m.start(), m.end()) for m in _WORD.finditer(b)]

    def grams(tokens: list[tuple[str, int, int]]) -> list[tuple[str, ...]]:
        words = [t[0] for t in tokens]
        return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]

    ga, gb = grams(ta), grams(tb)
    shared = set(ga) & set(gb)

    def spans(
        tokens: list[tuple[str, int, int]], gs: list[tuple[str, ...]]
    ) -> list[tuple[int, int]]:
        covered = [False] * len(tokens)
        for i, g in enumerate(gs):
            if g in shared:
                covered[i : i + n] = [True] * n
        out: list[tuple[int, int]] = []
        for i, c in enumerate(covered):
            if not c:
                continue
            if out and i > 0 and covered[i - 1]:
                out[-1] = (out[-1][0], tokens[i][2])
            else:
                out.append((tokens[i][1], tokens[i][2]))
        return out

    return spans(ta, ga), spans(tb, gb)


def highlight(
    text: str, spans: Sequence[tuple[int, int]], max_chars: int = EXAMPLE_MAX_CHARS
) -> str:
    """``text`` HTML-escaped, with ``spans`` in ``<mark>``, cut at ``max_chars``."""
    cut = len(text) > max_chars
    shown = text[:max_chars] if cut else text
    out, pos = [], 0
    for start, end in spans:
        if start >= len(shown):
            break
        end = min(end, len(shown))
        out.append(escape(shown[pos:start]))
        out.append(f"<mark>{escape(shown[start:end])}</mark>")
        pos = end
    out.append(escape(shown[pos:]))
    if cut:
        out.append(f'<span class="truncated"> … ({len(text) - max_chars:,} more characters)</span>')
    return "".join(out)


def _covered_share(text: str, spans: Sequence[tuple[int, int]]) -> float:
    words = list(_WORD.finditer(text))
    if not words:
        return 0.0
    inside = sum(1 for w in words if any(s <= w.start() and w.end() <= e for s, e in spans))
    return inside / len(words)


def _examples_section(examples: list[dict[str, str]]) -> str:
    if not examples:
        return _empty("No examples: the pipeline produced no preference/probe text pairs.")
    cards = []
    for ex in examples:
        # Leading/trailing blank lines (HH transcripts start with two) only waste space.
        a, b = ex["preference_text"].strip(), ex["probe_text"].strip()
        used = 0
        spans_a: list[tuple[int, int]] = []
        spans_b: list[tuple[int, int]] = []
        for n in (8, 5):
            spans_a, spans_b = shared_ngram_spans(a, b, n)
            if spans_a:
                used = n
                break
        shared_note = (
            f"shared word {used}-grams highlighted: {100 * _covered_share(a, spans_a):.0f}% of "
            "the preference text's words"
            if used
            else "no shared word 5-grams"
        )
        meta = [
            f"<span><b>model</b> {escape(ex['model'] or '—')}</span>",
            f"<span><b>slice</b> {escape(ex['slice'] or '—')}</span>",
            f'<span class="note">{escape(shared_note)}</span>',
        ]
        if ex["score_label"]:
            meta.append(f'<span class="score">{escape(ex["score_label"])}</span>')
        cards.append(
            f'<div class="example"><div class="meta">{"".join(meta)}</div><div class="pair">'
            f'<div><h4>Preference text</h4><div class="text">{highlight(a, spans_a)}</div></div>'
            f'<div><h4>Closest probe text</h4><div class="text">{highlight(b, spans_b)}</div>'
            "</div></div></div>"
        )
    return (
        '<p class="note">A preference text beside the probe text found closest to it. Runs of '
        "words shared by both (word 8-grams, or 5-grams when no 8-gram is shared) are "
        "<mark>marked</mark>.</p>" + "".join(cards)
    )


# -- embedding map --------------------------------------------------------------------------


def _thin(df: pl.DataFrame, max_rows: int) -> pl.DataFrame:
    """At most ``max_rows`` evenly spaced rows (deterministic)."""
    if df.height <= max_rows:
        return df
    step = df.height / max_rows
    return df[[int(i * step) for i in range(max_rows)]]


def _map_section(emap: pl.DataFrame | None) -> str:
    if emap is None or emap.height == 0:
        return _empty("No embedding map: run the semantic stage to project texts into 2-D.")
    groups: list[ScatterGroup] = []
    notes = []
    pref = emap.filter(pl.col("kind") == "preference")
    probe = emap.filter(pl.col("kind") != "preference")
    if pref.height:
        shown = _thin(pref, MAP_MAX_POINTS_PER_GROUP)
        groups.append(
            ScatterGroup(
                "preference data",
                shown.get_column("x").to_list(),
                shown.get_column("y").to_list(),
                PREFERENCE_COLOUR,
                radius=2.2,
                opacity=0.45,
            )
        )
        if shown.height < pref.height:
            notes.append(f"preference: {shown.height:,} of {pref.height:,} points shown")
    probe_models = sorted(set(probe.get_column("model").fill_null("(probe)").to_list()))
    for i, model in enumerate(probe_models):
        part = probe.filter(pl.col("model").fill_null("(probe)") == model)
        shown = _thin(part, MAP_MAX_POINTS_PER_GROUP)
        groups.append(
            ScatterGroup(
                model,
                shown.get_column("x").to_list(),
                shown.get_column("y").to_list(),
                colour_for(i),
            )
        )
        if shown.height < part.height:
            notes.append(f"{model}: {shown.height:,} of {part.height:,} points shown")
    svg = scatter_plot(groups, x_label="map dimension 1", y_label="map dimension 2")
    thinned = f" Thinned evenly: {'; '.join(notes)}." if notes else ""
    return (
        '<p class="note">Preference texts (grey) and probe-corpus texts (one colour per model) '
        "projected to two dimensions. Where a model's points overlay the grey cloud, its "
        f"corpus covers that part of the preference data.{escape(thinned)}</p>"
        f"<figure>{svg}</figure>"
    )


# -- diagnostics ----------------------------------------------------------------------------


_SPECIFIC: Final = ("verdict", "held_out", "prior", "calibration", "suggestions", "cost")
"""CV-summary fields shown by their own sections, not in the generic diagnostics."""


def _diagnostics_section(cv: CVSummary | None, selection: pl.DataFrame | None) -> str:
    if cv is None:
        return _empty("No selection diagnostics: the select stage was not run.")
    parts = []
    pairs = [(h.model, h.predicted, h.observed) for h in cv.held_out]
    source = "held-out predictions (each family predicted by a fit without it)"
    if not pairs and selection is not None:
        fitted = selection.filter(pl.col("observed").is_not_null())
        pairs = [
            (r["model"], r["predicted"], r["observed"])
            for r in fitted.iter_rows(named=True)
            if finite(r["predicted"])
        ]
        source = "selection table (predictions for measured models)"
    if pairs:
        svg = scatter_plot(
            [
                ScatterGroup(
                    "measured model",
                    [p for _, p, _ in pairs],
                    [o for _, _, o in pairs],
                    "#0072B2",
                    labels=[m for m, _, _ in pairs],
                    radius=4.5,
                    opacity=0.9,
                )
            ],
            x_label="predicted RM quality",
            y_label="observed RM quality",
            width=560,
            height=420,
            diagonal=True,
            equal_axes=True,
        )
        parts.append(
            f"<figure><figcaption>Predicted vs observed</figcaption>{svg}"
            f'<p class="note">From the {escape(source)}; dashed line: predicted = '
            "observed.</p></figure>"
        )
    rest = {k: v for k, v in dataclasses.asdict(cv).items() if k not in _SPECIFIC}
    scalars = {k: v for k, v in rest.items() if _is_scalar(v)}
    if scalars:
        parts.append(f"<div>{_render_value(scalars, depth=1, path=())}</div>")
    # Tables of records (the CV table of predictors) first: they are the diagnostics proper.
    nested = sorted(
        ((k, v) for k, v in rest.items() if not _is_scalar(v)),
        key=lambda kv: not _is_records(kv[1]),
    )
    return f'<div class="plots">{"".join(parts)}</div>' + _render_mapping(
        dict(nested), depth=0, path=()
    )


def _is_records(v: Any) -> bool:
    if isinstance(v, Mapping):
        values = list(v.values())
    elif isinstance(v, list):
        values = v
    else:
        return False
    return bool(values) and all(
        isinstance(x, Mapping) and all(_cellable(y) for y in x.values()) for x in values
    )


# -- generic JSON rendering (diagnostics, provenance) ---------------------------------------

_BAR_KEYS = ("weight", "coef", "importance")


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | bool | numbers.Real)


def _scalar_cell(v: Any) -> str:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return _td("—" if v is None else ("yes" if v is True else "no" if v is False else v))
    return _num_cell(v)


def _humanize(key: Any) -> str:
    return str(key).replace("_", " ")


def _render_mapping(obj: Mapping[str, Any], *, depth: int, path: tuple[str, ...]) -> str:
    """Scalars as one key/value table, each nested value under its own heading."""
    scalars = {k: v for k, v in obj.items() if _is_scalar(v)}
    nested = {k: v for k, v in obj.items() if not _is_scalar(v)}
    parts = []
    if scalars:
        parts.append(_render_value(scalars, depth=depth + 1, path=path))
    level = min(6, 3 + depth)
    for k, v in nested.items():
        parts.append(
            f"<h{level}>{escape(_humanize(k))}</h{level}>"
            + _render_value(v, depth=depth + 1, path=(*path, str(k)))
        )
    return "".join(parts)


def _render_value(v: Any, *, depth: int, path: tuple[str, ...]) -> str:
    if _is_scalar(v):
        return f"<p>{escape(fmt_num(v) if isinstance(v, numbers.Real) else str(v))}</p>"
    if depth > 4:
        return f"<pre>{escape(_json(v))}</pre>"
    if isinstance(v, Mapping):
        if not v:
            return _empty("(empty)")
        values = list(v.values())
        if all(_is_scalar(x) for x in values):
            wants_bars = any(key in p.lower() for p in path[-1:] for key in _BAR_KEYS)
            numeric = [_as_float(x) for x in values]
            if wants_bars and all(x is not None for x in numeric):
                return _weights_table(v)
            return _table(
                ["Key", "Value"],
                [[_td(_humanize(k), "key"), _scalar_cell(x)] for k, x in v.items()],
            )
        if all(isinstance(x, Mapping) and all(_cellable(y) for y in x.values()) for x in values):
            first = path[-1] if path else "name"
            return _records_table([{first: k, **x} for k, x in v.items()], key_column=first)
        return _render_mapping(v, depth=depth, path=path)
    if isinstance(v, list | tuple):
        if not v:
            return _empty("(empty)")
        if all(isinstance(x, Mapping) and all(_cellable(y) for y in x.values()) for x in v):
            return _records_table(list(v))
        if all(_is_scalar(x) for x in v):
            if any(isinstance(x, str) and len(x) > 40 for x in v):
                return "<ul>" + "".join(f"<li>{escape(fmt_num(x))}</li>" for x in v) + "</ul>"
            return f"<p>{escape(', '.join(fmt_num(x) for x in v))}</p>"
        return f"<pre>{escape(_json(v))}</pre>"
    return f"<pre>{escape(_json(v))}</pre>"


def _records_table(records: Sequence[Mapping[str, Any]], key_column: str | None = None) -> str:
    """One row per record; ``x_ci`` pairs go under ``x``, a description under the key."""
    columns: list[str] = list(dict.fromkeys(k for r in records for k in r))
    paired = {c for c in columns if c.endswith("_ci") and c[:-3] in columns}
    described = key_column is not None and "description" in columns
    shown = [c for c in columns if c not in paired and not (described and c == "description")]
    header_html = [
        f'<th class="{"num" if _numeric_column(records, c) else ""}">{escape(_humanize(c))}</th>'
        for c in shown
    ]
    rows = []
    for r in records:
        cells = []
        for c in shown:
            if c == key_column:
                note = r.get("description") if described else None
                sub = f'<span class="ci">{escape(str(note))}</span>' if note else ""
                cells.append(f'<td class="key desc">{escape(str(r.get(c)))}{sub}</td>')
            elif f"{c}_ci" in paired and _is_pair(r.get(f"{c}_ci")):
                cells.append(_num_cell(r.get(c), ci=tuple(r[f"{c}_ci"])))
            else:
                cells.append(_cell(r.get(c)))
        rows.append(cells)
    return _table(shown, rows, header_html=header_html)


def _cellable(v: Any) -> bool:
    """Fits in one table cell: a scalar, a list of scalars or a flat mapping."""
    if _is_scalar(v):
        return True
    if isinstance(v, list | tuple):
        return all(_is_scalar(x) for x in v)
    return isinstance(v, Mapping) and all(_is_scalar(x) for x in v.values())


def _is_pair(v: Any) -> bool:
    return isinstance(v, list | tuple) and len(v) == 2 and all(_as_float(x) is not None for x in v)


def _cell(v: Any) -> str:
    """A table cell for any JSON value: scalars as such, small containers compactly."""
    if _is_scalar(v):
        return _scalar_cell(v)
    if _is_pair(v):
        text = f"[{fmt_num(v[0])}, {fmt_num(v[1])}]"
        return f'<td class="num" data-sort="{_as_float(v[0])!r}">{escape(text)}</td>'
    if isinstance(v, list | tuple) and all(_is_scalar(x) for x in v):
        return f'<td class="small">{escape(", ".join(fmt_num(x) for x in v)) or "—"}</td>'
    if isinstance(v, Mapping) and all(_is_scalar(x) for x in v.values()):
        items = list(v.items())
        if all(_as_float(x) is not None for _, x in items):
            items.sort(key=lambda kv: -abs(_as_float(kv[1]) or 0.0))
        lines = "<br>".join(f"{escape(str(k))}: {escape(fmt_num(x))}" for k, x in items)
        return f'<td class="small">{lines or "—"}</td>'
    return f'<td class="small"><code>{escape(json.dumps(v, default=str))}</code></td>'


def _numeric_column(records: Sequence[Mapping[str, Any]], column: str) -> bool:
    vals = [r.get(column) for r in records if r.get(column) is not None]
    return bool(vals) and all(_as_float(x) is not None for x in vals)


def _weights_table(weights: Mapping[str, Any]) -> str:
    items = sorted(weights.items(), key=lambda kv: -abs(_as_float(kv[1]) or 0.0))
    top = max((abs(_as_float(x) or 0.0) for _, x in items), default=1.0) or 1.0
    rows = []
    for k, x in items:
        w = _as_float(x) or 0.0
        width = max(1, round(120 * abs(w) / top))
        neg = " neg" if w < 0 else ""
        rows.append(
            [
                f'<td class="key" title="{escape(_metric_tooltip(str(k).split("/", 1)[-1]))}">'
                f"{escape(str(k))}</td>",
                _num_cell(w),
                f'<td data-sort="{abs(w)!r}"><span class="bar{neg}" style="width:{width}px">'
                "</span></td>",
            ]
        )
    header_html = ["<th>Feature</th>", '<th class="num">Weight</th>', "<th>|weight|</th>"]
    return _table([], rows, header_html=header_html)


def _json(v: Any) -> str:
    return json.dumps(v, indent=2, sort_keys=False, default=str, ensure_ascii=False)


# -- provenance -----------------------------------------------------------------------------


def _provenance_section(provenance: Mapping[str, Any]) -> str:
    if not provenance:
        return _empty("No provenance recorded.")
    scalars = {k: v for k, v in provenance.items() if _is_scalar(v)}
    nested = {k: v for k, v in provenance.items() if not _is_scalar(v)}
    parts = [
        '<p class="note">What produced these numbers: versions, parameters, input content '
        "hashes and index manifests. Expand a part to read it.</p>"
    ]
    if scalars:
        parts.append(
            '<dl class="kv">'
            + "".join(
                f'<dt>{escape(_humanize(k))}</dt><dd class="mono">{escape(str(v))}</dd>'
                for k, v in scalars.items()
            )
            + "</dl>"
        )
    for k, v in nested.items():
        parts.append(
            f"<details><summary>{escape(_humanize(k))}</summary>"
            f"{_render_value(v, depth=1, path=(str(k),))}</details>"
        )
    parts.append(
        f"<details><summary>All provenance as JSON</summary><pre>{escape(_json(provenance))}</pre>"
        "</details>"
    )
    return "".join(parts)
