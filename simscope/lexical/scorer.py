"""Lexical metrics of one slice's texts against one corpus's indexes, as ScopeEstimators.

Per-text values (containment, near-duplicate indicators) are bootstrapped as means; the
hashed n-gram divergence is a set-level statistic of the same bootstrap weights (the slice's
histogram is the weighted sum of its texts' feature counts). Metric names and meanings are in
``simscope.metrics``.

The slice's texts are scored in blocks of ``LexicalConfig.batch_docs`` (a list or a polars
column, read block by block), so memory grows only by what the bootstrap keeps per text:
a few numbers per metric, and each text's hashed-feature bucket ids (:class:`HashedFeatures`,
2 bytes per word and per bigram). Every value is the same as scoring the slice in one block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from simscope.lexical.index import (
    LexicalConfig,
    MinHashIndex,
    NgramIndex,
    build_minhash_index,
    build_ngram_index,
    hashed_features,
    scale_for_lengths,
)
from simscope.lexical.minhash import sign
from simscope.metrics import spec
from simscope.normalize import TokenBatch, ngram_hashes, tokenize
from simscope.records import PROFILE_SCHEMA, Candidate, ProfileContext
from simscope.stats import ScopeEstimator, Statistic, bootstrapped, mean_statistic, scope_rows

Texts = Sequence[str] | pl.Series
"""A slice's texts: a list, or a polars string column (read a block at a time)."""

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
    return _JSDAgainst(q, smoothing)(p)


class _JSDAgainst:
    """JS divergence of count vectors against one fixed ``q``, with ``q``'s side computed once.

    With ``m = (p + q) / 2``: JSD = (H(m) - H(p)/2 - H(q)/2) in bits, i.e.
    ``0.5 sum p log p + 0.5 sum q log q - sum m log m``: per call, two logarithms and no
    division per bucket, and nothing of ``q`` recomputed (a bootstrap evaluates it hundreds
    of times per slice; 1.6x faster per call over 65,536 buckets than the direct form)."""

    def __init__(self, q: np.ndarray, smoothing: float) -> None:
        self.smoothing = smoothing
        q = q + smoothing
        self.q = q / q.sum()
        self.q_log_q = float(np.sum(self.q * np.log2(self.q)))

    def __call__(self, p: np.ndarray) -> float:
        p = p + self.smoothing
        p = p / p.sum()
        m = 0.5 * (p + self.q)
        value = 0.5 * float(np.sum(p * np.log2(p))) + 0.5 * self.q_log_q
        return max(value - float(np.sum(m * np.log2(m))), 0.0)


def text_blocks(texts: Texts, size: int) -> Iterator[tuple[int, list[str]]]:
    """``(first row, texts)`` of consecutive blocks of at most ``size`` texts."""
    for lo in range(0, len(texts), size):
        if isinstance(texts, pl.Series):
            yield lo, texts.slice(lo, size).to_list()
        else:
            yield lo, list(texts[lo : lo + size])


_CHUNK_VALUES = 1 << 20
"""Bucket ids per stored chunk of :class:`HashedFeatures` (blocks are merged up to this)."""


@dataclass
class HashedFeatures:
    """Each text's hashed unigram and bigram buckets (one entry per occurrence), stored
    compactly (uint16 ids for up to 2^16 buckets) in chunks of consecutive texts.

    :meth:`histogram` is the weighted sum of the texts' feature counts. With integer weights
    (the bootstrap's draw counts, or a 0/1 scope) every sum is an exact integer in float64,
    so the histogram is the same whatever the chunking or summation order.
    """

    buckets_log2: int
    n_texts: int = 0
    chunks: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)
    """``(first text, occurrences per text, bucket ids)`` per chunk."""
    _pending: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    _pending_first: int = 0
    _pending_values: int = 0

    def add(self, batch: TokenBatch) -> None:
        """Append the features of ``batch``'s texts (the next texts in order)."""
        rows, buckets = hashed_features(batch, self.buckets_log2)
        # hashed_features lists every unigram, then every bigram; group them by text.
        order = np.argsort(rows, kind="stable")
        dtype = np.uint16 if self.buckets_log2 <= 16 else np.uint32
        counts = np.bincount(rows, minlength=batch.n_texts).astype(np.int64)
        self._pending.append((counts, buckets[order].astype(dtype)))
        self._pending_values += int(rows.size)
        self.n_texts += batch.n_texts
        if self._pending_values >= _CHUNK_VALUES:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        counts = np.concatenate([c for c, _ in self._pending])
        buckets = np.concatenate([b for _, b in self._pending])
        self.chunks.append((self._pending_first, counts, buckets))
        self._pending_first += counts.size
        self._pending, self._pending_values = [], 0

    def histogram(self, w: np.ndarray) -> np.ndarray:
        """Per bucket, the sum over texts of ``w[text]`` times the text's count in it."""
        self._flush()
        hist = np.zeros(1 << self.buckets_log2)
        for first, counts, buckets in self.chunks:
            weights = np.repeat(w[first : first + counts.size], counts)
            hist += np.bincount(buckets, weights=weights, minlength=hist.size)
        return hist


def jsd_statistic(text_features: HashedFeatures, corpus_counts: np.ndarray) -> Statistic:
    """JS divergence between the weighted slice histogram and the corpus histogram."""

    against = _JSDAgainst(corpus_counts, JSD_SMOOTHING)

    def stat(w: np.ndarray) -> float:
        return against(text_features.histogram(w))

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


def minhash_scales(texts: Texts, cfg: LexicalConfig) -> list[int]:
    """The window scales of the MinHash indexes that :func:`score_texts` asks ``minhash_for``
    for when scoring ``texts`` (to build them ahead, e.g. on another engine)."""
    scales: set[int] = set()
    for _, block in text_blocks(texts, cfg.batch_docs):
        lengths = tokenize(block, cfg.normalization).lengths()
        scales.update(int(s) for s in np.unique(scale_for_lengths(lengths)))
    return sorted(scales)


def score_texts(
    texts: Texts, ngram_index: NgramIndex, minhash_for: MinHashSource, cfg: LexicalConfig
) -> tuple[LexicalTextScores, HashedFeatures]:
    """Per-text containment and near-duplicate matches, and the texts' hashed features,
    scored ``cfg.batch_docs`` texts at a time."""
    n_texts = len(texts)
    contained = {n: np.empty(n_texts) for n in cfg.ngram_sizes}
    best = {t: np.zeros(n_texts) for t in cfg.thresholds}
    where = {t: np.full(n_texts, -1, dtype=np.int64) for t in cfg.thresholds}
    features = HashedFeatures(cfg.feature_buckets_log2)
    for lo, block in text_blocks(texts, cfg.batch_docs):
        batch = tokenize(block, cfg.normalization)
        hi = lo + batch.n_texts
        for n in cfg.ngram_sizes:
            contained[n][lo:hi] = containment(batch, n, ngram_index.ngrams[n])
        shingles = ngram_hashes(batch, cfg.shingle_words, short="whole")
        queries = sign(shingles, num_perm=cfg.num_perm, seed=cfg.seed, engine=cfg.engine)
        scales = scale_for_lengths(batch.lengths())
        for scale in np.unique(scales).tolist():
            rows = np.flatnonzero(scales == scale)
            index = minhash_for(int(scale))
            for t in cfg.thresholds:
                b, w = index.finder.best_matches(queries[rows], t)
                best[t][lo + rows] = b
                where[t][lo + rows] = np.where(w >= 0, index.chunk_doc[np.maximum(w, 0)], -1)
        features.add(batch)
    return LexicalTextScores(contained, best, where), features


def lexical_estimators(
    texts: Texts,
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


class LexicalScorer:
    """The lexical stage's Profile scorer: builds (or loads) a candidate corpus's n-gram and
    MinHash indexes under ``index_root`` and scores every slice against them.

    Evidence kept: ``scores[(model, slice)]`` (per-text containment, best Jaccard and where),
    and per model the paths and manifests of the indexes it used.
    """

    def __init__(
        self, index_root: Path, cfg: LexicalConfig, *, rebuild: bool = False, progress: bool = True
    ) -> None:
        self.index_root, self.cfg, self.rebuild, self.progress = index_root, cfg, rebuild, progress
        self.scores: dict[tuple[str, str], LexicalTextScores] = {}
        self.index_paths: dict[str, list[Path]] = {}
        self.manifests: dict[str, list[dict[str, Any]]] = {}

    def score(self, candidate: Candidate, ctx: ProfileContext) -> pl.DataFrame:
        corpus = candidate.corpus
        if corpus is None:
            return pl.DataFrame(schema=PROFILE_SCHEMA)
        model, cfg = candidate.name, self.cfg
        ngram_index = build_ngram_index(
            corpus, self.index_root, cfg, rebuild=self.rebuild, progress=self.progress
        )
        minhash_indexes: dict[int, MinHashIndex] = {}

        def minhash_for(scale: int) -> MinHashIndex:
            if scale not in minhash_indexes:
                minhash_indexes[scale] = build_minhash_index(
                    corpus,
                    self.index_root,
                    cfg,
                    scale,
                    rebuild=self.rebuild,
                    progress=self.progress,
                )
            return minhash_indexes[scale]

        rows: list[dict[str, Any]] = []
        for s in ctx.slices:
            # read a block at a time from the column: only the bootstrap's arrays are kept
            estimators, scores = lexical_estimators(
                ctx.prefs.get_column(s),
                ngram_index,
                minhash_for,
                cfg,
                n_boot=ctx.n_boot,
                seed=ctx.seed,
            )
            self.scores[(model, s)] = scores
            rows += scope_rows(model, s, estimators, ctx.scopes)
            del estimators  # free this slice's features before the next
        minhash = sorted(minhash_indexes.values(), key=lambda i: i.chunk_words)
        self.index_paths[model] = [ngram_index.path, *(i.path for i in minhash)]
        self.manifests[model] = [ngram_index.manifest, *(i.manifest for i in minhash)]
        return pl.DataFrame(rows, schema=PROFILE_SCHEMA)
