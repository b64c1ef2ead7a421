"""The verdict: is the chosen predictor's ranking reliably better than the baselines?

The ranking score is ``pair_tau`` from pairwise CV (see ``cv``), free of the leave-one-out
shrink-to-mean artefact that makes the mean predictor score Spearman -1. Intervals are
bootstrap intervals over the measured models, paired where two predictors are compared, at
a 95% level divided among the predictors that were compared (Bonferroni), since the best of
several is chosen on the same data. Rules, in order:

1. Fewer than ``MIN_MEASURED_FOR_RANKING`` measured models: no reliable ranking (a
   bootstrap over 3 or 4 points says nothing).
2. The chosen predictor (highest pair_tau, then lowest MAE) is the constant, its pair_tau
   interval includes 0, or its MAE is not reliably below the constant's: no reliable ranking.
3. It is not itself a baseline and its pair_tau minus the best non-constant baseline's has
   an interval that includes 0: it ranks, but no better than that baseline.
4. Otherwise a reliable ranking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

Status = Literal["no_reliable_ranking", "no_better_than_baseline", "reliable_ranking"]
MIN_MEASURED_FOR_RANKING: Final = 5
ROUGH_BELOW_N: Final = 10
"""Below this many measured models the verdict says its intervals are rough."""


@dataclass(frozen=True)
class Verdict:
    """What the evidence supports, as a status and plain sentences."""

    status: Status
    chosen: str
    text: str

    @property
    def reliable(self) -> bool:
        """Whether the ranking may be presented as better than the baselines."""
        return self.status == "reliable_ranking"


def _fmt(value: float, ci: tuple[float, float] | list[float]) -> str:
    return f"{value:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"


def choose(table: dict[str, dict[str, Any]]) -> str:
    """The predictor with the highest pair_tau, ties to the lower MAE."""
    return max(table, key=lambda name: (table[name]["pair_tau"], -table[name]["mae"]))


def decide(
    table: dict[str, dict[str, Any]], n_measured: int, level: float, chosen: str | None = None
) -> Verdict:
    """The verdict from the CV table (one row per predictor, see ``core``) for ``chosen``
    (default: the predictor with the highest pair_tau)."""
    verdict = _decide(table, n_measured, level, chosen)
    if MIN_MEASURED_FOR_RANKING <= n_measured < ROUGH_BELOW_N:
        return Verdict(
            verdict.status,
            verdict.chosen,
            f"{verdict.text} With fewer than {ROUGH_BELOW_N} measured models these bootstrap "
            "intervals are rough (a perfect ordering of a few models gives a zero-width "
            "interval); models that share a base (SFT, DPO and RL of one model) count as "
            "fewer independent points than they seem.",
        )
    return verdict


def _decide(
    table: dict[str, dict[str, Any]], n_measured: int, level: float, chosen: str | None
) -> Verdict:
    chosen = chosen or choose(table)
    row = table[chosen]
    k = len(table)
    pct = f"{level:.1%}"
    if n_measured < MIN_MEASURED_FOR_RANKING:
        return Verdict(
            "no_reliable_ranking",
            chosen,
            f"NO RELIABLE RANKING: only {n_measured} measured models; at least "
            f"{MIN_MEASURED_FOR_RANKING} are needed before cross-validation can tell a "
            f"predictor from chance. The best of {k} predictors, {chosen}, orders held-out "
            f"pairs with tau {row['pair_tau']:+.2f}, which on {n_measured} models is not "
            "evidence. Treat the untried candidates as unranked; measure more base models.",
        )
    scored = (
        f"{chosen}: it orders held-out pairs with tau {_fmt(row['pair_tau'], row['pair_tau_ci'])} "
        f"({pct} interval, n = {n_measured}); its LOO MAE is {row['mae']:.2f} vs "
        f"{table['constant']['mae']:.2f} for predicting the mean (difference "
        f"{_fmt(row['mae_minus_constant'], row['mae_minus_constant_ci'])})."
    )
    if chosen == "constant":
        return Verdict(
            "no_reliable_ranking",
            chosen,
            f"NO RELIABLE RANKING: none of the {k - 1} other predictor{'s' if k != 2 else ''} "
            "orders held-out pairs of "
            f"measured models better than chance (n = {n_measured}). The predicted ranking is not "
            "better than a guess; do not pick a base model by it.",
        )
    if row["pair_tau_ci"][0] <= 0.0 or row["mae_minus_constant_ci"][1] >= 0.0:
        why = (
            "its tau interval includes 0"
            if row["pair_tau_ci"][0] <= 0.0
            else "its error is not reliably below predicting the mean"
        )
        return Verdict(
            "no_reliable_ranking",
            chosen,
            f"NO RELIABLE RANKING: the best of {k} predictors is {scored} That is not "
            f"reliably better than the constant baseline ({why}). The predicted ranking is not "
            "better than a guess; do not pick a base model by it.",
        )
    baselines = [name for name, r in table.items() if r["baseline"] and name != "constant"]
    if not row["baseline"] and baselines:
        best = row["best_baseline"]
        diff, ci = row["pair_tau_minus_best_baseline"], row["pair_tau_minus_best_baseline_ci"]
        if ci[0] <= 0.0:
            return Verdict(
                "no_better_than_baseline",
                chosen,
                f"NO BETTER THAN A BASELINE: {scored} But it is not reliably better than the "
                f"baseline {best} (tau {table[best]['pair_tau']:+.2f}; difference "
                f"{_fmt(diff, ci)}): picking by {best} is as well supported.",
            )
        against = f" It beats the best baseline, {best}, by {_fmt(diff, ci)}."
    elif row["baseline"]:
        against = " It is itself a simple baseline: rank the candidates by it."
    else:
        against = ""
    return Verdict("reliable_ranking", chosen, f"RELIABLE RANKING by {scored}{against}")


RELIABLE_EXPECTED_LOW: Final = 0.5
"""The ranking of the untried candidates is trusted only when, under the calibrated
posterior, its Spearman with their true scores is at least this with 90% probability.
Chosen by simulation on the published tables (``benchmarks/bench_select.py``, verdict
calibration, 300 pilot draws): at 0.4, 3 of 170 trusted rankings had a held-out Spearman
below 0.3; at 0.5, none of 115.
The prior's own cross-validation on its table is *not* used for this: in the simulation it
was anti-correlated with the accuracy on the other families (a table split in two leaves the
easy families on one side), while the posterior's spread of the candidates versus their
intervals tracks it."""


def decide_prior(
    *,
    prior_name: str,
    informative: bool,
    spearman: float | None,
    spearman_ci: tuple[float, float] | None,
    size_spearman: float | None,
    minus_size: float | None,
    minus_size_ci: tuple[float, float] | None,
    expected: float | None,
    expected_low: float | None,
    same_metric: bool,
    n_measured: int,
    disagrees: bool,
    agreement: float | None,
    user_row: dict[str, Any] | None,
    level: float,
) -> Verdict:
    """The verdict of a ranking calibrated around a published prior.

    Rules, in order: a prior no feature set could check on held-out families, or one the
    user's own scores disagree with, gives no reliable ranking; so does a posterior under
    which the untried candidates' ranking reaches Spearman ``RELIABLE_EXPECTED_LOW`` with
    less than 90% probability (candidates too close for their intervals). A prior not
    reliably better than ranking by size on its own table (the paired difference's interval
    reaches 0; evidence only for the prior's own metric), and not shown better than the best
    baseline by the user's measured models, is "no better than size". Otherwise the ranking
    is reliable.
    """
    chosen = "calibrated"
    measured = (
        f" {n_measured} measured model{'s' if n_measured != 1 else ''} calibrate it"
        if n_measured
        else " Nothing is measured yet: these are the prior's predictions for its own recipe"
    )
    if not informative or spearman is None or spearman_ci is None:
        return Verdict(
            "no_reliable_ranking",
            chosen,
            f"NO RELIABLE RANKING: no feature set of the prior {prior_name!r} predicts "
            "held-out families of its own table; the ranking falls back to model size and "
            "is not evidence. Measure candidates; do not pick by this ranking.",
        )
    scored = (
        f"the prior {prior_name!r} ranks held-out families of its table with Spearman "
        f"{_fmt(spearman, spearman_ci)} (95% family bootstrap)"
    )
    size = (
        f"; ranking by log(params) scores {size_spearman:+.2f} there"
        if size_spearman is not None
        else ""
    )
    if disagrees:
        return Verdict(
            "no_reliable_ranking",
            chosen,
            f"NO RELIABLE RANKING: {scored}, but your {n_measured} measured models disagree "
            f"with it (their scores follow its predictions with correlation {agreement:.2f}): "
            "your recipe or metric differs from the prior's; the intervals are widened "
            "accordingly. Measure more candidates before picking.",
        )
    ranking = (
        f" Under the calibrated intervals the untried candidates' ranking has an expected "
        f"Spearman of {expected:.2f} with their true scores (90% probability above "
        f"{expected_low:.2f})"
        if expected is not None and expected_low is not None
        else ""
    )
    if expected_low is not None and expected_low < RELIABLE_EXPECTED_LOW:
        return Verdict(
            "no_reliable_ranking",
            chosen,
            f"NO RELIABLE RANKING: {scored}{size}.{ranking}: the candidates are too close "
            f"for their intervals to order them reliably (needs {RELIABLE_EXPECTED_LOW}). "
            f"Measure the suggested candidates (--suggest).{measured}.",
        )
    user_better = (
        user_row is not None
        and user_row.get("pair_tau_minus_best_baseline_ci") is not None
        and user_row["pair_tau_minus_best_baseline_ci"][0] > 0.0
    )
    table_better = same_metric and minus_size_ci is not None and minus_size_ci[0] > 0.0
    if not table_better and not user_better:
        diff = (
            f" (difference {_fmt(minus_size, minus_size_ci)})"
            if minus_size is not None and minus_size_ci is not None
            else ""
        )
        if not same_metric:
            diff += " for its own metric; for yours nothing shows it better than size yet"
        return Verdict(
            "no_better_than_baseline",
            chosen,
            f"NO BETTER THAN SIZE: {scored}{size}{diff}: the prior is not reliably better "
            "than picking the largest candidate, and ranking by log(params) is as well "
            f"supported.{ranking}.{measured}.",
        )
    against = (
        f" It beats ranking by size by {_fmt(minus_size, minus_size_ci)}."
        if table_better and minus_size is not None and minus_size_ci is not None
        else f" Your measured models show it beats the best baseline ({level:.1%} interval)."
    )
    return Verdict(
        "reliable_ranking",
        chosen,
        f"RELIABLE RANKING: {scored}{size}.{against}{ranking}.{measured}.",
    )
