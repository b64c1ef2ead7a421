"""The candidate predictors of the select stage and how each is fitted. Knows nothing of CV.

Every predictor sees only its training rows: missing values are filled with the training
mean, features are standardized with the training mean and SD, and hyperparameters (the
Elastic Net's penalty and L1 ratio, the single benchmark to use) are chosen on the training
rows alone, so that cross-validating a fit is nested cross-validation. The exception is the
``calibrated`` predictor (``select.calibrate``), whose prior strengths are chosen once on all
measured models by grouped CV and then held fixed inside cross-validation (as the Elastic
Net's penalty is for interval coverage and P(best)).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from simscope.select.calibrate import CalibrationPrior, Posterior, fit_calibration, prior_only
from simscope.select.enet import fit_enet, fit_enet_cv
from simscope.select.features import LOG_PARAMS, FeatureMatrix

Kind = Literal["constant", "best_single", "linear", "enet", "calibrated"]


@dataclass(frozen=True)
class PredictorSpec:
    """One candidate predictor: how it fits and which feature columns it may use."""

    name: str
    kind: Kind
    columns: tuple[int, ...]
    baseline: bool
    description: str
    calibration: CalibrationPrior | None = None
    """kind calibrated: the prior (strengths fixed); columns are (prior mean, prior
    variance, residual features...)."""
    z_spread: float = 1.0
    """kind calibrated: SD of the prior means over the models in scope."""


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
    posterior_: Posterior | None = None

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
    lp = tuple(c for c in size if features.names[c] == LOG_PARAMS)
    if lp:
        specs.append(PredictorSpec("log_params", "linear", lp, True, "linear fit on log(params)"))
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
    if spec.kind == "calibrated":
        return _fit_calibrated(spec, X, y)
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


def calibrated_inputs(
    spec: PredictorSpec,
    X: np.ndarray,
    fill: np.ndarray | None = None,
    center: np.ndarray | None = None,
    scale: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(z, v, phi standardized, fill, center, scale) of rows ``X`` for a calibrated spec;
    phi's fill, center and scale are computed from ``X`` unless given."""
    z_col, v_col, *phi_cols = spec.columns
    z, v = X[:, z_col], X[:, v_col]
    Z = X[:, phi_cols] if phi_cols else np.empty((X.shape[0], 0))
    if fill is None and X.shape[0] == 0:  # nothing measured: the residual model is unused
        fill, center, scale = (
            np.zeros(Z.shape[1]),
            np.zeros(Z.shape[1]),
            np.full(Z.shape[1], np.inf),
        )
    if fill is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fill = np.nanmean(Z, axis=0) if phi_cols else np.empty(0)
        fill = np.where(np.isnan(fill), 0.0, fill)
    Z = np.where(np.isnan(Z), fill, Z)
    if center is None or scale is None:
        center = Z.mean(axis=0)
        sd = Z.std(axis=0)
        scale = np.where(sd > 1e-12 * np.maximum(1.0, np.abs(center)), sd, np.inf)
    return z, v, (Z - center) / scale, fill, center, scale


def _fit_calibrated(spec: PredictorSpec, X: np.ndarray, y: np.ndarray) -> FittedPredictor:
    assert spec.calibration is not None
    z, v, phi, fill, center, scale = calibrated_inputs(spec, X)
    k = y.shape[0]
    z_center = float(np.mean(z)) if k else 0.0
    if k == 0:
        post = prior_only(z_center, spec.calibration.prior_sd, phi.shape[1])
    else:
        post = fit_calibration(
            y, z, v, phi, spec.calibration, center=z_center, z_spread=spec.z_spread
        )
    a, b, w = post.coefficients()
    z_col, _v_col, *phi_cols = spec.columns
    return FittedPredictor(
        spec,
        (z_col, *phi_cols),
        np.concatenate([[z_center], fill]),
        np.concatenate([[z_center], center]),
        # an infinite scale (a feature constant over the training rows) zeroes the feature
        np.concatenate([[1.0], scale]),
        np.concatenate([[b], np.where(np.isfinite(scale), w, 0.0)]),
        a,
        float(np.mean(y)) if k else z_center,
        {"b_log_sd": spec.calibration.b_log_sd, "residual_strength": spec.calibration.residual},
        post,
    )
