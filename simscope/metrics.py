"""The metric registry: every Profile metric is documented here once, and only here.

Each entry says what the number is, which direction means "closer", whether it measures
closeness of distributions or contamination (copies), and where it comes from. Stages look
their metrics up here (``spec(name)``) so that an undocumented metric cannot reach a Profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from simscope.errors import SimscopeError

Direction = Literal["higher", "lower"]
Family = Literal["closeness", "contamination", "likelihood"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """Documentation of one Profile metric."""

    name: str
    definition: str
    closer_when: Direction
    family: Family
    reference: str
    range: tuple[float, float] | None = (0.0, 1.0)


_SPECS: list[MetricSpec] = []


def _add(*specs: MetricSpec) -> None:
    _SPECS.extend(specs)


# -- lexical -------------------------------------------------------------------------------
# A name with "*" documents a family: the "*" stands for the configured threshold or n.
_add(
    MetricSpec(
        name="lexical.near_dup_rate@*",
        definition=(
            "Share of the slice's texts with at least one probe-corpus window whose estimated "
            "Jaccard similarity over word 5-gram shingles is >= the threshold after '@' (0.5 "
            "and 0.8 by default). Candidates come from MinHash LSH (datasketch MinHashLSH "
            "tuned for that threshold) and are verified on the full 128-permutation "
            "signatures. Corpus documents are cut into word windows of the slice's median "
            "length (a power of 2 in [16, 512], stride half a window), so a short response is "
            "compared with text of its own size. Texts without words count as not matched."
        ),
        closer_when="higher",
        family="contamination",
        reference="Broder 1997 (MinHash); Lee et al. 2022, 'Deduplicating training data'",
    ),
    MetricSpec(
        name="lexical.containment_*gram",
        definition=(
            "Mean over the slice's texts of the fraction of a text's word n-grams (n = 8, 13 "
            "by default) that occur anywhere in the probe corpus. Texts with fewer than n "
            "words are left out (undefined)."
        ),
        closer_when="higher",
        family="contamination",
        reference="Brown et al. 2020 (GPT-3, 13-gram overlap); Touvron et al. 2023 (Llama 2)",
    ),
    MetricSpec(
        name="lexical.contaminated_share_*gram",
        definition=(
            "Share of the slice's texts (with >= n words) of which more than half of the "
            "word n-grams occur in the probe corpus."
        ),
        closer_when="higher",
        family="contamination",
        reference="Touvron et al. 2023 (Llama 2 contamination analysis)",
    ),
)
_add(
    MetricSpec(
        name="lexical.hashed_ngram_jsd",
        definition=(
            "Jensen-Shannon divergence (base 2) between the slice's and the corpus's "
            "distributions of hashed word unigram+bigram features (2^16 buckets, add-1e-6 "
            "smoothing). 0 = identical feature distributions, 1 = disjoint. Its bootstrap interval "
            "is shifted by the resampling bias (a resampled histogram is always farther from "
            "the corpus than the sample itself), so it brackets the plug-in estimate."
        ),
        closer_when="lower",
        family="closeness",
        reference="Xie et al. 2023, DSIR (hashed n-gram features); Lin 1991 (JS divergence)",
    )
)


def registry() -> tuple[MetricSpec, ...]:
    """All documented metrics, in registration order."""
    return tuple(_SPECS)


def spec(name: str) -> MetricSpec:
    """The documentation of metric ``name``; unknown names are a SimscopeError."""
    for s in _SPECS:
        if s.name == name or ("*" in s.name and fnmatchcase(name, s.name)):
            return s
    known = ", ".join(s.name for s in _SPECS)
    raise SimscopeError(f"unknown metric {name!r}; documented metrics: {known}")
