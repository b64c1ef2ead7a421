"""Published RM results as a prior: the bundled tables (named sources with provenance) and a
user's own CSV of published results. Knows nothing of fitting.

A prior table holds, per base model, RM results of one training recipe (one row per model,
one numeric column per metric), and may hold ``params_B`` (parameters, billions),
``pretraining_tokens_T`` (pretraining tokens, trillions) and a ``family`` column; these are
covariates, not metrics. The bundled sources are listed in ``BUNDLED_PRIORS`` and their
files and provenance in ``simscope/data/README.md``; nothing is read from outside the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Final

import polars as pl

from simscope.errors import SimscopeError
from simscope.records import RM_RESULT_SCHEMA
from simscope.select.tables import (
    PARAMS_BENCHMARK,
    TOKENS_BENCHMARK,
    _as_float,
    _check_models,
    _first_bad,
    _found,
    _read_raw,
    _where,
    _wide_to_long,
    read_model_map,
)

COVARIATES: Final = (PARAMS_BENCHMARK, TOKENS_BENCHMARK)
"""Prior-table columns that describe a model rather than its RM results."""


@dataclass(frozen=True)
class PriorSource:
    """How to read one bundled table of published results."""

    name: str
    file: str
    model_column: str
    main_metric: str
    recipe: str
    citation: str
    where: tuple[tuple[str, str], ...] = ()
    drop: tuple[tuple[str, str], ...] = ()
    name_map: str | None = None
    skip_columns: tuple[str, ...] = ()


BUNDLED_PRIORS: Final = {
    "ahrabian2025-regression": PriorSource(
        name="ahrabian2025-regression",
        file="ahrabian2025_regression.csv",
        model_column="hf_id",
        main_metric="score",
        recipe="Regression RM (HelpSteer2 multi-attribute, 2 epochs) on 40 instruct base models",
        citation=(
            "Ahrabian et al., A Systematic Analysis of Base Model Choice for Reward Modeling, "
            "EMNLP 2025 (arXiv 2505.10775), Tables 3-4: RewardBench v1 overall and categories"
        ),
        skip_columns=("model", "publisher"),
    ),
    "rewardbench2-by-base": PriorSource(
        name="rewardbench2-by-base",
        file="rewardbench2_by_base.csv",
        model_column="base_model",
        main_metric="rb2_avg",
        recipe="best RM per base model trained on Tulu + Skywork preference data ('Both')",
        citation="RewardBench 2 (arXiv 2506.01937), Table 4",
        where=(("training_data", "Both"),),
        name_map="rewardbench2_by_base_model_map.csv",
        skip_columns=("training_data",),
    ),
    "skywork-reward-v2": PriorSource(
        name="skywork-reward-v2",
        file="skywork_reward_v2.csv",
        model_column="base_model",
        main_metric="avg7",
        recipe="Skywork-Reward-V2: one 26M-pair preference set, seven backbones",
        citation="Skywork-Reward-V2 (arXiv 2507.01352)",
        drop=(("rm_variant", "Llama-3.1-8B-40M"),),
        skip_columns=("rm_variant", "rb2_avg_check", "rmbench_avg_check"),
    ),
}
"""Prior tables shipped in ``simscope/data/priors`` (provenance in ``simscope/data/README.md``)."""


@dataclass(frozen=True)
class PriorTable:
    """Published RM results of one recipe: scores (long, ``RM_RESULT_SCHEMA``), covariates
    (``model``, ``params_B``, ``pretraining_tokens_T``; null where unknown) and families
    given by the table (empty without a ``family`` column)."""

    name: str
    provenance: str
    scores: pl.DataFrame
    covariates: pl.DataFrame
    main_metric: str
    families: dict[str, str] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        """The metrics the table reports, sorted."""
        return sorted(set(self.scores.get_column("metric").to_list()))

    def subset(self, models: set[str], name: str | None = None) -> PriorTable:
        """The same table restricted to ``models`` (the benchmark's published half)."""
        return PriorTable(
            name or self.name,
            self.provenance,
            self.scores.filter(pl.col("model").is_in(sorted(models))),
            self.covariates.filter(pl.col("model").is_in(sorted(models))),
            self.main_metric,
            {m: f for m, f in self.families.items() if m in models},
        )


def bundled_prior_path(name: str) -> Path:
    """Path of a file in ``simscope/data/priors``."""
    return Path(str(resources.files("simscope") / "data" / "priors" / name))


def read_prior(
    source: str | Path,
    *,
    model_column: str = "model",
    main_metric: str | None = None,
    model_map: Mapping[str, str] | None = None,
) -> PriorTable:
    """A PriorTable from a bundled source's name or a CSV/parquet file of published results.

    A file has one row per base model: ``model_column`` (the model id, as in the benchmark
    table), numeric metric columns, and optionally ``params_B``, ``pretraining_tokens_T`` and
    ``family``; other text columns are descriptive and skipped. ``main_metric`` is the metric
    the prior predicts when the user's metric is not one of the table's (default: a bundled
    source's documented one; for a file, its only metric or ``score``).
    """
    text = str(source)
    if text in BUNDLED_PRIORS:
        spec = BUNDLED_PRIORS[text]
        path = bundled_prior_path(spec.file)
        names = read_model_map(bundled_prior_path(spec.name_map)) if spec.name_map else {}
        table = _read_table(
            path,
            spec.model_column,
            where=spec.where,
            drop=spec.drop,
            skip=spec.skip_columns,
            name=spec.name,
            provenance=f"{spec.citation}; recipe: {spec.recipe}",
            names={**names, **(model_map or {})},
            main_metric=main_metric or spec.main_metric,
        )
        return table
    path = Path(source)
    if not path.suffix and not path.exists():
        raise SimscopeError(
            f"--prior {text!r}: not a bundled prior nor a file; bundled: "
            f"{', '.join(BUNDLED_PRIORS)}; or give a CSV of published results"
        )
    return _read_table(
        path,
        model_column,
        name=path.name,
        provenance=f"user table {path}",
        names=dict(model_map or {}),
        main_metric=main_metric,
    )


def _read_table(
    path: Path,
    model_column: str,
    *,
    name: str,
    provenance: str,
    names: Mapping[str, str],
    main_metric: str | None,
    where: tuple[tuple[str, str], ...] = (),
    drop: tuple[tuple[str, str], ...] = (),
    skip: tuple[str, ...] = (),
) -> PriorTable:
    raw = _read_raw(path)
    for column, value in where:
        raw = raw.filter(pl.col(column).cast(pl.String) == value)
    for column, value in drop:
        raw = raw.filter(pl.col(column).cast(pl.String) != value)
    _check_models(raw, path, "prior", model_column, "--prior-model-column")
    raw = raw.with_columns(pl.col(model_column).cast(pl.String).str.strip_chars())
    if names:
        raw = raw.with_columns(pl.col(model_column).replace(dict(names)))
    models = raw.get_column(model_column).to_list()
    seen: dict[str, int] = {}
    for i, model in enumerate(models):
        if model in seen:
            row = int(raw.get_column("_row")[i])
            raise SimscopeError(
                f"{_where(path, row)}: prior: field {model_column!r}: {model!r} has two rows; "
                "a prior table holds one row per base model (one recipe): keep one"
            )
        seen[model] = i
    covariates: dict[str, list[float | None]] = {}
    for column in COVARIATES:
        if column in raw.columns:
            bad = _first_bad(raw, column)
            if bad is not None:
                raise SimscopeError(
                    f"{_where(path, bad[0])}: prior: field {column!r}: expected a finite "
                    f"number, found {_found(bad[1])}; fix the cell or leave it empty"
                )
            values = _as_float(raw, column).to_list()
            covariates[column] = [v if v is not None and v > 0 else None for v in values]
        else:
            covariates[column] = [None] * raw.height
    families: dict[str, str] = {}
    if "family" in raw.columns:
        for model, family in zip(models, raw.get_column("family").to_list(), strict=True):
            if family is not None and str(family).strip():
                families[model] = str(family).strip()
    metric_part = raw.drop(
        [c for c in (*COVARIATES, "family", *skip) if c in raw.columns and c != model_column]
    )
    long = _wide_to_long(
        metric_part, path, "prior", "metric", model_column, "--prior-model-column"
    ).drop("_row")
    scores = long.select(pl.col("model"), pl.col("metric"), pl.col("score")).cast(RM_RESULT_SCHEMA)
    metrics = sorted(set(scores.get_column("metric").to_list()))
    if main_metric is None:
        main_metric = metrics[0] if len(metrics) == 1 else "score"
    if main_metric not in metrics:
        raise SimscopeError(
            f"{path}: prior: no metric {main_metric!r}; found {metrics}; name the one to "
            "predict with --prior-metric"
        )
    cov = pl.DataFrame(
        {"model": models, **covariates},
        schema={"model": pl.String, PARAMS_BENCHMARK: pl.Float64, TOKENS_BENCHMARK: pl.Float64},
    )
    return PriorTable(name, provenance, scores, cov, main_metric, families)
