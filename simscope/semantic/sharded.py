"""The semantic index of a sharded corpus: chunk embeddings computed by an actor pool on
any engine (:mod:`simscope.engine`: local or Ray).

The driver resolves the encoder first (``auto`` measured once per indexes directory, the
static encoder distilled there at first use), so every worker embeds with the same one.
Each worker loads it once (:func:`simscope.semantic.embed.get_embedder`; on Ray an actor,
which may hold a GPU), then per work unit cuts its documents with the semantic stage's
:func:`~simscope.semantic.index.chunk_document` and embeds the chunks through the embedding
cache under the indexes directory (:meth:`~simscope.semantic.embed.Encoder.embed`: a chunk
embedded by an earlier run, another corpus or another worker is not embedded again; each
write is its own atomically renamed shard, so workers never collide), writing vectors and
chunk-to-row parts under the index's ``.incomplete/parts/``. The driver concatenates them
(memory-mapped) and writes the index with the in-memory builder's own directory name,
parameters and files (:func:`~simscope.semantic.index.index_path`,
:func:`~simscope.semantic.index.index_params`,
:func:`~simscope.semantic.index.save_semantic_index`): the FAISS index needs all vectors in
one process (1.5 KiB per chunk at 384 dimensions).

Vectors match :func:`simscope.semantic.index.build_semantic_index` within float tolerance
(encoder batches are composed differently); chunk rows exactly.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simscope.engine.base import Engine, Summary
from simscope.engine.shards import (
    CorpusScan,
    CorpusShards,
    ShardUnit,
    check_corpus,
    first_model,
    part_path,
    plan_units,
    read_unit,
    save_part,
    scan_corpus,
)
from simscope.errors import SimscopeError
from simscope.semantic.choice import resolve
from simscope.semantic.config import SemanticConfig
from simscope.semantic.embed import get_embedder
from simscope.semantic.index import (
    DEFAULT_CHUNK_WORDS,
    SemanticIndex,
    chunk_document,
    index_params,
    index_path,
    load_semantic_index,
    save_semantic_index,
)
from simscope.storage import atomic_dir

_READ_DOCS = 1024  # documents read and embedded at a time within a unit


def build_sharded_semantic_index(
    shards: CorpusShards,
    index_root: Path,
    cfg: SemanticConfig,
    engine: Engine,
    *,
    chunk_words: int | None = None,
    num_gpus: float = 0.0,
    rebuild: bool = False,
    progress: bool = True,
) -> SemanticIndex:
    """Load ``indexes/semantic-<model>-<encoder>-w<W>`` if it matches, else build it from
    the shards.

    ``num_gpus``: GPUs per embedding worker on Ray (the encoder then runs where torch puts
    it). Errors as :func:`simscope.semantic.index.build_semantic_index`, and shards out of
    ``doc_id`` order are refused.
    """
    root = Path(index_root).resolve()
    words = chunk_words or cfg.chunk_words or DEFAULT_CHUNK_WORDS
    model = first_model(shards)
    units = plan_units(shards, engine.unit_docs)
    cfg = resolve(cfg, root)  # workers must not measure (or distill) on their own
    here_embedder = get_embedder(cfg, root)
    path = index_path(root, model, here_embedder, words)
    if path.exists() and not rebuild:
        input_hash, _ = scan_corpus(engine, units, model, progress=progress)
        params = index_params(model, here_embedder.identity, cfg, words, input_hash)
        return load_semantic_index(path, params, cfg)
    with atomic_dir(path, overwrite=True) as tmp:
        parts = tmp / "parts"
        parts.mkdir()
        summaries = engine.map_units_stateful(
            _EmbedTaskFactory(cfg, words, str(parts), str(root), rebuild),
            units,
            desc=f"embed {model}",
            num_gpus=num_gpus,
            progress=progress,
        )
        input_hash, rows = check_corpus(summaries, units, model)
        identities = {repr(sorted(s["identity"].items())) for s in summaries}
        if len(identities) > 1:
            raise SimscopeError(
                f"semantic: the workers embedded with different encoders or numerics "
                f"({len(identities)} identities, e.g. back-end or precision differ between "
                "nodes); set semantic.precision explicitly or use one kind of worker"
            )
        here = here_embedder.identity
        if summaries[0]["identity"] != here:
            # The index would be refused on load: this process embeds the queries.
            raise SimscopeError(
                f"semantic: the workers embedded with {summaries[0]['identity']}, this process "
                f"embeds with {here}; set semantic.precision (and the encoder) explicitly so "
                "both agree"
            )
        vectors, chunk_doc = _concat(parts, summaries)
        shutil.rmtree(parts)
        index, manifest = save_semantic_index(
            tmp,
            vectors,
            chunk_doc,
            index_params(model, here, cfg, words, input_hash),
            cfg,
            docs=rows,
            extra={"execution": {"engine": engine.name, "units": len(units)}},
        )
    return SemanticIndex(path, root, model, vectors, chunk_doc, index, manifest)


@dataclass(frozen=True)
class _EmbedTaskFactory:
    """Built once per worker: loads the encoder, returns the unit function."""

    cfg: SemanticConfig
    chunk_words: int
    parts: str
    root: str
    rebuild: bool = False
    """Drop damaged embedding-cache shards instead of refusing them."""

    def __call__(self) -> _EmbedTask:
        return _EmbedTask(self.cfg, self.chunk_words, self.parts, self.root, self.rebuild)


class _EmbedTask:
    def __init__(
        self, cfg: SemanticConfig, chunk_words: int, parts: str, root: str, rebuild: bool
    ) -> None:
        self.embedder = get_embedder(cfg, Path(root))
        self.cache = self.embedder.cache(Path(root), rebuild=rebuild)
        self.chunk_words = chunk_words
        self.parts = Path(parts)

    def __call__(self, unit: ShardUnit) -> Summary:
        scan = CorpusScan(unit)
        vectors, docs = [], []
        done = 0
        for batch in read_unit(unit, _READ_DOCS):
            scan.update(batch)
            chunks: list[str] = []
            owner: list[int] = []
            for i, text in enumerate(batch.texts):
                pieces = chunk_document(text, self.chunk_words)
                chunks.extend(pieces)
                owner.extend([done + i] * len(pieces))
            vectors.append(self.embedder.embed(chunks, self.cache, progress=False))
            docs.append(np.asarray(owner, dtype=np.int64))
            done += len(batch.texts)
        dim = self.embedder.dim
        vec = np.concatenate(vectors) if vectors else np.empty((0, dim), np.float32)
        doc = np.concatenate(docs) if docs else np.empty(0, np.int64)
        save_part(part_path(self.parts, unit.index, "vec"), vec)
        save_part(part_path(self.parts, unit.index, "doc"), doc)
        return {**scan.summary(), "chunks": int(doc.size), "identity": self.embedder.identity}


def _concat(parts: Path, summaries: list[Summary]) -> tuple[np.ndarray, np.ndarray]:
    counts = [int(s["chunks"]) for s in summaries]
    total = sum(counts)
    dim = None
    vectors: np.ndarray | None = None
    chunk_doc = np.empty(total, dtype=np.int64)
    pos = row0 = 0
    for u, (s, n) in enumerate(zip(summaries, counts, strict=True)):
        vec = np.load(part_path(parts, u, "vec"), mmap_mode="r")
        if vectors is None:
            dim = vec.shape[1]
            vectors = np.empty((total, dim), dtype=np.float32)
        vectors[pos : pos + n] = vec
        chunk_doc[pos : pos + n] = np.load(part_path(parts, u, "doc")) + row0
        pos += n
        row0 += int(s["rows"])
    assert vectors is not None and dim is not None
    return vectors, chunk_doc
