"""Topics of a preference set: k-means on the pairs' prompt embeddings, named by c-TF-IDF.

A pair's topic is decided by its **prompt alone**: the prompt says what the conversation is
about, while chosen and rejected differ in quality, not subject, and adding one of them would
pull the clustering toward the preferred behaviour. The overlap stage gives every slice of a
pair its pair's topic. ``k = clip(round(sqrt(n) / 4), 2, max_topics)``, and at most ``n // 20``
(so a topic has about 20 pairs or more); spherical faiss k-means (inner product on unit
vectors), seeded. Topics are numbered by size (0 = largest) and named by their four most
distinctive words (c-TF-IDF, Grootendorst 2022).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import polars as pl

from simscope.errors import SimscopeError
from simscope.semantic.config import SemanticConfig
from simscope.semantic.embed import get_embedder
from simscope.semantic.index import SemanticIndex

logger = logging.getLogger(__name__)

N_NAME_TERMS = 4
DIALOGUE_ROLES = frozenset({"human", "assistant", "user", "system"})
"""Speaker tags of chat transcripts: formatting, never what a topic is about."""


@dataclass(frozen=True)
class Topics:
    """One topic per preference pair, the topics' names, shares and centroids.

    ``labels``: int64 per pair (0..k-1). ``names``: unique, ``"<k>: term · term · ..."``.
    ``share``: fraction of pairs per topic. ``centroids_``: (k, dim) unit vectors.
    ``embedding``: the encoder identity the centroids live in.
    """

    labels: np.ndarray
    names: list[str]
    share: np.ndarray
    centroids_: np.ndarray
    embedding: dict[str, object]


def choose_n_topics(n_pairs: int, max_topics: int) -> int:
    """Number of topics for ``n_pairs`` pairs (1 when there are too few to split)."""
    k = int(np.clip(round(np.sqrt(n_pairs) / 4), 2, max_topics))
    return max(1, min(k, n_pairs // 20))


def fit_topics(
    pair_texts: list[str],
    cfg: SemanticConfig,
    *,
    seed: int,
    cache_root: Path | None = None,
    progress: bool = True,
    rebuild: bool = False,
) -> Topics:
    """Cluster the preference pairs (pass each pair's prompt) into topics.

    ``cache_root`` (an ``indexes/`` directory) lets the prompts' embeddings come from, and
    go to, the embedding cache shared with the semantic indexes (and holds the encoder
    choice and the static encoder, :func:`simscope.semantic.embed.get_embedder`);
    ``rebuild`` drops damaged cache shards instead of refusing them.
    """
    if not pair_texts:
        raise SimscopeError("topics: the preference set is empty; nothing to cluster")
    embedder = get_embedder(cfg, cache_root)
    cache = embedder.cache(cache_root, rebuild=rebuild) if cache_root is not None else None
    x = embedder.embed(pair_texts, cache, progress=progress)
    x = _unit(x)
    n = x.shape[0]
    k = choose_n_topics(n, cfg.max_topics)
    if k == 1:
        labels = np.zeros(n, dtype=np.int64)
        centroids = _unit(x.mean(axis=0, keepdims=True))
    else:
        km = faiss.Kmeans(
            x.shape[1],
            k,
            niter=50,
            nredo=3,
            seed=seed,
            spherical=True,
            verbose=False,
            max_points_per_centroid=1 << 30,
            min_points_per_centroid=1,
        )
        km.train(np.ascontiguousarray(x))
        centroids = _unit(np.asarray(km.centroids, dtype=np.float32))
        labels = (x @ centroids.T).argmax(axis=1).astype(np.int64)
    # Number topics by size (largest first; ties by centroid order) for stable output.
    counts = np.bincount(labels, minlength=k)
    order = np.lexsort((np.arange(k), -counts))
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    labels = rank[labels]
    centroids = centroids[order]
    counts = counts[order]
    terms = distinctive_terms(pair_texts, labels, k)
    names = [
        f"{t}: {' · '.join(words) if words else '(no words)'}" for t, words in enumerate(terms)
    ]
    logger.info("topics: k=%d for %d pairs", k, n)
    return Topics(labels, names, counts / n, centroids.astype(np.float32), embedder.identity)


def distinctive_terms(texts: list[str], labels: np.ndarray, k: int) -> list[list[str]]:
    """Each topic's most distinctive words by class-based TF-IDF.

    ``c-tf-idf(t, c) = tf(t, c) / |c| * log(1 + A / f(t))``, with ``|c|`` the words in topic
    ``c``, ``A`` the mean words per topic and ``f(t)`` the word's count over all topics.
    English stop words, speaker tags and words under 3 letters are skipped.
    """
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    vectorizer = CountVectorizer(
        stop_words=sorted(ENGLISH_STOP_WORDS | DIALOGUE_ROLES),
        token_pattern=r"(?u)\b[^\W\d_]{3,}\b",
        lowercase=True,
    )
    try:
        counts = vectorizer.fit_transform(texts)
    except ValueError:  # no words at all
        return [[] for _ in range(k)]
    vocab = np.asarray(vectorizer.get_feature_names_out())
    onehot = np.zeros((k, len(texts)))
    onehot[labels, np.arange(len(texts))] = 1.0
    tf = np.asarray((counts.T @ onehot.T).T)  # (k, vocab)
    words_per_topic = tf.sum(axis=1, keepdims=True)
    mean_words = float(words_per_topic.mean())
    freq = tf.sum(axis=0)
    scores = tf / np.maximum(words_per_topic, 1) * np.log1p(mean_words / np.maximum(freq, 1))
    out = []
    for c in range(k):
        order = np.lexsort((vocab, -scores[c]))
        out.append([str(vocab[i]) for i in order[:N_NAME_TERMS] if tf[c, i] > 0])
    return out


def assign_topics(vectors: np.ndarray, topics: Topics) -> np.ndarray:
    """The nearest topic centroid (cosine) of each vector."""
    if vectors.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    return (_unit(vectors) @ topics.centroids_.T).argmax(axis=1).astype(np.int64)


def topic_mass(index: SemanticIndex, topics: Topics) -> pl.DataFrame:
    """The corpus's share of mass on each topic vs the preference data's share.

    Each corpus chunk goes to its nearest topic centroid; a document's mass is split evenly
    over its chunks, so every document weighs the same. Columns: ``topic`` (name),
    ``pref_share``, ``corpus_share``, ``mass_ratio`` (corpus / preference share).
    """
    if index.manifest["params"]["embedding"] != topics.embedding:
        raise SimscopeError(
            f"{index.path}: topics were fitted with embedding {topics.embedding}, the index "
            f"was built with {index.manifest['params']['embedding']}; fit both with one config"
        )
    k = len(topics.names)
    assigned = assign_topics(index.vectors, topics)
    per_doc = np.bincount(index.chunk_doc)
    weight = 1.0 / per_doc[index.chunk_doc]
    mass = np.bincount(assigned, weights=weight, minlength=k)
    corpus_share = mass / max(float(mass.sum()), 1e-12)
    pref_share = np.asarray(topics.share, dtype=np.float64)
    ratio = np.where(pref_share > 0, corpus_share / np.maximum(pref_share, 1e-12), np.nan)
    return pl.DataFrame(
        {
            "topic": topics.names,
            "pref_share": pref_share,
            "corpus_share": corpus_share,
            "mass_ratio": ratio,
        }
    )


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
