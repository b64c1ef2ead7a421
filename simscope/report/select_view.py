"""The report's views of the select stage's prior, calibration, cost front and suggestions.

Each section is two steps: a ``*_view`` function turns the typed ``CVSummary`` into plain
data (dicts, lists, strings and numbers: what a template would receive), and a ``*_markup``
function lays that data out as HTML (every string escaped). The report module only calls
``select_sections``.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from simscope.report.plots import ScatterGroup, fmt_num, scatter_plot
from simscope.select.summary import CVSummary


def _ci(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:+.2f}"
    return text + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci is not None else "")


def _empty(text: str) -> str:
    return f'<p class="empty">{escape(text)}</p>'


def _rows_table(headers: list[str], rows: list[list[Any]], numeric: set[int]) -> str:
    head = "".join(
        f'<th class="{"num" if i in numeric else ""}">{escape(h)}</th>'
        for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            if i in numeric:
                sort = "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(v)
                cells.append(
                    f'<td class="num" data-sort="{escape(sort)}">{escape(fmt_num(v))}</td>'
                )
            else:
                cells.append(f"<td>{escape('—' if v is None else str(v))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


# -- prior and calibration ---------------------------------------------------------------


def prior_view(cv: CVSummary | None) -> dict[str, Any] | None:
    """Plain data of the prior and the calibration, or None without a calibrated ranker."""
    if cv is None or (cv.prior is None and cv.calibration is None):
        return None
    out: dict[str, Any] = {"ranker": cv.ranker}
    p = cv.prior
    if p is not None:
        out["prior"] = {
            "source": p.source,
            "provenance": p.provenance,
            "metric": p.metric,
            "source_metric": p.source_metric,
            "models": p.n_models,
            "families": p.n_families,
            "features": list(p.features),
            "weights": dict(p.weights),
            "error_sd": p.residual_sd,
            "spearman": _ci(p.spearman, p.spearman_ci),
            "size_spearman": _ci(p.size_spearman, p.size_spearman_ci),
            "minus_size": _ci(p.minus_size, p.minus_size_ci),
            "candidates": [
                {
                    "features": ", ".join(c.features),
                    "source": c.source_metric,
                    "rmse": c.rmse,
                    "spearman": c.spearman,
                    "chosen": c.features == p.features and c.source_metric == p.source_metric,
                }
                for c in p.candidates
            ],
            "published": list(p.published),
            "reduced": dict(p.reduced),
            "held_out": [(h.model, h.predicted, h.observed) for h in p.held_out],
        }
    c = cv.calibration
    if c is not None:
        out["calibration"] = {
            "prior": c.prior,
            "same_metric": c.same_metric,
            "measured": c.n_measured,
            "scale": c.scale,
            "scale_ci": list(c.scale_ci),
            "offset": c.offset,
            "unexplained_sd": c.unexplained_sd,
            "agreement": c.agreement,
            "prior_agreement": c.prior_agreement,
            "disagrees": c.disagrees,
            "residual_strength": c.residual_strength,
            "residual_weights": dict(c.residual_weights),
            "strengths": [(s.b_log_sd, s.residual, s.mse, s.se) for s in c.strengths],
            "note": c.note,
        }
    return out


def prior_markup(view: dict[str, Any] | None) -> str:
    """HTML for ``prior_view``'s data."""
    if view is None:
        return _empty(
            "No prior: the ranking is fitted to the measured models alone (no published results "
            "and no parameter counts to calibrate around)."
        )
    parts = []
    p = view.get("prior")
    if p is not None:
        fit_on = "" if p["source_metric"] == p["metric"] else f" (fit on {p['source_metric']})"
        parts.append(
            f'<p id="prior-summary"><b>Prior {escape(p["source"])}</b>: predicts '
            f"{escape(p['metric'])}{escape(fit_on)} from {escape(', '.join(p['features']))}, "
            f"fit on {p['models']} published models in {p['families']} families, chosen by "
            f"grouped cross-validation; error SD {escape(fmt_num(p['error_sd']))}. Held-out "
            f"families: Spearman {escape(p['spearman'])}; ranking by log(params) "
            f"{escape(p['size_spearman'])}; difference {escape(p['minus_size'])}.</p>"
            f'<p class="note">{escape(p["provenance"])}</p>'
        )
        parts.append(
            "<h3>Candidate prior models (grouped CV)</h3>"
            + _rows_table(
                ["features", "fit on", "RMSE", "Spearman", "chosen"],
                [
                    [
                        c["features"],
                        c["source"],
                        c["rmse"],
                        c["spearman"],
                        "yes" if c["chosen"] else "",
                    ]
                    for c in p["candidates"]
                ],
                {2, 3},
            )
        )
        if p["published"]:
            parts.append(
                '<p class="note">Published scores used as they are: '
                f"{escape(', '.join(p['published']))}.</p>"
            )
        for feats, models in p["reduced"].items():
            parts.append(
                f'<p class="note">Predicted from {escape(feats)} only (the features they have): '
                f"{escape(', '.join(models))}.</p>"
            )
        if p["held_out"]:
            svg = scatter_plot(
                [
                    ScatterGroup(
                        "published model",
                        [h[1] for h in p["held_out"]],
                        [h[2] for h in p["held_out"]],
                        "#009E73",
                        labels=[h[0] for h in p["held_out"]],
                        radius=4.0,
                        opacity=0.85,
                    )
                ],
                x_label=f"prior prediction of {p['metric']}",
                y_label=f"published {p['metric']}",
                width=520,
                height=400,
                diagonal=True,
                equal_axes=True,
            )
            parts.append(
                f"<figure><figcaption>The prior on its own table</figcaption>{svg}</figure>"
            )
    c = view.get("calibration")
    if c is not None:
        metric = "the prior's metric" if c["same_metric"] else "another metric than the prior's"
        if c["measured"] == 0:
            text = "Nothing measured yet: the ranking is the prior's, for its own recipe."
        else:
            own = (
                f" (the prior's own: {fmt_num(c['prior_agreement'])})"
                if c["prior_agreement"] is not None
                else ""
            )
            weights = ", ".join(f"{k} {v:+.3g}" for k, v in c["residual_weights"].items())
            text = (
                f"{c['measured']} measured models in {metric} calibrate {c['prior']}: scale "
                f"{fmt_num(c['scale'])} [{fmt_num(c['scale_ci'][0])}, "
                f"{fmt_num(c['scale_ci'][1])}], unexplained SD {fmt_num(c['unexplained_sd'])}, "
                f"agreement with the prior {fmt_num(c['agreement'])}{own}; residual model "
                f"strength {fmt_num(c['residual_strength'])}"
                + (f" ({weights})" if weights else " (off)")
                + "."
            )
        klass = "verdict" if c["disagrees"] else "note"
        parts.append(
            f'<h3>Calibration</h3><p id="calibration" class="{klass}">{escape(text)}'
            + (f" {escape(c['note'])}" if c["note"] else "")
            + "</p>"
        )
        if c["strengths"]:
            parts.append(
                _rows_table(
                    ["b prior width", "residual strength", "grouped-CV MSE", "SE"],
                    [list(s) for s in c["strengths"]],
                    {0, 1, 2, 3},
                )
            )
    return "".join(parts)


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


def suggestion_markup(rows: list[dict[str, Any]]) -> str:
    """HTML for ``suggestion_view``'s rows."""
    if not rows:
        return _empty(
            "No suggestions asked for: `simscope select --suggest N` names the untried "
            "candidates whose measurement most lowers the risk of a wrong pick."
        )
    items = "".join(f"<li><b>{escape(r['model'])}</b>: {escape(r['reason'])}</li>" for r in rows)
    return (
        f'<ol id="suggestions">{items}</ol><p class="note">Value of information: the expected '
        "rise of the picked model's true score once the candidate is measured (knowledge "
        "gradient over the posterior draws).</p>"
    )


# -- cost -----------------------------------------------------------------------------------


def cost_view(cv: CVSummary | None) -> dict[str, Any] | None:
    """Costs, qualities and the front, or None when no cost is known."""
    if cv is None or cv.cost is None or not any(r.cost is not None for r in cv.cost.rows):
        return None
    c = cv.cost
    return {
        "unit": c.unit,
        "description": c.description,
        "knobs": dict(c.knobs),
        "rows": [
            {
                "model": r.model,
                "cost": r.cost,
                "quality": r.quality,
                "measured": r.measured,
                "pareto": r.pareto,
                "within_budget": r.within_budget,
            }
            for r in c.rows
        ],
        "budget": c.budget,
        "best_within_budget": c.best_within_budget,
        "p_best_within_budget": c.p_best_within_budget,
        "note": c.note,
        "target": cv.target_metric,
    }


def cost_markup(view: dict[str, Any] | None) -> str:
    """HTML for ``cost_view``'s data: the front drawn on log cost, and the table."""
    if view is None:
        return _empty(
            "No costs: give parameter counts (the benchmark table's params_B) or a cost column."
        )
    rows = [r for r in view["rows"] if r["cost"] is not None and r["cost"] > 0]
    groups = []
    for name, on, colour in (("Pareto front", True, "#D55E00"), ("dominated", False, "#999999")):
        sel = [r for r in rows if r["pareto"] == on]
        if sel:
            groups.append(
                ScatterGroup(
                    name,
                    [math.log10(r["cost"]) for r in sel],
                    [r["quality"] for r in sel],
                    colour,
                    labels=[r["model"] for r in sel],
                    radius=4.5,
                    opacity=0.9,
                )
            )
    unit = view["unit"]
    svg = scatter_plot(
        groups,
        x_label=f"log10 cost ({unit})",
        y_label=f"{view['target']} (observed, or predicted if untried)",
        width=620,
        height=400,
    )
    parts = [
        f'<p class="note">{escape(view["description"])}'
        + (
            " — " + escape(", ".join(f"{k} = {fmt_num(v)}" for k, v in view["knobs"].items()))
            if view["knobs"]
            else ""
        )
        + "</p>",
        f'<figure id="pareto"><figcaption>Quality against cost</figcaption>{svg}</figure>',
    ]
    if view["budget"] is not None:
        pick = view["best_within_budget"] or "none"
        p = view["p_best_within_budget"]
        parts.append(
            f'<p class="headline">Best within the budget {escape(fmt_num(view["budget"]))}: '
            f"{escape(pick)}"
            + (f" (P(best among affordable) {escape(fmt_num(p))})" if p is not None else "")
            + "</p>"
        )
    parts.append(
        _rows_table(
            ["model", "cost", "quality", "measured", "Pareto", "within budget"],
            [
                [
                    r["model"],
                    r["cost"],
                    r["quality"],
                    "yes" if r["measured"] else "",
                    "yes" if r["pareto"] else "",
                    "" if r["within_budget"] is None else ("yes" if r["within_budget"] else "no"),
                ]
                for r in view["rows"]
            ],
            {1, 2},
        )
    )
    if view["note"]:
        parts.append(f'<p class="note">{escape(view["note"])}</p>')
    return "".join(parts)


def select_sections(cv: CVSummary | None) -> dict[str, str]:
    """Section id -> HTML content for the report's select sections."""
    return {
        "next": suggestion_markup(suggestion_view(cv)),
        "cost": cost_markup(cost_view(cv)),
        "prior": prior_markup(prior_view(cv)),
    }
