"""The prior model: what published RM results of other base models say about a candidate
before the user has measured anything. Knows nothing of the user's scores.

Fitted on a prior table (``published``): its base models' public features (the benchmark
table's scores, ``log_params``, ``log_tokens`` where known) against one of its metrics. The
candidate models are ridge regressions on small feature sets (size alone, size and tokens,
size with one benchmark, size with every benchmark, ...), each fit on the metric itself or
on the table's main metric (less noisy; rescaled to the metric by a line through the
cross-validated predictions). One is chosen by **grouped cross-validation**: each family of
the prior table is predicted by a fit that saw none of it, and the set with the lowest
squared error (after the linear rescaling) wins. Its cross-validated residuals give the
prior's error SD, so a prediction comes with an honest spread.

``evaluate_prior`` repeats the whole choice inside an outer leave-one-family-out loop: its
predictions are never made by a model that saw the predicted family, or chose its features
on it. They are the evidence the verdict reads (the prior's Spearman against that of
ranking by size), the cold-start row of ``benchmarks/bench_select.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import polars as pl

from simscope.errors import SimscopeError
from simscope.select.cv import spearman
from simscope.select.families import assign_families, group_codes
from simscope.select.published import PriorTable
from simscope.select.tables import PARAMS_BENCHMARK, TOKENS_BENCHMARK

LOG_PARAMS: Final = "log_params"
LOG_TOKENS: Final = "log_tokens"
BENCH_MEAN: Final = "benchmark_mean"
"""The mean of a model's benchmark scores, each standardized over the prior's models."""
ALPHAS: Final = tuple(np.geomspace(1e-3, 1e2, 11).tolist())
"""Ridge penalties tried (times the number of training rows; features standardized)."""
MIN_PRIOR_MODELS: Final = 8
MIN_PRIOR_FAMILIES: Final = 4
SWITCH_SE: Final = 2.0
"""Another feature set replaces the default only when its grouped-CV error is lower by more
than this many standard errors."""
MIN_FEATURE_SHARE: Final = 0.8
"""A feature must be known for this share of the prior's models to be used."""


@dataclass(frozen=True)
class FeatureSetScore:
    """Grouped-CV score of one candidate prior model."""

    features: tuple[str, ...]
    source_metric: str
    rmse: float
    spearman: float


@dataclass(frozen=True)
class PriorFit:
    """A fitted prior: ``predict(F)`` in ``metric`` units for rows of features ``features``."""

    metric: str
    source_metric: str
    features: tuple[str, ...]
    center: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    rescale: tuple[float, float]
    residual_sd: float
    cv_residuals: np.ndarray
    scores: tuple[FeatureSetScore, ...]
    n_models: int
    n_families: int
    informative: bool = True
    """False: no feature set predicted held-out families; this is size alone, fit in-sample."""

    def predict(self, F: np.ndarray) -> np.ndarray:
        """Predictions for rows ``F`` whose columns are ``features`` (no missing values)."""
        raw = self.intercept + ((F - self.center) / self.scale) @ self.coef
        return self.rescale[0] + self.rescale[1] * raw

    def weights(self) -> dict[str, float]:
        """Weight of each feature per SD, in ``metric`` units (rescaling included)."""
        return {
            n: float(self.rescale[1] * w) for n, w in zip(self.features, self.coef, strict=True)
        }


def ridge_loo(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Ridge on standardized ``X`` with its penalty chosen by closed-form leave-one-out:
    (coefficients, intercept, penalty)."""
    n = X.shape[0]
    ym = float(y.mean())
    yc = y - ym
    U, sv, Vt = np.linalg.svd(X, full_matrices=False)
    Uy = U.T @ yc
    best = (math.inf, 0.0)
    for a in ALPHAS:
        alpha = a * n
        shrink = sv**2 / (sv**2 + alpha)
        fitted = U @ (shrink * Uy)
        h = (U**2) @ shrink + 1.0 / n
        loo = (yc - fitted) / np.maximum(1.0 - h, 1e-9)
        err = float(np.mean(loo**2))
        if err < best[0] - 1e-12:
            best = (err, alpha)
    alpha = best[1]
    coef = Vt.T @ ((sv / (sv**2 + alpha)) * Uy)
    return coef, ym, alpha


def _standardize(F: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    center = F.mean(axis=0)
    scale = F.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return (F - center) / scale, center, scale


def feature_sets(names: Sequence[str]) -> list[tuple[str, ...]]:
    """The candidate feature sets over ``names`` (see the module doc): size, size and
    tokens, each with the benchmark mean, or with every benchmark."""
    size = [n for n in (LOG_PARAMS,) if n in names]
    tokens = [n for n in (LOG_TOKENS,) if n in names]
    mean = [n for n in (BENCH_MEAN,) if n in names]
    bench = [n for n in names if n not in (LOG_PARAMS, LOG_TOKENS, BENCH_MEAN)]
    out: list[tuple[str, ...]] = []
    bases = [tuple(size)] + ([tuple(size + tokens)] if tokens else [])
    for base in bases:
        out.append(base)
        if mean:
            out.append((*base, *mean))
        if len(bench) > 1:
            out.append((*base, *bench))
    return list(dict.fromkeys(s for s in out if s))


def _grouped_predictions(F: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each family predicted by a ridge fit on the other families."""
    pred = np.empty(y.shape[0])
    for g in np.unique(groups):
        test = groups == g
        S, center, scale = _standardize(F[~test])
        coef, intercept, _ = ridge_loo(S, y[~test])
        pred[test] = intercept + ((F[test] - center) / scale) @ coef
    return pred


def _rescale(pred: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares line y ~ c0 + c1 pred (c1 > 0, else the mean) and its RMSE."""
    var = float(np.var(pred))
    c1 = float(np.cov(pred, y, bias=True)[0, 1] / var) if var > 1e-12 else 0.0
    if c1 <= 0.0:
        c1 = 0.0
    c0 = float(y.mean() - c1 * pred.mean())
    resid = y - (c0 + c1 * pred)
    dof = max(y.shape[0] - 2, 1)
    return c0, c1, math.sqrt(float(resid @ resid) / dof)


def default_set(names: Sequence[str]) -> tuple[str, ...]:
    """The prior's default features: size and the benchmark mean (whichever exist)."""
    return tuple(n for n in (LOG_PARAMS, BENCH_MEAN) if n in names) or tuple(names[:1])


def fit_prior(
    F: np.ndarray,
    names: Sequence[str],
    targets: Mapping[str, np.ndarray],
    groups: np.ndarray,
    *,
    metric: str,
    main_metric: str,
) -> PriorFit:
    """Choose and fit the prior on rows ``F`` (prior models, features ``names``, no missing
    values) with ``targets[metric]`` (and ``targets[main_metric]`` as a second source).

    The choice is conservative: the default set (size and the benchmark mean, fit on the
    main metric) is kept unless another candidate's grouped-CV squared error is lower by
    more than ``SWITCH_SE`` standard errors of the paired per-family difference. With a few dozen
    published models a free choice among a dozen candidates mostly picks noise
    (``benchmarks/bench_select.py`` measured it: Spearman 0.79 vs 0.84 for the default on
    half of the Ahrabian et al. table).
    """
    y = targets[metric]
    sources = [main_metric] if main_metric in targets else []
    sources += [metric] if metric not in sources else []
    index = {n: i for i, n in enumerate(names)}
    fams = np.unique(groups)
    masks = [groups == f for f in fams]
    trials: list[tuple[FeatureSetScore, np.ndarray, np.ndarray]] = []
    for features in feature_sets(names):
        cols = [index[n] for n in features]
        for source in sources:
            pred = _grouped_predictions(F[:, cols], targets[source], groups)
            c0, c1, rmse = _rescale(pred, y)
            if c1 <= 0.0:
                continue  # anti-correlated across families: no information, never chosen
            resid = y - (c0 + c1 * pred)
            per_family = np.array([np.sum(resid[m] ** 2) for m in masks])
            trials.append(
                (FeatureSetScore(features, source, rmse, spearman(pred, y)), resid, per_family)
            )
    if not trials:
        return _size_fallback(F, names, y, groups, metric)
    base_features = default_set(names)
    base = next(
        (t for t in trials if t[0].features == base_features and t[0].source_metric == sources[0]),
        min(trials, key=lambda t: t[0].rmse),
    )
    pick = base
    for trial in sorted(trials, key=lambda t: t[0].rmse):
        diff = base[2] - trial[2]  # > 0: the trial errs less on that family
        se = float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else math.inf
        if float(diff.mean()) > SWITCH_SE * se:
            pick = trial
            break
    best, residuals = pick[0], pick[1]
    cols = [index[n] for n in best.features]
    S, center, scale = _standardize(F[:, cols])
    coef, intercept, _ = ridge_loo(S, targets[best.source_metric])
    pred = _grouped_predictions(F[:, cols], targets[best.source_metric], groups)
    c0, c1, _ = _rescale(pred, y)
    return PriorFit(
        metric,
        best.source_metric,
        best.features,
        center,
        scale,
        coef,
        intercept,
        (c0, c1),
        best.rmse,
        residuals,
        tuple(t[0] for t in sorted(trials, key=lambda t: t[0].rmse)),
        int(y.shape[0]),
        int(fams.size),
    )


def _size_fallback(
    F: np.ndarray, names: Sequence[str], y: np.ndarray, groups: np.ndarray, metric: str
) -> PriorFit:
    """Size alone, by a line fit in-sample, when nothing predicts across families."""
    if LOG_PARAMS not in names:
        raise SimscopeError(
            f"prior: no feature set predicts {metric!r} across the prior's families (each "
            "held-out family came out ranked against its scores) and no parameter counts are "
            "known to fall back on; the prior cannot rank candidates"
        )
    x = F[:, list(names).index(LOG_PARAMS)]
    c0, c1, rmse = _rescale(x, y)
    if c1 <= 0.0:
        raise SimscopeError(
            f"prior: {metric!r} falls with model size across the prior's models and no "
            "feature set predicts it across families; the prior cannot rank candidates"
        )
    center, scale = np.array([x.mean()]), np.array([max(float(x.std()), 1e-12)])
    return PriorFit(
        metric,
        metric,
        (LOG_PARAMS,),
        center,
        scale,
        np.array([scale[0]]),
        float(x.mean()),
        (c0, c1),
        rmse,
        y - (c0 + c1 * x),
        (),
        int(y.shape[0]),
        int(np.unique(groups).size),
        informative=False,
    )


@dataclass(frozen=True)
class PriorEvidence:
    """Nested leave-one-family-out predictions of the prior on its own table, and the
    size baseline's scores on the same models."""

    predicted: np.ndarray
    observed: np.ndarray
    log_params: np.ndarray | None
    groups: np.ndarray
    models: tuple[str, ...] = ()


def evaluate_prior(
    F: np.ndarray,
    names: Sequence[str],
    targets: Mapping[str, np.ndarray],
    groups: np.ndarray,
    *,
    metric: str,
    main_metric: str,
    models: Sequence[str] = (),
) -> PriorEvidence:
    """Each family predicted by a prior chosen and fitted without it (see the module doc)."""
    y = targets[metric]
    pred = np.empty(y.shape[0])
    for g in np.unique(groups):
        test = groups == g
        if np.unique(groups[~test]).size < 2:
            pred[test] = float(y[~test].mean())
            continue
        fit = fit_prior(
            F[~test],
            names,
            {k: v[~test] for k, v in targets.items()},
            groups[~test],
            metric=metric,
            main_metric=main_metric,
        )
        cols = [list(names).index(n) for n in fit.features]
        pred[test] = fit.predict(F[test][:, cols])
    size = F[:, list(names).index(LOG_PARAMS)] if LOG_PARAMS in names else None
    return PriorEvidence(pred, y, size, groups, tuple(models))


def family_bootstrap(groups: np.ndarray, *, n_boot: int, seed: int) -> list[np.ndarray]:
    """Row indices of ``n_boot`` resamples that draw whole families with replacement."""
    fams = np.unique(groups)
    rows = [np.flatnonzero(groups == f) for f in fams]
    rng = np.random.default_rng(seed)
    return [
        np.concatenate([rows[i] for i in rng.integers(0, fams.size, fams.size)])
        for _ in range(n_boot)
    ]


# ---- the prior for a set of candidates ------------------------------------------------------


@dataclass(frozen=True)
class PriorPrediction:
    """The prior's mean and variance for each model in scope (NaN: no prediction), and how
    each was made."""

    models: tuple[str, ...]
    mean: np.ndarray
    var: np.ndarray
    published: tuple[str, ...]
    reduced: dict[tuple[str, ...], list[str]]
    fit: PriorFit
    """The fit on every usable feature (the one the evidence describes)."""
    evidence: PriorEvidence | None
    metric: str
    names: tuple[str, ...]
    families: dict[str, str]


def prior_features(
    prior_models: Sequence[str],
    scope: Sequence[str],
    bench_wide: pl.DataFrame | None,
    covariates: pl.DataFrame,
) -> tuple[list[str], list[str], np.ndarray]:
    """(models, feature names, X) over the prior's models and the scope: ``log_params``,
    ``log_tokens``, every benchmark and their mean; NaN where unknown. Sizes come from the
    benchmark table first, then from the prior table's or the candidates' covariates."""
    models = list(dict.fromkeys([*prior_models, *scope]))
    frame = pl.DataFrame({"model": models})
    if bench_wide is not None:
        frame = frame.join(bench_wide, on="model", how="left")
    cov = covariates.select(
        "model",
        pl.when(pl.col(PARAMS_BENCHMARK) > 0).then(pl.col(PARAMS_BENCHMARK).log()).alias("_lp"),
        pl.when(pl.col(TOKENS_BENCHMARK) > 0).then(pl.col(TOKENS_BENCHMARK).log()).alias("_lt"),
    )
    frame = frame.join(cov, on="model", how="left")
    for column, given in ((LOG_PARAMS, "_lp"), (LOG_TOKENS, "_lt")):
        if column in frame.columns:
            frame = frame.with_columns(pl.coalesce(column, given).alias(column))
        else:
            frame = frame.rename({given: column})
    frame = frame.drop([c for c in ("_lp", "_lt") if c in frame.columns])
    bench = [c for c in frame.columns if c not in ("model", LOG_PARAMS, LOG_TOKENS)]
    if len(bench) > 1:
        frame = frame.with_columns(pl.mean_horizontal(bench).alias(BENCH_MEAN))
        # a model missing one benchmark has no mean (an average of other subsets would
        # not be comparable)
        frame = frame.with_columns(
            pl.when(pl.all_horizontal(pl.col(bench).is_not_null()))
            .then(pl.col(BENCH_MEAN))
            .otherwise(None)
            .alias(BENCH_MEAN)
        )
    names: list[str] = [c for c in (LOG_PARAMS, LOG_TOKENS) if c in frame.columns]
    names += [c for c in frame.columns if c not in ("model", *names)]
    X = frame.select(names).cast(pl.Float64).to_numpy().astype(np.float64, copy=True)
    return models, names, X


_MEMO: dict[tuple[Any, ...], PriorPrediction] = {}
_MEMO_SIZE: Final = 16


def _frame_key(df: pl.DataFrame | None) -> tuple[Any, ...]:
    if df is None:
        return ()
    return (tuple(df.columns), df.height, int(df.hash_rows(seed=0).sum()))


def predict_with_prior(
    table: PriorTable,
    scope: Sequence[str],
    bench_wide: pl.DataFrame | None,
    *,
    metric: str,
    covariates: pl.DataFrame | None = None,
    evaluate: bool = True,
) -> PriorPrediction:
    """``_predict_with_prior``, remembered for the last few inputs of this process (the same
    prior is refit for every candidate set of a simulation or notebook session; the inputs
    are keyed by content, so a changed table is refit)."""
    key = (
        table.name,
        table.main_metric,
        _frame_key(table.scores),
        _frame_key(table.covariates),
        tuple(sorted(table.families.items())),
        tuple(scope),
        _frame_key(bench_wide),
        metric,
        _frame_key(covariates),
        evaluate,
    )
    if key not in _MEMO:
        if len(_MEMO) >= _MEMO_SIZE:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = _predict_with_prior(
            table, scope, bench_wide, metric=metric, covariates=covariates, evaluate=evaluate
        )
    return _MEMO[key]


def _predict_with_prior(
    table: PriorTable,
    scope: Sequence[str],
    bench_wide: pl.DataFrame | None,
    *,
    metric: str,
    covariates: pl.DataFrame | None = None,
    evaluate: bool = True,
) -> PriorPrediction:
    """The prior (fit on ``table``'s ``metric``) for every model of ``scope``.

    A scope model with a published ``metric`` score in the table gets that score (variance
    0). Others get the prior fit on the features they have (a model without a benchmark is
    predicted from the features it has, by a prior fit on those alone) with the fit's
    cross-validated error as variance; a model with no usable feature gets NaN.
    """
    wide = table.scores.pivot("metric", index="model", values="score", aggregate_function=None)
    targets_frame = wide.filter(pl.col(metric).is_not_null())
    prior_models = targets_frame.get_column("model").to_list()
    cov = (
        table.covariates
        if covariates is None
        else pl.concat(
            [
                table.covariates,
                covariates.filter(~pl.col("model").is_in(table.covariates["model"])),
            ],
            how="diagonal_relaxed",
        )
    )
    models, names, X = prior_features(prior_models, scope, bench_wide, cov)
    row = {m: i for i, m in enumerate(models)}
    P = X[[row[m] for m in prior_models]]
    share = (~np.isnan(P)).mean(axis=0)
    usable = [n for n, s in zip(names, share, strict=True) if s >= MIN_FEATURE_SHARE]
    if not usable:
        covered = int((~np.isnan(P)).any(axis=1).sum())
        raise SimscopeError(
            f"prior {table.name!r}: only {covered} of its {len(prior_models)} models with "
            f"{metric!r} have features in the benchmark table (a feature must be known for "
            f"{MIN_FEATURE_SHARE:.0%} of them); give a benchmark table that covers its models"
        )
    fam = assign_families(prior_models, table.families)
    metrics = {m: targets_frame.get_column(m).to_numpy() for m in targets_frame.columns[1:]}

    fits: dict[tuple[str, ...], PriorFit] = {}
    evidence: PriorEvidence | None = None

    def fit_for(features: tuple[str, ...]) -> PriorFit | None:
        if features in fits:
            return fits[features]
        cols = [names.index(n) for n in features]
        ok = ~np.isnan(P[:, cols]).any(axis=1) & ~np.isnan(metrics[metric])
        rows_models = [m for m, k in zip(prior_models, ok, strict=True) if k]
        groups = np.array(group_codes(rows_models, fam))
        if len(rows_models) < MIN_PRIOR_MODELS or np.unique(groups).size < MIN_PRIOR_FAMILIES:
            return None
        targets = {k: v[ok] for k, v in metrics.items() if not np.isnan(v[ok]).any()}
        fits[features] = fit_prior(
            P[ok][:, cols],
            features,
            targets,
            groups,
            metric=metric,
            main_metric=table.main_metric,
        )
        return fits[features]

    full = fit_for(tuple(usable))
    if full is None:
        n_fam = len(set(fam.values()))
        raise SimscopeError(
            f"prior {table.name!r}: {len(prior_models)} models with {metric!r} in "
            f"{n_fam} families have the features; a prior needs at least {MIN_PRIOR_MODELS} "
            f"models in {MIN_PRIOR_FAMILIES} families to be checked by grouped CV"
        )
    if evaluate:
        cols = [names.index(n) for n in usable]
        ok = ~np.isnan(P[:, cols]).any(axis=1)
        rows_models = [m for m, k in zip(prior_models, ok, strict=True) if k]
        evidence = evaluate_prior(
            P[ok][:, cols],
            usable,
            {k: v[ok] for k, v in metrics.items() if not np.isnan(v[ok]).any()},
            np.array(group_codes(rows_models, fam)),
            metric=metric,
            main_metric=table.main_metric,
            models=rows_models,
        )

    published_scores = dict(zip(prior_models, metrics[metric].tolist(), strict=True))
    mean = np.full(len(scope), np.nan)
    var = np.full(len(scope), np.nan)
    published: list[str] = []
    reduced: dict[tuple[str, ...], list[str]] = {}
    for i, model in enumerate(scope):
        if model in published_scores:
            mean[i], var[i] = published_scores[model], 0.0
            published.append(model)
            continue
        x = X[row[model]]
        have = tuple(n for n in usable if not np.isnan(x[names.index(n)]))
        if all(n in have for n in full.features):
            fit: PriorFit | None = full
        else:
            fit = fit_for(have) if have else None
            if fit is not None:
                reduced.setdefault(fit.features, []).append(model)
        if fit is None:
            continue
        mean[i] = float(fit.predict(x[[names.index(n) for n in fit.features]][None, :])[0])
        var[i] = fit.residual_sd**2
    return PriorPrediction(
        tuple(scope),
        mean,
        var,
        tuple(published),
        reduced,
        full,
        evidence,
        metric,
        tuple(usable),
        fam,
    )
