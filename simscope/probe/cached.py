"""A run's probes of one candidate model, cached under ``indexes/``: its sampled corpus, its
likelihood rows and its transfer rows (those two through the Profile scorers below).

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

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


def _cached_rows(
    model: CandidateModel,
    folder: str,
    kind: str,
    params: Mapping[str, Any],
    compute: Callable[[], pl.DataFrame],
) -> pl.DataFrame:
    """The rows of the cache entry for ``params``, or ``compute()``'s, stored there."""
    entry = model.cache.entry(folder, model.name, params)
    path = None if model.cache.rebuild else read_cached_table(entry, kind, params)
    if path is not None:
        logger.info("%s: reusing %s", kind, entry)
        return read_parquet(
            path, expected="a cache entry written by simscope", fix="rebuild with --rebuild"
        )
    rows = compute()
    store_cached_table(entry, kind, params, rows)
    return rows


def _row_params(model: CandidateModel, ctx: ProfileContext) -> dict[str, Any]:
    """What every cached row set of a candidate depends on besides its own settings."""
    topics = None
    if ctx.topic_labels is not None and ctx.topic_names is not None:
        topics = hash_texts([*ctx.topic_names, ctx.topic_labels.tobytes().hex()])
    return {
        "candidate": model.name,
        **model.identity,
        "n_boot": model.cache.n_boot,
        "seed": model.cache.seed,
        "topics": topics,
    }


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


class LikelihoodScorer:
    """The likelihood probe as a Profile scorer (``simscope.overlap.scorer.Scorer``): the
    candidate's model scores the slices, cached; a corpus without a model gets no rows."""

    def __init__(self, config: LikelihoodConfig) -> None:
        self.config = config

    def score(self, candidate: Candidate, ctx: ProfileContext) -> pl.DataFrame:
        model = candidate.model
        if model is None:
            return pl.DataFrame(schema=PROFILE_SCHEMA)
        prefs = ctx.prefs
        params = {
            **_row_params(model, ctx),
            "texts": hash_texts([t for s in ctx.slices for t in prefs.get_column(s).to_list()]),
            "prompts": hash_texts(prefs.get_column("prompt").to_list()),
            "likelihood": dataclasses.asdict(self.config),
            "slices": list(ctx.slices),
        }
        return _cached_rows(
            model,
            "likelihood",
            LIKELIHOOD_KIND,
            params,
            lambda: (
                score_preferences(
                    model.lm,
                    prefs,
                    self.config,
                    slices=ctx.slices,
                    topic_labels=ctx.topic_labels,
                    topic_names=ctx.topic_names,
                    n_boot=model.cache.n_boot,
                    seed=model.cache.seed,
                    progress=False,
                ).profile
            ),
        )


class TransferScorer:
    """The transfer probe as a Profile scorer: a reward head on the frozen model, cached."""

    def __init__(self, config: TransferConfig) -> None:
        self.config = config

    def score(self, candidate: Candidate, ctx: ProfileContext) -> pl.DataFrame:
        model = candidate.model
        if model is None:
            return pl.DataFrame(schema=PROFILE_SCHEMA)
        prefs = ctx.prefs
        pairs = [t for s in ("prompt", "chosen", "rejected") for t in prefs.get_column(s).to_list()]
        params = {
            **_row_params(model, ctx),
            "pairs": hash_texts(pairs),
            "transfer": dataclasses.asdict(self.config),
        }
        return _cached_rows(
            model,
            "transfer",
            TRANSFER_KIND,
            params,
            lambda: (
                score_transfer(
                    model.lm,
                    prefs,
                    self.config,
                    topic_labels=ctx.topic_labels,
                    topic_names=ctx.topic_names,
                    n_boot=model.cache.n_boot,
                    seed=model.cache.seed,
                    progress=False,
                ).profile
            ),
        )
