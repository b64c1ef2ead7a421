"""Distribution comparisons between two sets of unit embeddings, as plain array functions.

Real = the preference texts of a slice, fake = the corpus chunks (the names of Kynkäänniemi
et al. 2019 and Naeem et al. 2020). Nothing here knows about files, models or scopes; the
weight-vector statistics (``w[i]`` = how many times real text ``i`` is drawn) plug into
``simscope.stats``.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import scipy.sparse as sp

from simscope.stats import Statistic

RADIUS_TOLERANCE = 1e-5
"""Cosine slack on "inside a k-NN ball": FAISS and numpy round the same product differently,
and a neighbour exactly on the ball's edge must count as inside."""


@dataclass(frozen=True)
class NeighbourhoodPass:
    """What one blockwise pass over all (corpus chunk, slice text) similarities leaves behind.

    Every semantic metric that looks at neighbours reads this one pass (the similarities are
    computed once per corpus and slice, exactly, whatever FAISS index the corpus has):

    ``in_real``: sparse (m, n) bool, corpus chunk ``j`` inside real text ``i``'s k-NN ball.
    ``nearest_real``: per corpus chunk, the real text it is most similar to.
    ``nn_cosine`` / ``nn_chunk``: per real text, the most similar chunk and its cosine.
    ``covered``: per real text, the share of the ``draws`` (subsets of the chunks) holding a
    chunk inside its k-NN ball (NaN when no draws were given).
    """

    in_real: sp.csr_matrix
    nearest_real: np.ndarray
    nn_cosine: np.ndarray
    nn_chunk: np.ndarray
    covered: np.ndarray


def neighbourhood_pass(
    fake: np.ndarray,
    real: np.ndarray,
    real_radii: np.ndarray,
    draws: list[np.ndarray] | None = None,
    block: int = 2048,
) -> NeighbourhoodPass:
    """Exact blockwise pass over all (fake, real) cosine similarities.

    Radii are cosine similarities to the k-th neighbour: "inside the ball" is
    ``sim >= radius``, the same as ``distance <= radius`` for unit vectors. ``draws``: index
    arrays into ``fake`` (the equal-size subsamples of coverage).
    """
    m, n = fake.shape[0], real.shape[0]
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    nearest = np.zeros(m, dtype=np.int64)
    nn_cos = np.full(n, -np.inf, dtype=np.float32)
    nn_chunk = np.full(n, -1, dtype=np.int64)
    draws = draws or []
    in_draw = np.zeros((len(draws), m), dtype=bool)
    for d, idx in enumerate(draws):
        in_draw[d, idx] = True
    draw_best = np.full((len(draws), n), -np.inf, dtype=np.float32)
    real_t = np.ascontiguousarray(real.T, dtype=np.float32)
    for start in range(0, m, block):
        sims = np.ascontiguousarray(fake[start : start + block], dtype=np.float32) @ real_t
        stop = start + sims.shape[0]
        r, c = np.nonzero(sims >= real_radii[None, :] - RADIUS_TOLERANCE)
        rows.append(r + start)
        cols.append(c)
        if n:
            nearest[start:stop] = sims.argmax(axis=1)
            best = sims.argmax(axis=0)
            best_sim = sims[best, np.arange(n)]
            better = best_sim > nn_cos  # ties keep the first chunk, as a FAISS search does
            nn_cos[better] = best_sim[better]
            nn_chunk[better] = best[better] + start
            for d in range(len(draws)):
                picked = in_draw[d, start:stop]
                if picked.any():
                    np.maximum(draw_best[d], sims[picked].max(axis=0), out=draw_best[d])
    r_all = np.concatenate(rows) if rows else np.empty(0, np.int64)
    c_all = np.concatenate(cols) if cols else np.empty(0, np.int64)
    in_real = sp.csr_matrix((np.ones(r_all.size, dtype=np.float64), (r_all, c_all)), shape=(m, n))
    if draws:
        covered = (draw_best >= real_radii[None, :] - RADIUS_TOLERANCE).mean(axis=0)
    else:
        covered = np.full(n, np.nan)
    return NeighbourhoodPass(in_real, nearest, nn_cos.astype(np.float64), nn_chunk, covered)


def density_statistic(in_real: sp.csr_matrix, k: int) -> Statistic:
    """Naeem et al.'s density with real texts weighted by ``w``, rescaled to ``n`` texts.

    On the whole slice (``w = 1``) this is exactly ``1/(k m) sum_j sum_i 1[j in ball i]``;
    on a scope it is that sum over the scope's balls times ``n / n_scope``, i.e. the
    corpus's density on the scope relative to the slice's own share of texts there.
    """
    m, n = in_real.shape

    def stat(w: np.ndarray) -> float:
        total = float(w.sum())
        if m == 0 or total <= 0:
            return float("nan")
        return float((in_real @ w).sum()) * (n / total) / (k * m)

    return stat


# ---- Fréchet distance --------------------------------------------------------------------


@dataclass(frozen=True)
class GaussianFit:
    """Mean, covariance and the symmetric square root of the covariance of a sample."""

    mean: np.ndarray
    cov: np.ndarray
    cov_sqrt: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> GaussianFit:
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=0)
        centred = x64 - mean
        cov = centred.T @ centred / max(x64.shape[0], 1)
        vals, vecs = np.linalg.eigh(cov)
        sqrt = (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T
        return cls(mean, cov, sqrt)


def frechet_statistic(real: np.ndarray, fake: GaussianFit) -> Statistic:
    """Fréchet distance between Gaussian fits of the weighted real texts and the corpus.

    ``|mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_f^1/2 S_r S_f^1/2)^1/2)``, with
    maximum-likelihood (weighted) covariances.
    """
    x = real.astype(np.float64)
    trace_fake = float(np.trace(fake.cov))
    # (x - mean) S_f^1/2 = x S_f^1/2 - mean S_f^1/2: the product with S_f^1/2 is taken once
    # here, not once per bootstrap replicate.
    xs = x @ fake.cov_sqrt

    def stat(w: np.ndarray) -> float:
        total = float(w.sum())
        if total <= 0:
            return float("nan")
        drawn = np.flatnonzero(w > 0)
        share = w[drawn] / total
        mean = share @ x[drawn]
        # S_r = A0^T A0 with A0 = sqrt(w/total) (x - mean), so tr((S_f^1/2 S_r S_f^1/2)^1/2) is
        # the sum of singular values of A = A0 S_f^1/2: an eigenproblem of the smaller Gram.
        centred = x[drawn] - mean
        a = np.sqrt(share)[:, None] * (xs[drawn] - share @ xs[drawn])
        gram = a @ a.T if a.shape[0] < a.shape[1] else a.T @ a
        eig = np.linalg.eigvalsh(gram)
        cross = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
        diff = mean - fake.mean
        trace_real = float(share @ np.einsum("ij,ij->i", centred, centred))
        # Rounding can take a zero distance a hair below 0.
        return max(float(diff @ diff + trace_real + trace_fake - 2.0 * cross), 0.0)

    return stat


# ---- MAUVE -------------------------------------------------------------------------------


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    if np.any((p > 0) & (q == 0)):
        return float("inf")
    nz = (p > 0) & (q > 0)
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


def mauve_from_histograms(
    p: np.ndarray, q: np.ndarray, scaling: float = 5.0, n_mixtures: int = 25
) -> float:
    """MAUVE of two histograms over the same clusters (Pillutla et al. 2021, as mauve-text).

    The divergence curve ``(exp(-c KL(q||r)), exp(-c KL(p||r)))`` for ``r = l p + (1-l) q``
    over ``n_mixtures`` values of ``l``, closed by its two extreme points; MAUVE is the area
    under it.
    """
    p = p / p.sum()
    q = q / q.sum()
    curve = [(0.0, np.inf)]
    for lam in np.linspace(1e-6, 1 - 1e-6, n_mixtures):
        r = lam * p + (1 - lam) * q
        curve.append((_kl(q, r), _kl(p, r)))
    curve.append((np.inf, 0.0))
    pts = np.exp(-scaling * np.asarray(curve))
    x, y = pts[:, 0], pts[:, 1]
    # Along increasing mixture weight x falls from 1 to 0 and y rises from 0 to 1: take the
    # trapezoids in that order (sorting would mis-order ties such as the points of p == q).
    return float(np.sum(-np.diff(x) * (y[1:] + y[:-1]) / 2))


def pca_reduce(x: np.ndarray, explained_variance: float) -> np.ndarray:
    """Centre ``x`` and project it on the principal axes keeping ``explained_variance``."""
    x = np.asarray(x, dtype=np.float32)
    x = x - x.mean(axis=0)
    x64 = x.astype(np.float64)
    vals, vecs = np.linalg.eigh(x64.T @ x64)  # PCA from the covariance: d x d, not n x d
    vals, vecs = np.clip(vals[::-1], 0.0, None), vecs[:, ::-1]
    share = np.cumsum(vals) / max(float(vals.sum()), 1e-30)
    dims = min(int(np.searchsorted(share, explained_variance) + 1), vals.size)
    return np.ascontiguousarray(x @ vecs[:, :dims].astype(np.float32))


def mauve_of_reduced(
    reduced: np.ndarray, n_p: int, *, seed: int, scaling: float = 5.0, n_iter: int = 25
) -> float:
    """MAUVE of the first ``n_p`` rows of ``reduced`` (p) vs the rest (q), one k-means run."""
    n_q = reduced.shape[0] - n_p
    k = min(max(2, round(min(n_p, n_q) / 10)), reduced.shape[0])
    km = faiss.Kmeans(
        reduced.shape[1],
        k,
        niter=n_iter,
        seed=int(seed) + 2,
        verbose=False,
        max_points_per_centroid=1 << 30,
        min_points_per_centroid=1,
    )
    km.train(reduced)
    _, labels = km.index.search(reduced, 1)
    labels = labels.ravel()
    hist_p = np.bincount(labels[:n_p], minlength=k).astype(np.float64)
    hist_q = np.bincount(labels[n_p:], minlength=k).astype(np.float64)
    return mauve_from_histograms(hist_p, hist_q, scaling)


def mauve(
    p_features: np.ndarray,
    q_features: np.ndarray,
    *,
    seed: int,
    scaling: float = 5.0,
    explained_variance: float = 0.9,
    n_iter: int = 25,
) -> float:
    """MAUVE of two embedding samples: PCA, k-means on both together, then the histograms.

    As in mauve-text 0.4: PCA keeping ``explained_variance`` of the variance, k-means with
    ``k = max(2, round(min(len p, len q) / 10))`` clusters seeded by ``seed``. Unlike it, one
    k-means run of ``n_iter`` iterations (mauve-text: 5 restarts of 500), which the average
    over seeds replaces.
    """
    reduced = pca_reduce(np.concatenate([p_features, q_features]), explained_variance)
    return mauve_of_reduced(reduced, len(p_features), seed=seed, scaling=scaling, n_iter=n_iter)
