"""The semantic index of one probe corpus: chunk embeddings and a FAISS index.

``indexes/semantic-<model>-<encoder>-w<W>/`` (encoder ``transformer`` or ``static``) holds,
with its manifest:

- ``vectors.npy``: float32 unit vectors of the corpus's chunks (documents cut into pieces of
  about ``W`` words, so a preference text is compared with corpus text of its own length
  scale; DESIGN.md, granularity), in (doc_id, position) order;
- ``chunk_doc.npy``: the document (row of the doc_id-sorted corpus) of each chunk;
- ``faiss.index``: ``IndexFlatIP`` (exact) up to ``exact_max_rows`` chunks, ``IndexIVFFlat``
  (inner product, seeded k-means lists) above, written with FAISS's own ``write_index``.

Loading checks the corpus's content hash and every parameter, and refuses a mismatch. The
directory name (:func:`index_path`), the manifest parameters (:func:`index_params`) and the
files (:func:`save_semantic_index`) are defined here once, for the in-memory builder below
and the out-of-core one over a sharded corpus in :mod:`simscope.semantic.sharded`.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import polars as pl

from simscope.errors import SimscopeError
from simscope.records import split_probe_corpus
from simscope.semantic.config import SemanticConfig
from simscope.semantic.distances import GaussianFit
from simscope.semantic.embed import Encoder, get_embedder
from simscope.stats import single_threaded_blas
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

INDEX_KIND = "semantic"
DEFAULT_CHUNK_WORDS = 64
"""The chunk length of an index built without a profile's texts to choose one from."""
FAISS_FILE = "faiss.index"
VECTORS_ARRAY = "vectors"
CHUNK_DOC_ARRAY = "chunk_doc"
_WORD = re.compile(r"\S+")


def choose_chunk_words(texts: Sequence[str]) -> int:
    """Chunk length for corpus documents: the texts' median words, a power of 2 in [16, 128].

    128 words (about 170 word pieces) still fit the default encoder window of 256.
    """
    counts = np.array([len(t.split()) for t in texts])
    counts = counts[counts > 0]
    median = float(np.median(counts)) if counts.size else 64.0
    return int(2 ** np.clip(np.round(np.log2(max(median, 1.0))), 4, 7))


def profile_chunk_words(slice_texts: Mapping[str, Sequence[str]], cfg: SemanticConfig) -> int:
    """The one chunk length a profile cuts every corpus at, for all slices alike.

    ``cfg.chunk_words`` when set; else :func:`choose_chunk_words` over the texts of every
    slice together, so each corpus is embedded once (bench_recovery: one scale recovers the
    mixtures as well as one per slice, see benchmarks/README.md).
    """
    if cfg.chunk_words is not None:
        return cfg.chunk_words
    return choose_chunk_words([t for texts in slice_texts.values() for t in texts])


def index_path(root: Path, model: str, embedder: Encoder, chunk_words: int) -> Path:
    """Where the semantic index of ``model``'s corpus at ``chunk_words`` lives."""
    return Path(root) / f"semantic-{slug(model)}-{embedder.tag}-w{chunk_words}"


def chunk_document(text: str, chunk_words: int) -> list[str]:
    """Cut a document into consecutive pieces of about ``chunk_words`` words.

    A document of up to 1.5 x ``chunk_words`` words stays whole; a longer one is split into
    ``round(words / chunk_words)`` pieces of equal word counts, each the original text from
    its first word to its last (whitespace inside kept).
    """
    spans = [m.span() for m in _WORD.finditer(text)]
    n = len(spans)
    if n <= 1.5 * chunk_words:
        return [text]
    pieces = max(round(n / chunk_words), 1)
    bounds = np.linspace(0, n, pieces + 1).round().astype(int)
    return [text[spans[a][0] : spans[b - 1][1]] for a, b in itertools.pairwise(bounds.tolist())]


@dataclass
class SemanticIndex:
    """One corpus's chunk embeddings and FAISS index."""

    path: Path
    root: Path
    model: str
    vectors: np.ndarray
    chunk_doc: np.ndarray
    faiss_index: Any
    manifest: dict[str, Any]
    _gaussian: GaussianFit | None = field(default=None, repr=False, compare=False)

    @property
    def chunk_words(self) -> int:
        return int(self.manifest["params"]["chunk_words"])

    def gaussian_fit(self) -> GaussianFit:
        """Mean and covariance of the chunk vectors (the Fréchet distance's corpus side),
        computed once per index."""
        if self._gaussian is None:
            with single_threaded_blas():
                self._gaussian = GaussianFit.of(self.vectors)
        return self._gaussian

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (similarities, chunk ids) of each query, best first."""
        k = min(k, self.vectors.shape[0])
        sims, ids = self.faiss_index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return sims, ids


def index_kind_for(n_rows: int, cfg: SemanticConfig) -> str:
    return "flat-ip" if n_rows <= cfg.exact_max_rows else "ivf-ip"


def ivf_nprobe(nlist: int, cfg: SemanticConfig) -> int:
    """Lists probed per query: a fixed share of the lists, at least ``ivf_min_nprobe``."""
    return int(min(nlist, max(cfg.ivf_min_nprobe, np.ceil(nlist * cfg.ivf_probe_fraction))))


def make_faiss_index(vectors: np.ndarray, kind: str, cfg: SemanticConfig) -> Any:
    """A FAISS inner-product index over ``vectors``: exact, or IVF-Flat (seeded lists)."""
    d = vectors.shape[1]
    index: Any
    if kind == "flat-ip":
        index = faiss.IndexFlatIP(d)
    else:
        n = vectors.shape[0]
        nlist = max(1, min(round(cfg.ivf_lists_per_sqrt_rows * np.sqrt(n)), n))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = cfg.ivf_seed
        index.cp.min_points_per_centroid = 1
        # A seeded, evenly spaced training sample keeps the lists reproducible.
        step = max(1, n // (cfg.ivf_train_per_list * nlist))
        index.train(np.ascontiguousarray(vectors[::step], dtype=np.float32))
        index.nprobe = ivf_nprobe(nlist, cfg)
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def knn_radii(vectors: np.ndarray, k: int, index: Any = None, block: int = 4096) -> np.ndarray:
    """Each vector's cosine similarity to its k-th nearest *other* vector (-1 if none)."""
    n = vectors.shape[0]
    if n <= k:
        return np.full(n, -1.0, dtype=np.float32)
    if index is None:
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, block):
        q = np.ascontiguousarray(vectors[start : start + block], dtype=np.float32)
        sims, ids = index.search(q, k + 1)
        own = ids == np.arange(start, start + q.shape[0])[:, None]
        # Drop the query itself (or, for exact duplicates found first, any one hit).
        drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
        keep = np.ones_like(own)
        keep[np.arange(q.shape[0]), drop] = False
        out[start : start + q.shape[0]] = sims[keep].reshape(q.shape[0], k)[:, k - 1]
    return out


def index_params(
    model: str,
    embedding: Mapping[str, Any],
    cfg: SemanticConfig,
    chunk_words: int,
    input_hash: str,
) -> dict[str, Any]:
    """The manifest parameters of a semantic index (what must match for it to be loaded);
    ``embedding`` is the encoder's :attr:`~simscope.semantic.embed.Encoder.identity`."""
    return {
        "model": model,
        "embedding": dict(embedding),
        "chunk_words": chunk_words,
        "exact_max_rows": cfg.exact_max_rows,
        "ivf": [cfg.ivf_lists_per_sqrt_rows, cfg.ivf_train_per_list, cfg.ivf_seed],
        "input_hash": input_hash,
    }


def build_semantic_index(
    corpus: pl.DataFrame,
    index_root: Path,
    cfg: SemanticConfig,
    *,
    chunk_words: int | None = None,
    rebuild: bool = False,
    progress: bool = True,
) -> SemanticIndex:
    """Load ``indexes/semantic-<model>-<encoder>-w<W>`` if it matches, else build it
    (atomically).

    ``chunk_words`` (default ``cfg.chunk_words``, else :data:`DEFAULT_CHUNK_WORDS`; see
    :func:`profile_chunk_words`) sets the corpus chunk length. An existing index built from
    other texts or parameters is refused with a SimscopeError naming what differs, unless
    ``rebuild``.
    """
    model, texts = split_probe_corpus(corpus)
    words = chunk_words or cfg.chunk_words or DEFAULT_CHUNK_WORDS
    root = Path(index_root)
    embedder = get_embedder(cfg, root)
    params = index_params(model, embedder.identity, cfg, words, hash_corpus_texts(texts))
    path = index_path(root, model, embedder, words)
    if path.exists() and not rebuild:
        return load_semantic_index(path, params, cfg)
    chunks: list[str] = []
    chunk_doc: list[int] = []
    for i, text in enumerate(texts):
        pieces = chunk_document(text, words)
        chunks.extend(pieces)
        chunk_doc.extend([i] * len(pieces))
    vectors = embedder.embed(chunks, embedder.cache(root, rebuild=rebuild), progress=progress)
    doc_array = np.asarray(chunk_doc, dtype=np.int64)
    with atomic_dir(path, overwrite=True) as tmp:
        index, manifest = save_semantic_index(tmp, vectors, doc_array, params, cfg, docs=len(texts))
    logger.info(
        "built %s: %d chunks of ~%d words from %d docs (%s)",
        path,
        len(chunks),
        words,
        len(texts),
        manifest["index_type"],
    )
    return SemanticIndex(path, root, model, vectors, doc_array, index, manifest)


def save_semantic_index(
    directory: Path,
    vectors: np.ndarray,
    chunk_doc: np.ndarray,
    params: Mapping[str, Any],
    cfg: SemanticConfig,
    *,
    docs: int,
    extra: Mapping[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Write an index into ``directory`` (its ``.incomplete/``): the vectors, the chunk rows,
    the FAISS index (exact or IVF by size, :func:`index_kind_for`) and the manifest, with
    ``extra`` in it. Returns the FAISS index and the manifest."""
    kind = index_kind_for(len(chunk_doc), cfg)
    index = make_faiss_index(vectors, kind, cfg)
    save_array(directory, VECTORS_ARRAY, vectors)
    save_array(directory, CHUNK_DOC_ARRAY, chunk_doc)
    faiss.write_index(index, str(Path(directory) / FAISS_FILE))
    manifest = write_manifest(
        directory,
        INDEX_KIND,
        params,
        extra={
            "rows": len(chunk_doc),
            "docs": docs,
            "engine": f"faiss {faiss.__version__} {kind}",
            "index_type": kind,
            **(extra or {}),
        },
    )
    return index, manifest


def load_semantic_index(path: Path, params: dict[str, Any], cfg: SemanticConfig) -> SemanticIndex:
    """Load a semantic index, refusing other texts, other parameters or a damaged file."""
    manifest = read_manifest(path, INDEX_KIND, params)
    vectors = load_array(path, VECTORS_ARRAY)
    chunk_doc = load_array(path, CHUNK_DOC_ARRAY)
    index: Any = faiss.read_index(str(Path(path) / FAISS_FILE))
    rows = manifest["rows"]
    if vectors.shape[0] != rows or chunk_doc.size != rows or index.ntotal != rows:
        raise SimscopeError(f"{path}: array shapes disagree with the manifest; rebuild the index")
    if manifest.get("index_type") == "ivf-ip":
        index.nprobe = ivf_nprobe(index.nlist, cfg)
    return SemanticIndex(
        Path(path), Path(path).parent, params["model"], vectors, chunk_doc, index, manifest
    )
