"""Semantic stage: sentence embeddings, their cache, FAISS indexes (built in memory, or out of
core from a sharded corpus on an engine: ``simscope.semantic.sharded``), distribution coverage
metrics and topics of the preference data. Knows nothing of n-grams."""

from simscope.semantic.config import SemanticConfig
from simscope.semantic.embed import Embedder, Encoder, StaticEmbedder, get_embedder
from simscope.semantic.index import (
    SemanticIndex,
    build_semantic_index,
    choose_chunk_words,
    chunk_document,
    profile_chunk_words,
)
from simscope.semantic.scorer import (
    SemanticScorer,
    SemanticTextScores,
    metric_names,
    semantic_estimators,
    semantic_estimators_with_scores,
)
from simscope.semantic.topics import Topics, assign_topics, fit_topics, topic_mass

__all__ = [
    "Embedder",
    "Encoder",
    "SemanticConfig",
    "SemanticIndex",
    "SemanticScorer",
    "SemanticTextScores",
    "StaticEmbedder",
    "Topics",
    "assign_topics",
    "build_semantic_index",
    "choose_chunk_words",
    "chunk_document",
    "fit_topics",
    "get_embedder",
    "metric_names",
    "profile_chunk_words",
    "semantic_estimators",
    "semantic_estimators_with_scores",
    "topic_mass",
]
