"""The likelihood probe: how probable a model finds the team's texts, and reference corpora.

Every text is scored conditioned on the model's start token (BOS, or EOS when there is no
BOS), so its first token gets a probability too; texts longer than the model's context (or
``max_tokens``) are cut to their first tokens and their bytes counted over the part scored.
Per text this gives:

- the mean token log-probability (nats) over the first ``first_k_tokens`` tokens, the signal
  used to estimate pretraining distributions from base-model likelihoods;
- bits per byte over the scored part: total negative log2-probability / UTF-8 bytes, which
  is comparable across tokenizers.

Per preference pair, the zero-shot preference signal compares the length-normalized
log-probability of the chosen and the rejected response given the prompt.

Across named reference corpora each model gets a *presence distribution*, a softmax over the
corpora of ``-bits_per_byte / presence_temperature_bpb``: where the model is relatively most
at home, whatever its overall strength (a constant shift of all its bits per byte cancels).
Models are compared by the Jensen-Shannon distance between their presence distributions.

How it is computed (the numbers do not depend on it beyond float rounding, ~1e-6 relative):
texts are scored in length buckets (sorted longest first, at most ``batch_size`` texts and
``MAX_BATCH_TOKENS`` padded positions per forward pass, results put back in input order); the
model's backbone runs without a KV cache, and its output layer is applied only to the
positions whose next token is scored, ``HEAD_CHUNK_FLOATS // vocabulary`` positions at a time,
each chunk reduced at once to the target's logit minus the logsumexp, in float32. So no
batch x length x vocabulary tensor is ever held, and context tokens (a preference pair's
prompt) cost no output layer. A model whose logits are not its head over its backbone (one
that scales or caps them after the head) is found by a one-off comparison on a short input
and scored through its own forward pass instead. The same code runs on CUDA.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from tqdm import tqdm

from simscope.errors import SimscopeError
from simscope.probe.model import LoadedModel
from simscope.records import PREFERENCE_SCHEMA, PROFILE_SCHEMA, SLICES, check_frame
from simscope.stats import (
    DEFAULT_N_BOOT,
    ScopeEstimator,
    bootstrapped,
    mean_statistic,
    scope_rows,
    topic_scopes,
)

logger = logging.getLogger(__name__)

LN2 = math.log(2.0)


@dataclass(frozen=True)
class LikelihoodConfig:
    """How texts are scored; every field changes the numbers."""

    first_k_tokens: int = 32
    max_tokens: int | None = None
    """Tokens scored per text (context included for the preference signal); None = the
    model's context length, capped at 1024."""
    max_response_tokens: int = 256
    batch_size: int = 16
    presence_temperature_bpb: float = 0.1

    def __post_init__(self) -> None:
        for key in ("first_k_tokens", "max_response_tokens", "batch_size"):
            if getattr(self, key) < 1:
                raise SimscopeError(f"likelihood.{key}: expected >= 1, found {getattr(self, key)}")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise SimscopeError(f"likelihood.max_tokens: expected >= 2, found {self.max_tokens}")
        if not self.presence_temperature_bpb > 0:
            raise SimscopeError(
                "likelihood.presence_temperature_bpb: expected > 0, found "
                f"{self.presence_temperature_bpb}"
            )

    def metric_first_k(self) -> str:
        """The Profile metric name of the first-K mean log-probability."""
        return f"likelihood.mean_logprob_first{self.first_k_tokens}"


@dataclass
class TextScores:
    """Per-text likelihood scores, aligned with the texts scored (NaN for an empty text)."""

    mean_logprob_first_k: np.ndarray
    bits_per_byte: np.ndarray
    n_tokens: np.ndarray
    n_bytes: np.ndarray

    @property
    def tokens_scored(self) -> int:
        """Total tokens scored, for throughput figures."""
        return int(self.n_tokens.sum())


@dataclass
class PairScores:
    """Per preference pair: mean response log-probability given the prompt, and agreement."""

    chosen_mean_logprob: np.ndarray
    rejected_mean_logprob: np.ndarray
    agreement: np.ndarray
    """1 when the chosen response is more probable per token, 0 when less, 0.5 on a tie, NaN
    when the two responses are identical or one has no tokens."""


@dataclass
class PreferenceScores:
    """The Profile rows of one model and the per-text evidence behind them."""

    profile: pl.DataFrame
    texts: dict[str, TextScores]
    pairs: PairScores | None


def _context_limit(lm: LoadedModel, cfg: LikelihoodConfig) -> int:
    return cfg.max_tokens if cfg.max_tokens is not None else min(lm.max_tokens, 1024)


def _tokenize(lm: LoadedModel, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        return []
    enc = lm.tokenizer(list(texts), add_special_tokens=False, verbose=False)
    return [list(ids) for ids in enc["input_ids"]]


MAX_BATCH_TOKENS = 4096
"""Padded positions per forward pass: activation memory scales with it, not with the corpus."""

HEAD_CHUNK_FLOATS = 1 << 22
"""Output-layer logits held at once (16 MiB in float32): the full-vocabulary scores of a
whole batch are never materialised, only ``HEAD_CHUNK_FLOATS // vocabulary`` positions."""

_SPLIT_ATOL = 1e-3
"""How far the backbone-then-head logits may be from the model's own (a model that scales or
caps its logits after the head fails this and is scored through its own forward)."""


def _length_buckets(lengths: Sequence[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Indices sorted longest first, cut into batches of at most ``batch_size`` sequences and
    ``max_tokens`` padded positions (one sequence at least): little is spent on padding, and
    an out-of-memory error shows up on the first batch."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        last = batches[-1] if batches else None
        if (
            last is not None
            and len(last) < batch_size
            and (len(last) + 1) * lengths[last[0]] <= max_tokens
        ):
            last.append(i)
        else:
            batches.append([i])
    return batches


_SPLIT_OK: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
"""Per loaded model: whether its head over its backbone gives its logits (measured once)."""


class _Scorer:
    """Forward passes that give the log-probability of chosen tokens only.

    Where the model is a backbone followed by a linear output layer, the backbone runs
    without a KV cache and the output layer is applied to the scored positions only, a
    chunk at a time, each reduced at once to its target logit and its logsumexp. Whether
    that split reproduces the model's own logits is measured once per model on a short input.
    """

    def __init__(self, lm: LoadedModel) -> None:
        import torch

        self.lm = lm
        self.backbone: Any = None
        self.head: Any = None
        model = lm.model
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        backbone = getattr(model, getattr(model, "base_model_prefix", ""), None)
        if isinstance(head, torch.nn.Linear) and backbone is not None and backbone is not model:
            self.backbone, self.head = backbone, head
            ok = _SPLIT_OK.get(model)
            if ok is None:
                ok = _SPLIT_OK[model] = self._split_matches()
                if not ok:
                    logger.info("%s: its logits are not its head over its backbone", lm.name)
            if not ok:
                self.backbone = self.head = None

    def _split_matches(self) -> bool:
        import torch

        n = min(8, self.lm.max_tokens)
        vocab = int(self.head.out_features)
        ids = torch.arange(n, dtype=torch.long).mul_(7919).remainder_(vocab)[None].repeat(2, 1)
        mask = torch.ones_like(ids)
        mask[1, n // 2 :] = 0
        ids, mask = ids.to(self.lm.device), mask.to(self.lm.device)
        with torch.inference_mode():
            full = self.lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            hidden = self.backbone(input_ids=ids, attention_mask=mask, use_cache=False)
            split = self.head(hidden.last_hidden_state)
        if full.shape != split.shape:
            return False
        valid = mask.bool()
        diff = (full[valid].float() - split[valid].float()).abs().max()
        return bool(diff <= _SPLIT_ATOL * max(1.0, float(full[valid].float().abs().max())))

    def logprobs(
        self, inputs: list[list[int]], first: list[int], targets: list[list[int]]
    ) -> np.ndarray:
        """For each row ``r``: log-probabilities of ``targets[r]``, predicted from the
        positions ``first[r], first[r] + 1, ...`` of ``inputs[r]`` (right padded); all rows'
        targets concatenated, in float64."""
        import torch

        device = self.lm.device
        width = max(len(x) for x in inputs)
        ids = torch.full((len(inputs), width), self.lm.start_token_id, dtype=torch.long)
        mask = torch.zeros((len(inputs), width), dtype=torch.long)
        for row, x in enumerate(inputs):
            ids[row, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[row, : len(x)] = 1
        rows = torch.cat(
            [torch.full((len(t),), r, dtype=torch.long) for r, t in enumerate(targets)]
        )
        cols = torch.cat(
            [
                torch.arange(f, f + len(t), dtype=torch.long)
                for f, t in zip(first, targets, strict=True)
            ]
        )
        tgt = torch.tensor([tok for t in targets for tok in t], dtype=torch.long, device=device)
        ids, mask, rows, cols = ids.to(device), mask.to(device), rows.to(device), cols.to(device)
        if self.backbone is not None:
            out = self.backbone(input_ids=ids, attention_mask=mask, use_cache=False)
            hidden = out.last_hidden_state[rows, cols]
            del out

            def logits(lo: int, hi: int) -> Any:
                return self.head(hidden[lo:hi]).float()

            vocab = int(self.head.out_features)
        else:
            full = self.lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            picked = full[rows, cols]
            del full

            def logits(lo: int, hi: int) -> Any:
                return picked[lo:hi].float()

            vocab = int(picked.shape[-1])
        step = max(1, HEAD_CHUNK_FLOATS // vocab)
        parts = []
        for lo in range(0, int(tgt.numel()), step):
            hi = min(lo + step, int(tgt.numel()))
            chunk = logits(lo, hi)
            parts.append(chunk.gather(1, tgt[lo:hi, None])[:, 0] - torch.logsumexp(chunk, dim=-1))
        return torch.cat(parts).double().cpu().numpy()


def _token_logprobs(
    lm: LoadedModel,
    seqs: Sequence[tuple[list[int], list[int]]],
    *,
    batch_size: int,
    progress: bool,
    desc: str,
) -> list[np.ndarray]:
    """Log-probabilities (nats) of each ``target`` token given ``context`` and the targets
    before it. Every context holds at least the start token."""
    import torch

    out: list[np.ndarray] = [np.zeros(0, dtype=np.float64) for _ in seqs]
    todo = [i for i, (_, t) in enumerate(seqs) if t]
    lengths = [len(seqs[i][0]) + len(seqs[i][1]) - 1 for i in todo]
    scorer = _Scorer(lm)
    n_tokens = sum(len(seqs[i][1]) for i in todo)
    bar = tqdm(total=n_tokens, desc=desc, unit="tok", disable=not progress, unit_scale=True)
    with torch.inference_mode():
        for batch in _length_buckets(lengths, batch_size, MAX_BATCH_TOKENS):
            idx = [todo[b] for b in batch]
            lps = scorer.logprobs(
                [seqs[i][0] + seqs[i][1][:-1] for i in idx],
                [len(seqs[i][0]) - 1 for i in idx],
                [seqs[i][1] for i in idx],
            )
            at = 0
            for i in idx:
                k = len(seqs[i][1])
                out[i] = lps[at : at + k]
                at += k
            bar.update(at)
    bar.close()
    return out


def score_texts(
    lm: LoadedModel,
    texts: Sequence[str],
    config: LikelihoodConfig = LikelihoodConfig(),
    *,
    progress: bool = True,
    desc: str = "score",
) -> TextScores:
    """Mean log-probability over the first K tokens and bits per byte of each text."""
    limit = _context_limit(lm, config) - 1
    start = [lm.start_token_id]
    ids = _tokenize(lm, texts)
    seqs = [(start, x[:limit]) for x in ids]
    lps = _token_logprobs(lm, seqs, batch_size=config.batch_size, progress=progress, desc=desc)
    n = len(texts)
    first_k = np.full(n, np.nan)
    bpb = np.full(n, np.nan)
    n_tokens = np.zeros(n, dtype=np.int64)
    n_bytes = np.zeros(n, dtype=np.int64)
    for i, (text, full, lp) in enumerate(zip(texts, ids, lps, strict=True)):
        if lp.size == 0:
            continue
        scored = text if len(full) <= limit else lm.tokenizer.decode(full[:limit])
        n_tokens[i] = lp.size
        n_bytes[i] = len(scored.encode("utf-8"))
        first_k[i] = float(lp[: config.first_k_tokens].mean())
        if n_bytes[i] > 0:
            bpb[i] = float(-lp.sum() / LN2 / n_bytes[i])
    return TextScores(first_k, bpb, n_tokens, n_bytes)


def _join(prompt: str, response: str) -> str:
    """The response as it follows the prompt: one space between them unless one is there."""
    if not prompt or prompt[-1].isspace() or response[:1].isspace():
        return response
    return " " + response


def score_pairs(
    lm: LoadedModel,
    prompts: Sequence[str],
    chosen: Sequence[str],
    rejected: Sequence[str],
    config: LikelihoodConfig = LikelihoodConfig(),
    *,
    progress: bool = True,
) -> PairScores:
    """Length-normalized log-probability of each response given its prompt, and agreement."""
    limit = _context_limit(lm, config)
    start = [lm.start_token_id]
    prompt_ids = _tokenize(lm, prompts)
    seqs: list[tuple[list[int], list[int]]] = []
    for responses in (chosen, rejected):
        joined = [_join(p, r) for p, r in zip(prompts, responses, strict=True)]
        for p_ids, r_ids in zip(prompt_ids, _tokenize(lm, joined), strict=True):
            target = r_ids[: min(config.max_response_tokens, limit - 1)]
            # Keep the end of the prompt: the turns nearest the response matter most.
            room = limit - 1 - len(target)
            context = start + (p_ids[-room:] if room > 0 else [])
            seqs.append((context, target))
    lps = _token_logprobs(
        lm, seqs, batch_size=config.batch_size, progress=progress, desc="score pairs"
    )
    n = len(prompts)
    means = np.array([float(lp.mean()) if lp.size else np.nan for lp in lps])
    c, r = means[:n], means[n:]
    agreement = np.where(c > r, 1.0, np.where(c < r, 0.0, 0.5))
    same = np.array([a == b for a, b in zip(chosen, rejected, strict=True)], dtype=bool)
    agreement[np.isnan(c) | np.isnan(r) | same] = np.nan
    return PairScores(c, r, agreement)


def likelihood_estimators(
    scores: TextScores,
    config: LikelihoodConfig = LikelihoodConfig(),
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> dict[str, ScopeEstimator]:
    """One ScopeEstimator per likelihood metric of a slice (bootstrap over its texts)."""
    return {
        config.metric_first_k(): bootstrapped(
            mean_statistic(scores.mean_logprob_first_k), n_boot=n_boot, seed=seed
        ),
        "likelihood.bits_per_byte": bootstrapped(
            mean_statistic(scores.bits_per_byte), n_boot=n_boot, seed=seed
        ),
    }


def pair_estimators(
    pairs: PairScores, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
) -> dict[str, ScopeEstimator]:
    """ScopeEstimators of the zero-shot preference signal (bootstrap over pairs)."""
    margin = pairs.chosen_mean_logprob - pairs.rejected_mean_logprob
    return {
        "likelihood.pref_agreement": bootstrapped(
            mean_statistic(pairs.agreement), n_boot=n_boot, seed=seed, bounds=(0.0, 1.0)
        ),
        "likelihood.pref_logprob_margin": bootstrapped(
            mean_statistic(margin), n_boot=n_boot, seed=seed
        ),
    }


def likelihood_scorer(
    models: Mapping[str, LoadedModel],
    config: LikelihoodConfig = LikelihoodConfig(),
    *,
    prefs: pl.DataFrame | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    progress: bool = True,
) -> Callable[[str, pl.DataFrame, str, list[str]], dict[str, ScopeEstimator]]:
    """A per-slice hook (``overlap.scorer.SliceHooks``): (model, corpus, slice, texts)
    -> likelihood estimators, scoring the slice with ``models[model]`` (the corpus is not used).

    With ``prefs`` (the PreferenceSet whose slices are scored) the slice ``chosen`` also gets
    the zero-shot preference signal. A model missing from ``models`` gets no likelihood rows.
    """

    def scorer(
        model: str, corpus: pl.DataFrame, slice_name: str, texts: list[str]
    ) -> dict[str, ScopeEstimator]:
        lm = models.get(model)
        if lm is None:
            return {}
        scores = score_texts(lm, texts, config, progress=progress, desc=f"score {slice_name}")
        out = likelihood_estimators(scores, config, n_boot=n_boot, seed=seed)
        if prefs is not None and slice_name == "chosen":
            if prefs.get_column("chosen").to_list() != texts:
                raise ValueError("likelihood_scorer: prefs do not match the texts scored")
            pairs = score_pairs(
                lm,
                prefs.get_column("prompt").to_list(),
                texts,
                prefs.get_column("rejected").to_list(),
                config,
                progress=progress,
            )
            out.update(pair_estimators(pairs, n_boot=n_boot, seed=seed))
        return out

    return scorer


def score_preferences(
    lm: LoadedModel,
    prefs: pl.DataFrame,
    config: LikelihoodConfig = LikelihoodConfig(),
    *,
    slices: Sequence[str] = SLICES,
    topic_labels: np.ndarray | None = None,
    topic_names: Sequence[str] | None = None,
    agreement: bool = True,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    progress: bool = True,
) -> PreferenceScores:
    """Score every slice of ``prefs`` (and the pairs) with ``lm``: Profile rows per scope.

    ``topic_labels`` holds one topic index per pair (-1 = none) and ``topic_names`` the
    names; each topic is a scope beside the whole slice, bootstrapped the same way. The
    preference signal (``likelihood.pref_*``) is reported under the slice ``chosen``.
    """
    prefs = check_frame(prefs, PREFERENCE_SCHEMA, "PreferenceSet")
    bad = [s for s in slices if s not in SLICES]
    if bad:
        raise SimscopeError(f"slices: expected a subset of {list(SLICES)}, found {bad}")
    if prefs.height == 0:
        raise SimscopeError("PreferenceSet is empty; nothing to score")
    scopes = topic_scopes(prefs.height, topic_labels, topic_names)
    texts: dict[str, TextScores] = {}
    estimators: dict[str, dict[str, ScopeEstimator]] = {}
    for s in slices:
        texts[s] = score_texts(
            lm, prefs.get_column(s).to_list(), config, progress=progress, desc=f"score {s}"
        )
        estimators[s] = likelihood_estimators(texts[s], config, n_boot=n_boot, seed=seed)
    pairs = None
    if agreement:
        pairs = score_pairs(
            lm,
            prefs.get_column("prompt").to_list(),
            prefs.get_column("chosen").to_list(),
            prefs.get_column("rejected").to_list(),
            config,
            progress=progress,
        )
        estimators.setdefault("chosen", {}).update(pair_estimators(pairs, n_boot=n_boot, seed=seed))
    rows: list[dict[str, Any]] = []
    for s, by_metric in estimators.items():
        rows += scope_rows(lm.name, s, by_metric, scopes)
    profile = pl.DataFrame(rows, schema=PROFILE_SCHEMA).sort(
        ["model", "slice", "metric", "topic"], nulls_last=False
    )
    return PreferenceScores(profile, texts, pairs)


PRESENCE_SCHEMA = pl.Schema(
    {
        "model": pl.String(),
        "corpus": pl.String(),
        "n_texts": pl.Int64(),
        "mean_logprob_first_k": pl.Float64(),
        "bits_per_byte": pl.Float64(),
        "presence": pl.Float64(),
        "temperature_bpb": pl.Float64(),
        "text_bits_per_byte": pl.List(pl.Float64()),
    }
)
"""One row per (model, reference corpus): mean scores, the presence share, and the per-text
bits per byte behind them (NaN for a text without tokens), for the bootstrap."""

DISTANCE_SCHEMA = pl.Schema(
    {
        "model_a": pl.String,
        "model_b": pl.String,
        "metric": pl.String,
        "value": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
    }
)


def score_reference_corpora(
    lm: LoadedModel,
    corpora: Mapping[str, Sequence[str]],
    config: LikelihoodConfig = LikelihoodConfig(),
    *,
    progress: bool = True,
) -> pl.DataFrame:
    """Score each named reference corpus with ``lm``: one PRESENCE_SCHEMA row per corpus."""
    if not corpora:
        raise SimscopeError("reference corpora: expected at least one, found none")
    rows = []
    for name in sorted(corpora):
        scores = score_texts(lm, list(corpora[name]), config, progress=progress, desc=name)
        if np.isnan(scores.bits_per_byte).all():
            raise SimscopeError(f"reference corpus {name!r}: no text with tokens to score")
        rows.append(
            {
                "model": lm.name,
                "corpus": name,
                "n_texts": len(corpora[name]),
                "mean_logprob_first_k": float(np.nanmean(scores.mean_logprob_first_k)),
                "bits_per_byte": float(np.nanmean(scores.bits_per_byte)),
                "temperature_bpb": config.presence_temperature_bpb,
                "text_bits_per_byte": scores.bits_per_byte.tolist(),
            }
        )
    bpb = np.array([r["bits_per_byte"] for r in rows])
    presence = _presence(bpb, config.presence_temperature_bpb)
    for row, p in zip(rows, presence, strict=True):
        row["presence"] = float(p)
    return pl.DataFrame(rows, schema=PRESENCE_SCHEMA)


def _presence(bpb: np.ndarray, temperature_bpb: float) -> np.ndarray:
    """Softmax over corpora of -bits_per_byte / temperature (along the last axis)."""
    x = -np.asarray(bpb, dtype=np.float64) / temperature_bpb
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, so in [0, 1]) between two distributions."""
    p = np.asarray(p, dtype=np.float64) / np.sum(p)
    q = np.asarray(q, dtype=np.float64) / np.sum(q)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return math.sqrt(max(0.0, 0.5 * kl(p) + 0.5 * kl(q)))


def presence_distances(
    presence: pl.DataFrame,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    ci: float = 0.95,
    seed: int = 0,
) -> pl.DataFrame:
    """Jensen-Shannon distance between every two models' presence distributions, with a CI.

    Models must have been scored on the same reference corpora (same texts, same
    temperature). The interval is a percentile bootstrap over each corpus's texts, resampled
    once per replicate for all models (paired: the same texts under each model).
    """
    presence = check_frame(presence, PRESENCE_SCHEMA, "presence table")
    per_model: dict[str, dict[str, dict[str, Any]]] = {}
    for row in presence.iter_rows(named=True):
        per_model.setdefault(row["model"], {})[row["corpus"]] = row
    models = sorted(per_model)
    if not models:
        return pl.DataFrame(schema=DISTANCE_SCHEMA)
    names = sorted(per_model[models[0]])
    for m in models[1:]:
        if sorted(per_model[m]) != names:
            raise SimscopeError(
                f"presence: models {models[0]!r} and {m!r} were scored on different reference "
                f"corpora ({names} vs {sorted(per_model[m])}); score both on the same corpora"
            )
    temps = {float(r["temperature_bpb"]) for rows in per_model.values() for r in rows.values()}
    if len(temps) != 1:
        raise SimscopeError(
            f"presence: models were scored with different presence temperatures {sorted(temps)}; "
            "score them all with one"
        )
    temperature = temps.pop()
    # texts[m][c]: per-text bits per byte of corpus c under model m; paired across models.
    texts = {
        m: [np.asarray(per_model[m][c]["text_bits_per_byte"], dtype=np.float64) for c in names]
        for m in models
    }
    for c, name in enumerate(names):
        sizes = {texts[m][c].size for m in models}
        if len(sizes) != 1:
            raise SimscopeError(
                f"presence: reference corpus {name!r} holds {sorted(sizes)} texts for different "
                "models; score every model on the same texts"
            )
    point = {m: np.array([per_model[m][c]["presence"] for c in names]) for m in models}
    reps: dict[str, np.ndarray] = {}
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        boot_bpb = {m: np.empty((n_boot, len(names))) for m in models}
        for rep in range(n_boot):
            for c in range(len(names)):
                n = texts[models[0]][c].size
                idx = rng.integers(0, n, n)
                for m in models:
                    with warnings.catch_warnings():  # a resample of only empty texts: NaN
                        warnings.simplefilter("ignore", RuntimeWarning)
                        boot_bpb[m][rep, c] = np.nanmean(texts[m][c][idx])
        reps = {m: _presence(boot_bpb[m], temperature) for m in models}
    rows = []
    alpha = (1.0 - ci) / 2.0
    for a, b in itertools.combinations(models, 2):
        value = js_distance(point[a], point[b])
        low = high = None
        if reps:
            dists = np.array([js_distance(pa, pb) for pa, pb in zip(reps[a], reps[b], strict=True)])
            dists = dists[~np.isnan(dists)]
            if dists.size:
                low, high = (float(x) for x in np.quantile(dists, [alpha, 1.0 - alpha]))
        rows.append(
            {
                "model_a": a,
                "model_b": b,
                "metric": "likelihood.presence_js_distance",
                "value": value,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return pl.DataFrame(rows, schema=DISTANCE_SCHEMA)
