"""Leave-one-out cross-validation of the predictors, and the scores it is judged by.

Each measured model is predicted by a predictor fitted (hyperparameters included) on the
others. Scores: Spearman, MAE and top-k coverage C@k = |top-k predicted ∩ top-k observed| / k.

LOO has a trap for rankings. A predictor fitted without model i predicts
``mean(y without i) + signal``, and ``mean(y without i) = (sum(y) - y_i) / (n - 1)``
*falls* as ``y_i`` rises: the constant (mean) predictor scores Spearman = -1 under LOO, and any
predictor that shrinks toward the mean is pulled the same way. The ranking of untried models
never sees this term (they all share one training mean), so ranks are scored on the
*deviation* of each prediction from its own training mean: ``spearman`` and ``C@k`` below
use it (the constant predictor has no deviation, and scores 0 and k/n, chance). The plain
``spearman_raw`` of the predictions is reported beside it so the artefact stays visible.

Removing the mean is not enough: a slope fitted without model i is also tilted away from
it (its leverage), so a weak predictor still scores below 0 under LOO. Rankings are
therefore judged by *pairwise* CV, where both models of a pair are predicted by one fit that
saw neither (leave-pair-out, Airola et al. 2011, "An experimental comparison of
cross-validation techniques for estimating the area under the ROC curve"): ``pair_tau`` =
2 P(the pair is ordered right) - 1, a Kendall-tau-like score that is 0 in expectation for a
predictor with no information. With more pairs than ``max_fits`` fits allow, pairs come from
the test folds of repeated 5-fold CV instead (each fit predicts a fold; its pairs share it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy.stats import rankdata

from simscope.select.predictors import FittedPredictor, PredictorSpec, fit_predictor

TOP_KS: Final = (3, 5, 10)
N_BOOT_METRICS: Final = 2000
MAX_PAIR_FITS: Final = 60
"""Fits per predictor for pairwise CV: leave-pair-out up to n = 11, repeated 5-fold above."""


@dataclass(frozen=True)
class LOOResult:
    """Out-of-fold predictions of one predictor over the measured models."""

    spec: PredictorSpec
    predicted: np.ndarray
    train_mean: np.ndarray
    fits: tuple[FittedPredictor, ...]

    @property
    def deviation(self) -> np.ndarray:
        """Each prediction minus its training mean: what ranks the models."""
        return self.predicted - self.train_mean


def leave_one_out(spec: PredictorSpec, X: np.ndarray, y: np.ndarray, *, seed: int) -> LOOResult:
    """Fit ``spec`` n times, each without one of the ``n`` rows, and predict that row."""
    n = len(y)
    predicted = np.empty(n)
    train_mean = np.empty(n)
    fits = []
    for i in range(n):
        rest = np.arange(n) != i
        fit = fit_predictor(spec, X[rest], y[rest], seed=seed)
        predicted[i] = fit.predict(X[i : i + 1])[0]
        train_mean[i] = fit.train_mean_
        fits.append(fit)
    return LOOResult(spec, predicted, train_mean, tuple(fits))


@dataclass(frozen=True)
class PairSplits:
    """The pairwise-CV design shared by every predictor: test sets, and the pairs each holds."""

    test_sets: tuple[np.ndarray, ...]
    first: np.ndarray
    second: np.ndarray
    fit_of_pair: np.ndarray


def pair_splits(y: np.ndarray, *, seed: int, max_fits: int = MAX_PAIR_FITS) -> PairSplits:
    """Test sets for pairwise CV; pairs with equal observed values are left out."""
    n = len(y)
    if n * (n - 1) // 2 <= max_fits:
        tests = [np.array([i, j]) for i in range(n) for j in range(i + 1, n)]
    else:
        rng = np.random.default_rng(seed)
        tests = []
        while len(tests) < max_fits:
            order = rng.permutation(n)
            tests += [np.sort(part) for part in np.array_split(order, 5)]
    first, second, fit_of_pair = [], [], []
    for f, test in enumerate(tests):
        for a in range(len(test)):
            for b in range(a + 1, len(test)):
                i, j = int(test[a]), int(test[b])
                if y[i] != y[j]:
                    first.append(i)
                    second.append(j)
                    fit_of_pair.append(f)
    return PairSplits(
        tuple(tests),
        np.array(first, dtype=np.int64),
        np.array(second, dtype=np.int64),
        np.array(fit_of_pair, dtype=np.int64),
    )


def pairwise_concordance(
    spec: PredictorSpec, X: np.ndarray, y: np.ndarray, splits: PairSplits, *, seed: int
) -> np.ndarray:
    """Per pair of ``splits``: 1 if ordered as observed, 0 if reversed, 0.5 if tied."""
    predicted = np.full((len(splits.test_sets), len(y)), np.nan)
    for f, test in enumerate(splits.test_sets):
        rest = np.ones(len(y), dtype=bool)
        rest[test] = False
        fit = fit_predictor(spec, X[rest], y[rest], seed=seed)
        predicted[f, test] = fit.predict(X[test])
    fit_index, i, j = splits.fit_of_pair, splits.first, splits.second
    sign = np.sign(predicted[fit_index, i] - predicted[fit_index, j]) * np.sign(y[i] - y[j])
    return (sign + 1.0) / 2.0


def pair_tau_replicates(concordance: np.ndarray, splits: PairSplits, idx: np.ndarray) -> np.ndarray:
    """pair_tau on each bootstrap resample of the models (a pair weighs w_i * w_j)."""
    n = idx.shape[1]
    counts = np.zeros((idx.shape[0], n))
    for b, r in enumerate(idx):
        counts[b] = np.bincount(r, minlength=n)
    w = counts[:, splits.first] * counts[:, splits.second]
    total = w.sum(axis=1)
    conc = (w @ concordance) / np.where(total > 0, total, 1.0)
    return np.where(total > 0, 2.0 * conc - 1.0, 0.0)


def pair_tau(concordance: np.ndarray) -> float:
    """2 * mean concordance - 1 (0 when there are no pairs)."""
    return 2.0 * float(concordance.mean()) - 1.0 if concordance.size else 0.0


def spearman(score: np.ndarray, y: np.ndarray) -> float:
    """Spearman correlation; 0 when either side has no spread (no ranking information)."""
    a, b = rankdata(score), rankdata(y)
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denom if denom > 1e-12 else 0.0


def top_k_coverage(score: np.ndarray, y: np.ndarray, k: int) -> float:
    """Expected |top-k by score ∩ top-k by y| / k, ties broken at random on each side."""
    return float(_in_top_k(score, k) @ _in_top_k(y, k)) / k


def _in_top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Probability that each item is among the k largest under random tie-breaking."""
    order = np.sort(values)[::-1]
    threshold = order[k - 1]
    above = values > threshold
    tied = values == threshold
    slots = k - int(above.sum())
    return above.astype(float) + tied * (slots / tied.sum())


def scores(result: LOOResult, y: np.ndarray) -> dict[str, float]:
    """Spearman (deviation), raw Spearman, MAE, and C@k for each k < n."""
    dev = result.deviation
    out = {
        "spearman": spearman(dev, y),
        "spearman_raw": spearman(result.predicted, y),
        "mae": float(np.mean(np.abs(result.predicted - y))),
    }
    for k in TOP_KS:
        if k < len(y):
            out[f"c@{k}"] = top_k_coverage(dev, y, k)
    return out


def bootstrap_indices(n: int, *, n_boot: int = N_BOOT_METRICS, seed: int) -> np.ndarray:
    """``n_boot`` resamples (rows) of ``n`` model indices, shared by paired comparisons."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def spearman_replicates(score: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Spearman of ``score`` vs ``y`` on each bootstrap resample (rows of ``idx``)."""
    a = rankdata(score[idx], axis=1)
    b = rankdata(y[idx], axis=1)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    num = (a * b).sum(axis=1)
    return np.where(denom > 1e-12, num / np.where(denom > 1e-12, denom, 1.0), 0.0)


def mae_replicates(pred: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """MAE of ``pred`` on each bootstrap resample."""
    return np.abs(pred - y)[idx].mean(axis=1)


def interval(replicates: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates."""
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha])
    return float(low), float(high)
