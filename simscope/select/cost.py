"""What a candidate costs, the cost/quality Pareto front, and the best pick within a budget.
Knows nothing of how quality is predicted.

The cost model (``CostConfig``; every knob is a ``[select.cost]`` key and a CLI option):

- fine-tuning the reward model: ``6 x params x train_tokens`` FLOPs (forward and backward
  pass of a dense transformer, Kaplan et al. 2020), where ``train_tokens`` is the size of
  the user's preference data in tokens times the epochs;
- serving it (optional): ``2 x params x serve_tokens`` FLOPs (one forward pass per token
  scored);
- FLOPs become GPU-hours at ``gpu_flops x gpu_utilization`` FLOP/s, and dollars at
  ``gpu_hour_usd`` per GPU-hour.

Defaults: 30M training tokens (a HelpSteer2-sized set of ~20k pairs of ~750 tokens, two
epochs), an H100's dense BF16 peak (989 TFLOP/s) at 40% utilisation, $2.50 per GPU-hour, no
serving. A ``cost`` column (candidates file or ``--costs``) replaces the model for the models
it names, in whatever unit the user keeps; then the unit is "as given" and models without a
cost are left off the front.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Final, Literal

import numpy as np

from simscope.errors import SimscopeError
from simscope.select.summary import CostRow, CostSummary


@dataclass(frozen=True)
class CostConfig:
    """Knobs of the cost model (see the module doc)."""

    train_tokens: float = 3e7
    serve_tokens: float = 0.0
    gpu_flops: float = 9.89e14
    gpu_utilization: float = 0.4
    gpu_hour_usd: float = 2.5

    def __post_init__(self) -> None:
        for name in ("train_tokens", "gpu_flops", "gpu_hour_usd"):
            if not getattr(self, name) > 0:
                raise SimscopeError(
                    f"cost.{name}: expected a number > 0, found {getattr(self, name)}"
                )
        if not self.serve_tokens >= 0:
            raise SimscopeError(
                f"cost.serve_tokens: expected a number >= 0, found {self.serve_tokens}"
            )
        if not 0 < self.gpu_utilization <= 1:
            raise SimscopeError(
                f"cost.gpu_utilization: expected in (0, 1], found {self.gpu_utilization}"
            )

    def cost_usd(self, params_b: float) -> float:
        """Dollars to fine-tune (and serve) a model of ``params_b`` billion parameters."""
        n = params_b * 1e9
        flops = 6.0 * n * self.train_tokens + 2.0 * n * self.serve_tokens
        hours = flops / (self.gpu_flops * self.gpu_utilization) / 3600.0
        return hours * self.gpu_hour_usd


MODEL_DESCRIPTION: Final = (
    "6 x params x train_tokens FLOPs to fine-tune (+ 2 x params x serve_tokens to serve), "
    "at gpu_flops x gpu_utilization FLOP/s, gpu_hour_usd per GPU-hour"
)


def pareto_front(quality: Sequence[float], cost: Sequence[float | None]) -> list[bool]:
    """Whether each model is on the front: no other model is at least as good for at most
    the cost, and strictly better in one. Models without a cost are never on it."""
    out = []
    for i, (q, c) in enumerate(zip(quality, cost, strict=True)):
        if c is None:
            out.append(False)
            continue
        dominated = any(
            j != i and c2 is not None and q2 >= q and c2 <= c and (q2 > q or c2 < c)
            for j, (q2, c2) in enumerate(zip(quality, cost, strict=True))
        )
        out.append(not dominated)
    return out


def cost_summary(
    models: Sequence[str],
    quality: np.ndarray,
    measured: np.ndarray,
    *,
    params_b: Mapping[str, float],
    given: Mapping[str, float],
    config: CostConfig,
    budget: float | None,
    draws: np.ndarray | None,
) -> CostSummary:
    """Costs, the front and the budget's pick. ``quality`` is the observed score of a
    measured model and the predicted one of an untried; ``draws`` (S, m) are joint draws of
    every model's score (measured ones fixed) for P(best within budget)."""
    if budget is not None and not budget > 0:
        raise SimscopeError(f"--budget: expected a number > 0, found {budget}")
    source: Literal["model", "column"] = "column" if given else "model"
    costs: list[float | None] = []
    for m in models:
        if given:
            costs.append(given.get(m))
        elif m in params_b and params_b[m] > 0:
            costs.append(config.cost_usd(params_b[m]))
        else:
            costs.append(None)
    front = pareto_front(quality.tolist(), costs)
    within = [None if c is None or budget is None else c <= budget for c in costs]
    rows = [
        CostRow(m, c, float(q), bool(meas), f, w)
        for m, c, q, meas, f, w in zip(models, costs, quality, measured, front, within, strict=True)
    ]
    missing = [m for m, c in zip(models, costs, strict=True) if c is None]
    note = (
        f"no cost known for {len(missing)} model(s) ({', '.join(missing[:5])}"
        f"{', ...' if len(missing) > 5 else ''}): "
        + ("not in the cost column" if given else "parameter count unknown")
        if missing
        else ""
    )
    best = None
    p_best = None
    if budget is not None:
        ok = [i for i, w in enumerate(within) if w]
        if ok:
            best_i = max(ok, key=lambda i: (quality[i], -i))
            best = models[best_i]
            if draws is not None:
                sub = draws[:, ok]
                wins = np.zeros(len(ok))
                top = sub == sub.max(axis=1, keepdims=True)
                wins += (top / top.sum(axis=1, keepdims=True)).sum(axis=0)
                p_best = float(wins[ok.index(best_i)] / draws.shape[0])
        else:
            note = (note + "; " if note else "") + f"no model costs at most {budget:g}"
    return CostSummary(
        source,
        "as given" if given else "USD",
        "the user's cost column" if given else MODEL_DESCRIPTION,
        {} if given else {k: float(v) for k, v in asdict(config).items()},
        rows,
        budget,
        best,
        p_best,
        note,
    )
