"""The feature matrix of the select stage: which models, which features, which target.

Joins Profile features (``slice/metric``), benchmark scores and ``log_params`` on exact model
names, matches the measured RM results to them, and screens features on the measured models.
Profile metrics of the contamination family (exact n-gram containment, near-duplicate rates)
find copies, not closeness; they are left out of the features and listed in the report.
Every decision that loses or fills information is written to the report, never done
silently: unmatched names (with the closest names found), features dropped (too often
missing, or constant), and which models get which features imputed.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import polars as pl

from simscope.errors import SimscopeError
from simscope.metrics import spec
from simscope.select.tables import PARAMS_BENCHMARK

logger = logging.getLogger(__name__)

Group = Literal["benchmarks", "size", "similarity"]
LOG_PARAMS: Final = "log_params"
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
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def measured(self) -> np.ndarray:
        """Boolean mask of the models with an observed target."""
        return ~np.isnan(self.y)

    def columns(self, *groups: Group) -> tuple[int, ...]:
        """Indices of the features in ``groups``."""
        return tuple(i for i, g in enumerate(self.groups) if g in groups)


def build_features(
    benchmarks: pl.DataFrame | None,
    rm_results: pl.DataFrame,
    target_metric: str,
    *,
    profile_wide: pl.DataFrame | None = None,
    candidates: Sequence[str] | None = None,
    max_missing_share: float = 0.5,
) -> FeatureMatrix:
    """Assemble the FeatureMatrix for ``target_metric``.

    Models in scope: ``candidates`` when given, else the Profile's models when a Profile is
    given, else every model of the benchmark table; plus every measured model that has
    features. A feature missing for more than ``max_missing_share`` of the measured models,
    or constant over them, is dropped.
    """
    target = _target(rm_results, target_metric)
    tables: list[tuple[pl.DataFrame, Group]] = []
    if benchmarks is not None and benchmarks.height:
        wide = benchmarks.pivot("benchmark", index="model", values="score", aggregate_function=None)
        size = None
        if PARAMS_BENCHMARK in wide.columns:
            size = wide.select(
                "model",
                pl.when(pl.col(PARAMS_BENCHMARK) > 0)
                .then(pl.col(PARAMS_BENCHMARK).log())
                .otherwise(None)
                .alias(LOG_PARAMS),
            )
            nonpositive = wide.filter(pl.col(PARAMS_BENCHMARK) <= 0).get_column("model")
            if nonpositive.len():
                logger.info("params_B <= 0 read as missing for %s", nonpositive.to_list())
            wide = wide.drop(PARAMS_BENCHMARK)
        if wide.width > 1:
            tables.append((wide, "benchmarks"))
        if size is not None:
            tables.append((size, "size"))
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
    measured_all = target.get_column("model").to_list()
    unmatched = {m: _suggest(m, known) for m in measured_all if m not in set(known)}
    measured = [m for m in measured_all if m not in unmatched]
    report: dict[str, Any] = {
        "target_metric": target_metric,
        "measured_models": len(measured_all),
        "matched_measured_models": len(measured),
        "unmatched_measured_models": unmatched,
        "contamination_checks_not_used": contamination,
    }
    if unmatched:
        logger.warning("measured models without features (left out): %s", _describe(unmatched))
    if len(measured) < MIN_MEASURED:
        raise SimscopeError(
            f"select: only {len(measured)} of {len(measured_all)} measured models "
            f"({target_metric!r}) are found in the feature tables (need {MIN_MEASURED}); "
            f"unmatched: {_describe(unmatched)}; names must match exactly: rename them in "
            "the RM-results table or give --model-map with columns name,model"
        )

    if candidates is not None:
        scope = list(dict.fromkeys(candidates))
        unknown = [c for c in scope if c not in set(known)]
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
            report["unknown_candidates"] = {c: _suggest(c, known) for c in unknown}
            logger.warning("candidates without features (left out): %s", unknown)
        scope = [c for c in scope if c in set(known)]
    elif profile_wide is not None and profile_wide.height:
        scope = profile_wide.get_column("model").to_list()
    else:
        scope = known
    models = sorted(set(scope) | set(measured))

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
    y = np.array([y_map.get(m, math.nan) if m in set(measured) else math.nan for m in models])

    keep, dropped = _screen(X[~np.isnan(y)], names, max_missing_share)
    report["dropped_features"] = dropped
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
    if no_features.any():
        report["models_without_features"] = [
            m for m, f in zip(models, no_features, strict=True) if f
        ]
        keep_rows = ~no_features
        X, y = X[keep_rows], y[keep_rows]
        models = [m for m, k in zip(models, keep_rows, strict=True) if k]
    imputed = {
        name: [m for m, missing in zip(models, np.isnan(X[:, j]), strict=True) if missing]
        for j, name in enumerate(names)
        if np.isnan(X[:, j]).any()
    }
    report["imputed"] = imputed
    if imputed:
        logger.info(
            "imputed by the training mean: %s",
            {k: len(v) for k, v in imputed.items()},
        )
    report["features"] = dict(zip(names, groups, strict=True))
    return FeatureMatrix(tuple(models), tuple(names), tuple(groups), X, y, report)


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
