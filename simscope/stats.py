"""Bootstrap confidence intervals over preference texts, shared by every stage.

A metric over a set of texts is written as a *statistic of a weight vector*: ``w[i]`` is how
many times text ``i`` is drawn. The point estimate uses ``w = 1`` on the texts in scope, a
bootstrap replicate uses multinomial counts over them. A per-text mean and a set-level
distance (a divergence between histograms, say) are then bootstrapped the same way, and a
topic is just a scope.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from simscope.errors import SimscopeError


@cache
def _blas_controller() -> ThreadpoolController:
    # Finding the loaded BLAS libraries walks every shared object of the process (~8 ms);
    # done once, it sees numpy's BLAS, the one the callers' small problems run on.
    return ThreadpoolController()


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread inside the block: many small linear-algebra problems (bootstrap
    replicates, CV fits) on a multi-threaded BLAS of a busy 2-core machine each measured up to
    100x slower (spinning threads). ``threadpool_limits`` would look the libraries up on every
    entry; this looks them up once per process."""
    with _blas_controller().limit(limits=1, user_api="blas"):
        yield


Statistic = Callable[[np.ndarray], float]
"""Maps a weight vector over all texts of a slice to one number."""

DEFAULT_N_BOOT = 200
DEFAULT_CI = 0.95


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate with a percentile bootstrap interval (None when not computed)."""

    value: float
    ci_low: float | None
    ci_high: float | None


def mean_statistic(values: np.ndarray) -> Statistic:
    """Weighted mean of per-text ``values``; NaN entries (undefined for a text) are skipped."""
    values = np.asarray(values, dtype=np.float64)
    defined = ~np.isnan(values)
    filled = np.where(defined, values, 0.0)

    def stat(w: np.ndarray) -> float:
        total = float(w @ defined)
        return float(w @ filled) / total if total > 0 else float("nan")

    return stat


def bootstrap(
    statistic: Statistic,
    n_texts: int,
    *,
    scope: np.ndarray | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    ci: float = DEFAULT_CI,
    seed: int = 0,
    recenter: bool = False,
    bounds: tuple[float, float] | None = None,
) -> Estimate:
    """Point estimate and percentile CI of ``statistic``, resampling the texts in ``scope``.

    ``scope`` is a boolean mask over the ``n_texts`` texts (all when None). ``n_boot = 0``
    gives the point estimate alone. ``recenter`` shifts the interval by the bootstrap's own
    bias (the estimate minus the replicates' median): for plug-in divergences between
    histograms, every resample is farther from the reference than the sample itself, so a
    plain percentile interval would not contain the estimate. ``bounds`` clips the interval
    to the statistic's range.
    """
    mask = np.ones(n_texts, dtype=bool) if scope is None else np.asarray(scope, dtype=bool)
    idx = np.flatnonzero(mask)
    w = mask.astype(np.float64)
    value = statistic(w)
    if n_boot <= 0 or idx.size < 2:
        return Estimate(value, None, None)
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    with single_threaded_blas():
        for b in range(n_boot):
            wb = np.zeros(n_texts)
            np.add.at(wb, rng.choice(idx, size=idx.size, replace=True), 1.0)
            reps[b] = statistic(wb)
    reps = reps[~np.isnan(reps)]
    if reps.size == 0:
        return Estimate(value, None, None)
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(reps, [alpha, 1.0 - alpha])
    if recenter:
        shift = value - float(np.median(reps))
        low, high = low + shift, high + shift
    if bounds is not None:
        low, high = np.clip([low, high], *bounds)
    return Estimate(value, float(low), float(high))


ScopeEstimator = Callable[[np.ndarray], Estimate]
"""Maps a boolean scope mask over a slice's texts (the whole slice, or one topic) to an
Estimate. Stages hand these to the overlap stage, which calls one per (slice, scope)."""


def bootstrapped(
    statistic: Statistic,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    ci: float = DEFAULT_CI,
    seed: int = 0,
    recenter: bool = False,
    bounds: tuple[float, float] | None = None,
) -> ScopeEstimator:
    """A ScopeEstimator that bootstraps ``statistic`` over the texts in each scope."""

    def estimate(scope: np.ndarray) -> Estimate:
        return bootstrap(
            statistic,
            scope.size,
            scope=scope,
            n_boot=n_boot,
            ci=ci,
            seed=seed,
            recenter=recenter,
            bounds=bounds,
        )

    return estimate


Scope = tuple[str | None, np.ndarray]
"""A Profile row's ``topic`` (None: the whole slice) and the mask of its texts."""


def topic_scopes(
    n: int, labels: np.ndarray | None = None, names: Sequence[str] | None = None
) -> list[Scope]:
    """The whole set of ``n`` texts, then one scope per topic: ``labels`` holds a topic index
    per text (-1 = none), ``names`` the topics' names."""
    scopes: list[Scope] = [(None, np.ones(n, dtype=bool))]
    if labels is None:
        return scopes
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise SimscopeError(
            f"topics: expected one label per preference pair ({n}), found {labels.size}"
        )
    names = list(names) if names is not None else []
    top = int(labels.max(initial=-1))
    if top >= len(names):
        raise SimscopeError(
            f"topics: label {top} has no name; expected {top + 1} topic names, found {len(names)}"
        )
    return scopes + [(name, labels == k) for k, name in enumerate(names)]


def scope_rows(
    model: str, slice_: str, estimators: Mapping[str, ScopeEstimator], scopes: Sequence[Scope]
) -> list[dict[str, Any]]:
    """Profile rows (``records.PROFILE_SCHEMA``): each metric over each non-empty scope."""
    rows = []
    for metric, estimate in sorted(estimators.items()):
        for topic, mask in scopes:
            if not mask.any():
                continue
            est = estimate(mask)
            rows.append(
                {
                    "model": model,
                    "slice": slice_,
                    "topic": topic,
                    "metric": metric,
                    "value": est.value,
                    "ci_low": est.ci_low,
                    "ci_high": est.ci_high,
                }
            )
    return rows
