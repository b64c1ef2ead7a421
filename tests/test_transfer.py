"""The transfer probe: LogME against its definition, the Bradley-Terry head on known answers,
and the probe end to end on a tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

from simscope.errors import SimscopeError
from simscope.probe.model import load_model
from simscope.probe.tiny import TinyLMConfig, train_tiny_lm
from simscope.probe.transfer import (
    ACCURACY,
    LOGME,
    TransferConfig,
    bt_out_of_fold,
    logme,
    logme_statistic,
    score_transfer,
)
from simscope.records import PREFERENCE_SCHEMA


def _direct_evidence(f: np.ndarray, y: np.ndarray, log_alpha: float, log_beta: float) -> float:
    """log N(y; 0, f f^T / alpha + I / beta) / n: the evidence straight from its definition."""
    cov = f @ f.T / math.exp(log_alpha) + np.eye(len(y)) / math.exp(log_beta)
    return float(multivariate_normal(mean=np.zeros(len(y)), cov=cov).logpdf(y)) / len(y)


# Many more samples than features, and nearly as many: the evidence has an interior maximum.
# (With fewer samples than features it can grow toward noise-free interpolation; logme then
# stops at the edge of its box, see its code.)
@pytest.mark.parametrize(("n", "d"), [(40, 5), (30, 20)])
def test_logme_is_the_maximum_of_the_evidence_by_its_definition(n: int, d: int) -> None:
    rng = np.random.default_rng(0)
    f = rng.normal(size=(n, d))
    y = f @ rng.normal(size=d) * 0.5 + rng.normal(size=n)
    best = minimize(
        lambda p: -_direct_evidence(f, y, p[0], p[1]),
        x0=[0.0, 0.0],
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000},
    )
    # MacKay's fixed point and a direct numerical maximum agree to optimiser precision.
    assert logme(f, y) == pytest.approx(-best.fun, abs=1e-6)


def test_logme_weights_are_repeated_rows_and_informative_features_score_higher() -> None:
    rng = np.random.default_rng(1)
    f = rng.normal(size=(30, 4))
    y = np.sign(f[:, 0] + 0.3 * rng.normal(size=30))
    w = rng.integers(0, 3, size=30).astype(float)
    repeated = np.repeat(np.arange(30), w.astype(int))
    assert logme(f, y, w) == pytest.approx(logme(f[repeated], y[repeated]), abs=1e-9)
    noise = rng.normal(size=(30, 4))
    assert logme(f, y) > logme(noise, y) + 0.1
    # the pairwise statistic is LogME of the pairs and their mirrors
    mirrored = np.concatenate([f, -f]), np.concatenate([np.ones(30), -np.ones(30)])
    assert logme_statistic(f)(w) == pytest.approx(logme(*mirrored, np.concatenate([w, w])))


def test_the_bradley_terry_head_separates_a_learnable_preference_and_not_noise() -> None:
    rng = np.random.default_rng(2)
    n, d = 200, 10
    direction = rng.normal(size=d)
    x = rng.normal(size=(n, d))
    # orient every pair so that chosen - rejected has a positive projection on `direction`
    learnable = x * np.sign(x @ direction)[:, None]
    assert bt_out_of_fold(learnable, seed=0).mean() > 0.9
    chance = bt_out_of_fold(x, seed=0).mean()  # no direction: a fair coin, 200 pairs
    assert abs(chance - 0.5) < 0.12  # 3.4 standard errors of a fair coin over 200 pairs
    # the same seed gives the same folds and heads
    assert np.array_equal(bt_out_of_fold(learnable, seed=0), bt_out_of_fold(learnable, seed=0))


def test_too_few_pairs_for_the_folds_is_a_user_error() -> None:
    with pytest.raises(SimscopeError) as refused:
        bt_out_of_fold(np.ones((6, 2)), TransferConfig(n_folds=5))
    assert str(refused.value) == (
        "transfer: 6 pairs are too few for 5 folds; expected at least 10 (lower "
        "transfer.n_folds or give more pairs)"
    )
    with pytest.raises(SimscopeError, match=r"transfer\.n_folds: expected >= 2, found 1"):
        TransferConfig(n_folds=1)


@pytest.fixture(scope="module")
def dialogue_model(
    tmp_path_factory: pytest.TempPathFactory, hh_records: list[dict[str, str]]
) -> Path:
    texts = [r["chosen"] for r in hh_records[1000:2000]]
    return train_tiny_lm(
        texts, tmp_path_factory.mktemp("lm") / "dialogue", seed=0, config=TinyLMConfig(steps=60)
    )


def _pairs(hh_records: list[dict[str, str]], n: int, corrupt: str) -> pl.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for i, r in enumerate(hh_records[:n]):
        cut = r["chosen"].rfind("\n\nAssistant:") + len("\n\nAssistant:")
        reply = r["chosen"][cut:].strip() or "Okay."
        words = reply.split()
        if corrupt == "shuffle":
            bad = " ".join(rng.permutation(words).tolist()) if len(words) > 1 else reply + " no"
        else:  # the same reply: no preference at all
            bad = reply
        rows.append(
            {
                "pair_id": str(i),
                "prompt": r["chosen"][:cut],
                "chosen": reply,
                "rejected": bad,
                "source": f"hh:{i + 1}",
            }
        )
    return pl.DataFrame(rows, schema=PREFERENCE_SCHEMA)


def test_the_probe_on_a_tiny_model_gives_rows_with_intervals(
    dialogue_model: Path, hh_records: list[dict[str, str]]
) -> None:
    lm = load_model(dialogue_model, device="cpu", name="dialogue")
    prefs = _pairs(hh_records, 120, "shuffle")
    cfg = TransferConfig(max_tokens=96, n_folds=4)
    first = score_transfer(lm, prefs, cfg, n_boot=50, seed=0, progress=False)
    rows = {r["metric"]: r for r in first.profile.iter_rows(named=True)}
    assert set(rows) == {ACCURACY, LOGME}
    acc = rows[ACCURACY]
    assert acc["slice"] == "chosen" and acc["topic"] is None
    # word order is learnable from a dialogue model's states: well above a coin
    assert acc["ci_low"] <= acc["value"] <= acc["ci_high"] and acc["value"] > 0.6
    assert first.features.shape == (120, 2 * lm.model.config.hidden_size)
    again = score_transfer(lm, prefs, cfg, n_boot=50, seed=0, progress=False)
    assert first.profile.equals(again.profile)
    # identical responses carry no preference: those pairs are left out, not counted as ties
    same = score_transfer(lm, _pairs(hh_records, 40, "same"), cfg, n_boot=10, progress=False)
    assert np.isnan(same.correct).all()
