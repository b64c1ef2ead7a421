"""Lexical metrics of one slice's texts against one corpus's indexes, as ScopeEstimators.

Per-text values (containment, near-duplicate indicators) are bootstrapped as means; the
hashed n-gram divergence is a set-level statistic of the same bootstrap weights (the slice's
histogram is the weighted sum of its texts' feature counts). Metric names and meanings are in
``simscope.metrics``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from simscope.lexical.index import (
    LexicalConfig,
    MinHashIndex,
    NgramIndex,
    hashed_features,
    scale_for_lengths,
    shingle,
)
from simscope.lexical.minhash import sign
from simscope.metrics import spec
from simscope.normalize import TokenBatch, ngram_hashes, tokenize
from simscope.stats import ScopeEstimator, Statistic, bootstrapped, mean_statistic

JSD_SMOOTHING = 1e-6


def containment(batch: TokenBatch, n: int, corpus_ngrams: np.ndarray) -> np.ndarray:
    """Per text: the fraction of its word ``n``-grams found in ``corpus_ngrams`` (NaN if none)."""
    grams = ngram_hashes(batch, n)
    if corpus_ngrams.size:
        pos = np.minimum(np.searchsorted(corpus_ngrams, grams.hashes), corpus_ngrams.size - 1)
        found = corpus_ngrams[pos] == grams.hashes
    else:
        found = np.zeros(grams.hashes.size, dtype=bool)
    counts = grams.lengths()
    text_of = np.repeat(np.arange(batch.n_texts), counts)
    hits = np.bincount(text_of, weights=found, minlength=batch.n_texts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def js_divergence(p: np.ndarray, q: np.ndarray, smoothing: float = JSD_SMOOTHING) -> float:
    """Jensen-Shannon divergence (base 2) of two count vectors, after add-``smoothing``."""
    p = p + smoothing
    q = q + smoothing
    p = p / p.sum()
    q = q / q.sum()
    m = 0.5 * (p + q)
    return float(0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m)))


def jsd_statistic(text_features: sp.csr_matrix, corpus_counts: np.ndarray) -> Statistic:
    """JS divergence between the weighted slice histogram and the corpus histogram."""
    transposed = text_features.T.tocsr()

    def stat(w: np.ndarray) -> float:
        return js_divergence(transposed @ w, corpus_counts)

    return stat


@dataclass(frozen=True)
class LexicalTextScores:
    """Per-text lexical values for one slice (aligned with its texts), for evidence views.

    ``best_doc[t][i]`` is the row (in ``doc_id`` order, as ``records.split_probe_corpus``
    gives) of the corpus document holding the window that matched text ``i`` best at
    threshold ``t``, or -1.
    """

    containment: dict[int, np.ndarray]
    best_jaccard: dict[float, np.ndarray]
    best_doc: dict[float, np.ndarray]


MinHashSource = Callable[[int], MinHashIndex]
"""Returns the corpus's MinHash index at a window scale (words), building it if needed."""


def minhash_scales(texts: list[str], cfg: LexicalConfig) -> list[int]:
    """The window scales of the MinHash indexes that :func:`score_texts` asks ``minhash_for``
    for when scoring ``texts`` (to build them ahead, e.g. on another engine)."""
    lengths = tokenize(texts, cfg.normalization).lengths()
    return [int(s) for s in np.unique(scale_for_lengths(lengths))]


def score_texts(
    texts: list[str], ngram_index: NgramIndex, minhash_for: MinHashSource, cfg: LexicalConfig
) -> tuple[LexicalTextScores, sp.csr_matrix]:
    """Per-text containment and near-duplicate matches, and the texts' hashed features."""
    batch = tokenize(texts, cfg.normalization)
    contained = {n: containment(batch, n, ngram_index.ngrams[n]) for n in cfg.ngram_sizes}
    queries = sign(shingle(texts, cfg), num_perm=cfg.num_perm, seed=cfg.seed, engine=cfg.engine)
    scales = scale_for_lengths(batch.lengths())
    best = {t: np.zeros(len(texts)) for t in cfg.thresholds}
    where = {t: np.full(len(texts), -1, dtype=np.int64) for t in cfg.thresholds}
    for scale in np.unique(scales).tolist():
        rows = np.flatnonzero(scales == scale)
        index = minhash_for(int(scale))
        for t in cfg.thresholds:
            b, w = index.finder.best_matches(queries[rows], t)
            best[t][rows] = b
            where[t][rows] = np.where(w >= 0, index.chunk_doc[np.maximum(w, 0)], -1)
    rows_, buckets = hashed_features(batch, cfg.feature_buckets_log2)
    features = sp.csr_matrix(
        (np.ones(rows_.size), (rows_, buckets)),
        shape=(len(texts), 1 << cfg.feature_buckets_log2),
    )
    return LexicalTextScores(contained, best, where), features


def lexical_estimators(
    texts: list[str],
    ngram_index: NgramIndex,
    minhash_for: MinHashSource,
    cfg: LexicalConfig,
    *,
    n_boot: int,
    seed: int,
) -> tuple[dict[str, ScopeEstimator], LexicalTextScores]:
    """One ScopeEstimator per lexical metric for this slice's ``texts``."""
    scores, features = score_texts(texts, ngram_index, minhash_for, cfg)
    statistics: dict[str, Statistic] = {}
    for t in cfg.thresholds:
        statistics[f"lexical.near_dup_rate@{t}"] = mean_statistic(
            (scores.best_jaccard[t] >= t).astype(np.float64)
        )
    for n, frac in scores.containment.items():
        statistics[f"lexical.containment_{n}gram"] = mean_statistic(frac)
        share = np.where(np.isnan(frac), np.nan, (frac > cfg.contaminated_fraction).astype(float))
        statistics[f"lexical.contaminated_share_{n}gram"] = mean_statistic(share)
    statistics["lexical.hashed_ngram_jsd"] = jsd_statistic(features, ngram_index.features)
    for name in statistics:
        spec(name)  # every metric must be documented in the registry
    estimators = {
        name: bootstrapped(
            stat,
            n_boot=n_boot,
            seed=seed,
            # A plug-in divergence is biased upward under resampling; see stats.bootstrap.
            recenter=name == "lexical.hashed_ngram_jsd",
            bounds=(0.0, 1.0),
        )
        for name, stat in statistics.items()
    }
    return estimators, scores
