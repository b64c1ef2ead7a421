"""The select stage end to end: features -> prior -> calibration -> CV -> verdict ->
Selection, suggestions and costs.

``select_models`` is the library entry point, ``write_selection`` puts its result on disk
(``selection.parquet`` and ``cv_summary.json``, each written atomically), and
``format_result`` renders it for the terminal.

The ranking comes from one of three rankers, the first that applies:

- ``prior_calibrated``: a published prior (``--prior``) predicts every candidate, and the
  user's measured models calibrate it to their recipe and metric (``calibrate``);
- ``size_calibrated``: without a prior, the same calibration around log(params), so that the
  ranking is size's until the user's own results say otherwise;
- ``cv_chosen``: without sizes either (a Profile alone), the predictor with the best pairwise
  CV, as before.

The predictors fitted on the user's measured models alone (log(params), the best single
benchmark, Elastic Nets) are cross-validated beside it as baselines whenever 3 or more are
measured, with families held out together (``families``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl
from scipy.stats import rankdata

from simscope.errors import SimscopeError
from simscope.records import SELECTION_SCHEMA
from simscope.select.calibrate import CalibrationPrior, Posterior, choose_strength
from simscope.select.cost import CostConfig, cost_summary
from simscope.select.cv import (
    TOP_KS,
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
    spearman,
    spearman_replicates,
)
from simscope.select.families import assign_families, group_codes, members
from simscope.select.features import LOG_PARAMS, FeatureMatrix, benchmark_wide, build_features
from simscope.select.predictors import (
    FittedPredictor,
    PredictorSpec,
    calibrated_inputs,
    fit_predictor,
    predictor_specs,
)
from simscope.select.prior import PriorPrediction, family_bootstrap, predict_with_prior
from simscope.select.published import PriorTable
from simscope.select.suggest import suggest as suggest_next
from simscope.select.summary import (
    CalibrationSummary,
    CostSummary,
    CVSummary,
    HeldOut,
    PredictorScore,
    PriorCandidate,
    PriorSummary,
    Ranker,
    StrengthRow,
    Suggestion,
)
from simscope.select.tables import PARAMS_BENCHMARK, profile_features
from simscope.select.uncertainty import (
    jackknife_plus,
    loo_intervals,
    nested_coverage,
    p_best,
)
from simscope.select.verdict import Verdict, decide, decide_prior
from simscope.storage import write_parquet

logger = logging.getLogger(__name__)

DEFAULT_COVERAGE: Final = 0.9
DEFAULT_N_BOOT: Final = 200
N_DRAWS: Final = 4000
"""Joint posterior draws behind a calibrated ranker's intervals, P(best) and suggestions."""
N_BOOT_PRIOR: Final = 1000
SELECTION_FILE: Final = "selection.parquet"
CV_SUMMARY_FILE: Final = "cv_summary.json"
PRIOR_MEAN: Final = "prior.mean"
PRIOR_VAR: Final = "prior.var"
DISAGREE_SHARE: Final = 0.5
"""The user's scores disagree with the prior when the correlation the calibration implies
falls below this share of the one the prior reaches on its own table."""


@dataclass(frozen=True)
class SelectionResult:
    """The Selection table, the CV summary, the ranker's weights, and the verdict."""

    selection: pl.DataFrame
    summary: CVSummary
    weights: dict[str, float]
    verdict: Verdict


def select_models(
    profile: pl.DataFrame | None,
    benchmarks: pl.DataFrame | None,
    rm_results: pl.DataFrame | None,
    *,
    target_metric: str,
    seed: int = 0,
    candidates: Sequence[str] | None = None,
    all_models: bool = False,
    coverage: float = DEFAULT_COVERAGE,
    n_boot: int = DEFAULT_N_BOOT,
    prior: PriorTable | None = None,
    prior_metric: str | None = None,
    families: Mapping[str, str] | None = None,
    covariates: Mapping[str, Mapping[str, float]] | None = None,
    benchmark_columns: Sequence[str] | None = None,
    suggest: int = 0,
    budget: float | None = None,
    cost: CostConfig | None = None,
    costs: Mapping[str, float] | None = None,
    baselines: bool = True,
) -> SelectionResult:
    """Rank candidate base models for ``target_metric`` (see the module doc for how).

    ``profile`` (long Profile) and ``benchmarks`` (long Benchmarks) give features; either may
    be None. ``rm_results`` holds the measured models' scores (None or empty: nothing
    measured, which needs a ``prior``). Model names must match exactly (rename with
    ``tables.rename_models`` first). The models in scope are ``candidates`` plus every
    measured model (or the Profile's models, or with ``all_models`` every model with
    features). ``families`` gives a model's family (else inferred from its id).
    ``covariates`` are a candidates file's ``params_B`` / ``pretraining_tokens_T`` columns.
    ``suggest`` asks for that many models to measure next, ``budget`` for the best candidate
    within it under the cost model ``cost`` or the user's ``costs``. ``baselines=False``
    skips cross-validating the user-only predictors (the calibrated ranker does not need
    them; simulations that call this many times do).
    """
    if not 0.0 < coverage < 1.0:
        raise SimscopeError(f"select: coverage must be in (0, 1); got {coverage}")
    if n_boot < 1:
        raise SimscopeError(f"select: n_boot must be >= 1; got {n_boot}")
    if suggest < 0:
        raise SimscopeError(f"select: --suggest must be >= 0; got {suggest}")
    rm = (
        rm_results
        if rm_results is not None
        else pl.DataFrame(schema={"model": pl.String, "metric": pl.String, "score": pl.Float64})
    )
    if rm.height == 0 and prior is None:
        raise SimscopeError(
            "select: no measured RM results; give --rm-results, or --prior (e.g. "
            "ahrabian2025-regression) to rank from published results alone"
        )
    profile_wide = profile_features(profile) if profile is not None else None
    features = build_features(
        benchmarks,
        rm,
        target_metric,
        profile_wide=profile_wide,
        candidates=candidates,
        all_models=all_models,
        min_measured=1 if prior is not None and rm.height else (0 if prior else 3),
        covariates=covariates,
        benchmark_columns=benchmark_columns,
    )
    given_families = dict(families or {})
    if prior is not None:
        given_families = {**prior.families, **given_families}
    fam_all = assign_families(
        list(features.models) + (prior.covariates["model"].to_list() if prior else []),
        given_families,
    )
    fam = {m: fam_all[m] for m in features.models}
    family_source = (
        "column"
        if given_families and all(m in given_families for m in features.models)
        else ("inferred from model ids" if not given_families else "column, else inferred")
    )

    pp: PriorPrediction | None = None
    notes: list[str] = []
    if prior is not None:
        metric = prior_metric or (
            target_metric if target_metric in prior.metrics else prior.main_metric
        )
        if metric not in prior.metrics:
            raise SimscopeError(
                f"--prior-metric {metric!r}: not a metric of the prior {prior.name!r}; it has "
                f"{prior.metrics}"
            )
        bench_wide = (
            benchmark_wide(benchmarks, only=benchmark_columns)[0]
            if benchmarks is not None and benchmarks.height
            else None
        )
        pp = predict_with_prior(
            prior,
            features.models,
            bench_wide,
            metric=metric,
            covariates=_covariate_frame(covariates),
        )
        lacking = [m for m, z in zip(features.models, pp.mean, strict=True) if np.isnan(z)]
        if lacking:
            notes.append(
                f"no prior prediction for {len(lacking)} model(s) without the prior's features "
                f"(left out): {', '.join(lacking)}"
            )
            keep = ~np.isnan(pp.mean)
            features = _rows(features, keep)
            pp = replace(
                pp,
                models=tuple(m for m, k in zip(pp.models, keep, strict=True) if k),
                mean=pp.mean[keep],
                var=pp.var[keep],
            )
        if not features.measured.any() and rm.height:
            raise SimscopeError(
                "select: none of the measured models is in scope with a prior prediction; "
                "check the names (--model-map) or measure candidates the prior covers"
            )
    return _select(
        features,
        pp,
        prior,
        fam,
        family_source,
        target_metric=target_metric,
        seed=seed,
        coverage=coverage,
        n_boot=n_boot,
        suggest=suggest,
        budget=budget,
        cost=cost or CostConfig(),
        costs=costs or {},
        covariates=covariates or {},
        notes=notes,
        baselines=baselines,
    )


def _covariate_frame(covariates: Mapping[str, Mapping[str, float]] | None) -> pl.DataFrame | None:
    if not covariates:
        return None
    params = covariates.get(PARAMS_BENCHMARK, {})
    tokens = covariates.get("pretraining_tokens_T", {})
    models = sorted(set(params) | set(tokens))
    return pl.DataFrame(
        {
            "model": models,
            PARAMS_BENCHMARK: [params.get(m) for m in models],
            "pretraining_tokens_T": [tokens.get(m) for m in models],
        },
        schema={
            "model": pl.String,
            PARAMS_BENCHMARK: pl.Float64,
            "pretraining_tokens_T": pl.Float64,
        },
    )


def _rows(features: FeatureMatrix, keep: np.ndarray) -> FeatureMatrix:
    return replace(
        features,
        models=tuple(m for m, k in zip(features.models, keep, strict=True) if k),
        X=features.X[keep],
        y=features.y[keep],
    )


def _with_prior_columns(features: FeatureMatrix, z: np.ndarray, v: np.ndarray) -> FeatureMatrix:
    return replace(
        features,
        names=(*features.names, PRIOR_MEAN, PRIOR_VAR),
        groups=(*features.groups, "prior", "prior"),
        X=np.column_stack([features.X, z, v]),
    )


def _select(
    features: FeatureMatrix,
    pp: PriorPrediction | None,
    prior: PriorTable | None,
    fam: dict[str, str],
    family_source: str,
    *,
    target_metric: str,
    seed: int,
    coverage: float,
    n_boot: int,
    suggest: int,
    budget: float | None,
    cost: CostConfig,
    costs: Mapping[str, float],
    covariates: Mapping[str, Mapping[str, float]],
    notes: list[str],
    baselines: bool,
) -> SelectionResult:
    measured = features.measured
    n = int(measured.sum())
    untried = ~measured
    groups = np.array(group_codes(features.models, fam))

    # ---- the calibrated ranker's prior means -------------------------------------------------
    ranker: Ranker
    calib_spec: PredictorSpec | None = None
    prior_name = ""
    same_metric = True
    if pp is not None:
        ranker = "prior_calibrated"
        z, v = pp.mean, pp.var
        prior_sd = pp.fit.residual_sd
        same_metric = n == 0 or pp.metric == target_metric
        prior_name = prior.name if prior else "prior"
    elif (
        LOG_PARAMS in features.names
        and not np.isnan(features.X[:, features.names.index(LOG_PARAMS)]).any()
        and n >= 1
    ):
        ranker = "size_calibrated"
        z = features.X[:, features.names.index(LOG_PARAMS)].copy()
        v = np.zeros_like(z)
        prior_sd = max(float(np.std(z)), 1e-6)
        same_metric = False
        prior_name = LOG_PARAMS
    else:
        ranker = "cv_chosen"
        z = v = np.zeros(len(features.models))
        prior_sd = 1.0
        if LOG_PARAMS in features.names:
            notes.append(
                "log(params) is unknown for some models in scope: ranked by the CV-chosen "
                "predictor, not calibrated around size"
            )
    if ranker != "cv_chosen":
        features = _with_prior_columns(features, z, v)
        z_col = features.names.index(PRIOR_MEAN)
        v_col = features.names.index(PRIOR_VAR)
        phi_cols = tuple(
            i
            for i, g in enumerate(features.groups)
            if g in ("benchmarks", "size", "similarity")
            and not (ranker == "size_calibrated" and features.names[i] == LOG_PARAMS)
        )
        base = CalibrationPrior(same_metric, prior_sd)
        z_spread = max(float(np.std(z)), 1e-9)
        strengths: list[StrengthRow] = []
        if n >= 1:
            probe = PredictorSpec(
                "calibrated", "calibrated", (z_col, v_col, *phi_cols), False, "", base, z_spread
            )
            zm, vm, phim, *_ = calibrated_inputs(probe, features.X[measured])
            chosen_prior, rows = choose_strength(
                features.y[measured], zm, vm, phim, groups[measured], base, z_spread=z_spread
            )
            strengths = [StrengthRow(r.b_log_sd, r.residual, r.mse, r.se) for r in rows]
        else:
            chosen_prior = base
        calib_spec = PredictorSpec(
            "calibrated",
            "calibrated",
            (z_col, v_col, *phi_cols),
            False,
            (
                f"the prior {prior_name!r} calibrated to the measured models"
                if ranker == "prior_calibrated"
                else "log(params) calibrated to the measured models, plus a residual model"
            )
            + " (offset, scale and a residual model shrunk toward it; strengths by grouped CV)",
            chosen_prior,
            z_spread,
        )

    # ---- the user-only predictors, cross-validated ------------------------------------------
    specs = predictor_specs(features) if n >= 3 and (baselines or calib_spec is None) else []
    if calib_spec is not None and specs:
        specs.append(calib_spec)
    X_m, y_m = features.X[measured], features.y[measured]
    table: dict[str, dict[str, Any]] = {}
    level = 0.95
    loos: dict[str, LOOResult] = {}
    if specs:
        loos = {s.name: leave_one_out(s, X_m, y_m, seed=seed) for s in specs}
        table, level = _cv_table(loos, X_m, y_m, features, seed=seed)

    # ---- fit the ranker ------------------------------------------------------------------
    held_out: list[HeldOut] = []
    cover: float | None = None
    checked = finite = 0
    interval_note = ""
    models = list(features.models)
    low = np.full(len(models), np.nan)
    high = np.full(len(models), np.nan)
    predicted = np.empty(len(models))
    draws: np.ndarray | None = None
    calibration: CalibrationSummary | None = None
    if calib_spec is not None:
        full = fit_predictor(calib_spec, X_m, y_m, seed=seed)
        assert full.posterior_ is not None
        z_all, v_all, phi_all, *_ = calibrated_inputs(
            calib_spec, features.X, full.fill_[1:], full.center_[1:], full.scale_[1:]
        )
        posterior = full.posterior_
        rng = np.random.default_rng(seed)
        draws = posterior.sample(z_all, v_all, phi_all, N_DRAWS, rng)
        draws[:, measured] = features.y[measured]
        predicted[:] = posterior.mean(z_all, phi_all)
        alpha = (1.0 - coverage) / 2.0
        lo_q, hi_q = np.quantile(draws, [alpha, 1.0 - alpha], axis=0)
        low[untried], high[untried] = lo_q[untried], hi_q[untried]
        held_out, cover, checked = _held_out(
            calib_spec, features, groups, fam, coverage=coverage, seed=seed
        )
        finite = checked
        ho = {h.model: h for h in held_out}
        for i in np.flatnonzero(measured):
            h = ho.get(models[i])
            if h is not None:
                predicted[i] = h.predicted
                low[i] = h.pi_low if h.pi_low is not None else np.nan
                high[i] = h.pi_high if h.pi_high is not None else np.nan
        if not held_out and n:
            interval_note = (
                "no measured family can be held out: they are all one family, or (in another "
                "metric than the prior's) too few models are left to set the scale without it"
            )
        elif n == 0:
            interval_note = (
                "nothing measured: intervals are the prior's own (its held-out families' "
                "error), not checked on your recipe"
            )
        probability = _share_of_max_draws(draws)
        weights = full.weights(features.names)
        calibration = _calibration_summary(
            posterior, prior_name, same_metric, n, calib_spec, strengths, features, pp, z_all
        )
        chosen_name = "calibrated"
        intercept = full.intercept_
        hyper = full.params_
        fitted_for_extrapolation: FittedPredictor | None = full
    else:
        # cv_chosen: the predictor with the best pairwise CV, jackknife+ intervals
        verdict0 = decide(table, n, level)
        chosen_loo = loos[verdict0.chosen]
        full = fit_predictor(chosen_loo.spec, X_m, y_m, seed=seed)
        predicted[measured] = chosen_loo.predicted
        own = loo_intervals(chosen_loo, y_m, coverage=coverage)
        low[measured], high[measured] = own[:, 0], own[:, 1]
        if untried.any():
            predicted[untried] = full.predict(features.X[untried])
            low[untried], high[untried] = jackknife_plus(
                chosen_loo, y_m, features.X[untried], coverage=coverage
            )
        cover, checked, finite = nested_coverage(
            chosen_loo.spec, X_m, y_m, penalty=full.params_, coverage=coverage, seed=seed
        )
        if cover is None:
            need = next(m for m in range(1, 10_000) if math.ceil(coverage * (m + 1) - 1e-9) <= m)
            interval_note = (
                f"{coverage:.0%} jackknife+ intervals need at least {need} measured models "
                f"(have {n}): they are unbounded, so their coverage cannot be checked; lower "
                f"--coverage (e.g. {max(0.5, 1 - 1 / (n + 1)):.2f}) for bounded intervals, or "
                "give log(params) or a prior for calibrated ones"
            )
        probability = p_best(
            chosen_loo.spec,
            features.X,
            features.y,
            chosen_loo,
            penalty=full.params_,
            n_boot=n_boot,
            seed=seed,
        )
        held_out = [
            HeldOut(models[i], fam[models[i]], float(p), float(features.y[i]))
            for i, p in zip(np.flatnonzero(measured), chosen_loo.predicted, strict=True)
        ]
        weights = full.weights(features.names)
        chosen_name = verdict0.chosen
        intercept = full.intercept_
        hyper = full.params_
        fitted_for_extrapolation = full

    # ---- verdict -------------------------------------------------------------------------
    expected = _expected_spearman(draws, predicted, untried) if calib_spec else (None, None)
    prior_summary = _prior_summary(pp, prior, same_metric, seed) if pp is not None else None
    if ranker == "prior_calibrated":
        assert prior_summary is not None and calibration is not None
        verdict = decide_prior(
            prior_name=prior_name,
            informative=prior_summary.informative,
            spearman=prior_summary.spearman,
            spearman_ci=prior_summary.spearman_ci,
            size_spearman=prior_summary.size_spearman,
            minus_size=prior_summary.minus_size,
            minus_size_ci=prior_summary.minus_size_ci,
            expected=expected[0],
            expected_low=expected[1],
            same_metric=same_metric,
            n_measured=n,
            disagrees=calibration.disagrees,
            agreement=calibration.agreement,
            user_row=table.get("calibrated"),
            level=level,
        )
    elif ranker == "size_calibrated" and "calibrated" in table:
        verdict = decide(table, n, level, chosen="calibrated")
    elif ranker == "size_calibrated":
        verdict = Verdict(
            "no_reliable_ranking",
            "calibrated",
            f"NO RELIABLE RANKING: only {n} measured model{'s' if n != 1 else ''}; the "
            "ranking is by log(params) (bigger first) until at least 3 are measured, and "
            "nothing checks it. Give --prior for a ranking checked on published results.",
        )
    else:
        verdict = decide(table, n, level)
    if calibration is not None and calibration.note:
        notes.append(calibration.note)

    selection = _selection_frame(features, predicted, low, high, probability)

    extrapolated = (
        _extrapolated(features, fitted_for_extrapolation.columns_, fitted_for_extrapolation.coef_)
        if fitted_for_extrapolation is not None and n
        else []
    )
    if extrapolated:
        logger.warning(
            "%d untried models lie outside the measured models' range of a feature the "
            "predictor uses; their predictions are extrapolations",
            len(extrapolated),
        )
        top = max(
            (i for i in np.flatnonzero(untried)), key=lambda i: (predicted[i], -i), default=None
        )
        top_name = models[top] if top is not None else None
        lead = (
            f" (among them the top-ranked untried model, {top_name})"
            if top_name in set(extrapolated)
            else ""
        )
        verdict = replace(
            verdict,
            text=f"{verdict.text} {len(extrapolated)} of {int(untried.sum())} untried models"
            f"{lead} lie outside the measured models' range of a feature the predictor "
            "uses: their predictions are extrapolations.",
        )

    # ---- what to measure next, and costs ------------------------------------------------
    p_map = dict(zip(models, probability.tolist(), strict=True))
    intervals = {m: (_opt(lo), _opt(hi)) for m, lo, hi in zip(models, low, high, strict=True)}
    params_b = _params_b(features, covariates)
    cost_block: CostSummary | None = None
    if costs or budget is not None or suggest or params_b:
        quality = np.where(measured, features.y, predicted)
        cost_block = cost_summary(
            models,
            quality,
            measured,
            params_b=params_b,
            given=costs,
            config=cost,
            budget=budget,
            draws=draws,
        )
    suggestions: list[Suggestion] = []
    if suggest:
        if draws is None:
            draws = _bootstrap_draws(loos, chosen_name, features, seed=seed, n_boot=n_boot)
        cost_of = {r.model: r.cost for r in cost_block.rows} if cost_block else None
        suggestions = suggest_next(
            models,
            draws,
            untried,
            suggest,
            intervals=intervals,
            p_best=p_map,
            costs=cost_of,
            unit=f"{target_metric} points" if n else "points of the prior's metric",
        )

    summary = CVSummary(
        target_metric=target_metric,
        seed=seed,
        n_measured=n,
        n_untried=int(untried.sum()),
        coverage_nominal=coverage,
        ranker=ranker,
        chosen=chosen_name,
        verdict_status=verdict.status,
        verdict=verdict.text,
        verdict_ci_level=level,
        n_boot_p_best=N_DRAWS if draws is not None and calib_spec is not None else n_boot,
        interval_coverage=cover,
        interval_coverage_models=checked,
        interval_coverage_finite=finite,
        interval_note=interval_note,
        expected_spearman=expected[0],
        expected_spearman_low=expected[1],
        weights=weights,
        intercept=float(intercept),
        hyperparameters={k: float(v) for k, v in hyper.items()},
        weights_unit=(
            f"{target_metric} points per SD of each feature (features standardized; "
            f"{PRIOR_MEAN}: per unit of the prior's mean)"
        ),
        extrapolated=extrapolated,
        predictors={name: _score(row) for name, row in table.items()},
        held_out=held_out,
        features=features.report,
        families=members(fam),
        family_source=family_source,
        prior=prior_summary,
        calibration=calibration,
        suggestions=suggestions,
        cost=cost_block,
        notes=notes,
        definitions=list(_NOTES),
    )
    return SelectionResult(selection, summary, weights, verdict)


_NOTES: Final = (
    "pair_tau: 2 P(a pair of measured models is ordered right) - 1, each pair predicted by "
    "one fit that saw neither (pairwise CV); 0 = no information.",
    "spearman: LOO Spearman of each prediction's deviation from its training mean; "
    "spearman_raw: of the predictions themselves (the constant predictor scores -1 there by "
    "construction).",
    "c@k: expected |top-k predicted ∩ top-k observed| / k on the deviations; chance is k / n.",
    "calibrated intervals and P(best): joint posterior draws; measured models' own "
    "predictions and intervals come from a fit without their family (held_out).",
)


def _expected_spearman(
    draws: np.ndarray | None, predicted: np.ndarray, untried: np.ndarray, n: int = 1000
) -> tuple[float | None, float | None]:
    """Mean and 10% quantile, over posterior draws, of the Spearman between the predicted
    order of the untried models and their drawn true scores."""
    if draws is None or int(untried.sum()) < 3:
        return None, None
    sub = draws[:n, untried]
    ranks = rankdata(sub, axis=1)
    mine = rankdata(predicted[untried])
    mine = (mine - mine.mean()) / mine.std()
    ranks = (ranks - ranks.mean(axis=1, keepdims=True)) / ranks.std(axis=1, keepdims=True)
    rho = (ranks * mine[None, :]).mean(axis=1)
    return float(rho.mean()), float(np.quantile(rho, 0.1))


def _opt(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _share_of_max_draws(draws: np.ndarray) -> np.ndarray:
    top = draws == draws.max(axis=1, keepdims=True)
    return (top / top.sum(axis=1, keepdims=True)).mean(axis=0)


def _params_b(
    features: FeatureMatrix, covariates: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    out: dict[str, float] = {}
    if LOG_PARAMS in features.names:
        col = features.X[:, features.names.index(LOG_PARAMS)]
        out = {m: math.exp(x) for m, x in zip(features.models, col, strict=True) if np.isfinite(x)}
    for m, p in covariates.get(PARAMS_BENCHMARK, {}).items():
        if m in features.models and p > 0:
            out[m] = p
    return out


def _held_out(
    spec: PredictorSpec,
    features: FeatureMatrix,
    groups: np.ndarray,
    fam: Mapping[str, str],
    *,
    coverage: float,
    seed: int,
) -> tuple[list[HeldOut], float | None, int]:
    """Each measured family predicted by a calibration fit without it (strengths fixed),
    with its interval from that fit's draws; and the share of them inside it."""
    measured = np.flatnonzero(features.measured)
    fams = np.unique(groups[measured])
    if fams.size < 2:
        return [], None, 0
    rng = np.random.default_rng(seed + 1)
    alpha = (1.0 - coverage) / 2.0
    out: list[HeldOut] = []
    covered = []
    assert spec.calibration is not None
    need = 1 if spec.calibration.same_metric else 3
    for f in fams:
        test = measured[groups[measured] == f]
        train = measured[groups[measured] != f]
        if train.size < need:
            continue  # another metric's scale needs 3 models: no honest prediction
        fit = fit_predictor(spec, features.X[train], features.y[train], seed=seed)
        assert fit.posterior_ is not None
        z, v, phi, *_ = calibrated_inputs(
            spec, features.X[test], fit.fill_[1:], fit.center_[1:], fit.scale_[1:]
        )
        d = fit.posterior_.sample(z, v, phi, 2000, rng)
        lo, hi = np.quantile(d, [alpha, 1.0 - alpha], axis=0)
        mean = fit.posterior_.mean(z, phi)
        for j, i in enumerate(test):
            y = float(features.y[i])
            out.append(
                HeldOut(
                    features.models[i],
                    fam[features.models[i]],
                    float(mean[j]),
                    y,
                    float(lo[j]),
                    float(hi[j]),
                )
            )
            covered.append(lo[j] <= y <= hi[j])
    out.sort(key=lambda h: h.model)
    if not covered:
        return [], None, 0
    return out, float(np.mean(covered)), len(covered)


def _calibration_summary(
    posterior: Posterior,
    prior_name: str,
    same_metric: bool,
    n: int,
    spec: PredictorSpec,
    strengths: list[StrengthRow],
    features: FeatureMatrix,
    pp: PriorPrediction | None,
    z_all: np.ndarray,
) -> CalibrationSummary:
    a, b, w = posterior.coefficients()
    b_lo, b_hi = posterior.quantiles(posterior.b, [0.05, 0.95])
    unexplained = posterior.quantiles(posterior.b * posterior.r * posterior.prior_sd, [0.5])[0]
    spread = spec.z_spread
    agreement, agreement_low = posterior.implied_correlation(spread)
    prior_agreement = None
    if pp is not None and pp.evidence is not None:
        ev = pp.evidence
        if np.std(ev.predicted) > 0:
            prior_agreement = float(np.corrcoef(ev.predicted, ev.observed)[0, 1])
    disagrees = bool(
        n >= 3 and prior_agreement is not None and agreement < DISAGREE_SHARE * prior_agreement
    )
    _z, _v, *phi_cols = spec.columns
    residual = {features.names[c]: float(x) for c, x in zip(phi_cols, w, strict=True) if x != 0.0}
    note = ""
    if n == 0:
        note = (
            f"nothing measured: the ranking is the prior's, in its metric "
            f"({pp.metric if pp else prior_name!r}) under its recipe"
        )
    elif not same_metric and n < 3:
        note = (
            f"{n} measured model(s) in another metric than the prior's: the scale between "
            "the two is barely known, so the intervals are wide"
        )
    elif disagrees:
        note = (
            f"your measured models disagree with the prior (implied correlation "
            f"{agreement:.2f} vs {prior_agreement:.2f} on its own table): intervals widened"
        )
    return CalibrationSummary(
        prior=prior_name,
        same_metric=same_metric,
        n_measured=n,
        offset=float(a),
        scale=float(b),
        scale_ci=(float(b_lo), float(b_hi)),
        residual_strength=float(spec.calibration.residual if spec.calibration else 0.0),
        b_log_sd=float(spec.calibration.b_log_sd if spec.calibration else 0.0),
        residual_weights=residual,
        unexplained_sd=float(unexplained),
        agreement=float(agreement),
        agreement_low=float(agreement_low),
        prior_agreement=prior_agreement,
        disagrees=disagrees,
        strengths=strengths,
        note=note,
    )


def _prior_summary(
    pp: PriorPrediction, prior: PriorTable | None, same_metric: bool, seed: int
) -> PriorSummary:
    fit = pp.fit
    ev = pp.evidence
    rho = rho_ci = size = size_ci = diff = diff_ci = mae = None
    held: list[HeldOut] = []
    if ev is not None:
        rho = spearman(ev.predicted, ev.observed)
        mae = float(np.mean(np.abs(ev.predicted - ev.observed)))
        boots = family_bootstrap(ev.groups, n_boot=N_BOOT_PRIOR, seed=seed)
        reps = np.array([spearman(ev.predicted[b], ev.observed[b]) for b in boots])
        rho_ci = interval(reps)
        if ev.log_params is not None:
            size = spearman(ev.log_params, ev.observed)
            size_reps = np.array([spearman(ev.log_params[b], ev.observed[b]) for b in boots])
            size_ci = interval(size_reps)
            diff = rho - size
            diff_ci = interval(reps - size_reps)
        held = [
            HeldOut(m, pp.families.get(m, m), float(p), float(o))
            for m, p, o in zip(ev.models, ev.predicted, ev.observed, strict=True)
        ]
    prior_models = set(pp.families)
    return PriorSummary(
        source=prior.name if prior else "prior",
        provenance=prior.provenance if prior else "",
        metric=pp.metric,
        source_metric=fit.source_metric,
        same_metric=same_metric,
        n_models=fit.n_models,
        n_families=fit.n_families,
        families=members({m: f for m, f in pp.families.items() if m in prior_models}),
        features=list(fit.features),
        weights=fit.weights(),
        residual_sd=float(fit.residual_sd),
        informative=fit.informative,
        candidates=[
            PriorCandidate(list(s.features), s.source_metric, float(s.rmse), float(s.spearman))
            for s in fit.scores
        ],
        spearman=rho,
        spearman_ci=rho_ci,
        size_spearman=size,
        size_spearman_ci=size_ci,
        minus_size=diff,
        minus_size_ci=diff_ci,
        mae=mae,
        published=list(pp.published),
        reduced={"+".join(k): v for k, v in pp.reduced.items()},
        held_out=held,
    )


def _bootstrap_draws(
    loos: Mapping[str, LOOResult],
    chosen: str,
    features: FeatureMatrix,
    *,
    seed: int,
    n_boot: int,
) -> np.ndarray:
    """Joint draws for a cv_chosen ranker: bootstrap refits plus a resampled LOO residual."""
    loo = loos[chosen]
    measured = features.measured
    X_m, y_m = features.X[measured], features.y[measured]
    rng = np.random.default_rng(seed)
    resid = y_m - loo.predicted
    out = np.empty((max(n_boot, 200), len(features.models)))
    for b in range(out.shape[0]):
        draw = rng.integers(0, len(y_m), size=len(y_m))
        fit = fit_predictor(loo.spec, X_m[draw], y_m[draw], seed=seed)
        out[b] = fit.predict(features.X) + rng.choice(resid, size=len(features.models))
    out[:, measured] = features.y[measured]
    return out


def _score(row: Mapping[str, Any]) -> PredictorScore:
    ci = row.get("pair_tau_minus_best_baseline_ci")
    return PredictorScore(
        description=row["description"],
        baseline=row["baseline"],
        features=list(row["features"]),
        pair_tau=float(row["pair_tau"]),
        pair_tau_ci=tuple(row["pair_tau_ci"]),
        n_pairs=int(row["n_pairs"]),
        spearman=float(row["spearman"]),
        spearman_ci=tuple(row["spearman_ci"]),
        spearman_raw=float(row["spearman_raw"]),
        mae=float(row["mae"]),
        mae_ci=tuple(row["mae_ci"]),
        mae_minus_constant=float(row["mae_minus_constant"]),
        mae_minus_constant_ci=tuple(row["mae_minus_constant_ci"]),
        top_k={str(k): float(row[f"c@{k}"]) for k in TOP_KS if f"c@{k}" in row},
        weights=dict(row.get("weights", {})),
        hyperparameters={k: float(v) for k, v in row.get("hyperparameters", {}).items()},
        best_baseline=row.get("best_baseline"),
        pair_tau_minus_best_baseline=row.get("pair_tau_minus_best_baseline"),
        pair_tau_minus_best_baseline_ci=tuple(ci) if ci is not None else None,
        chosen_feature=row.get("chosen_feature"),
        slope=row.get("slope"),
    )


def _cv_table(
    loos: dict[str, LOOResult],
    X: np.ndarray,
    y: np.ndarray,
    features: FeatureMatrix,
    *,
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
            if r.spec.kind in ("best_single", "linear"):
                used = [(c, w) for c, w in zip(fit.columns_, fit.coef_, strict=True) if w != 0]
                if used:
                    row["chosen_feature"] = features.names[used[0][0]]
                    row["slope"] = float(np.sign(used[0][1]))
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
    """Untried models with a used feature outside the measured models' [min, max]; the
    prior's mean is not such a feature (the prior was fit on other models)."""
    prior_col = features.names.index(PRIOR_MEAN) if PRIOR_MEAN in features.names else -1
    used = [c for c, w in zip(columns, coef, strict=True) if w != 0.0 and c != prior_col]
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
    # Best first; equal values share a rank (an uninformative predictor predicts one value
    # for every untried model: they are tied, not ranked alphabetically).
    rank = rankdata(-np.round(expected, 9), method="min").astype(np.int64)
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
    ).sort("rank", "model")


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
            "simscope.target_metric": result.summary.target_metric,
            "simscope.chosen": result.verdict.chosen,
            "simscope.verdict_status": result.verdict.status,
        },
    )
    result.summary.write(summary)
    return table, summary
