"""A run's probes of one candidate model, cached under ``indexes/``: its sampled corpus, its
likelihood rows and its transfer rows (the last two also as Profile scorers).

Each result is a checked cache entry (``storage.store_cached_table``: a manifest with every
input that decides it and a checksum of the table), keyed by the model's content (weights
and configs, however its path is spelled), the device and dtype it ran in, the texts and the
settings. A damaged entry is refused with "rebuild with --rebuild", and ``rebuild`` redoes it.
The model is loaded only when some result is missing, and at most once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl

from simscope.probe.corpus import read_probe_corpus
from simscope.probe.generate import GenerationConfig, generate_corpus
from simscope.probe.likelihood import LikelihoodConfig, score_preferences
from simscope.probe.model import (
    LoadedModel,
    load_model,
    model_fingerprint,
    resolve_device,
    resolve_dtype,
)
from simscope.probe.transfer import TransferConfig, score_transfer
from simscope.records import PROFILE_SCHEMA, Candidate, ProfileContext
from simscope.storage import (
    hash_texts,
    read_cached_table,
    read_parquet,
    slug,
    store_cached_table,
)

logger = logging.getLogger(__name__)

CORPUS_KIND: Final = "generated-corpus"
LIKELIHOOD_KIND: Final = "likelihood-rows"
TRANSFER_KIND: Final = "transfer-rows"


@dataclass(frozen=True)
class ProbeCache:
    """Where a run's probe results live and what every one of them depends on."""

    root: Path
    """The run's ``indexes_dir``."""
    seed: int = 0
    n_boot: int = 200
    rebuild: bool = False

    def entry(self, folder: str, name: str, params: Mapping[str, Any]) -> Path:
        """``<root>/<folder>/<candidate>-<key of params>/``: one entry per content."""
        key = hash_texts([json.dumps(params, sort_keys=True, default=str)])[:24]
        return Path(self.root) / folder / f"{slug(name)}-{key}"


@dataclass(frozen=True)
class TopicLabels:
    """A topic per preference pair (-1 = none) and the topics' names."""

    labels: np.ndarray
    names: Sequence[str]

    def key(self) -> str:
        return hash_texts([*self.names, self.labels.tobytes().hex()])


class CandidateModel:
    """A candidate's model: identified without loading it, loaded on first use, once.

    A ``.gguf`` file is de-quantised once into ``<root>/gguf/``.
    """

    def __init__(
        self, name: str, ref: str, cache: ProbeCache, *, trust_remote_code: bool = False
    ) -> None:
        self.name = name
        self.ref = ref
        self.trust_remote_code = trust_remote_code
        self.cache = cache
        device = resolve_device("auto")
        self.identity = {
            "model": model_fingerprint(ref),
            "device": device,
            "dtype": resolve_dtype("auto", device),
        }
        self._lm: LoadedModel | None = None

    @property
    def lm(self) -> LoadedModel:
        if self._lm is None:
            self._lm = load_model(
                self.ref,
                name=self.name,
                trust_remote_code=self.trust_remote_code,
                gguf_cache=Path(self.cache.root) / "gguf",
            )
        return self._lm

    def release(self) -> None:
        """Drop the loaded model (the next candidate needs the memory)."""
        self._lm = None


def _cached_rows(cache: ProbeCache, entry: Path, kind: str, params: Mapping[str, Any]) -> Any:
    path = None if cache.rebuild else read_cached_table(entry, kind, params)
    if path is None:
        return None
    logger.info("%s: reusing %s", kind, entry)
    return read_parquet(
        path, expected="a cache entry written by simscope", fix="rebuild with --rebuild"
    )


def cached_corpus(model: CandidateModel, config: GenerationConfig) -> pl.DataFrame:
    """The model's sampled probe corpus under ``config`` (seeded by the cache's seed)."""
    gen = replace(config, seed=model.cache.seed)
    params = {"candidate": model.name, **model.identity, "generation": dataclasses.asdict(gen)}
    entry = model.cache.entry("corpora", model.name, params)
    path = None if model.cache.rebuild else read_cached_table(entry, CORPUS_KIND, params)
    if path is not None:
        logger.info("probe corpus for %s: reusing %s", model.name, entry)
        return read_probe_corpus(path)
    # Sampled beside the entry (an interrupted run resumes there), then moved in.
    staging = entry.with_name(f"{entry.name}.parquet")
    staging.parent.mkdir(parents=True, exist_ok=True)
    generate_corpus(model.lm, staging, gen, name=model.name, overwrite=True, progress=False)
    return read_probe_corpus(store_cached_table(entry, CORPUS_KIND, params, staging))


def cached_likelihood(
    model: CandidateModel,
    prefs: pl.DataFrame,
    config: LikelihoodConfig,
    *,
    slices: Sequence[str],
    topics: TopicLabels | None = None,
) -> pl.DataFrame:
    """The model's ``likelihood.*`` Profile rows of ``prefs``."""
    cache = model.cache
    params = {
        "candidate": model.name,
        **model.identity,
        "texts": hash_texts([t for s in slices for t in prefs.get_column(s).to_list()]),
        "prompts": hash_texts(prefs.get_column("prompt").to_list()),
        "likelihood": dataclasses.asdict(config),
        "slices": list(slices),
        "n_boot": cache.n_boot,
        "seed": cache.seed,
        "topics": None if topics is None else topics.key(),
    }
    entry = cache.entry("likelihood", model.name, params)
    cached = _cached_rows(cache, entry, LIKELIHOOD_KIND, params)
    if cached is not None:
        return cached
    rows = score_preferences(
        model.lm,
        prefs,
        config,
        slices=slices,
        topic_labels=topics.labels if topics else None,
        topic_names=topics.names if topics else None,
        n_boot=cache.n_boot,
        seed=cache.seed,
        progress=False,
    ).profile
    store_cached_table(entry, LIKELIHOOD_KIND, params, rows)
    return rows


def cached_transfer(
    model: CandidateModel,
    prefs: pl.DataFrame,
    config: TransferConfig,
    *,
    topics: TopicLabels | None = None,
) -> pl.DataFrame:
    """The model's ``transfer.*`` Profile rows of ``prefs``."""
    cache = model.cache
    params = {
        "candidate": model.name,
        **model.identity,
        "pairs": hash_texts(
            [t for s in ("prompt", "chosen", "rejected") for t in prefs.get_column(s).to_list()]
        ),
        "transfer": dataclasses.asdict(config),
        "n_boot": cache.n_boot,
        "seed": cache.seed,
        "topics": None if topics is None else topics.key(),
    }
    entry = cache.entry("transfer", model.name, params)
    cached = _cached_rows(cache, entry, TRANSFER_KIND, params)
    if cached is not None:
        return cached
    rows = score_transfer(
        model.lm,
        prefs,
        config,
        topic_labels=topics.labels if topics else None,
        topic_names=topics.names if topics else None,
        n_boot=cache.n_boot,
        seed=cache.seed,
        progress=False,
    ).profile
    store_cached_table(entry, TRANSFER_KIND, params, rows)
    return rows


def _topics(ctx: ProfileContext) -> TopicLabels | None:
    if ctx.topic_labels is None or ctx.topic_names is None:
        return None
    return TopicLabels(ctx.topic_labels, ctx.topic_names)


class LikelihoodScorer:
    """The likelihood probe as a Profile scorer (``simscope.overlap.scorer.Scorer``): the
    candidate's model scores the slices, cached; a corpus without a model gets no rows."""

    def __init__(self, config: LikelihoodConfig) -> None:
        self.config = config

    def score(self, candidate: Candidate, ctx: ProfileContext) -> pl.DataFrame:
        if candidate.model is None:
            return pl.DataFrame(schema=PROFILE_SCHEMA)
        return cached_likelihood(
            candidate.model, ctx.prefs, self.config, slices=ctx.slices, topics=_topics(ctx)
        )


class TransferScorer:
    """The transfer probe as a Profile scorer: a reward head on the frozen model, cached."""

    def __init__(self, config: TransferConfig) -> None:
        self.config = config

    def score(self, candidate: Candidate, ctx: ProfileContext) -> pl.DataFrame:
        if candidate.model is None:
            return pl.DataFrame(schema=PROFILE_SCHEMA)
        return cached_transfer(candidate.model, ctx.prefs, self.config, topics=_topics(ctx))
