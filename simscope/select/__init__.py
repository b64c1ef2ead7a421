"""Select stage: a cross-validated model over similarity, public benchmarks and measured RM
results that ranks untried candidates and says how sure it is.

Modules: ``tables`` (reading inputs), ``features`` (the feature matrix), ``predictors``,
``cv`` (leave-one-out and its scores), ``uncertainty`` (intervals, P(best)), ``verdict``,
``core`` (the whole stage).
"""

from simscope.select.core import (
    SelectionResult,
    cli_select,
    format_result,
    select_models,
    write_selection,
)
from simscope.select.tables import (
    BUNDLED_BENCHMARKS,
    read_benchmarks,
    read_model_map,
    read_profile,
    read_rm_results,
    rename_models,
)

__all__ = [
    "BUNDLED_BENCHMARKS",
    "SelectionResult",
    "cli_select",
    "format_result",
    "read_benchmarks",
    "read_model_map",
    "read_profile",
    "read_rm_results",
    "rename_models",
    "select_models",
    "write_selection",
]
