"""The feature matrix of the select stage: which models, which features, which target.

Joins Profile features (``slice/metric``, the transfer probe's ``transfer.*`` rows
included), benchmark scores, ``log_params`` and ``log_tokens`` on exact model names, matches
the measured RM results to them, and screens features on the measured models. Only benchmark
*scores* are features: a column named like a rank, an id, a count or a date
(``NOT_A_SCORE``), one named like an RM-results metric, and one whose values equal the
target on every measured model are left out and listed with the reason (a table holding the
target would otherwise predict it with itself). Profile metrics of the contamination family
(exact n-gram containment, near-duplicate rates) find copies, not closeness; they are left
out too. Every decision that loses or fills information is written to the report, never done
silently: unmatched names (with the closest names found), features dropped (too often
missing, or constant), and which models get which features imputed.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import polars as pl

from simscope.errors import SimscopeError
from simscope.metrics import spec
from simscope.select.summary import FeatureReport
from simscope.select.tables import PARAMS_BENCHMARK, TOKENS_BENCHMARK

logger = logging.getLogger(__name__)

Group = Literal["benchmarks", "size", "similarity", "prior"]
LOG_PARAMS: Final = "log_params"
LOG_TOKENS: Final = "log_tokens"
MIN_MEASURED: Final = 3
"""Fewest measured models the select stage works with."""


@dataclass(frozen=True)
class FeatureMatrix:
    """Features of every model in scope; ``y`` is NaN for untried candidates.

    ``X`` holds NaN where a model lacks a feature; predictors impute it from training rows.
    """

    models: tuple[str, ...]
    names: tuple[str, ...]
    groups: tuple[Group, ...]
    X: np.ndarray
    y: np.ndarray
    report: FeatureReport

    @property
    def measured(self) -> np.ndarray:
        """Boolean mask of the models with an observed target."""
        return ~np.isnan(self.y)

    def columns(self, *groups: Group) -> tuple[int, ...]:
        """Indices of the features in ``groups``."""
        return tuple(i for i, g in enumerate(self.groups) if g in groups)


NOT_A_SCORE: Final = re.compile(
    r"(^|[_\-. ])(rank|ranking|id|index|idx|position|pos|count|num|year|date|row|order|"
    r"rows|ranks)($|[_\-. ])",
    re.IGNORECASE,
)
"""Benchmark-table column names that are bookkeeping (a rank, an id, a count), not scores."""


def benchmark_wide(
    benchmarks: pl.DataFrame,
    *,
    not_features: Collection[str] = (),
    only: Sequence[str] | None = None,
) -> tuple[pl.DataFrame, dict[str, str]]:
    """One row per model: ``log_params`` and ``log_tokens`` (from the ``params_B`` and
    ``pretraining_tokens_T`` benchmarks, > 0) and one column per benchmark score; and the
    benchmark names left out, with the reason. ``not_features`` are names that must not be
    features (the RM results' metrics: a benchmark table holding the target would predict
    it with itself); ``only`` keeps just these benchmarks (the user's explicit list)."""
    wide = benchmarks.pivot("benchmark", index="model", values="score", aggregate_function=None)
    excluded: dict[str, str] = {}
    out = wide.select("model")
    for column, feature in ((PARAMS_BENCHMARK, LOG_PARAMS), (TOKENS_BENCHMARK, LOG_TOKENS)):
        if column in wide.columns:
            out = out.with_columns(
                wide.select(pl.when(pl.col(column) > 0).then(pl.col(column).log()).otherwise(None))
                .to_series()
                .alias(feature)
            )
            nonpositive = wide.filter(pl.col(column) <= 0).get_column("model")
            if nonpositive.len():
                logger.info("%s <= 0 read as missing for %s", column, nonpositive.to_list())
    if only is not None:
        unknown = [c for c in only if c not in wide.columns]
        if unknown:
            raise SimscopeError(
                f"--benchmark-columns: no benchmark {unknown[0]!r}; the table has "
                f"{sorted(c for c in wide.columns if c != 'model')}"
            )
    metrics = set(not_features)
    for column in wide.columns[1:]:
        if column in (PARAMS_BENCHMARK, TOKENS_BENCHMARK):
            continue
        if column in metrics:
            excluded[column] = (
                "has the name of an RM-results metric: the RM result itself, not a public benchmark"
            )
        elif only is not None and column not in only:
            excluded[column] = "not in --benchmark-columns"
        elif only is None and NOT_A_SCORE.search(column):
            excluded[column] = (
                "bookkeeping, not a score (its name says rank/id/count/date); name it in "
                "--benchmark-columns to use it"
            )
        else:
            out = out.with_columns(wide.get_column(column))
    if excluded:
        logger.info("benchmark columns that are not features: %s", excluded)
    return out, excluded


def build_features(
    benchmarks: pl.DataFrame | None,
    rm_results: pl.DataFrame,
    target_metric: str,
    *,
    profile_wide: pl.DataFrame | None = None,
    candidates: Sequence[str] | None = None,
    all_models: bool = False,
    max_missing_share: float = 0.5,
    min_measured: int = MIN_MEASURED,
    covariates: Mapping[str, Mapping[str, float]] | None = None,
    benchmark_columns: Sequence[str] | None = None,
) -> FeatureMatrix:
    """Assemble the FeatureMatrix for ``target_metric``.

    Models in scope: ``candidates`` when given, else the Profile's models when a Profile is
    given, else (``all_models``) every model of the feature tables; plus every measured model
    that has features. ``covariates`` (``params_B`` / ``pretraining_tokens_T`` by model, from
    a candidates file) fill in sizes the benchmark table lacks. A feature missing for more
    than ``max_missing_share`` of the measured models (of the models in scope, with fewer
    than 3 measured), or constant over them, is dropped. A benchmark whose values equal the
    target on every measured model is the target itself and is left out.
    """
    target = _target(rm_results, target_metric) if rm_results.height else _EMPTY_TARGET
    metric_names = set(rm_results.get_column("metric").to_list()) if rm_results.height else set()
    metric_names.add(target_metric)
    tables: list[tuple[pl.DataFrame, Group]] = []
    excluded: dict[str, str] = {}
    size_table = _covariate_table(covariates or {})
    if benchmarks is not None and benchmarks.height:
        wide, excluded = benchmark_wide(
            benchmarks, not_features=metric_names, only=benchmark_columns
        )
        size_cols = [c for c in (LOG_PARAMS, LOG_TOKENS) if c in wide.columns]
        if size_table is not None:
            wide = _fill_sizes(wide, size_table)
            size_cols = [c for c in (LOG_PARAMS, LOG_TOKENS) if c in wide.columns]
        bench_cols = [c for c in wide.columns[1:] if c not in size_cols]
        if bench_cols:
            tables.append((wide.select("model", *bench_cols), "benchmarks"))
        if size_cols:
            tables.append((wide.select("model", *size_cols), "size"))
    elif size_table is not None:
        tables.append((size_table, "size"))
    contamination: list[str] = []
    if profile_wide is not None and profile_wide.width > 1:
        contamination = [c for c in profile_wide.columns[1:] if _is_contamination(c)]
        if contamination:
            logger.info("contamination checks left out of the features: %s", contamination)
            profile_wide = profile_wide.drop(contamination)
    if profile_wide is not None and profile_wide.width > 1:
        tables.append((profile_wide, "similarity"))
    if not tables:
        raise SimscopeError(
            "select: no features; give a benchmark table (--benchmarks, e.g. "
            "open-llm-leaderboard-v2) and/or a Profile (--profile)"
        )

    known = sorted(set().union(*(t.get_column("model").to_list() for t, _ in tables)))
    known_set = set(known)
    measured_all = target.get_column("model").to_list()
    unmatched = {m: _suggest(m, known) for m in measured_all if m not in known_set}
    measured = [m for m in measured_all if m not in unmatched]
    if unmatched:
        logger.warning("measured models without features (left out): %s", _describe(unmatched))
    if len(measured) < min_measured:
        raise SimscopeError(
            f"select: only {len(measured)} of {len(measured_all)} measured models "
            f"({target_metric!r}) are found in the feature tables (need {min_measured}); "
            f"unmatched: {_describe(unmatched)}; names must match exactly: rename them in "
            "the RM-results table or give --model-map with columns name,model"
            + ("" if min_measured == 0 else "; or give --prior to rank from published results")
        )

    unknown_candidates: dict[str, list[str]] = {}
    if candidates is not None:
        scope = list(dict.fromkeys(candidates))
        unknown = [c for c in scope if c not in known_set]
        if unknown and len(unknown) == len(scope):
            raise SimscopeError(
                "select: none of the candidates has features: "
                + "; ".join(
                    f"{c!r} (did you mean {', '.join(_suggest(c, known))}?)"
                    if _suggest(c, known)
                    else f"{c!r} (no close name)"
                    for c in unknown
                )
            )
        if unknown:
            unknown_candidates = {c: _suggest(c, known) for c in unknown}
            logger.warning("candidates without features (left out): %s", unknown)
        scope = [c for c in scope if c in known_set]
    elif profile_wide is not None and profile_wide.height:
        scope = profile_wide.get_column("model").to_list()
    elif all_models:
        scope = known
    else:
        scope = []
    models = sorted(set(scope) | set(measured))
    if not models:
        raise SimscopeError(
            "select: no candidates to rank; name them with --candidate or --candidates-file "
            f"(the feature tables list {len(known)} models; --all-models ranks every one)"
        )

    frame = pl.DataFrame({"model": models})
    names: list[str] = []
    groups: list[Group] = []
    for table, group in tables:
        frame = frame.join(table, on="model", how="left")
        for column in table.columns[1:]:
            if column in names:
                raise SimscopeError(
                    f"select: feature {column!r} appears in two tables; rename the benchmark"
                )
            names.append(column)
            groups.append(group)
    X = frame.select(names).cast(pl.Float64).to_numpy().astype(np.float64, copy=True)
    y_map = dict(target.iter_rows())
    measured_set = set(measured)
    y = np.array([y_map.get(m, math.nan) if m in measured_set else math.nan for m in models])

    # A "benchmark" equal to the target on every measured model is the target itself.
    has_y = ~np.isnan(y)
    for j, (name, group) in enumerate(zip(names, groups, strict=True)):
        both = has_y & ~np.isnan(X[:, j])
        if group == "benchmarks" and both.sum() >= 2 and np.allclose(X[both, j], y[both]):
            excluded[name] = (
                f"equals the RM results' {target_metric!r} on all {int(both.sum())} measured "
                "models that have it: the target itself, not a public benchmark"
            )
    leaked = [j for j, n in enumerate(names) if n in excluded]
    if leaked:
        logger.warning(
            "benchmark columns equal to the target, left out: %s", [names[j] for j in leaked]
        )
        keep_cols = [j for j in range(len(names)) if j not in leaked]
        X = X[:, keep_cols]
        names = [names[j] for j in keep_cols]
        groups = [groups[j] for j in keep_cols]

    if has_y.sum() >= MIN_MEASURED:
        keep, dropped = _screen(X[has_y], names, max_missing_share)
    else:  # nothing to fit on the user's side: keep every feature (a prior uses its own)
        keep, dropped = list(range(len(names))), {}
    if dropped:
        logger.info("dropped features: %s", dropped)
    X = X[:, keep]
    names = [names[i] for i in keep]
    groups = [groups[i] for i in keep]
    if not names:
        raise SimscopeError(
            f"select: every feature was dropped ({_describe(dropped)}); the measured models "
            "need features that vary between them"
        )

    no_features = np.isnan(X).all(axis=1) & np.isnan(y)
    without: list[str] = []
    if no_features.any():
        without = [m for m, f in zip(models, no_features, strict=True) if f]
        keep_rows = ~no_features
        X, y = X[keep_rows], y[keep_rows]
        models = [m for m, k in zip(models, keep_rows, strict=True) if k]
    imputed = {
        name: [m for m, missing in zip(models, np.isnan(X[:, j]), strict=True) if missing]
        for j, name in enumerate(names)
        if np.isnan(X[:, j]).any()
    }
    if imputed:
        logger.info(
            "imputed by the training mean: %s",
            {k: len(v) for k, v in imputed.items()},
        )
    report = FeatureReport(
        target_metric=target_metric,
        features=dict(zip(names, groups, strict=True)),
        measured_models=len(measured_all),
        matched_measured_models=len(measured),
        unmatched_measured_models=unmatched,
        excluded_columns=excluded,
        contamination_checks_not_used=contamination,
        dropped_features=dropped,
        imputed=imputed,
        models_without_features=without,
        unknown_candidates=unknown_candidates,
    )
    return FeatureMatrix(tuple(models), tuple(names), tuple(groups), X, y, report)


_EMPTY_TARGET: Final = pl.DataFrame(schema={"model": pl.String, "score": pl.Float64})


def _covariate_table(covariates: Mapping[str, Mapping[str, float]]) -> pl.DataFrame | None:
    """``log_params`` / ``log_tokens`` by model from a candidates file's columns."""
    params = covariates.get(PARAMS_BENCHMARK, {})
    tokens = covariates.get(TOKENS_BENCHMARK, {})
    models = sorted(set(params) | set(tokens))
    if not models:
        return None
    data: dict[str, list[Any]] = {"model": models}
    if params:
        data[LOG_PARAMS] = [math.log(params[m]) if params.get(m, 0) > 0 else None for m in models]
    if tokens:
        data[LOG_TOKENS] = [math.log(tokens[m]) if tokens.get(m, 0) > 0 else None for m in models]
    return pl.DataFrame(data, schema={c: pl.String if c == "model" else pl.Float64 for c in data})


def _fill_sizes(wide: pl.DataFrame, sizes: pl.DataFrame) -> pl.DataFrame:
    """``wide`` with sizes from ``sizes`` where the benchmark table has none."""
    out = wide.join(sizes, on="model", how="full", coalesce=True, suffix="_given")
    for column in (LOG_PARAMS, LOG_TOKENS):
        given = f"{column}_given"
        if given in out.columns:
            if column in out.columns:
                out = out.with_columns(pl.coalesce(column, given).alias(column)).drop(given)
            else:
                out = out.rename({given: column})
    return out


def _target(rm_results: pl.DataFrame, target_metric: str) -> pl.DataFrame:
    metrics = sorted(set(rm_results.get_column("metric").to_list()))
    if target_metric not in metrics:
        raise SimscopeError(
            f"select: --target {target_metric!r} is not a metric of the RM results; found {metrics}"
        )
    target = rm_results.filter(pl.col("metric") == target_metric).select("model", "score")
    dup = target.group_by("model").len().filter(pl.col("len") > 1)
    if dup.height:
        raise SimscopeError(
            f"select: RM results: {dup.height} model(s) have more than one {target_metric!r} "
            f"score (e.g. {dup.get_column('model')[0]!r}); expected one per model; "
            "deduplicate the table"
        )
    return target.filter(pl.col("score").is_not_nan())


def _screen(
    X_measured: np.ndarray, names: Sequence[str], max_missing_share: float
) -> tuple[list[int], dict[str, str]]:
    n = X_measured.shape[0]
    keep: list[int] = []
    dropped: dict[str, str] = {}
    for j, name in enumerate(names):
        column = X_measured[:, j]
        missing = int(np.isnan(column).sum())
        if missing > max_missing_share * n:
            dropped[name] = f"missing for {missing} of {n} measured models"
        elif np.nanstd(column) == 0.0:
            dropped[name] = f"constant over the {n - missing} measured models that have it"
        else:
            keep.append(j)
    return keep, dropped


def _suggest(name: str, known: Sequence[str]) -> list[str]:
    """Names in ``known`` that ``name`` probably means (same last part, or close spelling)."""
    tail = name.rsplit("/", 1)[-1].lower()
    same_tail = [k for k in known if k.rsplit("/", 1)[-1].lower().endswith(tail)]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.75)
    return list(dict.fromkeys(same_tail + close))[:3]


def _describe(names: dict[str, Any]) -> str:
    if not names:
        return "none"
    parts = []
    for name, hint in names.items():
        if isinstance(hint, list) and hint:
            parts.append(f"{name!r} (closest: {', '.join(map(repr, hint))})")
        elif isinstance(hint, list):
            parts.append(f"{name!r} (no similar name)")
        else:
            parts.append(f"{name!r}: {hint}")
    return "; ".join(parts)


def _is_contamination(feature: str) -> bool:
    """Whether a ``slice/metric`` feature is a contamination check (copies), which the
    design keeps beside, not inside, closeness. Metrics the registry does not know are kept."""
    metric = feature.split("/", 1)[-1]
    try:
        return spec(metric).family == "contamination"
    except SimscopeError:
        return False
