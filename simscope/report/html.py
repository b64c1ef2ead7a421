"""The self-contained HTML report: the decision, the similarity profile and the evidence.

``render_report`` checks a ``ReportInputs``, has ``views`` and ``select_view`` turn it into
plain data, and lays that out with the Jinja2 templates in ``templates/`` (autoescaped, strict
about undefined names, loaded from this package: nothing is fetched). Every style, script and
plot is inline, so the file opens offline in any browser.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import jinja2
import polars as pl
from markupsafe import Markup, escape

from simscope import __version__
from simscope.errors import SimscopeError
from simscope.records import PROFILE_SCHEMA, SELECTION_SCHEMA, check_frame
from simscope.report.plots import fmt_num
from simscope.report.select_view import cost_view, prior_view, suggestion_view
from simscope.report.views import (
    EXAMPLE_KEYS,
    ORIGINS,
    corpus_origins,
    decision_view,
    diagnostics_view,
    examples_view,
    map_view,
    model_order,
    profile_view,
    provenance_view,
    subtitle,
    topics_view,
)
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
"""(section id, heading) in page order; the ids are stable anchors, each section's template
is ``templates/<id>.html.j2``."""


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
    """Versions, parameters, input hashes, index manifests; ``corpora.<model>.origin`` (a
    list of ProbeCorpus origins, as a run writes it) labels each corpus imported or sampled."""
    heatmap_metric: str | None = None
    """Metric shown first in the heatmap; None picks one (see views.HEATMAP_PREFERENCE)."""
    title: str = "simscope report"


@dataclass(frozen=True, slots=True)
class Section:
    id: str
    heading: str
    view: Any


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
    models = model_order(profile, selection)
    cv = inputs.cv_summary
    origins = corpus_origins(inputs.provenance)
    views = {
        "decision": decision_view(selection, cv, origins),
        "next": suggestion_view(cv),
        "cost": cost_view(cv),
        "prior": prior_view(cv),
        "profile": profile_view(profile, models, origins),
        "topics": topics_view(profile, models, inputs.heatmap_metric, origins),
        "examples": examples_view(examples, origins),
        "map": map_view(emap, origins),
        "diagnostics": diagnostics_view(cv, selection),
        "provenance": provenance_view(inputs.provenance),
    }
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=inputs.title,
            subtitle=subtitle(profile, models, inputs.provenance),
            sections=[Section(sid, heading, views[sid]) for sid, heading in SECTIONS],
            version=__version__,
            css=_asset("report.css"),
            js=_asset("report.js"),
        )
    )


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("simscope.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = fmt_num
    env.filters["breakable"] = _breakable
    env.globals["origins"] = ORIGINS
    return env


def _breakable(name: str) -> Markup:
    """``name`` escaped, with line breaks allowed after dots, underscores and '@'."""
    return Markup(re.sub(r"([._@])", r"\1<wbr>", str(escape(name))))


def _asset(name: str) -> Markup:
    """A style or script file of this package, for inlining as it is."""
    text = resources.files("simscope.report").joinpath(name).read_text(encoding="utf-8")
    # An inline script or style must never contain its own closing tag.
    return Markup(re.sub(r"</(script|style)", r"<\\/\1", text, flags=re.IGNORECASE))


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
