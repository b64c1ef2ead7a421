"""Calibration of a prior prediction to the user's recipe and metric: a small Bayesian model
that is the prior at k = 0 measured models and a user-only regression as k grows.

For a model c with prior mean ``z_c`` and prior variance ``v_c`` (in the prior's units; ``v``
is 0 for a published score and the prior's cross-validated error for a predicted one), the
user's score is

    y_c = a + b (z_c - center) + w . phi_c + e_c,    e_c ~ N(0, b^2 (r^2 s^2 + v_c))

``b`` is the scale between the prior's units and the user's, ``a`` the user's level, ``w`` a
small residual model on the user's features ``phi`` (standardized), and ``r s`` (``s`` = the
prior's error SD) the part of the user's scores that the prior does not explain (another
recipe, measurement noise). ``b`` and ``r`` sit on a grid (log-spaced), with a log-normal
prior on each; given them, ``(a, w)`` are Gaussian, so the posterior is exact on the grid:
a mixture of Gaussians, summed in closed form and sampled for P(best) and the value of
information. Priors:

- **same metric** (the user predicts the metric the prior was fit on): ``b`` around 1 and
  ``a`` around ``center`` (the prior's own level), ``r`` around ``SAME_R``;
- **another metric**: ``b`` log-uniform over a wide range around the spread ratio of the
  measured scores to their prior means (the units are unknown), ``a`` flat;
- the residual weights ``w ~ N(0, (sd(y) lam)^2)``: ``lam`` is the residual model's strength,
  0 (off) unless cross-validation over the measured models' families picks a larger one;
  the width of ``b``'s prior is chosen the same way (``choose_strength``).

As k grows the likelihood outweighs every prior, and the posterior mean becomes the
least-squares fit of the user's scores on ``z`` and ``phi``: a user-only model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

SAME_R: Final = 0.5
"""Prior median of r for the same metric: the user's recipe adds half the prior's error SD."""
R_LOG_SD: Final = 1.0
B_LOG_SDS: Final = (0.15, 0.35, 1.0)
"""Widths (log scale) of b's prior around 1 for the same metric; CV picks one."""
RESIDUAL_STRENGTHS: Final = (0.0, 0.1, 0.3, 1.0, 3.0)
"""Residual-model strengths lam (prior SD of a weight per SD of its feature, in units of the
spread of the measured scores); CV picks one."""
MIN_FOR_CV: Final = 8
"""Fewest measured models (in at least ``MIN_FAMILIES_FOR_CV`` families) for CV to choose
the strengths; below, the defaults (residual model off) hold."""
MIN_FAMILIES_FOR_CV: Final = 5
SWITCH_SE: Final = 2.0
"""A setting replaces the default only when its grouped-CV error is lower by more than this
many standard errors of the paired per-family difference (on the pilot simulation a free
choice at 5 measured models ranked worse than the prior alone)."""
N_B: Final = 25
N_R: Final = 15
OTHER_B_SPAN: Final = 30.0
"""Another metric: b's grid spans the measured spread ratio times [1/30, 30]."""


@dataclass(frozen=True)
class CalibrationPrior:
    """The prior of the calibration model (see the module doc)."""

    same_metric: bool
    prior_sd: float
    """s: the prior's error SD in its own units (> 0)."""
    b_log_sd: float = 0.35
    residual: float = 0.0
    offset_sd: float | None = None
    """SD of a around ``center`` for the same metric (default: the spread of z)."""


@dataclass(frozen=True)
class Posterior:
    """The grid posterior: weights over (b, r) cells and the Gaussian of (a, w) in each."""

    b: np.ndarray  # (G,)
    r: np.ndarray  # (G,)
    weight: np.ndarray  # (G,), sums to 1
    theta_mean: np.ndarray  # (G, 1 + q)
    theta_cov: np.ndarray  # (G, 1 + q, 1 + q)
    center: float
    prior_sd: float
    n_measured: int
    n_phi: int = 0
    """Columns of the features given; with the residual model off none is used (theta is
    just a)."""

    def _x(self, phi: np.ndarray, m: int) -> np.ndarray:
        used = self.theta_mean.shape[1] - 1
        return _design(phi[:, :used] if used else np.empty((m, 0)), m)

    def mean(self, z: np.ndarray, phi: np.ndarray) -> np.ndarray:
        """Predictive means for prior means ``z`` (m,) and features ``phi`` (m, q)."""
        cells = (self._x(phi, z.shape[0]) @ self.theta_mean.T).T
        cells = cells + self.b[:, None] * (z - self.center)[None, :]
        return cells.T @ self.weight

    def coefficients(self) -> tuple[float, float, np.ndarray]:
        """Posterior means of (a, b, w): the predictive mean is linear in z and phi."""
        a = float(self.weight @ self.theta_mean[:, 0])
        b = float(self.weight @ self.b)
        w = np.zeros(self.n_phi)
        used = self.theta_mean.shape[1] - 1
        if used:
            w[:used] = self.weight @ self.theta_mean[:, 1:]
        return a, b, w

    def quantiles(self, values: np.ndarray, qs: Sequence[float]) -> list[float]:
        """Quantiles of a per-cell quantity (such as ``b``) under the grid weights."""
        order = np.argsort(values)
        cum = np.cumsum(self.weight[order])
        return [float(values[order][min(int(np.searchsorted(cum, q)), len(cum) - 1)]) for q in qs]

    def sample(
        self, z: np.ndarray, v: np.ndarray, phi: np.ndarray, n: int, rng: np.random.Generator
    ) -> np.ndarray:
        """(n, m) joint draws of the user's scores of the m models (one coefficient draw per
        row, so models share its uncertainty; an own noise term per model)."""
        m = z.shape[0]
        X = self._x(phi, m)
        cells = rng.choice(self.b.size, size=n, p=self.weight)
        out = np.empty((n, m))
        for g in np.unique(cells):
            rows = np.flatnonzero(cells == g)
            chol = _chol(self.theta_cov[g])
            theta = self.theta_mean[g] + rng.standard_normal((rows.size, chol.shape[0])) @ chol.T
            noise_sd = self.b[g] * np.sqrt(self.r[g] ** 2 * self.prior_sd**2 + v)
            out[rows] = (
                theta @ X.T
                + self.b[g] * (z - self.center)[None, :]
                + rng.standard_normal((rows.size, m)) * noise_sd[None, :]
            )
        return out

    def implied_correlation(self, z_spread: float) -> tuple[float, float]:
        """Median and 10% quantile over the posterior of the correlation the calibration
        implies between the prior's means and the user's scores, for prior means with SD
        ``z_spread``: b z_spread / sqrt(b^2 z_spread^2 + b^2 (r^2 s^2 + s^2))."""
        rho = z_spread / np.sqrt(z_spread**2 + self.r**2 * self.prior_sd**2 + self.prior_sd**2)
        median, low = self.quantiles(rho, [0.5, 0.1])
        return median, low


def prior_only(center: float, prior_sd: float, n_features: int) -> Posterior:
    """The prior alone (nothing measured): the user's score is the prior's, with the prior's
    own variance (b = 1, nothing unexplained beyond it)."""
    mean = np.array([[center]])
    return Posterior(
        np.ones(1),
        np.zeros(1),
        np.ones(1),
        mean,
        np.zeros((1, 1, 1)),
        center,
        prior_sd,
        0,
        n_features,
    )


def _design(phi: np.ndarray, m: int) -> np.ndarray:
    return np.column_stack([np.ones(m), phi]) if phi.size else np.ones((m, 1))


def _chol(cov: np.ndarray) -> np.ndarray:
    sym = (cov + cov.T) / 2.0
    jitter = 1e-12 * max(1.0, float(np.abs(np.diag(sym)).max()))
    return np.linalg.cholesky(sym + jitter * np.eye(sym.shape[0]))


def _grid(
    prior: CalibrationPrior,
    y: np.ndarray,
    z: np.ndarray,
    span: tuple[float, float, float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(b, r, log prior weight) of every grid cell: log-spaced over the prior's range, or
    over ``span`` = (log b low, log b high, log r low, log r high) when refining."""
    r_lo, r_hi = math.log(SAME_R) - 2.5 * R_LOG_SD, math.log(SAME_R) + 2.5 * R_LOG_SD
    if span is not None:
        r_lo, r_hi = span[2], span[3]
    r = np.exp(np.linspace(r_lo, r_hi, N_R))
    log_pr = -0.5 * ((np.log(r) - math.log(SAME_R)) / R_LOG_SD) ** 2
    if prior.same_metric:
        half = 2.5 * prior.b_log_sd
        lo, hi = (-half, half) if span is None else span[:2]
        b = np.exp(np.linspace(lo, hi, N_B))
        log_pb = -0.5 * (np.log(b) / prior.b_log_sd) ** 2
    elif span is not None:
        b = np.exp(np.linspace(span[0], span[1], N_B))
        log_pb = np.zeros(N_B)
    else:
        ratio = 1.0
        if y.size >= 2 and np.std(z) > 0 and np.std(y) > 0:
            ratio = float(np.std(y) / np.std(z))
        elif y.size >= 2 and np.std(z) > 0:
            ratio = 1e-6 * max(1.0, float(np.abs(y).mean())) / float(np.std(z))  # all equal
        b = ratio * np.exp(np.linspace(-math.log(OTHER_B_SPAN), math.log(OTHER_B_SPAN), N_B))
        log_pb = np.zeros(N_B)  # log-uniform: no preferred scale
    bb, rr = np.meshgrid(b, r, indexing="ij")
    log_p = log_pb[:, None] + log_pr[None, :]
    return bb.ravel(), rr.ravel(), (log_p - log_p.max()).ravel()


def fit_calibration(
    y: np.ndarray,
    z: np.ndarray,
    v: np.ndarray,
    phi: np.ndarray,
    prior: CalibrationPrior,
    *,
    center: float,
    z_spread: float,
) -> Posterior:
    """The grid posterior from the measured models' scores ``y`` (k,), prior means ``z``,
    prior variances ``v`` and features ``phi`` (k, q). ``center`` is where ``a`` is the
    level; ``z_spread`` (the spread of z over the models in scope) sets ``a``'s prior."""
    post = _fit_on_grid(y, z, v, phi, prior, center=center, z_spread=z_spread, span=None)
    if y.shape[0] == 0:
        return post
    # Refine: a second grid over where the first one put its mass, so that with many measured
    # models (a sharp posterior) the grid's step does not bias b or r.
    lb, lr = np.log(post.b), np.log(np.maximum(post.r, 1e-12))
    keep = post.weight > 1e-6 * post.weight.max()
    step_b = (lb.max() - lb.min()) / max(N_B - 1, 1)
    step_r = (lr.max() - lr.min()) / max(N_R - 1, 1)
    span = (
        float(lb[keep].min() - step_b),
        float(lb[keep].max() + step_b),
        float(lr[keep].min() - step_r),
        float(lr[keep].max() + step_r),
    )
    return _fit_on_grid(y, z, v, phi, prior, center=center, z_spread=z_spread, span=span)


def _fit_on_grid(
    y: np.ndarray,
    z: np.ndarray,
    v: np.ndarray,
    phi: np.ndarray,
    prior: CalibrationPrior,
    *,
    center: float,
    z_spread: float,
    span: tuple[float, float, float, float] | None,
) -> Posterior:
    k = y.shape[0]
    n_phi = phi.shape[1]
    if prior.residual <= 0.0:
        phi = phi[:, :0]  # the residual model is off: a and b alone
    q = phi.shape[1]
    d = 1 + q
    b, r, log_prior = _grid(prior, y, z, span)
    s = prior.prior_sd
    G = b.size
    # Prior precision and mean of theta = (a, w) in each cell.
    P0 = np.zeros((G, d, d))
    m0 = np.zeros((G, d))
    proper = np.zeros(d, dtype=bool)
    if prior.same_metric:
        offset_sd = prior.offset_sd if prior.offset_sd is not None else max(z_spread, s)
        P0[:, 0, 0] = 1.0 / offset_sd**2
        m0[:, 0] = center
        proper[0] = True
    elif k == 0:
        raise ValueError("another metric needs at least one measured model")
    else:
        m0[:, 0] = float(np.mean(y))  # flat: the mean only keeps the algebra centred
    if q:
        # in units of the measured scores' spread, not of b: a prior that explains nothing
        # (b near 0) must not silence the residual model
        y_scale = float(np.std(y)) if k >= 2 and np.std(y) > 0 else s
        idx = np.arange(1, d)
        P0[:, idx, idx] = 1.0 / (y_scale * prior.residual) ** 2
        proper[1:] = True
    if k == 0:
        cov = np.linalg.inv(P0)
        return Posterior(b, r, _normalize(log_prior), m0, cov, center, s, 0, n_phi)
    X = _design(phi, k)  # (k, d)
    resid = y[None, :] - b[:, None] * (z - center)[None, :]  # (G, k)
    noise = b[:, None] ** 2 * (r[:, None] ** 2 * s**2 + v[None, :])  # (G, k)
    inv_noise = 1.0 / noise
    Pn = P0 + np.einsum("ki,gk,kj->gij", X, inv_noise, X)
    rhs = np.einsum("gij,gj->gi", P0, m0) + np.einsum("ki,gk,gk->gi", X, inv_noise, resid)
    cov = np.linalg.inv(Pn)
    mean = np.einsum("gij,gj->gi", cov, rhs)
    # log marginal likelihood of y in each cell (up to a constant shared by all cells)
    quad = (
        np.einsum("gk,gk->g", resid**2, inv_noise)
        + np.einsum("gi,gij,gj->g", m0, P0, m0)
        - np.einsum("gi,gij,gj->g", mean, Pn, mean)
    )
    _, logdet_pn = np.linalg.slogdet(Pn)
    P0_proper = P0[:, proper][:, :, proper]
    logdet_p0 = np.linalg.slogdet(P0_proper)[1] if proper.any() else np.zeros(G)
    log_lik = -0.5 * (np.log(noise).sum(axis=1) + logdet_pn - logdet_p0 + quad)
    return Posterior(b, r, _normalize(log_prior + log_lik), mean, cov, center, s, k, n_phi)


def _normalize(log_w: np.ndarray) -> np.ndarray:
    w = np.exp(log_w - log_w.max())
    return w / w.sum()


@dataclass(frozen=True)
class StrengthScore:
    """Grouped-CV error of one (b prior width, residual strength) setting."""

    b_log_sd: float
    residual: float
    mse: float
    se: float


def choose_strength(
    y: np.ndarray,
    z: np.ndarray,
    v: np.ndarray,
    phi: np.ndarray,
    groups: Sequence[int],
    prior: CalibrationPrior,
    *,
    z_spread: float,
) -> tuple[CalibrationPrior, list[StrengthScore]]:
    """The prior strengths chosen by leave-one-family-out error over the measured models:
    the default (b's default width, residual model off) unless another setting errs less by
    more than ``SWITCH_SE`` standard errors (the best such one); the default when there are
    too few models or families. Another metric has no b width to choose."""
    groups_arr = np.asarray(groups)
    fams = np.unique(groups_arr)
    q = phi.shape[1] if phi.ndim == 2 else 0
    if y.size < MIN_FOR_CV or fams.size < MIN_FAMILIES_FOR_CV:
        return prior, []
    widths = B_LOG_SDS if prior.same_metric else (prior.b_log_sd,)
    residuals = RESIDUAL_STRENGTHS if q else (0.0,)
    scores: list[StrengthScore] = []
    per_family: dict[tuple[float, float], np.ndarray] = {}
    for width in widths:
        for lam in residuals:
            trial = replace(prior, b_log_sd=width, residual=lam)
            err = np.empty(y.size)
            for f in fams:
                test = groups_arr == f
                train = ~test
                post = fit_calibration(
                    y[train],
                    z[train],
                    v[train],
                    phi[train],
                    trial,
                    center=float(np.mean(z[train])),
                    z_spread=z_spread,
                )
                err[test] = post.mean(z[test], phi[test]) - y[test]
            fam_err = np.array([np.sum(err[groups_arr == f] ** 2) for f in fams])
            per_family[(width, lam)] = fam_err
            scores.append(
                StrengthScore(
                    width,
                    lam,
                    float(np.mean(err**2)),
                    float(fam_err.std(ddof=1) / math.sqrt(fams.size)),
                )
            )
    default = (prior.b_log_sd if prior.b_log_sd in widths else widths[0], 0.0)
    base = per_family[default]
    pick = default
    for score in sorted(scores, key=lambda s: s.mse):
        diff = base - per_family[(score.b_log_sd, score.residual)]
        se = float(diff.std(ddof=1) / math.sqrt(diff.size))
        if float(diff.mean()) > SWITCH_SE * se:
            pick = (score.b_log_sd, score.residual)
            break
    return replace(prior, b_log_sd=pick[0], residual=pick[1]), scores
