"""The lexical indexes of one probe corpus, built once and persisted under ``indexes/``.

Two kinds, each its own directory with a manifest (``simscope.storage``):

- ``lexical-<model>``: the corpus's sets of word n-gram hashes (sorted unique uint64, one
  array per n) and its hashed unigram+bigram histogram. Independent of text length.
- ``minhash-<model>-w<W>``: MinHash signatures of the corpus cut into windows of ``W`` words
  (stride ``W/2``; documents up to ``1.5 W`` words stay whole), so that a preference text is
  compared with corpus text of its own length scale (DESIGN.md, granularity). Each text is
  matched at the scale nearest its own length (:func:`scale_for_lengths`), and only the
  scales a slice needs are built.

Each kind's directory name (:func:`ngram_index_path`, :func:`minhash_index_path`), manifest
parameters (:func:`ngram_index_params`, :func:`minhash_index_params`), array files and loader
are defined here once, for both builders: the in-memory ones below, and the out-of-core ones
over a sharded corpus in :mod:`simscope.lexical.sharded`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm import tqdm

from simscope.checks import check_seed
from simscope.errors import SimscopeError
from simscope.lexical.minhash import ENGINES, NearDuplicateFinder, engine_version, sign
from simscope.normalize import Normalization, TokenBatch, ngram_hashes, tokenize
from simscope.records import split_probe_corpus
from simscope.storage import (
    atomic_dir,
    hash_corpus_texts,
    load_array,
    read_manifest,
    save_array,
    slug,
    write_manifest,
)

logger = logging.getLogger(__name__)

NGRAM_KIND = "lexical-ngrams"
MINHASH_KIND = "lexical-minhash"
FEATURES_ARRAY = "features"
SIGNATURES_ARRAY = "signatures"
CHUNK_DOC_ARRAY = "chunk_doc"


def ngrams_array(n: int) -> str:
    """The array file (``<name>.npy``) of an n-gram index's ``n``-gram hash set."""
    return f"ngrams_{n}"


def ngram_index_path(root: Path, model: str) -> Path:
    """Where the n-gram index of ``model``'s corpus lives: ``lexical-<model>``."""
    return Path(root) / f"lexical-{slug(model)}"


def minhash_index_path(root: Path, model: str, chunk_words: int) -> Path:
    """Where the MinHash index of ``model``'s corpus at ``chunk_words`` lives:
    ``minhash-<model>-w<W>``."""
    return Path(root) / f"minhash-{slug(model)}-w{chunk_words}"


@dataclass(frozen=True)
class LexicalConfig:
    """Parameters of the lexical stage; every one that changes results is in a manifest."""

    normalization: Normalization = field(default_factory=Normalization)
    shingle_words: int = 5
    num_perm: int = 128
    seed: int = 0
    engine: str = "rensa"
    thresholds: tuple[float, ...] = (0.5, 0.8)
    ngram_sizes: tuple[int, ...] = (8, 13)
    contaminated_fraction: float = 0.5
    feature_buckets_log2: int = 16
    batch_docs: int = 2000

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise SimscopeError(
                f"lexical.engine: expected one of {', '.join(ENGINES)}, found {self.engine!r}"
            )
        for t in self.thresholds:
            if not 0.0 < t <= 1.0:
                raise SimscopeError(f"lexical.thresholds: expected values in (0, 1], found {t}")
        if self.shingle_words < 1 or any(n < 1 for n in self.ngram_sizes):
            raise SimscopeError("lexical: shingle_words and ngram_sizes must be >= 1")
        if self.num_perm < 8:
            raise SimscopeError(f"lexical.num_perm: expected >= 8, found {self.num_perm}")
        check_seed(self.seed, "lexical.seed")


def _batches(texts: list[str], size: int, desc: str, progress: bool) -> Iterator[list[str]]:
    with tqdm(total=len(texts), desc=desc, unit="doc", disable=not progress) as bar:
        for i in range(0, len(texts), size):
            batch = texts[i : i + size]
            yield batch
            bar.update(len(batch))


# ---- n-gram sets and hashed features ---------------------------------------------------------


def hashed_features(batch: TokenBatch, buckets_log2: int) -> tuple[np.ndarray, np.ndarray]:
    """Bucket ids of each text's unigram and bigram hashes (DSIR-style hashed features).

    Returns (text_index, bucket) arrays, one entry per feature occurrence.
    """
    shift = np.uint64(64 - buckets_log2)
    bigrams = ngram_hashes(batch, 2)
    # Unigrams and bigrams hash into one space; a salt keeps a bigram off its first word's bucket.
    buckets = np.concatenate(
        (batch.hashes >> shift, (bigrams.hashes ^ np.uint64(0x5BD1E995)) >> shift)
    ).astype(np.int64)
    rows = np.concatenate(
        (
            np.repeat(np.arange(batch.n_texts), batch.lengths()),
            np.repeat(np.arange(batch.n_texts), bigrams.lengths()),
        )
    )
    return rows, buckets


def ngram_batch(texts: list[str], cfg: LexicalConfig) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """One batch's part of an n-gram index: per n, its sorted unique n-gram hashes; and its
    hashed-feature counts (float64, ``2^feature_buckets_log2``). Pure, so any engine can run it;
    the index is the union of the batches' sets and the sum of their counts."""
    batch = tokenize(texts, cfg.normalization)
    ngrams = {n: np.unique(ngram_hashes(batch, n).hashes) for n in cfg.ngram_sizes}
    _, buckets = hashed_features(batch, cfg.feature_buckets_log2)
    features = np.bincount(buckets, minlength=1 << cfg.feature_buckets_log2).astype(np.float64)
    return ngrams, features


@dataclass
class NgramIndex:
    """A corpus's n-gram hash sets and hashed-feature histogram."""

    path: Path
    ngrams: dict[int, np.ndarray]
    features: np.ndarray
    manifest: dict[str, Any]


def ngram_index_params(model: str, cfg: LexicalConfig, input_hash: str) -> dict[str, Any]:
    """The manifest parameters of an n-gram index (what must match for it to be loaded)."""
    return {
        "model": model,
        "normalization": cfg.normalization.as_dict(),
        "ngram_sizes": list(cfg.ngram_sizes),
        "feature_buckets_log2": cfg.feature_buckets_log2,
        "input_hash": input_hash,
    }


def build_ngram_index(
    corpus: pl.DataFrame,
    root: Path,
    cfg: LexicalConfig,
    *,
    rebuild: bool = False,
    progress: bool = True,
) -> NgramIndex:
    """Load ``indexes/lexical-<model>`` if it matches, else build it (atomically)."""
    model, texts = split_probe_corpus(corpus)
    params = ngram_index_params(model, cfg, hash_corpus_texts(texts))
    path = ngram_index_path(root, model)
    if path.exists() and not rebuild:
        return load_ngram_index(path, params)
    parts: dict[int, list[np.ndarray]] = {n: [] for n in cfg.ngram_sizes}
    features = np.zeros(1 << cfg.feature_buckets_log2, dtype=np.float64)
    for batch_texts in _batches(texts, cfg.batch_docs, f"n-grams {model}", progress):
        batch_ngrams, batch_features = ngram_batch(batch_texts, cfg)
        for n in cfg.ngram_sizes:
            parts[n].append(batch_ngrams[n])
        features += batch_features
    ngrams = {
        n: np.unique(np.concatenate(p)) if p else np.empty(0, np.uint64) for n, p in parts.items()
    }
    with atomic_dir(path, overwrite=True) as tmp:
        for n, arr in ngrams.items():
            save_array(tmp, ngrams_array(n), arr)
        save_array(tmp, FEATURES_ARRAY, features)
        manifest = write_manifest(
            tmp,
            NGRAM_KIND,
            params,
            extra={
                "rows": len(texts),
                "ngram_counts": {str(n): int(a.size) for n, a in ngrams.items()},
            },
        )
    logger.info("built %s: %d docs", path, len(texts))
    return NgramIndex(path, ngrams, features, manifest)


def load_ngram_index(
    path: Path, params: dict[str, Any], *, mmap: bool = False, verify_files: bool = True
) -> NgramIndex:
    """Load an n-gram index, refusing other parameters or a damaged file.

    ``mmap``: the arrays stay on disk, paged in as they are read; ``verify_files=False``
    skips the files' checksums (for an index this process has just written).
    """
    manifest = read_manifest(path, NGRAM_KIND, params, verify_files=verify_files)
    ngrams = {n: load_array(path, ngrams_array(n), mmap=mmap) for n in params["ngram_sizes"]}
    return NgramIndex(Path(path), ngrams, load_array(path, FEATURES_ARRAY, mmap=mmap), manifest)


# ---- MinHash over corpus windows -----------------------------------------------------------


SCALES = tuple(2**k for k in range(4, 12))
"""Window lengths (words) of the MinHash indexes: 16 ... 2048."""


def scale_for_lengths(word_counts: np.ndarray) -> np.ndarray:
    """Per text, the window length its near-duplicates are sought at: the power of 2 nearest
    its own word count (in log scale), within :data:`SCALES`."""
    counts = np.maximum(np.asarray(word_counts, dtype=np.float64), 1.0)
    exponent = np.clip(np.round(np.log2(counts)), np.log2(SCALES[0]), np.log2(SCALES[-1]))
    return (2**exponent).astype(np.int64)


def chunk_shingles(
    shingles: TokenBatch, window: int, stride: int, whole_up_to: int
) -> tuple[TokenBatch, np.ndarray]:
    """Cut each text's shingle sequence into windows of ``window`` shingles, ``stride`` apart.

    A text with at most ``whole_up_to`` shingles stays one chunk; the last window of a longer
    text is aligned to its end. Returns the chunks and, per chunk, the index of its text.
    """
    counts = shingles.lengths()
    long = counts > whole_up_to
    n_chunks = np.where(long, -(-(counts - window) // stride) + 1, 1)
    text_of_chunk = np.repeat(np.arange(counts.size), n_chunks)
    k = np.arange(text_of_chunk.size) - np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks)
    long_chunk = long[text_of_chunk]
    local_start = np.where(
        long_chunk, np.minimum(k * stride, np.maximum(counts[text_of_chunk] - window, 0)), 0
    )
    chunk_len = np.where(
        long_chunk, np.minimum(counts[text_of_chunk], window), counts[text_of_chunk]
    )
    absolute = shingles.offsets[:-1][text_of_chunk] + local_start
    total = int(chunk_len.sum())
    within = np.arange(total) - np.repeat(np.cumsum(chunk_len) - chunk_len, chunk_len)
    gather = np.repeat(absolute, chunk_len) + within
    offsets = np.concatenate(([0], np.cumsum(chunk_len))).astype(np.int64)
    return TokenBatch(shingles.hashes[gather], offsets), text_of_chunk


def shingle(texts: list[str], cfg: LexicalConfig) -> TokenBatch:
    """MinHash shingles of ``texts``: word ``shingle_words``-grams (short texts: one shingle)."""
    return ngram_hashes(tokenize(texts, cfg.normalization), cfg.shingle_words, short="whole")


def sign_batch(
    texts: list[str], cfg: LexicalConfig, chunk_words: int
) -> tuple[np.ndarray, np.ndarray]:
    """One batch's part of a MinHash index: the signatures of its texts' windows of
    ``chunk_words`` words, and per window the index of its text within ``texts``. Pure, so
    any engine can run it; the index is the batches' parts concatenated in row order."""
    # Windows of W words; a document of up to 1.5 W words stays whole, so a text compared at
    # its own scale meets an identical corpus document whole (Jaccard 1).
    window = max(chunk_words - cfg.shingle_words + 1, 1)
    stride = max(chunk_words // 2, 1)
    whole_up_to = max(chunk_words * 3 // 2 - cfg.shingle_words + 1, 1)
    chunks, text_of_chunk = chunk_shingles(shingle(texts, cfg), window, stride, whole_up_to)
    signatures = sign(chunks, num_perm=cfg.num_perm, seed=cfg.seed, engine=cfg.engine)
    return signatures, text_of_chunk


@dataclass
class MinHashIndex:
    """MinHash signatures of a corpus's word windows, and the text each window comes from."""

    path: Path
    signatures: np.ndarray
    chunk_doc: np.ndarray
    chunk_words: int
    manifest: dict[str, Any]
    cfg: LexicalConfig

    @cached_property
    def finder(self) -> NearDuplicateFinder:
        return NearDuplicateFinder(self.signatures, self.cfg.thresholds)


def minhash_index_params(
    model: str, cfg: LexicalConfig, chunk_words: int, input_hash: str
) -> dict[str, Any]:
    """The manifest parameters of a MinHash index (what must match for it to be loaded)."""
    return {
        "model": model,
        "engine": cfg.engine,
        "engine_version": engine_version(cfg.engine),
        "num_perm": cfg.num_perm,
        "seed": cfg.seed,
        "shingle_words": cfg.shingle_words,
        "chunk_words": chunk_words,
        "chunk_stride_words": max(chunk_words // 2, 1),
        "whole_doc_up_to_words": chunk_words * 3 // 2,
        "normalization": cfg.normalization.as_dict(),
        "input_hash": input_hash,
    }


def build_minhash_index(
    corpus: pl.DataFrame,
    root: Path,
    cfg: LexicalConfig,
    chunk_words: int,
    *,
    rebuild: bool = False,
    progress: bool = True,
) -> MinHashIndex:
    """Load ``indexes/minhash-<model>-w<W>`` if it matches, else build it (atomically)."""
    model, texts = split_probe_corpus(corpus)
    params = minhash_index_params(model, cfg, chunk_words, hash_corpus_texts(texts))
    path = minhash_index_path(root, model, chunk_words)
    if path.exists() and not rebuild:
        return load_minhash_index(path, params, cfg)
    sigs, docs = [], []
    done = 0
    for batch_texts in _batches(texts, cfg.batch_docs, f"minhash {model}", progress):
        batch_sigs, text_of_chunk = sign_batch(batch_texts, cfg, chunk_words)
        sigs.append(batch_sigs)
        docs.append(text_of_chunk + done)
        done += len(batch_texts)
    signatures = np.concatenate(sigs) if sigs else np.empty((0, cfg.num_perm), np.uint32)
    chunk_doc = np.concatenate(docs) if docs else np.empty(0, np.int64)
    with atomic_dir(path, overwrite=True) as tmp:
        save_array(tmp, SIGNATURES_ARRAY, signatures)
        save_array(tmp, CHUNK_DOC_ARRAY, chunk_doc)
        manifest = write_manifest(tmp, MINHASH_KIND, params, extra={"rows": int(chunk_doc.size)})
    logger.info("built %s: %d windows from %d docs", path, chunk_doc.size, len(texts))
    return MinHashIndex(path, signatures, chunk_doc, chunk_words, manifest, cfg)


def load_minhash_index(
    path: Path,
    params: dict[str, Any],
    cfg: LexicalConfig,
    *,
    mmap: bool = False,
    verify_files: bool = True,
) -> MinHashIndex:
    """Load a MinHash index, refusing another engine, other parameters or a damaged file
    (``mmap``, ``verify_files``: as :func:`load_ngram_index`)."""
    manifest = read_manifest(path, MINHASH_KIND, params, verify_files=verify_files)
    signatures = load_array(path, SIGNATURES_ARRAY, mmap=mmap)
    chunk_doc = load_array(path, CHUNK_DOC_ARRAY, mmap=mmap)
    if (
        signatures.shape != (manifest["rows"], params["num_perm"])
        or chunk_doc.size != manifest["rows"]
    ):
        raise SimscopeError(f"{path}: array shapes disagree with the manifest; rebuild the index")
    return MinHashIndex(Path(path), signatures, chunk_doc, params["chunk_words"], manifest, cfg)
