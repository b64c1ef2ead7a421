"""The metric registry: every metric documented once, the headline set resolvable."""

from __future__ import annotations

import pytest

from simscope.errors import SimscopeError
from simscope.metrics import HEADLINE, is_headline, registry, spec


def test_every_metric_is_documented_once() -> None:
    names = [s.name for s in registry()]
    assert len(names) == len(set(names))
    for s in registry():
        assert s.definition and s.reference
        assert s.closer_when in ("higher", "lower")
        assert s.family in ("closeness", "contamination", "likelihood", "transfer")


def test_headline_metrics_are_documented_closeness_or_likelihood() -> None:
    for name in HEADLINE:
        s = spec(name.replace("*", "5"))
        assert s.name == name
        assert s.family in ("closeness", "likelihood")
    assert is_headline("semantic.coverage_k5")
    assert not is_headline("semantic.precision_k5")
    # recall moved against the truth on known mixtures (simscope.semantic.scorer): gone
    with pytest.raises(SimscopeError, match=r"unknown metric 'semantic\.recall_k5'"):
        spec("semantic.recall_k5")
    # contamination checks are reported beside closeness, never as headline closeness
    assert not is_headline("lexical.containment_13gram")


def test_families_resolve_and_unknown_names_are_refused() -> None:
    assert spec("lexical.near_dup_rate@0.7").name == "lexical.near_dup_rate@*"
    with pytest.raises(SimscopeError, match=r"unknown metric 'lexical\.nope'"):
        spec("lexical.nope")
