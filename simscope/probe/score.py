"""``simscope probe score`` as one library call: likelihood Profile rows of preference data
under several models, and, with reference corpora, each model's presence distribution over
them and the distances between models. Loads each model once and scores everything with it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from simscope.errors import SimscopeError
from simscope.probe.importer import import_corpus
from simscope.probe.likelihood import (
    LikelihoodConfig,
    presence_distances,
    score_preferences,
    score_reference_corpora,
)
from simscope.probe.model import load_model
from simscope.records import PROFILE_SCHEMA
from simscope.stats import DEFAULT_N_BOOT


@dataclass
class ModelScores:
    """What :func:`score_models` measured."""

    profile: pl.DataFrame
    """``likelihood.*`` Profile rows of every model."""
    presence: pl.DataFrame | None
    """Per model and reference corpus (None without references)."""
    distances: pl.DataFrame | None
    """Jensen-Shannon distance between every two models' presence (two models or more)."""


def score_models(
    prefs: pl.DataFrame,
    models: Sequence[tuple[str, str]],
    cfg: LikelihoodConfig,
    *,
    references: Mapping[str, Path] | None = None,
    agreement: bool = True,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    progress: bool = True,
) -> ModelScores:
    """Score ``prefs`` with each ``(name, model)``; ``references`` are corpora (any input of
    ``probe import``) over which each model's presence distribution is measured."""
    names = [n for n, _ in models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SimscopeError(f"--model: each name once; found {dupes} more than once")
    refs = {
        name: import_corpus(Path(path), model=name).corpus.get_column("text").to_list()
        for name, path in (references or {}).items()
    }
    profiles, presence = [], []
    for name, ref in models:
        lm = load_model(
            ref, device=device, dtype=dtype, trust_remote_code=trust_remote_code, name=name
        )
        scores = score_preferences(
            lm, prefs, cfg, agreement=agreement, n_boot=n_boot, seed=seed, progress=progress
        )
        profiles.append(scores.profile)
        if refs:
            presence.append(score_reference_corpora(lm, refs, cfg, progress=progress))
    profile = pl.concat(profiles) if profiles else pl.DataFrame(schema=PROFILE_SCHEMA)
    table = pl.concat(presence) if presence else None
    distances = presence_distances(table) if table is not None and len(presence) > 1 else None
    return ModelScores(profile, table, distances)
