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
Family = Literal["closeness", "contamination", "likelihood", "transfer"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """Documentation of one Profile metric."""

    name: str
    definition: str
    closer_when: Direction
    family: Family
    reference: str
    range: tuple[float, float] | None = (0.0, 1.0)


HEADLINE: frozenset[str] = frozenset(
    {
        "lexical.hashed_ngram_jsd",
        "semantic.nn_cosine",
        "semantic.coverage_k*",
        "semantic.mauve",
        "likelihood.bits_per_byte",
    }
)
"""The closeness metrics to read first: each recovered known mixtures of real text
monotonically in benchmarks/bench_recovery.py (Spearman 1.00 on imported corpora; bits per
byte 1.00 and the others >= 0.94 through tiny LMs on the chosen slice). Left out on that
evidence: precision and the match rate (fall to 0.54 and 0.90 on the rejected slice). Recall
is not computed at all: it moved against the truth (simscope.semantic.scorer). MAUVE stays,
but through sampled probes it fell to 0.77-0.83 (one chunk scale for all slices) and its
values stay near 0: trust it most for imported corpora."""


def is_headline(name: str) -> bool:
    """Whether metric ``name`` is in the headline set (families match their ``*`` form)."""
    return spec(name).name in HEADLINE


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
            "tuned for that threshold) and are verified on the full 128-value signatures "
            "(rensa's R-MinHash by default; lexical.engine = 'oph' or 'datasketch'). "
            "Corpus documents are cut into word windows of each text's own length (the power "
            "of 2 nearest it in [16, 2048], stride half a window), so a short response is "
            "compared with text of its own size. Texts without words count as not matched."
        ),
        closer_when="higher",
        family="contamination",
        reference=(
            "Broder 1997 (MinHash); Shrivastava 2017 (optimal densification); Lee et al. 2022, "
            "'Deduplicating training data'"
        ),
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


# -- likelihood ----------------------------------------------------------------------------
# Texts are scored by each candidate base model, conditioned on its start token (BOS, or EOS
# without one); texts longer than the context (or max_tokens, 1024 by default) are cut to
# their first tokens. Family "likelihood": how at home the model is in the preference data.
_add(
    MetricSpec(
        name="likelihood.mean_logprob_first*",
        definition=(
            "Mean over the slice's texts of the mean natural-log probability per token that "
            "the model gives the text's first K tokens (K after 'first', 32 by default). "
            "Depends on the tokenizer: compare models with one tokenizer, or use bits per byte."
        ),
        closer_when="higher",
        family="likelihood",
        reference="simscope; language-model likelihood as a domain signal, as in "
        "perplexity-based data selection (Wenzek et al. 2020, CCNet; Marion et al. 2023)",
        range=None,
    ),
    MetricSpec(
        name="likelihood.bits_per_byte",
        definition=(
            "Mean over the slice's texts of the negative log2-probability of the text's tokens "
            "divided by its UTF-8 bytes (over the part scored). Comparable across tokenizers."
        ),
        closer_when="lower",
        family="likelihood",
        reference="Gao et al. 2020, 'The Pile' (bits per UTF-8 byte)",
        range=None,
    ),
    MetricSpec(
        name="likelihood.pref_agreement",
        definition=(
            "Zero-shot preference signal, reported under slice 'chosen' (it uses all three "
            "slices): share of preference pairs for which the model gives the chosen response "
            "a higher mean log-probability per token, given the prompt (the prompt's last "
            "tokens when it is long; responses cut to 256 tokens), than the rejected one; ties "
            "count 1/2, pairs with identical or empty responses are left out. 0.5 = no "
            "agreement beyond chance; bootstrap over pairs."
        ),
        closer_when="higher",
        family="likelihood",
        reference="simscope; length-normalized likelihood scoring of candidate answers, as "
        "in zero-shot multiple-choice evaluation (Brown et al. 2020, GPT-3)",
    ),
    MetricSpec(
        name="likelihood.pref_logprob_margin",
        definition=(
            "Mean over preference pairs of (chosen minus rejected) mean log-probability per "
            "token given the prompt, in nats, under slice 'chosen'; > 0 when the model already "
            "prefers the chosen responses."
        ),
        closer_when="higher",
        family="likelihood",
        reference="As likelihood.pref_agreement",
        range=None,
    ),
    MetricSpec(
        name="likelihood.presence_js_distance",
        definition=(
            "Between two models (a table of model pairs, not a Profile row): Jensen-Shannon "
            "distance (base 2, in [0, 1]) between their presence distributions over named "
            "reference corpora, a model's presence on corpus c being softmax over corpora of "
            "-bits_per_byte(c) / 0.1 (a constant shift of a model's bits per byte cancels). "
            "0 = the two models are relatively most at home in the same corpora. CI: "
            "percentile bootstrap over each corpus's texts, paired across models."
        ),
        closer_when="lower",
        family="likelihood",
        reference="Lin 1991 (Jensen-Shannon divergence); Endres & Schindelin 2003 (its square "
        "root is a metric)",
    ),
)


# -- transfer probe ------------------------------------------------------------------------
_add(
    MetricSpec(
        name="transfer.bt_accuracy",
        definition=(
            "Reward head on the frozen base model, reported under slice 'chosen' (it uses all "
            "three slices): each (prompt, response) is encoded by the model's final hidden "
            "states (last token and the mean over the response's tokens); a Bradley-Terry "
            "head (L2 logistic regression without intercept on chosen - rejected, each pair "
            "also mirrored, strength by inner grouped CV) is fit on 4 of 5 folds of pairs and "
            "scored on the fifth: the share of pairs whose chosen response it ranks first, out "
            "of fold (ties 1/2; pairs with identical responses left out). 0.5 = chance. "
            "Bootstrap over pairs, the fold heads held fixed."
        ),
        closer_when="higher",
        family="transfer",
        reference="simscope; linear probing of frozen features (Alain & Bengio 2016) with the "
        "Bradley-Terry reward-model loss (Ouyang et al. 2022)",
    ),
    MetricSpec(
        name="transfer.logme",
        definition=(
            "LogME on the same features: the maximum over prior and noise precisions of the "
            "log marginal evidence per sample of Bayesian linear regression of +1 (chosen - "
            "rejected) and -1 (its mirror) on the feature differences. Higher = the preference "
            "is more linearly predictable from the frozen features; comparable across models "
            "on the same pairs. Bootstrap over pairs."
        ),
        closer_when="higher",
        family="transfer",
        reference="You et al. 2021, 'LogME: Practical assessment of pre-trained models for "
        "transfer learning' (ICML)",
        range=None,
    ),
)


# -- semantic ------------------------------------------------------------------------------
# Embeddings: all-MiniLM-L6-v2 by default (or a static model2vec encoder distilled from it,
# semantic.encoder), unit vectors, cosine similarity. Corpus documents are cut into chunks of
# one length for every slice, the median word count of all the preference texts (a power of 2
# in [16, 128]); texts longer than the encoder window are embedded in windows whose vectors are
# averaged (weighted by tokens). "Real" = the slice's texts, "fake" = the corpus chunks. k-NN
# radii of the slice's texts are computed on the whole slice, so a topic (a scope) is measured
# with the same balls.
_SEMANTIC_REF_PRDC = (
    "Kynkaanniemi et al. 2019, 'Improved precision and recall metric for assessing "
    "generative models'; Naeem et al. 2020, 'Reliable fidelity and diversity metrics for "
    "generative models'"
)
_add(
    MetricSpec(
        name="semantic.nn_cosine",
        definition=(
            "Mean over the slice's texts of the cosine similarity to the most similar corpus "
            "chunk (FAISS inner product: exact up to 50k chunks, IVF-Flat above)."
        ),
        closer_when="higher",
        family="closeness",
        reference="Nearest-neighbour similarity of sentence embeddings (Reimers & Gurevych 2019)",
        range=(-1.0, 1.0),
    ),
    MetricSpec(
        name="semantic.nn_match_rate",
        definition=(
            "Share of the slice's texts whose most similar corpus chunk is at least as similar "
            "as the median text's nearest neighbour within the slice itself (the threshold is "
            "the median over the slice's distinct texts of each one's cosine to its nearest "
            "other slice text, "
            "so it does not depend on the corpus and models are compared at one threshold)."
        ),
        closer_when="higher",
        family="closeness",
        reference="simscope; threshold calibrated on the preference data's own neighbours",
    ),
    MetricSpec(
        name="semantic.precision_k*",
        definition=(
            "Share of corpus chunks that fall inside the k-NN ball (k after '_k', 5 by default) "
            "of at least one slice text in scope (Kynkaanniemi et al. precision: is what the "
            "corpus holds found in the preference data?). For a topic: the corpus share "
            "inside that topic's balls. Its interval resamples the corpus chunks with the "
            "balls held fixed (resampling the texts would shrink the union of balls and bias "
            "the interval down)."
        ),
        closer_when="higher",
        family="closeness",
        reference=_SEMANTIC_REF_PRDC,
    ),
    MetricSpec(
        name="semantic.density_k*",
        definition=(
            "Naeem et al. density: (1 / (k m)) sum over the m corpus chunks of the number of "
            "slice texts whose k-NN ball contains the chunk; about 1 when the corpus is "
            "distributed like the slice, above 1 when it crowds the slice's dense regions. For "
            "a topic the sum runs over the topic's balls and is scaled by n / n_topic, so it "
            "is the corpus's density there relative to the topic's share of the slice."
        ),
        closer_when="higher",
        family="closeness",
        reference=_SEMANTIC_REF_PRDC,
        range=None,
    ),
    MetricSpec(
        name="semantic.coverage_k*",
        definition=(
            "Naeem et al. coverage: share of the slice's texts whose k-NN ball (among the "
            "slice's texts) contains at least one corpus chunk, with the corpus subsampled "
            "to as many chunks as the slice has texts (averaged over 20 seeded subsamples; "
            "the whole corpus when it is smaller), so that a larger corpus does not look "
            "closer for its size alone. 1 for a corpus that covers every region of the "
            "preference data."
        ),
        closer_when="higher",
        family="closeness",
        reference=_SEMANTIC_REF_PRDC,
    ),
    MetricSpec(
        name="semantic.mauve",
        definition=(
            "MAUVE between the slice's texts and the corpus chunks (for a topic: the chunks "
            "whose most similar slice text is in the topic), computed as mauve-text 0.4 does "
            "(PCA to 90% variance, k-means with k = min(n, m) / 10 over both sets, area under "
            "the divergence curve with scaling 5) with one faiss k-means run per seed. The "
            "value is the mean over 5 clustering seeds; ci_low/ci_high are the min and max "
            "over those seeds (clustering spread, not a bootstrap interval). NaN when the "
            "scope or its corpus side has fewer than 10 texts. Each side is capped at 5,000 "
            "texts by a seeded subsample."
        ),
        closer_when="higher",
        family="closeness",
        reference="Pillutla et al. 2021, 'MAUVE: measuring the gap between neural text and "
        "human text using divergence frontiers'",
    ),
    MetricSpec(
        name="semantic.frechet",
        definition=(
            "Frechet distance between Gaussian fits (maximum-likelihood mean and covariance) "
            "of the slice's embeddings and the corpus chunks' embeddings: |mu_a - mu_b|^2 + "
            "tr(S_a + S_b - 2 (S_b^1/2 S_a S_b^1/2)^1/2). 0 = same first two moments. The "
            "interval is the estimate +- half the width of the percentile bootstrap interval "
            "(at most 50 replicates): resampled texts repeat, which shifts every replicate up "
            "(with fewer texts than dimensions, by more than their spread), so the replicates' "
            "spread is kept and their location dropped."
        ),
        closer_when="lower",
        family="closeness",
        reference="Heusel et al. 2017 (FID), on sentence embeddings",
        range=(0.0, 4.0),
    ),
    MetricSpec(
        name="semantic.topic_mass_ratio",
        definition=(
            "Per topic of the preference pairs: the corpus's share of mass on the topic "
            "(chunks assigned to the nearest topic centroid, each document weighing the same) "
            "divided by the preference data's share of pairs in it. 1 = proportional; below 1 "
            "the corpus under-represents the topic."
        ),
        closer_when="higher",
        family="closeness",
        reference="simscope; topics by k-means on prompt embeddings, named by c-TF-IDF "
        "(Grootendorst 2022)",
        range=None,
    ),
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
