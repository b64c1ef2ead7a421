"""Probe stage: turn a candidate model into a ProbeCorpus (sampling it, or importing a corpus
made elsewhere) and score how likely the model finds the team's own texts.

Modules: ``model`` (offline loading, device and dtype), ``generate`` (resumable sampling),
``importer`` (corpora made elsewhere), ``corpus`` (the ProbeCorpus parquet), ``likelihood``
(first-K log-probability, bits per byte, zero-shot preference signal, presence distances),
``sharded`` (likelihood scoring of a sharded corpus, on an engine),
``tiny`` (tiny GPT-2 models trained locally for tests, the demo and benchmarks). torch and
transformers are imported only when a model is loaded or trained.
"""

from simscope.probe.corpus import read_probe_corpus, read_probe_metadata, write_probe_corpus
from simscope.probe.generate import GenerationConfig, generate_corpus
from simscope.probe.importer import ImportStats, import_corpus
from simscope.probe.likelihood import (
    LikelihoodConfig,
    likelihood_scorer,
    presence_distances,
    score_pairs,
    score_preferences,
    score_reference_corpora,
    score_texts,
)
from simscope.probe.model import LoadedModel, load_model
from simscope.probe.tiny import TinyLMConfig, train_tiny_lm

__all__ = [
    "GenerationConfig",
    "ImportStats",
    "LikelihoodConfig",
    "LoadedModel",
    "TinyLMConfig",
    "generate_corpus",
    "import_corpus",
    "likelihood_scorer",
    "load_model",
    "presence_distances",
    "read_probe_corpus",
    "read_probe_metadata",
    "score_pairs",
    "score_preferences",
    "score_reference_corpora",
    "score_texts",
    "train_tiny_lm",
    "write_probe_corpus",
]
