"""Elastic Net with its penalty tuned by inner cross-validation, solved in one batch.

The objective is scikit-learn's ``ElasticNet``: (1 / 2n) |y - Xw - b|^2 + alpha l1 |w|_1 +
(alpha (1 - l1) / 2) |w|^2, with an unpenalized intercept. Instead of one solver call per
(fold, l1 ratio, alpha), as ``ElasticNetCV`` makes, every inner fold and every grid point is
one row of a batch and coordinate descent updates a coordinate of all rows at once. The
select stage refits a predictor hundreds of times (leave-one-out, pairs, bootstrap), and for
its few features this is ~10x faster. ``tests/test_select.py`` checks it against
scikit-learn's solver.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Final

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNet

L1_RATIOS: Final = (0.1, 0.5, 0.9, 1.0)
N_ALPHAS: Final = 25
ALPHA_RANGE: Final = 1e-3
"""The grid runs from each l1 ratio's alpha_max (all weights zero) down to this fraction."""
INNER_LOO_MAX_N: Final = 10
"""Training sets up to this size tune the penalty by leave-one-out, larger ones by 5-fold."""
MAX_SWEEPS: Final = 150
TOL: Final = 1e-7


@dataclass(frozen=True)
class ENetFit:
    """Weights and intercept of the tuned fit, and the penalty chosen."""

    coef: np.ndarray
    intercept: float
    alpha: float
    l1_ratio: float


def solve(G: np.ndarray, c: np.ndarray, lam1: np.ndarray, lam2: np.ndarray) -> np.ndarray:
    """Minimize 0.5 w'Gw - c'w + lam1 |w|_1 + 0.5 lam2 |w|^2 for each batch row.

    Shapes: G (F, p, p) and c (F, p) per fold; lam1, lam2 (M,) per grid point. Returns
    W (F, M, p). Rows that have converged drop out of the batch.
    """
    F, p = c.shape
    M = lam1.shape[0]
    fold = np.repeat(np.arange(F), M)
    l1 = np.tile(lam1, F)
    diag = np.einsum("fjj->fj", G)[fold] + np.tile(lam2, F)[:, None]  # (R, p)
    W = np.zeros((F * M, p))
    active = np.arange(F * M)
    tol = TOL * max(1.0, float(np.abs(c).max(initial=0.0)))
    Ga, ca, la, da, Wa = G[fold], c[fold], l1, diag, W.copy()
    safe = np.where(da > 0, da, 1.0)
    delta = np.zeros(active.size)
    for sweep in range(1, MAX_SWEEPS + 1):
        delta[:] = 0.0
        for j in range(p):
            # rho = c_j - sum_{k != j} G_jk w_k
            rho = ca[:, j] - np.einsum("rk,rk->r", Ga[:, j, :], Wa) + Ga[:, j, j] * Wa[:, j]
            new = np.sign(rho) * np.maximum(np.abs(rho) - la, 0.0) / safe[:, j]
            new[da[:, j] <= 0] = 0.0
            np.maximum(delta, np.abs(new - Wa[:, j]), out=delta)
            Wa[:, j] = new
        if sweep % 10 == 0 or sweep == MAX_SWEEPS:
            # Drop converged rows from the batch.
            W[active] = Wa
            keep = delta >= tol
            if not keep.any():
                break
            if not keep.all():
                active = active[keep]
                Ga, ca, la, da, safe, Wa = (
                    Ga[keep],
                    ca[keep],
                    la[keep],
                    da[keep],
                    safe[keep],
                    Wa[keep],
                )
                delta = delta[keep]
    return W.reshape(F, M, p)


def _moments(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    xm = X.mean(axis=0)
    ym = float(y.mean())
    Xc = X - xm
    n = X.shape[0]
    return Xc.T @ Xc / n, Xc.T @ (y - ym) / n, xm, ym


def _inner_folds(n: int, seed: int) -> list[np.ndarray]:
    """Validation index sets of the inner CV."""
    if n <= INNER_LOO_MAX_N:
        return [np.array([i]) for i in range(n)]
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, 5)]


def alpha_grid(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, l1 ratio) of every grid point, alphas descending within each l1 ratio."""
    n = X.shape[0]
    corr = float(np.abs((X - X.mean(axis=0)).T @ (y - y.mean())).max(initial=0.0)) / n
    alphas, ratios = [], []
    for l1 in L1_RATIOS:
        top = corr / l1
        alphas.append(top * np.geomspace(1.0, ALPHA_RANGE, N_ALPHAS) if top > 0 else np.zeros(1))
        ratios.append(np.full(alphas[-1].shape, l1))
    return np.concatenate(alphas), np.concatenate(ratios)


def fit_enet_cv(X: np.ndarray, y: np.ndarray, *, seed: int) -> ENetFit:
    """Tune (alpha, l1 ratio) by inner CV on (X, y), then fit on all of it.

    Ties in CV error go to the earlier grid point (smaller l1 ratio, then larger alpha),
    the order scikit-learn's ElasticNetCV searches in.
    """
    n, _p = X.shape
    alphas, ratios = alpha_grid(X, y)
    folds = _inner_folds(n, seed) if n >= 2 else []
    Gs, cs, means = [], [], []
    for val in folds:
        train = np.setdiff1d(np.arange(n), val)
        G, c, xm, ym = _moments(X[train], y[train])
        Gs.append(G)
        cs.append(c)
        means.append((xm, ym))
    G, c, xm, ym = _moments(X, y)
    Gs.append(G)
    cs.append(c)
    W = solve(np.stack(Gs), np.stack(cs), alphas * ratios, alphas * (1.0 - ratios))
    if folds:
        sq_err = np.zeros(alphas.shape[0])
        for f, val in enumerate(folds):
            fxm, fym = means[f]
            pred = fym + (X[val] - fxm) @ W[f].T  # (len(val), M)
            sq_err += ((pred - y[val, None]) ** 2).mean(axis=0)
        best = int(np.argmin(np.round(sq_err / len(folds), 12)))
    else:
        best = 0
    # The final fit by scikit-learn's own solver, warm-started from the batch's answer: exact
    # even where the batch stopped at MAX_SWEEPS (nearly collinear features, tiny alpha).
    return fit_enet(
        X, y, alpha=float(alphas[best]), l1_ratio=float(ratios[best]), start=W[-1, best]
    )


def fit_enet(
    X: np.ndarray,
    y: np.ndarray,
    *,
    alpha: float,
    l1_ratio: float,
    start: np.ndarray | None = None,
) -> ENetFit:
    """Elastic Net at a fixed penalty (scikit-learn's solver)."""
    if alpha <= 0.0:
        # alpha_max = 0: the target does not vary with any feature; all weights are zero.
        return ENetFit(np.zeros(X.shape[1]), float(y.mean()), alpha, l1_ratio)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = ElasticNet(alpha=alpha, l1_ratio=l1_ratio, max_iter=100_000, warm_start=True)
        if start is not None:
            model.coef_ = np.array(start, dtype=np.float64)
        model.fit(X, y)
    return ENetFit(
        np.asarray(model.coef_, dtype=np.float64), float(model.intercept_), alpha, l1_ratio
    )
