"""The tables that flow between stages: their polars schemas and a checker for each.

Column names and dtypes here are the contract of ``DESIGN.md``; every stage imports them from
this module and nowhere else. Tables, not row objects, cross the stages: a row is never
built as a Python object on the way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import polars as pl

from simscope.errors import SimscopeError

SLICES: Final = ("prompt", "chosen", "rejected")
"""The three slices of a preference set, in their canonical order."""

PREFERENCE_SCHEMA: Final = pl.Schema(
    {
        "pair_id": pl.String,
        "prompt": pl.String,
        "chosen": pl.String,
        "rejected": pl.String,
        "source": pl.String,
    }
)
"""PreferenceSet: one preference pair per row; responses hold the response only."""

PROBE_SCHEMA: Final = pl.Schema(
    {"model": pl.String, "doc_id": pl.String, "text": pl.String, "origin": pl.String}
)
"""ProbeCorpus: texts that stand for one model's pretraining distribution."""

PROBE_ORIGINS: Final = ("generated", "imported")

PROFILE_SCHEMA: Final = pl.Schema(
    {
        "model": pl.String,
        "slice": pl.String,
        "topic": pl.String,
        "metric": pl.String,
        "value": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
    }
)
"""Profile (long): one number per (model, slice, topic, metric); topic null = whole slice."""

BENCHMARK_SCHEMA: Final = pl.Schema(
    {"model": pl.String, "benchmark": pl.String, "score": pl.Float64}
)
RM_RESULT_SCHEMA: Final = pl.Schema({"model": pl.String, "metric": pl.String, "score": pl.Float64})

SELECTION_SCHEMA: Final = pl.Schema(
    {
        "model": pl.String,
        "predicted": pl.Float64,
        "pi_low": pl.Float64,
        "pi_high": pl.Float64,
        "p_best": pl.Float64,
        "rank": pl.Int64,
        "observed": pl.Float64,
    }
)


@dataclass(frozen=True)
class ProfileContext:
    """What every scorer of a Profile shares: the preference data and how to measure it.

    ``scopes`` are the whole set (topic None) then one boolean mask over the pairs per topic;
    ``topic_labels`` / ``topic_names`` are the topics themselves (None without topics).
    """

    prefs: pl.DataFrame
    slices: tuple[str, ...]
    scopes: Sequence[tuple[str | None, np.ndarray]]
    n_boot: int
    seed: int
    topic_labels: np.ndarray | None = None
    topic_names: Sequence[str] | None = None


@dataclass(frozen=True)
class Candidate:
    """One candidate as the scorers see it: its probe corpus (a ProbeCorpus frame, or None
    when only its model is scored) and its model (a ``simscope.probe.cached.CandidateModel``,
    or None for a corpus made elsewhere)."""

    name: str
    corpus: pl.DataFrame | None = None
    model: Any = None


def empty_frame(schema: pl.Schema) -> pl.DataFrame:
    """An empty frame with ``schema``."""
    return pl.DataFrame(schema=schema)


def check_frame(df: pl.DataFrame, schema: pl.Schema, table: str, where: str = "") -> pl.DataFrame:
    """Return ``df`` with exactly ``schema``'s columns, in order, cast where lossless.

    Raises SimscopeError naming the table, the missing columns or the column whose values
    cannot be read as the expected type.
    """
    prefix = f"{where}: " if where else ""
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise SimscopeError(
            f"{prefix}{table}: missing column(s) {', '.join(map(repr, missing))}; "
            f"expected columns {list(schema)}, found {df.columns}"
        )
    out = df.select(list(schema))
    for name, dtype in schema.items():
        if out.schema[name] == dtype:
            continue
        try:
            out = out.with_columns(pl.col(name).cast(dtype, strict=True))
        except pl.exceptions.InvalidOperationError:
            bad = _first_uncastable(out, name, dtype)
            raise SimscopeError(
                f"{prefix}{table}: column {name!r}: expected {dtype}, found {bad!r} "
                f"(type {out.schema[name]})"
            ) from None
    return out


def split_probe_corpus(corpus: pl.DataFrame) -> tuple[str, list[str]]:
    """The one model of a ProbeCorpus and its texts in ``doc_id`` order (an index's row order).

    Indexes are built per model: an empty corpus or one mixing models is a SimscopeError.
    """
    corpus = check_frame(corpus, PROBE_SCHEMA, "ProbeCorpus")
    if corpus.height == 0:
        raise SimscopeError("ProbeCorpus is empty; nothing to index")
    for name in ("model", "doc_id", "text"):
        nulls = corpus.get_column(name).null_count()
        if nulls:
            raise SimscopeError(
                f"ProbeCorpus: column {name!r}: expected a string in every row, "
                f"found {nulls} null(s)"
            )
    models = corpus.get_column("model").unique().to_list()
    if len(models) != 1:
        raise SimscopeError(
            f"ProbeCorpus: an index is built per model; expected one model, found {sorted(models)}"
        )
    return models[0], corpus.sort("doc_id").get_column("text").to_list()


def _first_uncastable(df: pl.DataFrame, name: str, dtype: pl.DataType) -> object:
    cast = df.get_column(name).cast(dtype, strict=False)
    original = df.get_column(name)
    mask = cast.is_null() & original.is_not_null()
    return original.filter(mask).head(1).to_list()[0] if mask.any() else None
