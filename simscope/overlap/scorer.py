"""The one way into the Profile: a :class:`Scorer` turns one candidate into Profile rows.

Every family of rows implements it: the lexical scorer (``simscope.lexical.scorer``), the
semantic one with its topic mass (``simscope.semantic.scorer``), and the model probes, the
likelihood and transfer rows (``simscope.probe.cached``). Each keeps what it computed on the
way as its own typed evidence (per-text scores, indexes) for the report. This module also
adapts the older per-slice hooks (``(model, corpus, slice, texts) -> estimators``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import polars as pl

from simscope.records import PROFILE_SCHEMA, Candidate, ProfileContext
from simscope.stats import ScopeEstimator, scope_rows

SliceHook = Callable[[str, pl.DataFrame, str, list[str]], Mapping[str, ScopeEstimator]]
"""(model, corpus, slice, texts) -> estimators: a scorer written per slice."""


class Scorer(Protocol):
    """Profile rows (``records.PROFILE_SCHEMA``) of one candidate, over the context's slices
    and scopes; a scorer with nothing to say of a candidate returns no rows."""

    def score(self, candidate: Candidate, ctx: ProfileContext) -> pl.DataFrame: ...


class SliceHooks:
    """A :class:`Scorer` made of per-slice hooks, each called with the slice's texts."""

    def __init__(self, hooks: Sequence[SliceHook]) -> None:
        self.hooks = list(hooks)
        self._texts: dict[str, list[str]] = {}

    def score(self, candidate: Candidate, ctx: ProfileContext) -> pl.DataFrame:
        if candidate.corpus is None or not self.hooks:
            return pl.DataFrame(schema=PROFILE_SCHEMA)
        rows = []
        for s in ctx.slices:
            texts = self._texts.setdefault(s, ctx.prefs.get_column(s).to_list())
            estimators: dict[str, ScopeEstimator] = {}
            for hook in self.hooks:
                estimators.update(hook(candidate.name, candidate.corpus, s, texts))
            rows += scope_rows(candidate.name, s, estimators, ctx.scopes)
        return pl.DataFrame(rows, schema=PROFILE_SCHEMA)
