"""What to measure next: the untried candidates whose measurement most reduces the risk of
a wrong pick. Knows nothing of how the draws were made.

From joint draws of every model's score (measured models fixed at their observed score),
the beliefs are summarised as a Gaussian (means ``mu``, covariance ``S`` of the untried).
Today's pick is the model with the highest mean; the expected **regret** of picking it is
E[max of the true scores] - its mean. Measuring candidate j reveals y_j ~ N(mu_j, S_jj) and,
by Gaussian conditioning, moves every untried mean by S_cj / S_jj (y_j - mu_j); its value is
the expected rise of the best mean, E[max_c mu'_c] - max_c mu_c (the knowledge gradient with
correlated beliefs, Frazier, Powell & Dayanik 2009), computed exactly from the upper
envelope of the lines mu_c + shift_c x.
It is exactly the expected fall in regret. Several suggestions are chosen greedily: each
next one is valued after conditioning the covariance on the ones before (as if they had
been measured; the means are unchanged in expectation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import norm

from simscope.select.summary import Suggestion


def expected_regret(draws: np.ndarray) -> float:
    """E[max_c Y_c] - max_c E[Y_c] over joint draws (S, m)."""
    return float(draws.max(axis=1).mean() - draws.mean(axis=0).max())


def _expected_max_of_lines(a: np.ndarray, b: np.ndarray) -> float:
    """E[max_c (a_c + b_c X)] for X ~ N(0, 1), exactly: the integral of the lines' upper
    envelope against the normal density (Frazier, Powell & Dayanik 2009, Algorithm 1)."""
    order = np.lexsort((a, b))  # by slope, then intercept
    a, b = a[order], b[order]
    # keep the highest intercept of each slope
    last = np.r_[b[1:] != b[:-1], True]
    a, b = a[last], b[last]
    hull: list[int] = []
    starts: list[float] = []
    for i in range(a.size):
        while hull:
            j = hull[-1]
            x = (a[j] - a[i]) / (b[i] - b[j])  # where line i overtakes line j
            if x <= starts[-1]:
                hull.pop()
                starts.pop()
            else:
                hull.append(i)
                starts.append(x)
                break
        if not hull:
            hull.append(i)
            starts.append(-math.inf)
    bounds = [*starts, math.inf]
    total = 0.0
    for n, i in enumerate(hull):
        lo, hi = bounds[n], bounds[n + 1]
        total += a[i] * (norm.cdf(hi) - norm.cdf(lo)) + b[i] * (norm.pdf(lo) - norm.pdf(hi))
    return float(total)


def knowledge_gradient(mu: np.ndarray, cov: np.ndarray, untried: np.ndarray) -> np.ndarray:
    """Value of measuring each model (0 for measured ones): E[max mu'] - max mu."""
    best = float(mu.max())
    out = np.zeros(mu.size)
    for j in np.flatnonzero(untried):
        sd = float(np.sqrt(max(cov[j, j], 0.0)))
        if sd <= 1e-12:
            continue
        shift = np.zeros(mu.size)
        shift[untried] = cov[untried, j] / sd  # mean change per SD of y_j
        out[j] = max(0.0, _expected_max_of_lines(mu.astype(float), shift) - best)
    return out


def suggest(
    models: Sequence[str],
    draws: np.ndarray,
    untried: np.ndarray,
    n: int,
    *,
    intervals: Mapping[str, tuple[float | None, float | None]],
    p_best: Mapping[str, float],
    costs: Mapping[str, float | None] | None = None,
    unit: str = "points",
) -> list[Suggestion]:
    """Up to ``n`` untried models to measure next, best first, each with its reason."""
    if n <= 0 or not untried.any():
        return []
    mu = draws.mean(axis=0)
    cov = np.cov(draws, rowvar=False)
    cov = np.atleast_2d(cov)
    cov[~untried, :] = 0.0
    cov[:, ~untried] = 0.0
    regret = expected_regret(draws)
    pick = int(np.argmax(mu))
    out: list[Suggestion] = []
    remaining = untried.copy()
    for _ in range(min(n, int(untried.sum()))):
        value = knowledge_gradient(mu, cov, remaining)
        j = int(np.argmax(np.where(remaining, value, -1.0)))
        if not remaining[j]:
            break
        name = models[j]
        low, high = intervals.get(name, (None, None))
        interval = f" [{low:.3g}, {high:.3g}]" if low is not None and high is not None else ""
        after = max(regret - float(value[j]), 0.0)
        if out:
            context = "after the ones above, "
        elif j == pick:
            context = "it is today's pick; "
        else:
            context = f"today's pick is {models[pick]}; "
        reason = (
            f"{context}predicted {mu[j]:.3g}{interval}, P(best) {p_best.get(name, 0.0):.0%}: "
            f"measuring it is expected to raise the picked model's true score by "
            f"{value[j]:.3g} {unit} (expected regret of the pick {regret:.3g} -> {after:.3g})"
        )
        cost = costs.get(name) if costs else None
        out.append(
            Suggestion(
                name,
                float(value[j]),
                regret,
                after,
                float(p_best.get(name, 0.0)),
                float(mu[j]),
                low,
                high,
                cost,
                reason,
            )
        )
        regret = after
        # as if j were measured: its uncertainty, and what it explains of the others, is gone
        sd2 = cov[j, j]
        if sd2 > 1e-12:
            cov = cov - np.outer(cov[:, j], cov[j, :]) / sd2
        remaining[j] = False
    return out
