"""The CV summary: everything the select stage decided and why, as typed records.

``CVSummary`` is the contract between ``select`` (which writes ``cv_summary.json``) and
``report`` (which reads it): both go through this one type, and its JSON schema is
``CVSummary.json_schema()`` (pydantic derives it from the dataclasses, and checks a file
against it on load). A value that could not be computed is ``None`` (JSON ``null``), never
NaN. Bump ``SCHEMA_VERSION`` when a field changes meaning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import pydantic

from simscope.errors import SimscopeError

SCHEMA_VERSION: Final = 2
Status = Literal["no_reliable_ranking", "no_better_than_baseline", "reliable_ranking"]
Ranker = Literal["prior_calibrated", "size_calibrated", "cv_chosen"]


@dataclass(frozen=True)
class PredictorScore:
    """One predictor's cross-validation over the user's measured models."""

    description: str
    baseline: bool
    features: list[str]
    pair_tau: float
    pair_tau_ci: tuple[float, float]
    n_pairs: int
    spearman: float
    spearman_ci: tuple[float, float]
    spearman_raw: float
    mae: float
    mae_ci: tuple[float, float]
    mae_minus_constant: float
    mae_minus_constant_ci: tuple[float, float]
    top_k: dict[str, float] = field(default_factory=dict)
    """C@k by k (``"3"``, ``"5"``, ``"10"``) for each k below the number measured."""
    weights: dict[str, float] = field(default_factory=dict)
    hyperparameters: dict[str, float] = field(default_factory=dict)
    best_baseline: str | None = None
    pair_tau_minus_best_baseline: float | None = None
    pair_tau_minus_best_baseline_ci: tuple[float, float] | None = None
    chosen_feature: str | None = None
    """The single feature a one-feature fit used on all measured models (best_benchmark,
    log_params), with ``slope`` its sign: what such a baseline actually ranks by."""
    slope: float | None = None


@dataclass(frozen=True)
class HeldOut:
    """A measured model predicted by a fit that did not see its family."""

    model: str
    family: str
    predicted: float
    observed: float
    pi_low: float | None = None
    pi_high: float | None = None


@dataclass(frozen=True)
class FeatureReport:
    """Which features the select stage used, and every column or model it left out."""

    target_metric: str
    features: dict[str, str]
    """Feature name -> group (benchmarks, size, similarity)."""
    measured_models: int
    matched_measured_models: int
    unmatched_measured_models: dict[str, list[str]] = field(default_factory=dict)
    excluded_columns: dict[str, str] = field(default_factory=dict)
    """Benchmark-table columns that are not features, with the reason."""
    contamination_checks_not_used: list[str] = field(default_factory=list)
    dropped_features: dict[str, str] = field(default_factory=dict)
    imputed: dict[str, list[str]] = field(default_factory=dict)
    models_without_features: list[str] = field(default_factory=list)
    unknown_candidates: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class PriorCandidate:
    """One candidate prior model tried by grouped CV on the prior table."""

    features: list[str]
    source_metric: str
    rmse: float
    spearman: float


@dataclass(frozen=True)
class PriorSummary:
    """The prior: its source, how it was chosen, and how well it predicts held-out families."""

    source: str
    provenance: str
    metric: str
    source_metric: str
    same_metric: bool
    n_models: int
    n_families: int
    families: dict[str, list[str]]
    features: list[str]
    weights: dict[str, float]
    residual_sd: float
    informative: bool
    candidates: list[PriorCandidate]
    spearman: float | None
    spearman_ci: tuple[float, float] | None
    size_spearman: float | None
    size_spearman_ci: tuple[float, float] | None
    minus_size: float | None
    minus_size_ci: tuple[float, float] | None
    mae: float | None
    published: list[str] = field(default_factory=list)
    """Models in scope whose prior value is their published score."""
    reduced: dict[str, list[str]] = field(default_factory=dict)
    """Models predicted from fewer features (the ones they have), by feature set."""
    held_out: list[HeldOut] = field(default_factory=list)


@dataclass(frozen=True)
class StrengthRow:
    """Grouped-CV error of one calibration strength."""

    b_log_sd: float
    residual: float
    mse: float
    se: float


@dataclass(frozen=True)
class CalibrationSummary:
    """How the user's scores were mapped onto the prior (see ``select.calibrate``)."""

    prior: str
    """What is calibrated: a prior table's name, or ``log_params`` (size)."""
    same_metric: bool
    n_measured: int
    offset: float
    scale: float
    scale_ci: tuple[float, float]
    residual_strength: float
    b_log_sd: float
    residual_weights: dict[str, float]
    unexplained_sd: float
    """Posterior median SD of the user's scores that the prior does not explain."""
    agreement: float
    """Posterior median correlation between the prior's means and the user's scores."""
    agreement_low: float
    prior_agreement: float | None
    """The same correlation the prior reaches on its own table (its held-out Pearson)."""
    disagrees: bool
    strengths: list[StrengthRow] = field(default_factory=list)
    note: str = ""


@dataclass(frozen=True)
class Suggestion:
    """An untried candidate worth measuring next, and why."""

    model: str
    value: float
    """Expected rise of the picked model's true score once this one is measured."""
    regret_before: float
    regret_after: float
    p_best: float
    predicted: float
    pi_low: float | None
    pi_high: float | None
    cost: float | None
    reason: str


@dataclass(frozen=True)
class CostRow:
    """One model's cost, predicted quality and place on the Pareto front."""

    model: str
    cost: float | None
    quality: float
    measured: bool
    pareto: bool
    within_budget: bool | None


@dataclass(frozen=True)
class CostSummary:
    """The cost model, every model's cost, the Pareto front and the budget's pick."""

    source: Literal["model", "column"]
    unit: str
    description: str
    knobs: dict[str, float]
    rows: list[CostRow]
    budget: float | None = None
    best_within_budget: str | None = None
    p_best_within_budget: float | None = None
    note: str = ""


@dataclass(frozen=True)
class CVSummary:
    """The select stage's decision record (``cv_summary.json``)."""

    target_metric: str
    seed: int
    n_measured: int
    n_untried: int
    coverage_nominal: float
    ranker: Ranker
    chosen: str
    verdict_status: Status
    verdict: str
    verdict_ci_level: float
    n_boot_p_best: int
    interval_coverage: float | None
    interval_coverage_models: int
    interval_coverage_finite: int
    interval_note: str
    expected_spearman: float | None
    """Posterior mean of the Spearman between the predicted ranking of the untried models
    and their true scores (None with fewer than 3 untried or no posterior)."""
    expected_spearman_low: float | None
    """Its 10% quantile: the ranking is this good or better with 90% probability."""
    weights: dict[str, float]
    intercept: float
    hyperparameters: dict[str, float]
    weights_unit: str
    extrapolated: list[str]
    predictors: dict[str, PredictorScore]
    held_out: list[HeldOut]
    features: FeatureReport
    families: dict[str, list[str]]
    family_source: str
    prior: PriorSummary | None = None
    calibration: CalibrationSummary | None = None
    suggestions: list[Suggestion] = field(default_factory=list)
    cost: CostSummary | None = None
    notes: list[str] = field(default_factory=list)
    """What this run did that the user should know (models left out, assumptions)."""
    definitions: list[str] = field(default_factory=list)
    """What the scores mean."""
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        """The JSON text of ``cv_summary.json``."""
        data = _ADAPTER.dump_python(self, mode="json")
        # key order kept: predictors and weights are listed in a meaningful order
        return json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, where: str = "cv_summary.json") -> CVSummary:
        """Parse and check ``text``; a mismatch names the key, what was expected and found."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SimscopeError(
                f"{where}:{e.lineno}: invalid JSON ({e.msg}); rewrite the file or rerun select"
            ) from None
        return cls.from_data(data, where)

    @classmethod
    def from_data(cls, data: Any, where: str = "cv_summary") -> CVSummary:
        """Check parsed JSON against the schema."""
        if isinstance(data, dict) and data.get("schema_version") != SCHEMA_VERSION:
            raise SimscopeError(
                f"{where}: schema_version {data.get('schema_version')!r}; this simscope reads "
                f"version {SCHEMA_VERSION}: rerun `simscope select` (or `simscope run`) to "
                "rewrite it"
            )
        try:
            return _ADAPTER.validate_python(data)
        except pydantic.ValidationError as e:
            first = e.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise SimscopeError(
                f"{where}: field {key!r}: {first['msg'].lower()}, found "
                f"{first.get('input')!r}; rerun `simscope select` to rewrite the file"
            ) from None

    @staticmethod
    def json_schema() -> dict[str, Any]:
        """The JSON schema of ``cv_summary.json``."""
        return _ADAPTER.json_schema()

    def write(self, path: Path) -> None:
        """Write atomically to ``path``."""
        from simscope.storage import atomic_file

        with atomic_file(path) as tmp:
            tmp.write_text(self.to_json() + "\n", encoding="utf-8")


_ADAPTER: pydantic.TypeAdapter[CVSummary] = pydantic.TypeAdapter(CVSummary)
