"""Prediction intervals and P(best) for the chosen predictor.

Intervals are jackknife+ (Barber, Candes, Ramdas & Tibshirani 2021, "Predictive inference
with the jackknife+"): from the n leave-one-out fits ``mu_-i`` and their residuals
``R_i = |y_i - mu_-i(x_i)|``, the interval for a new model x runs from the
floor(alpha (n+1))-th smallest ``mu_-i(x) - R_i`` to the ceil((1-alpha)(n+1))-th smallest
``mu_-i(x) + R_i``; its coverage is at least 1 - 2 alpha for any distribution and about
1 - alpha in practice. When n is too small for the level (n + 1 < 1 / alpha) an end is
unbounded and is reported as null: no distribution-free interval exists at that level.

Empirical coverage under CV holds out a measured model, builds its jackknife+ interval from
the other models alone (nested leave-one-out), and checks it. (Checking each model's LOO
prediction against a quantile of the other models' LOO residuals would not do: that is
ceil((1 - alpha) n) / n by exchangeability, whatever the predictor.) A measured model's own
interval in the Selection is that split-conformal one, for display.

P(best) draws, B times, a bootstrap resample of the measured models, refits the predictor
(an Elastic Net at the penalty tuned on all measured models; a single benchmark is chosen
again), predicts each untried model and adds a residual drawn from the LOO residuals (the
model's own error, which refits alone would leave out); measured models
keep their observed score. P(best) is the share of draws in which a model is the highest.
"""

from __future__ import annotations

import math

import numpy as np

from simscope.select.cv import LOOResult
from simscope.select.predictors import PredictorSpec, fit_predictor

MAX_COVERAGE_MODELS = 20
_SLACK = 1e-9


def jackknife_plus(
    loo: LOOResult, y: np.ndarray, X_new: np.ndarray, *, coverage: float
) -> tuple[np.ndarray, np.ndarray]:
    """Jackknife+ interval ends for the rows of ``X_new`` (NaN where unbounded)."""
    mu = np.column_stack([fit.predict(X_new) for fit in loo.fits])  # (m, n)
    return _jackknife_plus_ends(mu, np.abs(y - loo.predicted), coverage)


def _jackknife_plus_ends(
    mu: np.ndarray, residual: np.ndarray, coverage: float
) -> tuple[np.ndarray, np.ndarray]:
    """Ends from the LOO fits' predictions ``mu`` (m, n) and LOO residuals (n,)."""
    n = residual.size
    alpha = 1.0 - coverage
    lows = np.sort(mu - residual, axis=1)
    highs = np.sort(mu + residual, axis=1)
    # The rounding slack keeps 0.9 * 10 = 9.000000000000002 from becoming 10.
    k_low = math.floor(alpha * (n + 1) + _SLACK)
    k_high = math.ceil((1.0 - alpha) * (n + 1) - _SLACK)
    m = mu.shape[0]
    low = lows[:, k_low - 1] if k_low >= 1 else np.full(m, np.nan)
    high = highs[:, k_high - 1] if k_high <= n else np.full(m, np.nan)
    return low, high


def nested_coverage(
    spec: PredictorSpec,
    X: np.ndarray,
    y: np.ndarray,
    *,
    penalty: dict[str, float] | None,
    coverage: float,
    seed: int,
    max_models: int = MAX_COVERAGE_MODELS,
) -> tuple[float | None, int, int]:
    """Empirical coverage of jackknife+ under CV: (share covered, models checked, of which
    finite).

    Each checked model is held out, jackknife+ is built from the other n - 1 models (n - 1
    fits, each without one more), and its interval is checked against its observed score.
    An Elastic Net keeps the penalty tuned on all measured models (``penalty``), so the
    n^2 fits stay cheap. Up to ``max_models`` held-out models, chosen by ``seed``.
    """
    n = len(y)
    held = np.arange(n)
    if n > max_models:
        held = np.sort(np.random.default_rng(seed).choice(n, size=max_models, replace=False))
    covered: list[bool] = []
    for i in held:
        rest = np.flatnonzero(np.arange(n) != i)
        mu = np.empty((1, rest.size))
        residual = np.empty(rest.size)
        for k in range(rest.size):
            train = np.delete(rest, k)
            fit = fit_predictor(spec, X[train], y[train], seed=seed, penalty=penalty or None)
            pred = fit.predict(X[[rest[k], i]])
            residual[k] = abs(y[rest[k]] - pred[0])
            mu[0, k] = pred[1]
        low, high = _jackknife_plus_ends(mu, residual, coverage)
        if np.isfinite(low[0]) and np.isfinite(high[0]):
            covered.append(bool(low[0] <= y[i] <= high[0]))
    if not covered:
        return None, int(held.size), 0
    return float(np.mean(covered)), int(held.size), len(covered)


def conformal_radius(residuals: np.ndarray, *, coverage: float) -> float:
    """Split-conformal radius from absolute residuals (inf when there are too few)."""
    m = len(residuals)
    k = math.ceil(coverage * (m + 1) - _SLACK)
    if k > m:
        return math.inf
    return float(np.sort(residuals)[k - 1])


def loo_intervals(loo: LOOResult, y: np.ndarray, *, coverage: float) -> np.ndarray:
    """(n, 2) interval of each measured model from the other models' LOO residuals."""
    residual = np.abs(y - loo.predicted)
    out = np.empty((len(y), 2))
    for i in range(len(y)):
        r = conformal_radius(np.delete(residual, i), coverage=coverage)
        out[i] = loo.predicted[i] - r, loo.predicted[i] + r
    return out


def p_best(
    spec: PredictorSpec,
    X: np.ndarray,
    y: np.ndarray,
    loo: LOOResult,
    *,
    penalty: dict[str, float] | None,
    n_boot: int,
    seed: int,
) -> np.ndarray:
    """P(best) of each row of ``X`` (rows with a finite ``y`` are measured)."""
    measured = ~np.isnan(y)
    X_m, y_m = X[measured], y[measured]
    untried = np.flatnonzero(~measured)
    signed_residual = y_m - loo.predicted
    rng = np.random.default_rng(seed)
    if untried.size == 0:
        return _share_of_max(y)
    wins = np.zeros(len(y))
    for _b in range(n_boot):
        draw = rng.integers(0, len(y_m), size=len(y_m))
        fit = fit_predictor(spec, X_m[draw], y_m[draw], seed=seed, penalty=penalty or None)
        guess = fit.predict(X[untried]) + rng.choice(signed_residual, size=untried.size)
        values = y.copy()
        values[untried] = guess
        wins += _share_of_max(values)
    return wins / n_boot


def _share_of_max(values: np.ndarray) -> np.ndarray:
    """1 for the highest value; models tied for the highest share the win."""
    top = values == values.max()
    return top / top.sum()
