"""Semantic metrics of one slice's texts against one corpus's index, as ScopeEstimators.

Per-text values (nearest-neighbour similarity, match, recall, coverage) are bootstrapped as
means; density and the Fréchet distance are statistics of the bootstrap weight vector;
precision (a share of corpus chunks) is bootstrapped over the chunks; MAUVE is averaged
over clustering seeds and its interval is the seeds' spread
(min, max), not a bootstrap. The k-NN radii of the slice's texts and the match threshold are
computed once on the whole slice, so every scope (a topic) is measured with the same balls.
Metric names and meanings are in ``simscope.metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from simscope.metrics import spec
from simscope.semantic.config import SemanticConfig
from simscope.semantic.distances import (
    RADIUS_TOLERANCE,
    GaussianFit,
    density_statistic,
    frechet_statistic,
    mauve_of_reduced,
    neighbourhood_pass,
    pca_reduce,
)
from simscope.semantic.embed import get_embedder
from simscope.semantic.index import (
    SemanticIndex,
    build_semantic_index,
    choose_chunk_words,
    knn_radii,
)
from simscope.stats import Estimate, ScopeEstimator, bootstrap, bootstrapped, mean_statistic

logger = logging.getLogger(__name__)

MAUVE_MIN_TEXTS = 10
"""MAUVE is undefined (NaN) for a scope with fewer texts or corpus chunks than this."""


@dataclass(frozen=True)
class SemanticTextScores:
    """Per-text semantic values of one slice (aligned with its texts), for evidence views."""

    nn_cosine: np.ndarray
    nn_chunk: np.ndarray
    match_threshold: float
    covered: np.ndarray  # share of equal-size corpus subsamples covering the text
    recalled: np.ndarray


def metric_names(cfg: SemanticConfig) -> list[str]:
    """The semantic metrics :func:`semantic_estimators` returns, in order."""
    k = cfg.k_nn
    return [
        "semantic.nn_cosine",
        "semantic.nn_match_rate",
        f"semantic.precision_k{k}",
        f"semantic.recall_k{k}",
        f"semantic.density_k{k}",
        f"semantic.coverage_k{k}",
        "semantic.mauve",
        "semantic.frechet",
    ]


def embed_texts(
    index: SemanticIndex, texts: list[str], cfg: SemanticConfig, *, progress: bool = True
) -> np.ndarray:
    """Embeddings of ``texts`` with the index's encoder, through the cache beside the index."""
    embedder = get_embedder(cfg)
    built = index.manifest["params"]["embedding"]
    if built != embedder.identity:
        from simscope.errors import SimscopeError

        raise SimscopeError(
            f"{index.path}: built with embedding {built}, requested {embedder.identity}; "
            "use the same semantic config or rebuild the index with --rebuild"
        )
    return embedder.embed(texts, embedder.cache(index.root), progress=progress)


def subsampled_coverage(
    queries: np.ndarray, corpus: np.ndarray, radii: np.ndarray, *, n_subsamples: int, seed: int
) -> np.ndarray:
    """Per text: the share of equal-size corpus subsamples with a chunk inside its k-NN ball.

    Coverage compares two samples of one size (Naeem et al. 2020). Against a corpus with
    many more chunks than the slice has texts, almost every ball holds some chunk whatever
    the corpus contains (bench_recovery: 0.970 / 0.975 / 0.970 at 50 / 75 / 100% in-domain
    text), so the corpus side is subsampled to the slice's size, ``n_subsamples`` times.
    """
    n, m = queries.shape[0], corpus.shape[0]
    if m <= n:
        draws = [np.arange(m)]
    else:
        rng = np.random.default_rng(seed)
        draws = [np.sort(rng.choice(m, size=n, replace=False)) for _ in range(n_subsamples)]
    hits = np.zeros(n)
    for idx in draws:
        sample = np.ascontiguousarray(corpus[idx], dtype=np.float32)
        for lo in range(0, n, 2048):
            best = (queries[lo : lo + 2048] @ sample.T).max(axis=1)
            hits[lo : lo + 2048] += best >= radii[lo : lo + 2048] - RADIUS_TOLERANCE
    return hits / len(draws)


def score_texts(
    index: SemanticIndex, queries: np.ndarray, cfg: SemanticConfig, *, seed: int = 0
) -> tuple[SemanticTextScores, np.ndarray]:
    """Per-text nearest-neighbour values and the slice's own k-NN radii."""
    sims, ids = index.search(queries, 1)
    nn_cosine = sims[:, 0].astype(np.float64)
    # Calibrate on distinct texts: a repeated text would be its own perfect neighbour.
    distinct = np.unique(queries, axis=0)
    own_nn = knn_radii(distinct, 1)
    threshold = float(np.quantile(own_nn, cfg.match_quantile)) if distinct.shape[0] > 1 else np.nan
    radii = knn_radii(queries, cfg.k_nn)
    scores = SemanticTextScores(
        nn_cosine=nn_cosine,
        nn_chunk=ids[:, 0],
        match_threshold=threshold,
        covered=subsampled_coverage(
            queries, index.vectors, radii, n_subsamples=cfg.coverage_subsamples, seed=seed
        ),
        recalled=np.zeros(queries.shape[0], dtype=bool),
    )
    return scores, radii


def semantic_estimators(
    index: SemanticIndex,
    texts: list[str],
    cfg: SemanticConfig,
    *,
    seed: int,
    n_boot: int | None = None,
    progress: bool = True,
) -> dict[str, ScopeEstimator]:
    """One ScopeEstimator per semantic metric for one slice's ``texts`` against ``index``.

    ``n_boot`` overrides ``cfg.n_boot`` (the Fréchet distance uses at most
    ``cfg.frechet_n_boot`` replicates: each costs an eigen-decomposition).
    """
    estimators, _ = semantic_estimators_with_scores(
        index, texts, cfg, seed=seed, n_boot=n_boot, progress=progress
    )
    return estimators


def semantic_estimators_with_scores(
    index: SemanticIndex,
    texts: list[str],
    cfg: SemanticConfig,
    *,
    seed: int,
    n_boot: int | None = None,
    progress: bool = True,
) -> tuple[dict[str, ScopeEstimator], SemanticTextScores]:
    """:func:`semantic_estimators` and the per-text values behind them."""
    for name in metric_names(cfg):
        spec(name)  # an undocumented metric must not reach a Profile
    boot = cfg.n_boot if n_boot is None else n_boot
    queries = embed_texts(index, texts, cfg, progress=progress)
    scores, real_radii = score_texts(index, queries, cfg, seed=seed)
    passed = neighbourhood_pass(index.vectors, queries, real_radii, index.radii)
    scores = SemanticTextScores(
        scores.nn_cosine, scores.nn_chunk, scores.match_threshold, scores.covered, passed.recalled
    )
    matched = (
        (scores.nn_cosine >= scores.match_threshold).astype(np.float64)
        if np.isfinite(scores.match_threshold)
        else np.full(len(texts), np.nan)
    )
    logger.info(
        "semantic %s: match threshold %.3f (quantile %.2f of the slice's own 1-NN cosines)",
        index.model,
        scores.match_threshold,
        cfg.match_quantile,
    )
    k = cfg.k_nn
    with threadpool_limits(limits=1, user_api="blas"):
        fake_fit = GaussianFit.of(index.vectors)

    def boot_of(stat: Callable[[np.ndarray], float], n: int = boot) -> ScopeEstimator:
        return bootstrapped(stat, n_boot=n, seed=seed)

    raw: dict[str, ScopeEstimator] = {
        "semantic.nn_cosine": boot_of(mean_statistic(scores.nn_cosine)),
        "semantic.nn_match_rate": boot_of(mean_statistic(matched)),
        f"semantic.precision_k{k}": _precision_estimator(passed.in_real, boot, seed),
        f"semantic.recall_k{k}": boot_of(mean_statistic(scores.recalled.astype(np.float64))),
        f"semantic.density_k{k}": boot_of(density_statistic(passed.in_real, k)),
        f"semantic.coverage_k{k}": boot_of(mean_statistic(scores.covered.astype(np.float64))),
        "semantic.mauve": _mauve_estimator(index, queries, passed.nearest_real, cfg, seed),
        "semantic.frechet": _recentred(
            boot_of(frechet_statistic(queries, fake_fit), min(boot, cfg.frechet_n_boot))
        ),
    }
    estimators = {name: _single_threaded_blas(fn) for name, fn in raw.items()}
    return estimators, scores


def _single_threaded_blas(estimator: ScopeEstimator) -> ScopeEstimator:
    """Run ``estimator`` with one BLAS thread.

    The statistics do many small (384 x 384) eigenproblems; with a multi-threaded BLAS on a
    busy 2-core machine each one measured ~20x slower than on one thread (spinning threads).
    """

    def estimate(scope: np.ndarray) -> Estimate:
        with threadpool_limits(limits=1, user_api="blas"):
            return estimator(scope)

    return estimate


def _recentred(estimator: ScopeEstimator) -> ScopeEstimator:
    """The estimate +- half the width of the percentile bootstrap interval, floored at 0.

    For the Fréchet distance: a resample repeats texts, which shrinks the sample covariance's
    rank and shifts every replicate up (by more than their spread when texts are fewer than
    dimensions), so the replicates' spread is kept and their location dropped.
    """

    def estimate(scope: np.ndarray) -> Estimate:
        est = estimator(scope)
        if est.ci_low is None or est.ci_high is None:
            return est
        half = (est.ci_high - est.ci_low) / 2
        return Estimate(est.value, max(est.value - half, 0.0), est.value + half)

    return estimate


def _precision_estimator(in_real: sp.csr_matrix, n_boot: int, seed: int) -> ScopeEstimator:
    """Precision of a scope, with its interval from resampling the corpus chunks.

    Resampling the slice's texts would bias precision down (a bootstrap sample holds ~63% of
    the distinct texts, so the union of their balls shrinks); the scope's manifold is held
    fixed instead and the uncertainty is that of a share of corpus chunks.
    """

    def estimate(scope: np.ndarray) -> Estimate:
        inside = np.asarray(in_real @ np.asarray(scope, dtype=np.float64)) > 0
        return bootstrap(
            mean_statistic(inside.astype(np.float64)), inside.size, n_boot=n_boot, seed=seed
        )

    return estimate


def _mauve_estimator(
    index: SemanticIndex,
    queries: np.ndarray,
    nearest_real: np.ndarray,
    cfg: SemanticConfig,
    seed: int,
) -> ScopeEstimator:
    """MAUVE of a scope's texts vs the corpus chunks nearest to them, over seeds.

    The corpus side of a scope is the chunks whose most similar slice text lies in the scope
    (all chunks for the whole slice). Either side is subsampled to ``mauve_max_corpus``.
    """
    cache: dict[bytes, Estimate] = {}

    def estimate(scope: np.ndarray) -> Estimate:
        scope = np.asarray(scope, dtype=bool)
        key = np.packbits(scope).tobytes()
        if key in cache:
            return cache[key]
        p_idx = np.flatnonzero(scope)
        q_idx = np.flatnonzero(scope[nearest_real]) if scope.size else np.empty(0, np.int64)
        if p_idx.size < MAUVE_MIN_TEXTS or q_idx.size < MAUVE_MIN_TEXTS:
            result = Estimate(float("nan"), None, None)
        else:
            values = []
            whole = p_idx.size <= cfg.mauve_max_corpus and q_idx.size <= cfg.mauve_max_corpus
            if whole:  # no subsampling: one PCA serves every seed
                reduced = pca_reduce(
                    np.concatenate([queries[p_idx], index.vectors[q_idx]]),
                    cfg.mauve_explained_variance,
                )
            for s in cfg.mauve_seeds:
                if not whole:
                    rng = np.random.default_rng([seed, s])
                    p = _subsample(queries, p_idx, cfg.mauve_max_corpus, rng)
                    q = _subsample(index.vectors, q_idx, cfg.mauve_max_corpus, rng)
                    reduced = pca_reduce(np.concatenate([p, q]), cfg.mauve_explained_variance)
                n_p = min(p_idx.size, cfg.mauve_max_corpus)
                values.append(
                    mauve_of_reduced(reduced, n_p, seed=seed * 1000 + s, scaling=cfg.mauve_scaling)
                )
            arr = np.asarray(values)
            result = Estimate(float(arr.mean()), float(arr.min()), float(arr.max()))
        cache[key] = result
        return result

    return estimate


def _subsample(x: np.ndarray, idx: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    if idx.size > cap:
        idx = np.sort(rng.choice(idx, size=cap, replace=False))
    return x[idx]


class SemanticScorer:
    """The semantic stage's scorer for the overlap stage: ``(model, corpus, slice, texts) ->
    estimators``, keeping what it computed as evidence for the report.

    Per slice, the corpus is chunked at the slice's length scale (:func:`choose_chunk_words`),
    so a model gets one index per distinct chunk length; each is built or loaded once.
    ``indexes`` and ``scores`` hold, per (model, slice), the index scored against and the
    per-text scores; ``texts`` the texts of each slice.
    """

    def __init__(
        self,
        index_root: Path,
        cfg: SemanticConfig,
        *,
        seed: int,
        n_boot: int | None = None,
        rebuild: bool = False,
        progress: bool = True,
    ) -> None:
        self.index_root, self.cfg, self.seed, self.n_boot = Path(index_root), cfg, seed, n_boot
        self.rebuild, self.progress = rebuild, progress
        self.built: dict[tuple[str, int], SemanticIndex] = {}
        self.indexes: dict[tuple[str, str], SemanticIndex] = {}
        self.scores: dict[tuple[str, str], SemanticTextScores] = {}
        self.texts: dict[str, list[str]] = {}

    def __call__(
        self, model: str, corpus: pl.DataFrame, slice_name: str, texts: list[str]
    ) -> Mapping[str, ScopeEstimator]:
        words = choose_chunk_words(texts)
        key = (model, words)
        if key not in self.built:
            self.built[key] = build_semantic_index(
                corpus,
                self.index_root,
                self.cfg,
                chunk_words=words,
                rebuild=self.rebuild,
                progress=self.progress,
            )
        logger.info("semantic %s/%s: corpus chunks of ~%d words", model, slice_name, words)
        estimators, scores = semantic_estimators_with_scores(
            self.built[key],
            texts,
            self.cfg,
            seed=self.seed,
            n_boot=self.n_boot,
            progress=self.progress,
        )
        self.indexes[(model, slice_name)] = self.built[key]
        self.scores[(model, slice_name)] = scores
        self.texts[slice_name] = texts
        return estimators
