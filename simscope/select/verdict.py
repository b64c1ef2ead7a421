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


def decide(table: dict[str, dict[str, Any]], n_measured: int, level: float) -> Verdict:
    """The verdict from the CV table (one row per predictor, see ``core``)."""
    verdict = _decide(table, n_measured, level)
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


def _decide(table: dict[str, dict[str, Any]], n_measured: int, level: float) -> Verdict:
    chosen = choose(table)
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
            f"NO RELIABLE RANKING: none of the {k - 1} predictors orders held-out pairs of "
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
