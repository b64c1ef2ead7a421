"""The report's views of the select stage's prior, calibration, cost front and suggestions.

Each ``*_view`` function turns the typed ``CVSummary`` into the plain data its template
(``templates/prior.html.j2``, ``next.html.j2``, ``cost.html.j2``) lays out: dicts of strings,
numbers and tables (``blocks``), and the plots as inline SVG marked safe.
"""

from __future__ import annotations

import math
from typing import Any

from markupsafe import Markup

from simscope.report.blocks import rows_table
from simscope.report.plots import ScatterGroup, fmt_num, scatter_plot
from simscope.select.summary import CVSummary


def _ci(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:+.2f}"
    return text + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci is not None else "")


# -- prior and calibration ---------------------------------------------------------------


def prior_view(cv: CVSummary | None) -> dict[str, Any] | None:
    """The prior and the calibration, or None without a calibrated ranker."""
    if cv is None or (cv.prior is None and cv.calibration is None):
        return None
    out: dict[str, Any] = {"ranker": cv.ranker, "prior": None, "calibration": None}
    p = cv.prior
    if p is not None:
        held_out = [(h.model, h.predicted, h.observed) for h in p.held_out]
        out["prior"] = {
            "source": p.source,
            "provenance": p.provenance,
            "metric": p.metric,
            "fit_on": "" if p.source_metric == p.metric else f" (fit on {p.source_metric})",
            "models": p.n_models,
            "families": p.n_families,
            "features": list(p.features),
            "weights": dict(p.weights),
            "error_sd": p.residual_sd,
            "spearman": _ci(p.spearman, p.spearman_ci),
            "size_spearman": _ci(p.size_spearman, p.size_spearman_ci),
            "minus_size": _ci(p.minus_size, p.minus_size_ci),
            "candidates": rows_table(
                ["features", "fit on", "RMSE", "Spearman", "chosen"],
                [
                    [
                        ", ".join(c.features),
                        c.source_metric,
                        c.rmse,
                        c.spearman,
                        "yes"
                        if c.features == p.features and c.source_metric == p.source_metric
                        else "",
                    ]
                    for c in p.candidates
                ],
                {2, 3},
            ),
            "published": list(p.published),
            "reduced": dict(p.reduced),
            "held_out": held_out,
            "plot": _prior_plot(held_out, p.metric) if held_out else None,
        }
    c = cv.calibration
    if c is not None:
        metric = "the prior's metric" if c.same_metric else "another metric than the prior's"
        if c.n_measured == 0:
            text = "Nothing measured yet: the ranking is the prior's, for its own recipe."
        else:
            own = (
                f" (the prior's own: {fmt_num(c.prior_agreement)})"
                if c.prior_agreement is not None
                else ""
            )
            weights = ", ".join(f"{k} {v:+.3g}" for k, v in c.residual_weights.items())
            text = (
                f"{c.n_measured} measured models in {metric} calibrate {c.prior}: scale "
                f"{fmt_num(c.scale)} [{fmt_num(c.scale_ci[0])}, {fmt_num(c.scale_ci[1])}], "
                f"unexplained SD {fmt_num(c.unexplained_sd)}, agreement with the prior "
                f"{fmt_num(c.agreement)}{own}; residual model strength "
                f"{fmt_num(c.residual_strength)}" + (f" ({weights})" if weights else " (off)") + "."
            )
        out["calibration"] = {
            "text": text + (f" {c.note}" if c.note else ""),
            "disagrees": c.disagrees,
            "strengths": rows_table(
                ["b prior width", "residual strength", "grouped-CV MSE", "SE"],
                [[s.b_log_sd, s.residual, s.mse, s.se] for s in c.strengths],
                {0, 1, 2, 3},
            )
            if c.strengths
            else None,
        }
    return out


def _prior_plot(held_out: list[tuple[str, float, float]], metric: str) -> Markup:
    svg = scatter_plot(
        [
            ScatterGroup(
                "published model",
                [h[1] for h in held_out],
                [h[2] for h in held_out],
                "#009E73",
                labels=[h[0] for h in held_out],
                radius=4.0,
                opacity=0.85,
            )
        ],
        x_label=f"prior prediction of {metric}",
        y_label=f"published {metric}",
        width=520,
        height=400,
        diagonal=True,
        equal_axes=True,
    )
    return Markup(svg)


# -- suggestions --------------------------------------------------------------------------


def suggestion_view(cv: CVSummary | None) -> list[dict[str, Any]]:
    """One row per suggested measurement."""
    if cv is None:
        return []
    return [
        {
            "model": s.model,
            "value": s.value,
            "regret_before": s.regret_before,
            "regret_after": s.regret_after,
            "p_best": s.p_best,
            "cost": s.cost,
            "reason": s.reason,
        }
        for s in cv.suggestions
    ]


# -- cost -----------------------------------------------------------------------------------


def cost_view(cv: CVSummary | None) -> dict[str, Any] | None:
    """Costs, qualities and the front (drawn on log cost), or None when no cost is known."""
    if cv is None or cv.cost is None or not any(r.cost is not None for r in cv.cost.rows):
        return None
    c = cv.cost
    drawn = [r for r in c.rows if r.cost is not None and r.cost > 0]
    groups = []
    for name, on, colour in (("Pareto front", True, "#D55E00"), ("dominated", False, "#999999")):
        sel = [r for r in drawn if r.pareto == on]
        if sel:
            groups.append(
                ScatterGroup(
                    name,
                    [math.log10(r.cost) for r in sel if r.cost is not None],
                    [r.quality for r in sel],
                    colour,
                    labels=[r.model for r in sel],
                    radius=4.5,
                    opacity=0.9,
                )
            )
    svg = scatter_plot(
        groups,
        x_label=f"log10 cost ({c.unit})",
        y_label=f"{cv.target_metric} (observed, or predicted if untried)",
        width=620,
        height=400,
    )
    knobs = ", ".join(f"{k} = {fmt_num(v)}" for k, v in c.knobs.items())
    return {
        "description": c.description + (f" — {knobs}" if knobs else ""),
        "plot": Markup(svg),
        "budget": c.budget,
        "best_within_budget": c.best_within_budget or "none",
        "p_best_within_budget": c.p_best_within_budget,
        "table": rows_table(
            ["model", "cost", "quality", "measured", "Pareto", "within budget"],
            [
                [
                    r.model,
                    r.cost,
                    r.quality,
                    "yes" if r.measured else "",
                    "yes" if r.pareto else "",
                    "" if r.within_budget is None else ("yes" if r.within_budget else "no"),
                ]
                for r in c.rows
            ],
            {1, 2},
        ),
        "note": c.note,
    }
