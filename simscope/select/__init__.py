"""Select stage: rank candidate base models for a reward model, from published results (a
prior), public benchmarks, similarity and the RM results already measured, and say how sure
that ranking is.

Modules: ``tables`` (reading inputs), ``published`` (bundled prior tables), ``families``,
``features`` (the feature matrix), ``prior`` (the published-results model), ``calibrate``
(the prior mapped to the user's recipe), ``predictors``, ``cv`` (cross-validation and its
scores), ``uncertainty`` (jackknife+, P(best)), ``verdict``, ``suggest`` (value of
information), ``cost`` (cost model, Pareto front, budget), ``summary`` (the typed CV
summary), ``core`` (the whole stage), ``command`` (``simscope select`` as a library call).
"""

from simscope.select.command import SelectOutput, SelectRequest, format_result, run_select
from simscope.select.core import SelectionResult, select_models, write_selection
from simscope.select.cost import CostConfig
from simscope.select.published import BUNDLED_PRIORS, PriorTable, read_prior
from simscope.select.summary import CVSummary
from simscope.select.tables import (
    BUNDLED_BENCHMARKS,
    read_benchmarks,
    read_candidates,
    read_model_map,
    read_profile,
    read_rm_results,
    rename_models,
)

__all__ = [
    "BUNDLED_BENCHMARKS",
    "BUNDLED_PRIORS",
    "CVSummary",
    "CostConfig",
    "PriorTable",
    "SelectOutput",
    "SelectRequest",
    "SelectionResult",
    "format_result",
    "read_benchmarks",
    "read_candidates",
    "read_model_map",
    "read_prior",
    "read_profile",
    "read_rm_results",
    "rename_models",
    "run_select",
    "select_models",
    "write_selection",
]
