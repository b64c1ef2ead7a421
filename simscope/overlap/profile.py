"""Build the long Profile table: every (model, slice, scope) through every scorer.

For each candidate model this stage loads or builds its indexes (lexical, and semantic when
enabled), asks each scorer for one ScopeEstimator per metric and slice, and evaluates them on
the whole slice and on each topic of the preference data. It owns the loop and the table,
not any metric.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl

from simscope.checks import check_seed
from simscope.errors import SimscopeError
from simscope.lexical.index import (
    LexicalConfig,
    MinHashIndex,
    build_minhash_index,
    build_ngram_index,
)
from simscope.lexical.scorer import LexicalTextScores, lexical_estimators
from simscope.records import PREFERENCE_SCHEMA, PROFILE_SCHEMA, SLICES, check_frame
from simscope.stats import DEFAULT_N_BOOT, ScopeEstimator, scope_rows, topic_scopes

logger = logging.getLogger(__name__)

ExtraScorer = Callable[[str, pl.DataFrame, str, list[str]], Mapping[str, ScopeEstimator]]
"""(model, corpus, slice, texts) -> estimators: a hook for scorers owned by later stages."""


@dataclass(frozen=True)
class ProfileConfig:
    """What to measure and how: bootstrap size, seed, and each scorer's parameters."""

    n_boot: int = DEFAULT_N_BOOT
    seed: int = 0
    slices: tuple[str, ...] = SLICES
    lexical: LexicalConfig = field(default_factory=LexicalConfig)

    def __post_init__(self) -> None:
        bad = [s for s in self.slices if s not in SLICES]
        if bad:
            raise SimscopeError(f"profile.slices: expected a subset of {list(SLICES)}, found {bad}")
        if self.n_boot < 0:
            raise SimscopeError(f"profile.n_boot: expected >= 0, found {self.n_boot}")
        check_seed(self.seed, "profile.seed")


class Topics(Protocol):
    """What the profile needs of topics (:class:`simscope.semantic.topics.Topics` is one):
    a topic index per preference pair (-1 = none) and the topics' names."""

    @property
    def labels(self) -> np.ndarray: ...

    @property
    def names(self) -> Sequence[str]: ...


@dataclass
class ProfileResult:
    """The Profile table and the per-text lexical evidence behind it."""

    profile: pl.DataFrame
    lexical_scores: dict[tuple[str, str], LexicalTextScores]
    index_paths: dict[str, list[Path]]
    manifests: dict[str, list[dict[str, Any]]]


def build_profile(
    prefs: pl.DataFrame,
    corpora: Mapping[str, pl.DataFrame],
    index_root: Path,
    cfg: ProfileConfig = ProfileConfig(),
    *,
    topics: Topics | None = None,
    extra_scorers: Mapping[str, ExtraScorer] | None = None,
    rebuild: bool = False,
    progress: bool = True,
) -> ProfileResult:
    """Profile each model's probe corpus against each slice of ``prefs``."""
    prefs = check_frame(prefs, PREFERENCE_SCHEMA, "PreferenceSet")
    if prefs.height == 0:
        raise SimscopeError("PreferenceSet is empty; nothing to profile")
    if not corpora:
        raise SimscopeError("no probe corpora given; name at least one candidate model")
    # The lexical scorer reads each slice's column a block at a time; only scorers of later
    # stages get the texts as lists (made once, and only when there are such scorers).
    columns = {s: prefs.get_column(s) for s in cfg.slices}
    slice_texts = {s: columns[s].to_list() for s in cfg.slices} if extra_scorers else {}
    scopes = topic_scopes(
        prefs.height, topics.labels if topics else None, topics.names if topics else None
    )

    rows: list[dict[str, Any]] = []
    lexical_scores: dict[tuple[str, str], LexicalTextScores] = {}
    index_paths: dict[str, list[Path]] = {}
    manifests: dict[str, list[dict[str, Any]]] = {}
    for model in sorted(corpora):
        corpus = corpora[model]
        ngram_index = build_ngram_index(
            corpus, index_root, cfg.lexical, rebuild=rebuild, progress=progress
        )
        index_paths[model] = [ngram_index.path]
        manifests[model] = [ngram_index.manifest]
        minhash_indexes: dict[int, MinHashIndex] = {}

        def minhash_for(
            scale: int,
            corpus: pl.DataFrame = corpus,
            minhash_indexes: dict[int, MinHashIndex] = minhash_indexes,
        ) -> MinHashIndex:
            if scale not in minhash_indexes:
                minhash_indexes[scale] = build_minhash_index(
                    corpus, index_root, cfg.lexical, scale, rebuild=rebuild, progress=progress
                )
            return minhash_indexes[scale]

        for s in cfg.slices:
            estimators, scores = lexical_estimators(
                columns[s],
                ngram_index,
                minhash_for,
                cfg.lexical,
                n_boot=cfg.n_boot,
                seed=cfg.seed,
            )
            lexical_scores[(model, s)] = scores
            all_estimators = dict(estimators)
            for scorer in (extra_scorers or {}).values():
                all_estimators.update(scorer(model, corpus, s, slice_texts[s]))
            rows += scope_rows(model, s, all_estimators, scopes)
            del estimators, all_estimators  # free this slice's features before the next
        for index in sorted(minhash_indexes.values(), key=lambda i: i.chunk_words):
            index_paths[model].append(index.path)
            manifests[model].append(index.manifest)
    profile = pl.DataFrame(rows, schema=PROFILE_SCHEMA).sort(
        ["model", "slice", "metric", "topic"], nulls_last=False
    )
    return ProfileResult(profile, lexical_scores, index_paths, manifests)
