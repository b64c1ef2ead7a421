"""The transfer probe: how well a reward head on the *frozen* base model separates the team's
chosen from rejected responses, before anything is fine-tuned.

Each pair is encoded twice, (prompt, chosen) and (prompt, rejected), exactly as the likelihood
probe joins them (the end of the prompt kept, the response cut to ``max_response_tokens``).
A text's features are the final hidden states of the base model (the backbone under the LM
head, so no vocabulary-sized logits are computed): the last token's state and the mean over
the response's tokens, side by side. A pair's features are the difference chosen - rejected.

Two numbers per model, both Profile rows under the slice ``chosen`` (they are pair-level):

- ``transfer.bt_accuracy``: a Bradley-Terry head, i.e. L2-regularised logistic regression
  without intercept on the differences (each pair also as its mirror, so the head is
  antisymmetric), with its strength chosen by an inner grouped CV; accuracy is out of fold over
  ``n_folds`` folds of pairs, and its interval a bootstrap over pairs (the fold heads held
  fixed).
- ``transfer.logme``: LogME (You et al., ICML 2021), the log marginal evidence per sample of
  Bayesian linear regression of the label (+1 for chosen - rejected, -1 for its mirror) on the
  same features, with the prior and noise precisions at their evidence maximum (MacKay's
  fixed point). Higher = the features make the preference more linearly predictable. The
  interval is a bootstrap over pairs.

Forward passes only, batched by length; the caller caches the rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from tqdm import tqdm

from simscope.errors import SimscopeError
from simscope.probe.model import LoadedModel
from simscope.records import PREFERENCE_SCHEMA, PROFILE_SCHEMA, check_frame
from simscope.stats import (
    DEFAULT_N_BOOT,
    ScopeEstimator,
    Statistic,
    bootstrapped,
    mean_statistic,
    scope_rows,
    single_threaded_blas,
    topic_scopes,
)

ACCURACY: str = "transfer.bt_accuracy"
LOGME: str = "transfer.logme"


@dataclass(frozen=True)
class TransferConfig:
    """How pairs are encoded and the head is fit; every field changes the numbers."""

    max_tokens: int | None = None
    """Tokens per (prompt, response) text; None = the model's context, capped at 512."""
    max_response_tokens: int = 256
    batch_size: int = 16
    n_folds: int = 5
    strengths: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    """Inverse L2 strengths (scikit-learn's ``C``) tried by the inner CV, on features scaled
    to unit standard deviation."""

    def __post_init__(self) -> None:
        for key in ("max_response_tokens", "batch_size"):
            if getattr(self, key) < 1:
                raise SimscopeError(f"transfer.{key}: expected >= 1, found {getattr(self, key)}")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise SimscopeError(f"transfer.max_tokens: expected >= 2, found {self.max_tokens}")
        if self.n_folds < 2:
            raise SimscopeError(f"transfer.n_folds: expected >= 2, found {self.n_folds}")
        if not self.strengths or any(not c > 0 for c in self.strengths):
            raise SimscopeError(
                f"transfer.strengths: expected positive numbers, found {list(self.strengths)}"
            )


@dataclass
class TransferScores:
    """The Profile rows of one model and the per-pair evidence behind them."""

    profile: pl.DataFrame
    features: np.ndarray
    """(pairs, 2 x hidden) chosen - rejected feature differences."""
    correct: np.ndarray
    """Per pair: 1 when the out-of-fold head ranks chosen above rejected, 0 below, 0.5 tied."""


# ---- features ------------------------------------------------------------------------------


def pair_sequences(
    lm: LoadedModel,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    limit: int,
    max_response_tokens: int,
) -> list[tuple[list[int], int]]:
    """Token ids of each (prompt, response) and how many of them are the response's: the
    start token, the end of the prompt, then the response cut to ``max_response_tokens``."""
    from simscope.probe.likelihood import _join as join_response
    from simscope.probe.likelihood import _tokenize as tokenize

    start = [lm.start_token_id]
    prompt_ids = tokenize(lm, prompts)
    joined = [join_response(p, r) for p, r in zip(prompts, responses, strict=True)]
    out = []
    for p_ids, r_ids in zip(prompt_ids, tokenize(lm, joined), strict=True):
        target = r_ids[: min(max_response_tokens, limit - 1)]
        room = limit - 1 - len(target)
        out.append((start + (p_ids[-room:] if room > 0 else []) + target, len(target)))
    return out


def encode_pairs(
    lm: LoadedModel,
    prompts: Sequence[str],
    chosen: Sequence[str],
    rejected: Sequence[str],
    config: TransferConfig = TransferConfig(),
    *,
    progress: bool = True,
) -> np.ndarray:
    """(pairs, 2 x hidden) float64: features of (prompt, chosen) minus those of (prompt,
    rejected); a text's features are [last token's state, mean over the response's states]."""
    limit = config.max_tokens if config.max_tokens is not None else min(lm.max_tokens, 512)
    seqs = [
        s
        for responses in (chosen, rejected)
        for s in pair_sequences(
            lm, prompts, responses, limit=limit, max_response_tokens=config.max_response_tokens
        )
    ]
    feats = _hidden_features(lm, seqs, batch_size=config.batch_size, progress=progress)
    n = len(prompts)
    return feats[:n] - feats[n:]


def _hidden_features(
    lm: LoadedModel, seqs: Sequence[tuple[list[int], int]], *, batch_size: int, progress: bool
) -> np.ndarray:
    import torch

    backbone: Any = lm.model.base_model
    hidden = int(lm.model.config.hidden_size if hasattr(lm.model.config, "hidden_size") else 0)
    out: np.ndarray | None = np.zeros((len(seqs), 2 * hidden)) if hidden else None
    # Longest first: batches of similar lengths waste little on padding.
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i][0]))
    pad = lm.start_token_id
    with (
        torch.inference_mode(),
        tqdm(total=len(seqs), desc=f"transfer {lm.name}", unit="text", disable=not progress) as bar,
    ):
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            width = max(len(seqs[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, : len(seqs[i][0])] = torch.tensor(seqs[i][0], dtype=torch.long)
                mask[row, : len(seqs[i][0])] = 1
            states = backbone(
                input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)
            ).last_hidden_state.float()
            for row, i in enumerate(idx):
                length, n_response = len(seqs[i][0]), seqs[i][1]
                last = states[row, length - 1]
                span = states[row, length - max(n_response, 1) : length]
                feat = torch.cat([last, span.mean(0)]).double().cpu().numpy()
                if out is None:
                    out = np.zeros((len(seqs), feat.size))
                out[i] = feat
            bar.update(len(idx))
    return out if out is not None else np.zeros((0, 0))


# ---- the Bradley-Terry head ----------------------------------------------------------------


def bt_out_of_fold(
    diffs: np.ndarray, config: TransferConfig = TransferConfig(), *, seed: int = 0
) -> np.ndarray:
    """Per pair, whether a head fit on the other folds ranks chosen first (1), last (0) or
    ties (0.5). Each fold's L2 strength is chosen by a grouped inner CV on its training pairs."""
    n = diffs.shape[0]
    if n < 2 * config.n_folds:
        raise SimscopeError(
            f"transfer: {n} pairs are too few for {config.n_folds} folds; expected at least "
            f"{2 * config.n_folds} (lower transfer.n_folds or give more pairs)"
        )
    folds = _folds(n, config.n_folds, seed)
    margins = np.zeros(n)
    # Many small fits: one BLAS thread each (a busy machine's spinning threads cost ~10x).
    with single_threaded_blas():
        for k in range(config.n_folds):
            test = folds == k
            train = ~test
            strength = _inner_strength(diffs[train], folds[train], config)
            w = _fit_head(diffs[train], strength)
            margins[test] = diffs[test] @ w
    return np.where(margins > 0, 1.0, np.where(margins < 0, 0.0, 0.5))


def _folds(n: int, k: int, seed: int) -> np.ndarray:
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    return fold


def _fit_head(diffs: np.ndarray, strength: float) -> np.ndarray:
    """Weights of an L2 logistic head without intercept on the pairs and their mirrors, in
    the unscaled feature space."""
    from sklearn.linear_model import LogisticRegression

    scale = _scale(diffs)
    x = np.concatenate([diffs, -diffs]) / scale
    y = np.concatenate([np.ones(len(diffs)), np.zeros(len(diffs))])
    head = LogisticRegression(C=strength, fit_intercept=False, max_iter=2000)
    head.fit(x, y)
    return np.asarray(head.coef_[0]) / scale


def _scale(diffs: np.ndarray) -> np.ndarray:
    # Scale only, no centring: a mirrored pair must get the mirrored margin.
    scale = np.sqrt((diffs**2).mean(axis=0))
    return np.where(scale > 1e-12, scale, 1.0)


def _inner_strength(diffs: np.ndarray, outer: np.ndarray, config: TransferConfig) -> float:
    """The strength with the best inner-CV accuracy (inner folds: the outer folds left in
    the training set, so no pair's mirror is ever on the other side of a split)."""
    best, best_acc = config.strengths[0], -1.0
    groups = np.unique(outer)
    for strength in config.strengths:
        hits = []
        for g in groups:
            held = outer == g
            w = _fit_head(diffs[~held], strength)
            m = diffs[held] @ w
            hits.append(np.where(m > 0, 1.0, np.where(m < 0, 0.0, 0.5)))
        acc = float(np.concatenate(hits).mean())
        if acc > best_acc + 1e-12:
            best, best_acc = strength, acc
    return best


# ---- LogME ---------------------------------------------------------------------------------


_PRECISION = (1e-8, 1e8)


def logme(features: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> float:
    """LogME: max over (alpha, beta) of log p(target | features) / n for Bayesian linear
    regression ``target = features @ m + noise``, ``m ~ N(0, I/alpha)``, noise ``N(0, 1/beta)``.

    ``weights`` (how many times each row is drawn) make it the evidence of the sample with
    rows repeated, so a bootstrap replicate needs no copies.
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    return _logme_from_moments((f * w[:, None]).T @ f, f.T @ (w * y), float(w @ (y * y)), w.sum())


def _logme_from_moments(gram: np.ndarray, fy: np.ndarray, yy: float, n: float) -> float:
    """LogME from the weighted moments ``F^T W F``, ``F^T W y``, ``y^T W y`` and ``n``."""
    d = gram.shape[0]
    if n <= 1:
        return float("nan")
    lam, vecs = np.linalg.eigh(gram)
    lam = np.clip(lam, 0.0, None)
    c = vecs.T @ fy
    alpha, beta = 1.0, 1.0

    def posterior(alpha: float, beta: float) -> tuple[float, float]:
        """|m|^2 and |y - F m|^2 (weighted) at the posterior mean m."""
        m = beta * c / (alpha + beta * lam)  # in the eigenbasis
        return float(m @ m), max(yy - 2 * float(m @ c) + float(lam @ (m * m)), 1e-300)

    for _ in range(100):
        m_sq, err = posterior(alpha, beta)
        gamma = float(np.sum(beta * lam / (alpha + beta * lam)))
        # With fewer samples than features the evidence can grow toward noise-free
        # interpolation (beta -> inf); the precisions are held to a wide finite box.
        new_alpha = min(max(gamma / max(m_sq, 1e-300), _PRECISION[0]), _PRECISION[1])
        new_beta = min(max((n - gamma) / err, _PRECISION[0]), _PRECISION[1])
        converged = abs(new_alpha - alpha) <= 1e-6 * alpha and abs(new_beta - beta) <= 1e-6 * beta
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    m_sq, err = posterior(alpha, beta)
    evidence = (
        d / 2 * math.log(alpha)
        + n / 2 * math.log(beta)
        - beta / 2 * err
        - alpha / 2 * m_sq
        - float(np.sum(np.log(alpha + beta * lam))) / 2
        - n / 2 * math.log(2 * math.pi)
    )
    return evidence / n


def logme_statistic(diffs: np.ndarray, usable: np.ndarray | None = None) -> Statistic:
    """LogME of the pairs and their mirrors (label +1 / -1), as a statistic of pair weights;
    pairs not ``usable`` (identical responses) are left out. A mirror doubles every moment,
    so they are computed from the pairs alone."""
    keep = np.ones(len(diffs)) if usable is None else usable.astype(np.float64)

    def stat(w: np.ndarray) -> float:
        wk = w * keep
        return _logme_from_moments(
            2 * (diffs * wk[:, None]).T @ diffs, 2 * diffs.T @ wk, 2 * wk.sum(), 2 * wk.sum()
        )

    return stat


# ---- Profile rows --------------------------------------------------------------------------


def transfer_estimators(
    diffs: np.ndarray,
    correct: np.ndarray,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> dict[str, ScopeEstimator]:
    """ScopeEstimators of the two transfer metrics (bootstrap over pairs)."""
    return {
        ACCURACY: bootstrapped(
            mean_statistic(correct), n_boot=n_boot, seed=seed, bounds=(0.0, 1.0)
        ),
        LOGME: bootstrapped(logme_statistic(diffs, ~np.isnan(correct)), n_boot=n_boot, seed=seed),
    }


def score_transfer(
    lm: LoadedModel,
    prefs: pl.DataFrame,
    config: TransferConfig = TransferConfig(),
    *,
    topic_labels: np.ndarray | None = None,
    topic_names: Sequence[str] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    progress: bool = True,
) -> TransferScores:
    """The transfer probe of ``lm`` on ``prefs``: Profile rows per scope (whole slice and each
    topic), under the slice ``chosen``."""
    prefs = check_frame(prefs, PREFERENCE_SCHEMA, "PreferenceSet")
    diffs = encode_pairs(
        lm,
        prefs.get_column("prompt").to_list(),
        prefs.get_column("chosen").to_list(),
        prefs.get_column("rejected").to_list(),
        config,
        progress=progress,
    )
    correct = bt_out_of_fold(diffs, config, seed=seed)
    # Identical responses carry no preference: left out of both metrics.
    same = ~np.any(diffs != 0, axis=1)
    correct = np.where(same, np.nan, correct)
    scopes = topic_scopes(prefs.height, topic_labels, topic_names)
    estimators = transfer_estimators(diffs, correct, n_boot=n_boot, seed=seed)
    rows = scope_rows(lm.name, "chosen", estimators, scopes)
    profile = pl.DataFrame(rows, schema=PROFILE_SCHEMA).sort(
        ["model", "slice", "metric", "topic"], nulls_last=False
    )
    return TransferScores(profile, diffs, correct)
