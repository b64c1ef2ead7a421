"""Execution engines: where the work over a large corpus runs (in process, or on Ray).

This package knows no stage. It owns the executors (:class:`LocalEngine`, and
``simscope.engine.ray.RayEngine``, imported on use), a sharded corpus on disk and its work
units (``simscope.engine.shards``): how the corpus is cut, read, checked and hashed, and
where a unit writes its parts. Each stage owns the out-of-core builder of its own index and
runs it on an engine: ``simscope.lexical.sharded`` (n-gram and MinHash indexes),
``simscope.semantic.sharded`` (embeddings, FAISS) and ``simscope.probe.sharded`` (likelihood
scoring).
"""

from simscope.engine.base import (
    ENGINE_KINDS,
    Engine,
    EngineConfig,
    LocalEngine,
    make_engine,
)
from simscope.engine.shards import CorpusShards, write_corpus_shards

__all__ = [
    "ENGINE_KINDS",
    "CorpusShards",
    "Engine",
    "EngineConfig",
    "LocalEngine",
    "make_engine",
    "write_corpus_shards",
]
