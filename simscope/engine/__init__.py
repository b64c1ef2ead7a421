"""Execution engines: where a stage's work over a large corpus runs (in process, or on Ray).

The stages expose pure batch functions and know nothing of engines; this package cuts a
sharded corpus into work units, runs the stages' batch functions over them on the chosen
engine, and assembles the indexes on disk. Lexical indexes are here; the model stages are in
``simscope.engine.semantic`` (embeddings, FAISS) and ``simscope.engine.probe`` (likelihood
scoring), imported on use since they load torch.
"""

from simscope.engine.base import (
    ENGINE_KINDS,
    Engine,
    EngineConfig,
    LocalEngine,
    make_engine,
)
from simscope.engine.lexical import (
    LexicalIndexes,
    build_lexical_indexes,
    build_minhash_index,
    build_ngram_index,
)
from simscope.engine.shards import CorpusShards, write_corpus_shards
from simscope.storage import hash_corpus_texts

__all__ = [
    "ENGINE_KINDS",
    "CorpusShards",
    "Engine",
    "EngineConfig",
    "LexicalIndexes",
    "LocalEngine",
    "build_lexical_indexes",
    "build_minhash_index",
    "build_ngram_index",
    "hash_corpus_texts",
    "make_engine",
    "write_corpus_shards",
]
