"""The candidate predictors of the select stage and how each is fitted. Knows nothing of CV.

Every predictor sees only its training rows: missing values are filled with the training
mean, features are standardized with the training mean and SD, and hyperparameters (the
Elastic Net's penalty and L1 ratio, the single benchmark to use) are chosen on the training
rows alone, so that cross-validating a fit is nested cross-validation.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from simscope.select.enet import fit_enet, fit_enet_cv
from simscope.select.features import FeatureMatrix

Kind = Literal["constant", "best_single", "linear", "enet"]


@dataclass(frozen=True)
class PredictorSpec:
    """One candidate predictor: how it fits and which feature columns it may use."""

    name: str
    kind: Kind
    columns: tuple[int, ...]
    baseline: bool
    description: str


@dataclass(frozen=True)
class FittedPredictor:
    """A fitted predictor: ``intercept_ + (impute(X) - center_) / scale_ @ coef_``."""

    spec: PredictorSpec
    columns_: tuple[int, ...]
    fill_: np.ndarray
    center_: np.ndarray
    scale_: np.ndarray
    coef_: np.ndarray
    intercept_: float
    train_mean_: float
    params_: dict[str, float] = field(default_factory=dict)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions for the rows of the full feature matrix ``X``."""
        if not self.columns_:
            return np.full(X.shape[0], self.intercept_)
        Z = X[:, self.columns_]
        Z = np.where(np.isnan(Z), self.fill_, Z)
        return self.intercept_ + ((Z - self.center_) / self.scale_) @ self.coef_

    def weights(self, names: tuple[str, ...]) -> dict[str, float]:
        """Non-zero coefficients per feature, in target units per training SD of the feature."""
        return {
            names[c]: float(w) for c, w in zip(self.columns_, self.coef_, strict=True) if w != 0.0
        }


def predictor_specs(features: FeatureMatrix) -> list[PredictorSpec]:
    """The predictors that ``features`` allows, baselines first."""
    bench = features.columns("benchmarks")
    size = features.columns("size")
    sim = features.columns("similarity")
    specs = [
        PredictorSpec("constant", "constant", (), True, "mean of the measured models"),
    ]
    if bench:
        specs.append(
            PredictorSpec(
                "best_benchmark",
                "best_single",
                bench,
                True,
                "linear fit on the one public benchmark most correlated with the target "
                "(chosen on the training models)",
            )
        )
    if size:
        specs.append(PredictorSpec("log_params", "linear", size, True, "linear fit on log(params)"))
    if bench:
        specs.append(
            PredictorSpec(
                "benchmarks_enet",
                "enet",
                bench + size,
                False,
                "Elastic Net over public benchmark scores and log(params) (the published approach)",
            )
        )
    if sim:
        specs.append(
            PredictorSpec(
                "similarity_enet", "enet", sim, False, "Elastic Net over similarity features"
            )
        )
    if sim and (bench or size):
        specs.append(
            PredictorSpec(
                "combined_enet",
                "enet",
                bench + size + sim,
                False,
                "Elastic Net over benchmarks, log(params) and similarity features",
            )
        )
    return specs


def fit_predictor(
    spec: PredictorSpec,
    X: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    penalty: dict[str, float] | None = None,
) -> FittedPredictor:
    """Fit ``spec`` on the rows ``X`` (full feature matrix columns) with targets ``y``.

    An Elastic Net tunes its penalty by inner CV unless ``penalty`` (``alpha``,
    ``l1_ratio``) fixes it.
    """
    train_mean = float(np.mean(y))
    cols = spec.columns
    Z = X[:, cols] if cols else np.empty((X.shape[0], 0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN training columns
        fill = np.nanmean(Z, axis=0) if cols else np.empty(0)
    fill = np.where(np.isnan(fill), 0.0, fill)
    Z = np.where(np.isnan(Z), fill, Z)
    center = Z.mean(axis=0)
    sd = Z.std(axis=0)
    usable = sd > 1e-12 * np.maximum(1.0, np.abs(center))
    scale = np.where(usable, sd, 1.0)
    S = (Z - center) / scale
    coef = np.zeros(len(cols))
    intercept = train_mean
    params: dict[str, float] = {}
    if spec.kind in ("best_single", "linear") and usable.any():
        yc = y - train_mean
        if spec.kind == "best_single":
            corr = np.where(usable, np.abs(S.T @ yc), -1.0)
            j = int(np.argmax(corr))  # ties: the first column, a stable choice
        else:
            j = int(np.flatnonzero(usable)[0])
        coef[j] = float(S[:, j] @ yc) / float(S[:, j] @ S[:, j])
    elif spec.kind == "enet" and usable.any() and len(y) >= 2:
        if penalty is None:
            fit = fit_enet_cv(S[:, usable], y, seed=seed)
        else:
            fit = fit_enet(S[:, usable], y, alpha=penalty["alpha"], l1_ratio=penalty["l1_ratio"])
        coef[usable] = fit.coef
        intercept = fit.intercept
        params = {"alpha": fit.alpha, "l1_ratio": fit.l1_ratio}
    return FittedPredictor(spec, cols, fill, center, scale, coef, intercept, train_mean, params)
