"""Semantic metrics of one slice's texts against one corpus's index, as ScopeEstimators.

What depends on the slice alone (its embeddings, k-NN radii and match threshold:
:class:`SliceGeometry`) is computed once per slice and shared by every corpus; what depends
on a corpus alone (its Gaussian fit) once per index; and one exact pass over the
(chunk, text) similarities per corpus and slice feeds every neighbour metric (nearest
neighbour, balls, coverage's subsamples, MAUVE's corpus side).

Per-text values (nearest-neighbour similarity, match, coverage) are bootstrapped as
means; density and the Fréchet distance are statistics of the bootstrap weight vector;
precision (a share of corpus chunks) is bootstrapped over the chunks; MAUVE is averaged
over clustering seeds and its interval is the seeds' spread
(min, max), not a bootstrap. The k-NN radii of the slice's texts and the match threshold are
computed once on the whole slice, so every scope (a topic) is measured with the same balls.
Metric names and meanings are in ``simscope.metrics``.

No recall (Kynkäänniemi et al.'s, with the corpus chunks' own k-NN balls): on known mixtures
it fell as the in-domain share rose (bench_recovery, static encoder: 0.61 at p = 0 to 0.46 at
p = 1 on the chosen slice, with the corpora within 3% of one size), because more in-domain
chunks crowd each other, their balls shrink (the ball of the chunk nearest a text: cosine
0.79 -> 0.86) and hold fewer preference texts. Equal-size subsampling of the corpus, which
fixed coverage, leaves that in place (0.66 -> 0.52). Coverage (balls of the preference
texts) asks the same question without the corpus's density in it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from simscope.metrics import spec
from simscope.records import PROFILE_SCHEMA, Candidate, ProfileContext
from simscope.semantic.config import SemanticConfig
from simscope.semantic.distances import (
    density_statistic,
    frechet_statistic,
    mauve_of_reduced,
    neighbourhood_pass,
    pca_reduce,
)
from simscope.semantic.embed import get_embedder
from simscope.semantic.index import (
    DEFAULT_CHUNK_WORDS,
    SemanticIndex,
    build_semantic_index,
    choose_chunk_words,
    chunk_document,
    knn_radii,
    profile_chunk_words,
)
from simscope.semantic.topics import Topics, topic_mass
from simscope.stats import (
    Estimate,
    ScopeEstimator,
    bootstrap,
    bootstrapped,
    mean_statistic,
    scope_rows,
    single_threaded_blas,
)
from simscope.storage import hash_texts

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


def metric_names(cfg: SemanticConfig) -> list[str]:
    """The semantic metrics :func:`semantic_estimators` returns, in order."""
    k = cfg.k_nn
    return [
        "semantic.nn_cosine",
        "semantic.nn_match_rate",
        f"semantic.precision_k{k}",
        f"semantic.density_k{k}",
        f"semantic.coverage_k{k}",
        "semantic.mauve",
        "semantic.frechet",
    ]


@dataclass(frozen=True)
class SliceGeometry:
    """What a slice's texts give every corpus alike: their unit embeddings, each text's
    k-NN radius among the slice, and the match threshold (median 1-NN cosine of the
    slice's distinct texts)."""

    queries: np.ndarray
    radii: np.ndarray
    match_threshold: float


def embed_texts(
    index: SemanticIndex,
    texts: list[str],
    cfg: SemanticConfig,
    *,
    progress: bool = True,
    rebuild: bool = False,
) -> np.ndarray:
    """Embeddings of ``texts`` with the index's encoder, through the cache beside the index
    (``rebuild``: damaged cache shards are dropped, not refused)."""
    embedder = get_embedder(cfg, index.root)
    built = index.manifest["params"]["embedding"]
    if built != embedder.identity:
        from simscope.errors import SimscopeError

        raise SimscopeError(
            f"{index.path}: built with embedding {built}, requested {embedder.identity}; "
            "use the same semantic config or rebuild the index with --rebuild"
        )
    return embedder.embed(texts, embedder.cache(index.root, rebuild=rebuild), progress=progress)


def slice_geometry(queries: np.ndarray, cfg: SemanticConfig) -> SliceGeometry:
    """The slice's own neighbourhoods (no corpus involved)."""
    # Calibrate on distinct texts: a repeated text would be its own perfect neighbour.
    distinct = np.unique(queries, axis=0)
    own_nn = knn_radii(distinct, 1)
    threshold = float(np.quantile(own_nn, cfg.match_quantile)) if distinct.shape[0] > 1 else np.nan
    return SliceGeometry(queries, knn_radii(queries, cfg.k_nn), threshold)


def coverage_draws(n: int, m: int, *, n_subsamples: int, seed: int) -> list[np.ndarray]:
    """The equal-size corpus subsamples coverage is measured on.

    Coverage compares two samples of one size (Naeem et al. 2020). Against a corpus with
    many more chunks than the slice has texts, almost every ball holds some chunk whatever
    the corpus contains (bench_recovery: 0.970 / 0.975 / 0.970 at 50 / 75 / 100% in-domain
    text), so the corpus side is subsampled to the slice's size, ``n_subsamples`` times.
    """
    if m <= n:
        return [np.arange(m)]
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(m, size=n, replace=False)) for _ in range(n_subsamples)]


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
    geometry: SliceGeometry | None = None,
) -> tuple[dict[str, ScopeEstimator], SemanticTextScores]:
    """:func:`semantic_estimators` and the per-text values behind them.

    ``geometry``: the slice's :func:`slice_geometry` when already computed for ``texts``
    (the scorer shares it across corpora).
    """
    for name in metric_names(cfg):
        spec(name)  # an undocumented metric must not reach a Profile
    boot = cfg.n_boot if n_boot is None else n_boot
    if geometry is None:
        geometry = slice_geometry(embed_texts(index, texts, cfg, progress=progress), cfg)
    queries = geometry.queries
    draws = coverage_draws(
        queries.shape[0], index.vectors.shape[0], n_subsamples=cfg.coverage_subsamples, seed=seed
    )
    passed = neighbourhood_pass(index.vectors, queries, geometry.radii, draws)
    scores = SemanticTextScores(
        nn_cosine=passed.nn_cosine,
        nn_chunk=passed.nn_chunk,
        match_threshold=geometry.match_threshold,
        covered=passed.covered,
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
    fake_fit = index.gaussian_fit()

    def boot_of(stat: Callable[[np.ndarray], float], n: int = boot) -> ScopeEstimator:
        return bootstrapped(stat, n_boot=n, seed=seed)

    raw: dict[str, ScopeEstimator] = {
        "semantic.nn_cosine": boot_of(mean_statistic(scores.nn_cosine)),
        "semantic.nn_match_rate": boot_of(mean_statistic(matched)),
        f"semantic.precision_k{k}": _precision_estimator(passed.in_real, boot, seed),
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
        with single_threaded_blas():
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

    Every corpus is chunked at one length for all slices (:func:`profile_chunk_words` over
    ``slice_texts``, the texts of every slice the profile will score; ``cfg.chunk_words`` or
    :data:`DEFAULT_CHUNK_WORDS` without them), so each corpus is embedded and indexed once.
    ``per_slice_scales`` (for bench_recovery's comparison) chunks it at each slice's own
    length scale instead, as simscope did before. A slice's embeddings and neighbourhoods
    are computed once and shared by every corpus. ``indexes`` and ``scores`` hold, per
    (model, slice), the index scored against and the per-text scores; ``texts`` the texts
    of each slice. As a :class:`simscope.overlap.scorer.Scorer` (``score``) it adds each
    corpus's topic mass (``topics``); ``examples`` and ``embedding_map`` are the report's
    evidence from what it kept.
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
        slice_texts: Mapping[str, Sequence[str]] | None = None,
        per_slice_scales: bool = False,
        topics: Topics | None = None,
    ) -> None:
        self.index_root, self.cfg, self.seed, self.n_boot = Path(index_root), cfg, seed, n_boot
        self.rebuild, self.progress = rebuild, progress
        self.per_slice_scales = per_slice_scales
        self.topics = topics
        self.chunk_words = (
            profile_chunk_words(slice_texts, cfg)
            if slice_texts
            else (cfg.chunk_words or DEFAULT_CHUNK_WORDS)
        )
        self.built: dict[tuple[str, int], SemanticIndex] = {}
        self.indexes: dict[tuple[str, str], SemanticIndex] = {}
        self.scores: dict[tuple[str, str], SemanticTextScores] = {}
        self.texts: dict[str, list[str]] = {}
        self._geometry: dict[tuple[str, str], SliceGeometry] = {}

    def __call__(
        self, model: str, corpus: pl.DataFrame, slice_name: str, texts: list[str]
    ) -> Mapping[str, ScopeEstimator]:
        words = choose_chunk_words(texts) if self.per_slice_scales else self.chunk_words
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
        index = self.built[key]
        logger.info("semantic %s/%s: corpus chunks of ~%d words", model, slice_name, words)
        estimators, scores = semantic_estimators_with_scores(
            index,
            texts,
            self.cfg,
            seed=self.seed,
            n_boot=self.n_boot,
            progress=self.progress,
            geometry=self._slice_geometry(index, slice_name, texts),
        )
        self.indexes[(model, slice_name)] = index
        self.scores[(model, slice_name)] = scores
        self.texts[slice_name] = texts
        return estimators

    def score(self, candidate: Candidate, ctx: ProfileContext) -> pl.DataFrame:
        """The candidate corpus's ``semantic.*`` rows over every slice and scope, and its
        topic mass under the prompt slice when topics were given."""
        if candidate.corpus is None:
            return pl.DataFrame(schema=PROFILE_SCHEMA)
        rows = []
        for s in ctx.slices:
            texts = self.texts.get(s) or ctx.prefs.get_column(s).to_list()
            estimators = self(candidate.name, candidate.corpus, s, texts)
            rows += scope_rows(candidate.name, s, estimators, ctx.scopes)
        return pl.concat(
            [pl.DataFrame(rows, schema=PROFILE_SCHEMA), self._topic_mass_rows(candidate.name)]
        )

    def _topic_mass_rows(self, model: str) -> pl.DataFrame:
        """``semantic.topic_mass_ratio`` of ``model`` per topic, under the prompt slice (topics
        are clusters of prompts); a single number per topic, so no interval."""
        index = self.indexes.get((model, "prompt"))
        if self.topics is None or index is None:
            return pl.DataFrame(schema=PROFILE_SCHEMA)
        return topic_mass(index, self.topics).select(
            pl.lit(model).alias("model"),
            pl.lit("prompt").alias("slice"),
            pl.col("topic"),
            pl.lit("semantic.topic_mass_ratio").alias("metric"),
            pl.col("mass_ratio").alias("value"),
            pl.lit(None, dtype=pl.Float64).alias("ci_low"),
            pl.lit(None, dtype=pl.Float64).alias("ci_high"),
        )

    def examples(self, corpora: Mapping[str, pl.DataFrame]) -> list[dict[str, str]]:
        """Per model: the chosen responses closest to its corpus, beside that corpus chunk."""
        out = []
        for (model, slice_), scores in sorted(self.scores.items()):
            if slice_ != "chosen":
                continue
            index = self.indexes[(model, slice_)]
            docs = corpora[model].sort("doc_id").get_column("text").to_list()
            for i in np.argsort(-scores.nn_cosine, kind="stable")[:2].tolist():
                chunk = int(scores.nn_chunk[i])
                doc = int(index.chunk_doc[chunk])
                first = int(np.searchsorted(index.chunk_doc, doc))
                pieces = chunk_document(docs[doc], index.chunk_words)
                out.append(
                    {
                        "model": model,
                        "slice": slice_,
                        "preference_text": self.texts[slice_][i],
                        "probe_text": pieces[min(chunk - first, len(pieces) - 1)],
                        "score_label": f"cosine {scores.nn_cosine[i]:.3f}",
                    }
                )
        return out

    def embedding_map(self) -> pl.DataFrame | None:
        """A 2-D PCA map of the chosen responses and each model's corpus chunks."""
        keys = sorted(k for k in self.indexes if k[1] == "chosen")
        if not keys:
            return None
        queries = embed_texts(
            self.indexes[keys[0]],
            self.texts["chosen"],
            self.cfg,
            progress=False,
            rebuild=self.rebuild,
        )
        blocks = [(queries, "preference", "preference data")]
        rng = np.random.default_rng(self.seed)
        for model, _ in keys:
            v = self.indexes[(model, "chosen")].vectors
            take = rng.choice(v.shape[0], size=min(v.shape[0], 500), replace=False)
            blocks.append((v[np.sort(take)], "probe", model))
        x = np.concatenate([b[0] for b in blocks]).astype(np.float64)
        x -= x.mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        xy = x @ vt[:2].T
        kinds = np.concatenate([[b[1]] * b[0].shape[0] for b in blocks])
        models = np.concatenate([[b[2]] * b[0].shape[0] for b in blocks])
        return pl.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "kind": kinds, "model": models})

    def _slice_geometry(
        self, index: SemanticIndex, slice_name: str, texts: list[str]
    ) -> SliceGeometry:
        """The slice's geometry, computed on its first corpus and reused for the others
        (keyed by the texts' hash and the encoder, so a changed slice is recomputed)."""
        key = (slice_name, hash_texts([json.dumps(index.manifest["params"]["embedding"]), *texts]))
        if key not in self._geometry:
            queries = embed_texts(
                index, texts, self.cfg, progress=self.progress, rebuild=self.rebuild
            )
            self._geometry[key] = slice_geometry(queries, self.cfg)
        return self._geometry[key]
