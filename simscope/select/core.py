"""The select stage end to end: features -> CV of every predictor -> verdict -> Selection.

``select_models`` is the library entry point, ``write_selection`` puts its result on disk
(``selection.parquet`` and ``cv_summary.json``, each written atomically), and
``format_result`` renders it for the terminal.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl

from simscope.errors import SimscopeError
from simscope.records import SELECTION_SCHEMA
from simscope.select.cv import (
    LOOResult,
    bootstrap_indices,
    interval,
    leave_one_out,
    mae_replicates,
    pair_splits,
    pair_tau,
    pair_tau_replicates,
    pairwise_concordance,
    scores,
    spearman_replicates,
)
from simscope.select.features import FeatureMatrix, build_features
from simscope.select.predictors import fit_predictor, predictor_specs
from simscope.select.tables import (
    Duplicates,
    profile_features,
    read_benchmarks,
    read_model_map,
    read_profile,
    read_rm_results,
    rename_models,
)
from simscope.select.uncertainty import (
    jackknife_plus,
    loo_intervals,
    nested_coverage,
    p_best,
)
from simscope.select.verdict import Verdict, decide
from simscope.storage import atomic_file, write_parquet

logger = logging.getLogger(__name__)

DEFAULT_COVERAGE: Final = 0.9
DEFAULT_N_BOOT: Final = 200
SELECTION_FILE: Final = "selection.parquet"
CV_SUMMARY_FILE: Final = "cv_summary.json"


@dataclass(frozen=True)
class SelectionResult:
    """The Selection table, the CV summary (JSON-ready), the chosen predictor's weights, and
    the verdict."""

    selection: pl.DataFrame
    cv_summary: dict[str, Any]
    weights: dict[str, float]
    verdict: Verdict


def select_models(
    profile: pl.DataFrame | None,
    benchmarks: pl.DataFrame | None,
    rm_results: pl.DataFrame,
    *,
    target_metric: str,
    seed: int = 0,
    candidates: Sequence[str] | None = None,
    coverage: float = DEFAULT_COVERAGE,
    n_boot: int = DEFAULT_N_BOOT,
) -> SelectionResult:
    """Rank candidate base models by the CV-chosen predictor of ``target_metric``.

    ``profile`` (long Profile) and ``benchmarks`` (long Benchmarks) give features; either may
    be None. ``rm_results`` holds the measured models' scores. Model names must match exactly
    (rename with ``tables.rename_models`` first). The Selection has every model in scope:
    measured ones with their LOO prediction and ``observed``, untried ones with the full fit's
    prediction; ``rank`` orders all by observed score where measured, predicted otherwise.
    """
    if not 0.0 < coverage < 1.0:
        raise SimscopeError(f"select: coverage must be in (0, 1); got {coverage}")
    if n_boot < 1:
        raise SimscopeError(f"select: n_boot must be >= 1; got {n_boot}")
    profile_wide = profile_features(profile) if profile is not None else None
    features = build_features(
        benchmarks,
        rm_results,
        target_metric,
        profile_wide=profile_wide,
        candidates=candidates,
    )
    measured = features.measured
    X_m, y_m = features.X[measured], features.y[measured]
    n = len(y_m)
    specs = predictor_specs(features)
    logger.info(
        "select: %d measured, %d untried models; %d features; predictors %s",
        n,
        int((~measured).sum()),
        len(features.names),
        [s.name for s in specs],
    )

    loos = {s.name: leave_one_out(s, X_m, y_m, seed=seed) for s in specs}
    table, level = _cv_table(loos, X_m, y_m, features, coverage=coverage, seed=seed)
    verdict = decide(table, n, level)
    chosen = loos[verdict.chosen]

    full = fit_predictor(chosen.spec, X_m, y_m, seed=seed)
    untried = ~measured
    predicted = np.empty(len(features.models))
    low = np.full(len(features.models), np.nan)
    high = np.full(len(features.models), np.nan)
    predicted[measured] = chosen.predicted
    own = loo_intervals(chosen, y_m, coverage=coverage)
    low[measured], high[measured] = own[:, 0], own[:, 1]
    if untried.any():
        predicted[untried] = full.predict(features.X[untried])
        low[untried], high[untried] = jackknife_plus(
            chosen, y_m, features.X[untried], coverage=coverage
        )
    cover, checked, finite = nested_coverage(
        chosen.spec, X_m, y_m, penalty=full.params_, coverage=coverage, seed=seed
    )
    probability = p_best(
        chosen.spec, features.X, features.y, chosen, penalty=full.params_, n_boot=n_boot, seed=seed
    )
    selection = _selection_frame(features, predicted, low, high, probability)

    weights = full.weights(features.names)
    extrapolated = _extrapolated(features, full.columns_, full.coef_)
    if extrapolated:
        logger.warning(
            "%d untried models lie outside the measured models' range of a feature the "
            "predictor uses; their predictions are extrapolations",
            len(extrapolated),
        )
        top = max(
            (i for i in np.flatnonzero(untried)), key=lambda i: (predicted[i], -i), default=None
        )
        top_name = features.models[top] if top is not None else None
        lead = (
            f", among them the top-ranked untried model, {top_name}"
            if top_name in set(extrapolated)
            else ""
        )
        verdict = replace(
            verdict,
            text=f"{verdict.text} {len(extrapolated)} of {int(untried.sum())} untried models"
            f"{lead}, lie outside the measured models' range of a feature the predictor "
            "uses: their predictions are extrapolations.",
        )
    summary = {
        "target_metric": target_metric,
        "seed": seed,
        "n_measured": n,
        "n_untried": int(untried.sum()),
        "coverage_nominal": coverage,
        "interval_coverage": cover,
        "interval_coverage_models": checked,
        "interval_coverage_finite": finite,
        "verdict_ci_level": level,
        "n_boot_p_best": n_boot,
        "chosen": verdict.chosen,
        "verdict_status": verdict.status,
        "verdict": verdict.text,
        "weights": weights,
        "intercept": full.intercept_,
        "hyperparameters": full.params_,
        "weights_unit": (
            f"{target_metric} points per training-SD of each feature (features standardized)"
        ),
        "extrapolated": extrapolated,
        "predictors": table,
        "features": features.report,
        "notes": [
            "pair_tau: 2 P(a pair of measured models is ordered right) - 1, each pair "
            "predicted by one fit that saw neither (pairwise CV); 0 = no information. The "
            "verdict and the choice of predictor use it, with intervals at verdict_ci_level.",
            "spearman: LOO Spearman of each prediction's deviation from its training mean "
            "(removes the training-mean part of the LOO shrink-to-mean artefact; a fitted "
            "slope's own tilt away from the left-out model remains, so a weak predictor still "
            "scores below 0, which is why the verdict uses pair_tau); spearman_raw: of the "
            "predictions "
            f"themselves (the constant predictor scores {table['constant']['spearman_raw']:+.2f} "
            "there by construction).",
            "c@k: expected |top-k predicted ∩ top-k observed| / k on the deviations, ties "
            "broken at random; chance is k / n.",
            "intervals: jackknife+ for untried models (null = unbounded: too few measured "
            "models for the level); interval_coverage: share of held-out measured models "
            "inside the jackknife+ interval built from the other models (nested LOO, at most "
            "20 held out, Elastic Net penalty fixed); measured models' own pi_low/pi_high: "
            "LOO prediction +- the conformal quantile of the other LOO residuals.",
            "p_best: bootstrap refits plus a resampled LOO residual; measured models at their "
            "observed score.",
        ],
    }
    return SelectionResult(selection, _json_ready(summary), weights, verdict)


def _cv_table(
    loos: dict[str, LOOResult],
    X: np.ndarray,
    y: np.ndarray,
    features: FeatureMatrix,
    *,
    coverage: float,
    seed: int,
) -> tuple[dict[str, dict[str, Any]], float]:
    """One row of CV scores per predictor, and the confidence level of the verdict's
    intervals (95%, Bonferroni-corrected for the number of non-constant predictors)."""
    contenders = sum(1 for r in loos.values() if r.spec.kind != "constant")
    level = 1.0 - 0.05 / max(1, contenders)
    idx = bootstrap_indices(len(y), seed=seed)
    splits = pair_splits(y, seed=seed)
    const_pred = loos["constant"].predicted
    const_mae = mae_replicates(const_pred, y, idx)
    taus: dict[str, np.ndarray] = {}
    table: dict[str, dict[str, Any]] = {}
    for name, r in loos.items():
        concordance = pairwise_concordance(r.spec, X, y, splits, seed=seed)
        taus[name] = pair_tau_replicates(concordance, splits, idx)
        row: dict[str, Any] = {
            "description": r.spec.description,
            "baseline": r.spec.baseline,
            "features": [features.names[c] for c in r.spec.columns],
            "pair_tau": pair_tau(concordance),
            "pair_tau_ci": interval(taus[name], level),
            "n_pairs": int(concordance.size),
        }
        row.update(scores(r, y))
        row["spearman_ci"] = interval(spearman_replicates(r.deviation, y, idx))
        mae = mae_replicates(r.predicted, y, idx)
        row["mae_ci"] = interval(mae)
        row["mae_minus_constant"] = row["mae"] - float(np.mean(np.abs(const_pred - y)))
        row["mae_minus_constant_ci"] = interval(mae - const_mae, level)
        if r.spec.kind != "constant":
            fit = fit_predictor(r.spec, X, y, seed=seed)
            row["weights"] = fit.weights(features.names)
            row["hyperparameters"] = fit.params_
        table[name] = row
    baselines = [n for n, r in table.items() if r["baseline"] and n != "constant"]
    if baselines:
        best = max(baselines, key=lambda n: (table[n]["pair_tau"], -table[n]["mae"]))
        for name, row in table.items():
            if not row["baseline"]:
                row["best_baseline"] = best
                row["pair_tau_minus_best_baseline"] = row["pair_tau"] - table[best]["pair_tau"]
                row["pair_tau_minus_best_baseline_ci"] = interval(taus[name] - taus[best], level)
    return table, level


def _extrapolated(features: FeatureMatrix, columns: tuple[int, ...], coef: np.ndarray) -> list[str]:
    """Untried models with a used feature outside the measured models' [min, max]."""
    used = [c for c, w in zip(columns, coef, strict=True) if w != 0.0]
    if not used:
        return []
    measured = features.measured
    X = features.X[:, used]
    low = np.nanmin(X[measured], axis=0)
    high = np.nanmax(X[measured], axis=0)
    with np.errstate(invalid="ignore"):
        outside = ((low > X) | (high < X)).any(axis=1) & ~measured
    return [m for m, o in zip(features.models, outside, strict=True) if o]


def _selection_frame(
    features: FeatureMatrix,
    predicted: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    probability: np.ndarray,
) -> pl.DataFrame:
    y = features.y
    expected = np.where(np.isnan(y), predicted, y)
    # Best first; equal values keep the models' alphabetical order.
    order = sorted(range(len(y)), key=lambda i: (-expected[i], features.models[i]))
    rank = np.empty(len(y), dtype=np.int64)
    rank[order] = np.arange(1, len(y) + 1)
    df = pl.DataFrame(
        {
            "model": list(features.models),
            "predicted": predicted,
            "pi_low": low,
            "pi_high": high,
            "p_best": probability,
            "rank": rank,
            "observed": y,
        },
        schema=SELECTION_SCHEMA,
    )
    # NaN (unmeasured) and +-inf (no interval at this level) are both written as null.
    return df.with_columns(
        pl.when(pl.col(c).is_finite()).then(pl.col(c)).otherwise(None).alias(c)
        for c in ("pi_low", "pi_high", "observed")
    ).sort("rank")


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_selection(result: SelectionResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``selection.parquet`` and ``cv_summary.json`` into ``out_dir`` atomically."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SimscopeError(f"{out}: exists and is not a directory; give a directory for --out")
    out.mkdir(parents=True, exist_ok=True)
    table = out / SELECTION_FILE
    summary = out / CV_SUMMARY_FILE
    write_parquet(
        result.selection,
        table,
        metadata={
            "simscope.target_metric": str(result.cv_summary["target_metric"]),
            "simscope.chosen": result.verdict.chosen,
            "simscope.verdict_status": result.verdict.status,
        },
    )
    with atomic_file(summary) as tmp:
        tmp.write_text(
            json.dumps(
                result.cv_summary, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False
            )
            + "\n",
            encoding="utf-8",
        )
    return table, summary


def format_result(result: SelectionResult, *, top: int = 20) -> str:
    """The ranking (best ``top`` rows), the CV table and the verdict, as plain text."""
    s = result.cv_summary
    caveat = {
        "no_reliable_ranking": " -- NO RELIABLE RANKING, see the verdict below",
        "no_better_than_baseline": " -- no better than a baseline, see the verdict below",
        "reliable_ranking": "",
    }[result.verdict.status]
    lines = [
        f"Ranking by {result.verdict.chosen} for {s['target_metric']} "
        f"({s['n_measured']} measured, {s['n_untried']} untried; "
        f"{s['coverage_nominal']:.0%} intervals){caveat}",
        f"{'rank':>4}  {'model':<44} {'observed':>8} {'predicted':>9} {'interval':>17} "
        f"{'p_best':>6}",
    ]
    far = set(s.get("extrapolated", []))
    for row in result.selection.head(top).iter_rows(named=True):
        obs = f"{row['observed']:8.2f}" if row["observed"] is not None else f"{'-':>8}"
        lo = "-inf" if row["pi_low"] is None else f"{row['pi_low']:.1f}"
        hi = "inf" if row["pi_high"] is None else f"{row['pi_high']:.1f}"
        mark = "*" if row["model"] in far else " "
        lines.append(
            f"{row['rank']:>4} {mark}{row['model'][:44]:<44} {obs} {row['predicted']:9.2f} "
            f"{'[' + lo + ', ' + hi + ']':>17} {row['p_best']:6.2f}"
        )
    if result.selection.height > top:
        lines.append(f"      ... {result.selection.height - top} more in selection.parquet")
    if far:
        lines.append(
            f"   * {len(far)} untried models lie outside the measured models' range of a feature "
            "the predictor uses: their predictions are extrapolations"
        )
    lines += [
        "",
        f"Cross-validation over the measured models (tau: pairwise CV, "
        f"{s['verdict_ci_level']:.1%} CI; spearman: LOO, deviations from the training mean; "
        "raw: LOO Spearman of the predictions)",
    ]
    ks = [k for k in ("c@3", "c@5", "c@10") if k in s["predictors"]["constant"]]
    lines.append(
        f"{'predictor':<16} {'tau':>21} {'spearman':>8} {'raw':>6} {'MAE':>7}"
        + "".join(f" {k:>5}" for k in ks)
    )
    for name, row in s["predictors"].items():
        ci = row["pair_tau_ci"]
        lines.append(
            f"{name:<16} {row['pair_tau']:+6.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}] "
            f"{row['spearman']:+8.2f} {row['spearman_raw']:+6.2f} {row['mae']:7.2f}"
            + "".join(f" {row[k]:5.2f}" for k in ks)
        )
    if s["interval_coverage"] is not None:
        lines.append(
            f"Interval coverage under nested CV ({result.verdict.chosen}): "
            f"{s['interval_coverage']:.2f} of {s['interval_coverage_finite']} held-out measured "
            f"models (nominal {s['coverage_nominal']:.2f})"
        )
    lines += ["", result.verdict.text]
    return "\n".join(lines)


def cli_select(
    *,
    profile: str | None,
    benchmarks: str | None,
    rm_results: str,
    target: str,
    rm_model_column: str = "model",
    rm_where: Sequence[str] = (),
    rm_duplicates: Duplicates = "error",
    benchmark_duplicates: Duplicates = "error",
    model_map: str | None = None,
    candidates: Sequence[str] = (),
    coverage: float = DEFAULT_COVERAGE,
    n_boot: int = DEFAULT_N_BOOT,
    out: str | None = None,
    top: int = 20,
    seed: int = 0,
) -> str:
    """``simscope select``: read the inputs, select, write if asked, return the text."""
    where: dict[str, str] = {}
    for item in rm_where:
        column, sep, value = item.partition("=")
        if not sep or not column:
            raise SimscopeError(f"--rm-where: expected COLUMN=VALUE, found {item!r}")
        where[column] = value
    if profile is None and benchmarks is None:
        raise SimscopeError(
            "select: no features; give --benchmarks (a file or open-llm-leaderboard-v2) "
            "and/or --profile"
        )
    names = read_model_map(model_map) if model_map else {}
    rm = rename_models(
        read_rm_results(
            rm_results, model_column=rm_model_column, where=where, duplicates=rm_duplicates
        ),
        names,
    )
    bench = (
        rename_models(read_benchmarks(benchmarks, duplicates=benchmark_duplicates), names)
        if benchmarks
        else None
    )
    prof = rename_models(read_profile(profile), names) if profile else None
    result = select_models(
        prof,
        bench,
        rm,
        target_metric=target,
        seed=seed,
        candidates=list(candidates) or None,
        coverage=coverage,
        n_boot=n_boot,
    )
    text = format_result(result, top=top)
    if out:
        table, summary = write_selection(result, out)
        text += f"\n\nwrote {table} and {summary}"
    return text
