"""Build the long Profile table: every candidate through every scorer.

The stage owns the loop, the shared context (preference data, slices, the whole set and each
topic as scopes) and the table, not any metric: each :class:`simscope.overlap.scorer.Scorer`
(lexical, semantic, the model probes) returns its own rows for a candidate.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl

from simscope.checks import check_seed
from simscope.errors import SimscopeError
from simscope.lexical.index import LexicalConfig
from simscope.lexical.scorer import LexicalScorer, LexicalTextScores
from simscope.overlap.scorer import Scorer
from simscope.records import (
    PREFERENCE_SCHEMA,
    PROFILE_SCHEMA,
    SLICES,
    Candidate,
    ProfileContext,
    check_frame,
)
from simscope.stats import DEFAULT_N_BOOT, topic_scopes

logger = logging.getLogger(__name__)

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


def profile_context(
    prefs: pl.DataFrame, cfg: ProfileConfig, topics: Topics | None
) -> ProfileContext:
    """What every scorer shares: the checked preference data, the slices and the scopes (the
    whole set, then each topic)."""
    prefs = check_frame(prefs, PREFERENCE_SCHEMA, "PreferenceSet")
    if prefs.height == 0:
        raise SimscopeError("PreferenceSet is empty; nothing to profile")
    labels = topics.labels if topics else None
    names = list(topics.names) if topics else None
    return ProfileContext(
        prefs=prefs,
        slices=cfg.slices,
        scopes=topic_scopes(prefs.height, labels, names),
        n_boot=cfg.n_boot,
        seed=cfg.seed,
        topic_labels=labels,
        topic_names=names,
    )


def profile_rows(
    ctx: ProfileContext, candidates: Sequence[Candidate], scorers: Sequence[Scorer]
) -> pl.DataFrame:
    """Every scorer's rows of every candidate, in the Profile's order. A caller that profiles
    candidates one at a time (to free each model) builds ``ctx`` once and calls this."""
    frames = [s.score(c, ctx) for c in candidates for s in scorers]
    return (pl.concat(frames) if frames else pl.DataFrame(schema=PROFILE_SCHEMA)).sort(
        ["model", "slice", "metric", "topic"], nulls_last=False
    )


def build_profile(
    prefs: pl.DataFrame,
    corpora: Mapping[str, pl.DataFrame] | Sequence[Candidate],
    index_root: Path,
    cfg: ProfileConfig = ProfileConfig(),
    *,
    topics: Topics | None = None,
    scorers: Sequence[Scorer] | None = None,
    rebuild: bool = False,
    progress: bool = True,
) -> ProfileResult:
    """Profile each candidate through each scorer: the one way rows reach a Profile.

    ``corpora`` maps a model to its probe corpus, or lists :class:`records.Candidate` (a
    model-only candidate has no corpus). ``scorers`` default to the lexical scorer on indexes
    under ``index_root``; a per-slice hook joins as ``overlap.scorer.SliceHooks([hook])``.
    """
    ctx = profile_context(prefs, cfg, topics)
    candidates = (
        [Candidate(name, corpus) for name, corpus in sorted(corpora.items())]
        if isinstance(corpora, Mapping)
        else list(corpora)
    )
    if not candidates:
        raise SimscopeError("no probe corpora given; name at least one candidate model")
    if scorers is None:
        scorers = [LexicalScorer(index_root, cfg.lexical, rebuild=rebuild, progress=progress)]
    profile = profile_rows(ctx, candidates, scorers)
    lexical = next((s for s in scorers if isinstance(s, LexicalScorer)), None)
    return ProfileResult(
        profile,
        dict(lexical.scores) if lexical else {},
        dict(lexical.index_paths) if lexical else {},
        dict(lexical.manifests) if lexical else {},
    )
