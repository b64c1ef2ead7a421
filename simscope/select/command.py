"""``simscope select`` as a library call: read the input files, select, write, and render
the result as text. The CLI only parses options into a ``SelectRequest`` and prints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from simscope.errors import SimscopeError
from simscope.select.core import (
    DEFAULT_COVERAGE,
    DEFAULT_N_BOOT,
    SelectionResult,
    select_models,
    write_selection,
)
from simscope.select.cost import CostConfig
from simscope.select.published import read_prior
from simscope.select.summary import CVSummary
from simscope.select.tables import (
    PARAMS_BENCHMARK,
    TOKENS_BENCHMARK,
    Duplicates,
    read_benchmarks,
    read_candidates,
    read_model_map,
    read_profile,
    read_rm_results,
    rename_models,
)


@dataclass(frozen=True)
class SelectRequest:
    """Everything ``simscope select`` is given (paths as the user wrote them)."""

    target: str
    rm_results: str | None = None
    profile: str | None = None
    benchmarks: str | None = None
    prior: str | None = None
    prior_metric: str | None = None
    prior_model_column: str = "model"
    rm_model_column: str = "model"
    rm_where: Sequence[str] = ()
    rm_duplicates: Duplicates = "error"
    benchmark_model_column: str = "model"
    benchmark_duplicates: Duplicates = "error"
    benchmark_columns: Sequence[str] | None = None
    model_map: str | None = None
    candidates: Sequence[str] = ()
    candidates_file: str | None = None
    all_models: bool = False
    costs_file: str | None = None
    cost: CostConfig = field(default_factory=CostConfig)
    budget: float | None = None
    suggest: int = 0
    coverage: float = DEFAULT_COVERAGE
    n_boot: int = DEFAULT_N_BOOT
    out: str | None = None
    top: int = 20
    seed: int = 0


@dataclass(frozen=True)
class SelectOutput:
    """The result, its text and the files written (if any)."""

    result: SelectionResult
    text: str
    written: tuple[Path, ...] = ()


def parse_where(items: Sequence[str]) -> dict[str, str]:
    """``COLUMN=VALUE`` items as a mapping."""
    where: dict[str, str] = {}
    for item in items:
        column, sep, value = item.partition("=")
        if not sep or not column:
            raise SimscopeError(f"--rm-where: expected COLUMN=VALUE, found {item!r}")
        where[column] = value
    return where


def run_select(request: SelectRequest) -> SelectOutput:
    """Read the request's inputs, select, write if ``out`` is set, and render the text."""
    r = request
    if r.profile is None and r.benchmarks is None:
        raise SimscopeError(
            "select: no features; give --benchmarks (a file or open-llm-leaderboard-v2) "
            "and/or --profile"
        )
    if r.rm_results is None and r.prior is None:
        raise SimscopeError(
            "select: give --rm-results (what you measured), --prior (published results, e.g. "
            "ahrabian2025-regression), or both"
        )
    if r.seed < 0 or r.seed >= 2**32:
        raise SimscopeError(f"--seed: expected an integer in [0, 2**32), found {r.seed}")
    names = read_model_map(r.model_map) if r.model_map else {}
    rm = None
    families: dict[str, str] = {}
    if r.rm_results is not None:
        rm = rename_models(
            read_rm_results(
                r.rm_results,
                model_column=r.rm_model_column,
                where=parse_where(r.rm_where),
                duplicates=r.rm_duplicates,
            ),
            names,
        )
        families.update(_family_column(Path(r.rm_results), r.rm_model_column, names))
    bench = (
        rename_models(
            read_benchmarks(
                r.benchmarks,
                duplicates=r.benchmark_duplicates,
                model_column=r.benchmark_model_column,
            ),
            names,
        )
        if r.benchmarks
        else None
    )
    prof = rename_models(read_profile(r.profile), names) if r.profile else None
    prior = (
        read_prior(r.prior, model_column=r.prior_model_column, model_map=names) if r.prior else None
    )
    candidates = [names.get(c, c) for c in r.candidates]
    covariates: dict[str, dict[str, float]] = {}
    costs: dict[str, float] = {}
    if r.candidates_file:
        table = read_candidates(r.candidates_file)
        candidates += [names.get(c, c) for c in table.models]
        families.update({names.get(m, m): f for m, f in table.families.items()})
        costs.update({names.get(m, m): c for m, c in table.costs.items()})
        covariates[PARAMS_BENCHMARK] = {names.get(m, m): p for m, p in table.params_b.items()}
        covariates[TOKENS_BENCHMARK] = {names.get(m, m): t for m, t in table.tokens_t.items()}
    if r.costs_file:
        table = read_candidates(r.costs_file)
        if not table.costs:
            raise SimscopeError(
                f"{r.costs_file}: --costs: no 'cost' column; expected columns model,cost"
            )
        costs.update({names.get(m, m): c for m, c in table.costs.items()})
    result = select_models(
        prof,
        bench,
        rm,
        target_metric=r.target,
        seed=r.seed,
        candidates=list(dict.fromkeys(candidates)) or None,
        all_models=r.all_models,
        coverage=r.coverage,
        n_boot=r.n_boot,
        prior=prior,
        prior_metric=r.prior_metric,
        families=families,
        covariates={k: v for k, v in covariates.items() if v},
        benchmark_columns=r.benchmark_columns,
        suggest=r.suggest,
        budget=r.budget,
        cost=r.cost,
        costs=costs,
    )
    text = format_result(result, top=r.top)
    written: tuple[Path, ...] = ()
    if r.out:
        written = write_selection(result, r.out)
        text += f"\n\nwrote {written[0]} and {written[1]}"
    return SelectOutput(result, text, written)


def _family_column(path: Path, model_column: str, names: dict[str, str]) -> dict[str, str]:
    """The ``family`` column of an RM-results file, if it has one."""
    from simscope.select.tables import _read_raw

    raw = _read_raw(path)
    if "family" not in raw.columns or model_column not in raw.columns:
        return {}
    out: dict[str, str] = {}
    for model, family in zip(
        raw.get_column(model_column).to_list(), raw.get_column("family").to_list(), strict=True
    ):
        if model is not None and family is not None and str(family).strip():
            m = str(model).strip()
            out[names.get(m, m)] = str(family).strip()
    return out


def _interval(low: float | None, high: float | None) -> str:
    lo = "-inf" if low is None else f"{low:.1f}"
    hi = "inf" if high is None else f"{high:.1f}"
    return f"[{lo}, {hi}]"


def format_result(result: SelectionResult, *, top: int = 20) -> str:
    """The ranking (best ``top`` rows), what it rests on, the CV table and the verdict."""
    s = result.summary
    caveat = {
        "no_reliable_ranking": " -- NO RELIABLE RANKING, see the verdict below",
        "no_better_than_baseline": " -- no better than a baseline, see the verdict below",
        "reliable_ranking": "",
    }[result.verdict.status]
    how = {
        "prior_calibrated": f"the prior {s.prior.source if s.prior else ''!s}"
        + (" calibrated to your measured models" if s.n_measured else " (nothing measured yet)"),
        "size_calibrated": "log(params) calibrated to your measured models",
        "cv_chosen": f"{s.chosen} (the best of the predictors under pairwise CV)",
    }[s.ranker]
    lines = [
        f"Ranking by {how}, for {s.target_metric} ({s.n_measured} measured, "
        f"{s.n_untried} untried; {s.coverage_nominal:.0%} intervals){caveat}",
        f"{'rank':>4}  {'model':<44} {'observed':>8} {'predicted':>9} {'interval':>17} "
        f"{'p_best':>6}",
    ]
    far = set(s.extrapolated)
    for row in result.selection.head(top).iter_rows(named=True):
        obs = f"{row['observed']:8.2f}" if row["observed"] is not None else f"{'-':>8}"
        mark = "*" if row["model"] in far else " "
        lines.append(
            f"{row['rank']:>4} {mark}{row['model'][:44]:<44} {obs} {row['predicted']:9.2f} "
            f"{_interval(row['pi_low'], row['pi_high']):>17} {row['p_best']:6.2f}"
        )
    if result.selection.height > top:
        lines.append(f"      ... {result.selection.height - top} more in selection.parquet")
    if far:
        lines.append(
            f"   * {len(far)} untried models lie outside the measured models' range of a feature "
            "the predictor uses: their predictions are extrapolations"
        )
    lines += ["", *_inputs_lines(s)]
    if s.prior is not None:
        lines += ["", *_prior_lines(s)]
    if s.calibration is not None and s.n_measured:
        lines += ["", *_calibration_lines(s)]
    if s.predictors:
        lines += ["", *_cv_lines(s)]
    if s.interval_coverage is not None:
        lines.append(
            f"Interval coverage under CV ({s.chosen}): {s.interval_coverage:.2f} of "
            f"{s.interval_coverage_finite} held-out measured models inside their interval "
            f"(nominal {s.coverage_nominal:.2f})"
        )
    elif s.interval_note:
        lines.append(f"Interval coverage not checked: {s.interval_note}")
    if s.suggestions:
        lines += ["", "Measure next (value of information):"]
        for i, sug in enumerate(s.suggestions, start=1):
            lines.append(f"  {i}. {sug.model}: {sug.reason}")
    if s.cost is not None and (
        s.cost.budget is not None or s.cost.source == "column" or s.suggestions
    ):
        lines += ["", *_cost_lines(s)]
    for note in s.notes:
        lines.append(f"Note: {note}")
    lines += ["", result.verdict.text]
    return "\n".join(lines)


def _inputs_lines(s: CVSummary) -> list[str]:
    f = s.features
    lines = [f"Features ({len(f.features)}): {', '.join(f.features) or 'none'}"]
    if f.excluded_columns:
        lines.append(
            "Not features: "
            + "; ".join(f"{k} ({v})" for k, v in sorted(f.excluded_columns.items()))
        )
    if f.contamination_checks_not_used:
        lines.append(
            f"Contamination checks (not features): {', '.join(f.contamination_checks_not_used)}"
        )
    multi = {k: v for k, v in s.families.items() if len(v) > 1}
    lines.append(
        f"Families ({s.family_source}; held out together): {len(s.families)}, of which "
        f"{len(multi)} with several models"
        + (": " + "; ".join(f"{k} = {', '.join(v)}" for k, v in multi.items()) if multi else "")
    )
    return lines


def _fmt_ci(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def _prior_lines(s: CVSummary) -> list[str]:
    p = s.prior
    assert p is not None
    source = "" if p.source_metric == p.metric else f" (fit on {p.source_metric}, rescaled)"
    lines = [
        f"Prior {p.source}: {p.metric}{source} from {', '.join(p.features)} over {p.n_models} "
        f"published models in {p.n_families} families (chosen by grouped CV); error SD "
        f"{p.residual_sd:.2f}",
        f"  held-out families: Spearman {_fmt_ci(p.spearman, p.spearman_ci)}; by log(params) "
        f"{_fmt_ci(p.size_spearman, p.size_spearman_ci)}; difference "
        f"{_fmt_ci(p.minus_size, p.minus_size_ci)}",
    ]
    if p.published:
        lines.append(f"  published scores used as they are: {', '.join(p.published)}")
    for feats, models in p.reduced.items():
        lines.append(f"  predicted from {feats} only (the features they have): {', '.join(models)}")
    return lines


def _calibration_lines(s: CVSummary) -> list[str]:
    c = s.calibration
    assert c is not None
    metric = "the same metric" if c.same_metric else "another metric"
    lines = [
        f"Calibration to your {c.n_measured} measured models ({metric}): scale {c.scale:.3g} "
        f"[{c.scale_ci[0]:.3g}, {c.scale_ci[1]:.3g}], unexplained SD {c.unexplained_sd:.3g}, "
        f"agreement with the prior {c.agreement:.2f}"
        + (f" (the prior's own: {c.prior_agreement:.2f})" if c.prior_agreement else "")
        + f"; residual model strength {c.residual_strength:g}"
        + (
            ": " + ", ".join(f"{k} {v:+.3g}" for k, v in c.residual_weights.items())
            if c.residual_weights
            else " (off)"
        )
    ]
    if c.disagrees:
        lines.append(f"  {c.note}")
    return lines


def _cv_lines(s: CVSummary) -> list[str]:
    lines = [
        f"Cross-validation over the measured models (tau: pairwise CV, "
        f"{s.verdict_ci_level:.1%} CI; spearman: LOO, deviations from the training mean; "
        "raw: LOO Spearman of the predictions)"
    ]
    ks = list(next(iter(s.predictors.values())).top_k)
    lines.append(
        f"{'predictor':<16} {'tau':>21} {'spearman':>8} {'raw':>6} {'MAE':>7}"
        + "".join(f" {'c@' + k:>5}" for k in ks)
    )
    for name, row in s.predictors.items():
        ci = row.pair_tau_ci
        what = ""
        if row.chosen_feature is not None:
            sign = "higher is better" if (row.slope or 0) > 0 else "LOWER is better"
            what = f"  ({row.chosen_feature}, {sign})"
        lines.append(
            f"{name:<16} {row.pair_tau:+6.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}] "
            f"{row.spearman:+8.2f} {row.spearman_raw:+6.2f} {row.mae:7.2f}"
            + "".join(f" {row.top_k[k]:5.2f}" for k in ks)
            + what
        )
    return lines


def _cost_lines(s: CVSummary) -> list[str]:
    c = s.cost
    assert c is not None
    unit = "$" if c.unit == "USD" else ""
    front = [r for r in c.rows if r.pareto]
    front.sort(key=lambda r: r.cost if r.cost is not None else 0.0)
    lines = [
        f"Cost ({c.description}): Pareto front of quality vs cost: "
        + ", ".join(f"{r.model} ({unit}{_money(r.cost)}, {r.quality:.2f})" for r in front)
    ]
    if c.budget is not None:
        lines.append(
            f"Within the budget {unit}{_money(c.budget)}: "
            + (
                f"{c.best_within_budget} (P(best among affordable) {c.p_best_within_budget:.2f})"
                if c.best_within_budget and c.p_best_within_budget is not None
                else (c.best_within_budget or "none")
            )
        )
    if c.note:
        lines.append(f"  {c.note}")
    return lines


def _money(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def read_summary(path: Path) -> CVSummary:
    """A ``cv_summary.json`` checked against the schema."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SimscopeError(f"{path}: not UTF-8 text (byte {e.start}); rerun select") from None
    return CVSummary.from_json(text, str(path))
