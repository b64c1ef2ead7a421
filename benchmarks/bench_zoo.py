"""Does closeness (and the transfer probe) predict how good the *fine-tuned* reward model is?
The paper's experiment (Ahrabian et al. 2025: public benchmarks, then + a distribution
estimate) in miniature, on a zoo of tiny LMs whose pretraining is known.

1. Trains the zoo (``simscope.examples.zoo``: sizes x pretraining mixtures of real text) and
   fully fine-tunes each model into a Bradley-Terry reward model on 910 pairs of the zoo's
   task; its accuracy on 1,000 other pairs, with a bootstrap CI, is the truth to predict.
2. Runs ``simscope run`` on the team's 150-record preference set with every model as a
   candidate (sampled probe corpora, lexical, semantic, likelihood and transfer stages), and
   scores each model's bits per byte on held-out generic text (the "public benchmark").
3. Predicts RM accuracy from three feature sets with a ridge regression (standardised in each
   training fold, strength by inner leave-one-out), leave-one-model-out and
   leave-one-mixture-out: (a) log params + generic loss, (b) (a) + closeness (JSD, NN cosine,
   coverage, MAUVE, bits per byte of the chosen responses), (c) (b) + the transfer probe.
   Spearman, MAE and C@3 with 95% bootstrap intervals over models; and the Spearman of the
   frozen probe's accuracy with the fine-tuned accuracy.

    python benchmarks/bench_zoo.py --work-dir /tmp/zoo [--quick] [--json out.json]

Everything is cached under ``--work-dir``; ``--quick`` is a 6-model zoo with short training
(a smoke run, minutes), not the measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import spearmanr
from sklearn.linear_model import RidgeCV

from simscope.config import load_run_config
from simscope.examples.zoo import (
    PROFILE_RECORDS,
    SWAPS,
    ZooModel,
    measure_reward_models,
    public_benchmarks,
    rm_test_pairs,
    rm_train_pairs,
    swap_pairs,
    task_records,
    train_zoo,
    zoo,
    zoo_corpora,
)
from simscope.pipeline import run
from simscope.probe.model import usable_cpus

SLICE = "chosen"
CLOSENESS = (
    "lexical.hashed_ngram_jsd",
    "semantic.nn_cosine",
    "semantic.coverage_k5",
    "semantic.mauve",
    "likelihood.bits_per_byte",
)
TRANSFER = ("transfer.bt_accuracy", "transfer.logme")
BASE = ("log_params", "generic_bpb")
SETS = {
    "(a) size + generic loss": BASE,
    "(b) (a) + closeness": BASE + CLOSENESS,
    "(c) (b) + transfer probe": BASE + CLOSENESS + TRANSFER,
    "log params alone": ("log_params",),
    "transfer probe alone": TRANSFER,
}


def _config(models: dict[str, Path], n_docs: int) -> str:
    lines = [
        "seed = 0",
        'out_dir = "run"',
        'indexes_dir = "indexes"',
        "n_boot = 100",
        "",
        "[preferences]",
        'path = "preferences.jsonl"',
        'schema = "pairs"',
        "",
        "[generation]",
        f"n_docs = {n_docs}",
        "batch_size = 32",
        "max_new_tokens = 96",
        "",
        "[likelihood]",
        "max_tokens = 96",
        "",
        "[transfer]",
        "max_tokens = 96",
        "",
        "[semantic]",
        "n_boot = 100",
        "mauve_seeds = [0, 1]",
        "max_topics = 2",
        "",
    ]
    for name, path in models.items():
        lines += ["[[candidates]]", f'name = "{name}"', f'model = "{path}"', ""]
    return "\n".join(lines)


def _loo_predictions(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each model predicted by a ridge fit without its group (standardised on the fold)."""
    pred = np.zeros_like(y)
    for g in np.unique(groups):
        held = groups == g
        mu, sd = x[~held].mean(0), x[~held].std(0)
        sd = np.where(sd > 1e-12, sd, 1.0)
        ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit((x[~held] - mu) / sd, y[~held])
        pred[held] = ridge.predict((x[held] - mu) / sd)
    return pred


def _c_at(pred: np.ndarray, y: np.ndarray, k: int) -> float:
    return len(set(np.argsort(-pred)[:k]) & set(np.argsort(-y)[:k])) / k


def _metrics(pred: np.ndarray, y: np.ndarray, k: int) -> dict[str, float]:
    return {
        "spearman": float(spearmanr(pred, y).statistic),
        "mae": float(np.mean(np.abs(pred - y))),
        f"c@{k}": _c_at(pred, y, k),
    }


def _with_intervals(pred: np.ndarray, y: np.ndarray, k: int = 3, n_boot: int = 2000) -> dict:
    point = _metrics(pred, y, k)
    rng = np.random.default_rng(0)
    reps: dict[str, list[float]] = {m: [] for m in point}
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if len(set(idx.tolist())) < 4:
            continue
        for m, v in _metrics(pred[idx], y[idx], k).items():
            if not math.isnan(v):
                reps[m].append(v)
    return {m: (point[m], *np.quantile(reps[m], [0.025, 0.975]).tolist()) for m in point}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work-dir", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="6 short-trained models: a smoke run")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work: Path = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    models: list[ZooModel] = (
        zoo(sizes=("s", "m"), mixtures=("dialogue", "bard-code", "code"), steps=200)
        if args.quick
        else zoo()
    )
    corpora = zoo_corpora()
    records = task_records()
    profile_pairs = swap_pairs(records, PROFILE_RECORDS)
    train = rm_train_pairs(records)
    test = rm_test_pairs(records)
    workers = min(2, usable_cpus())
    paths = train_zoo(models, work / "models", corpora, workers=workers, progress=True)
    t_lm = time.perf_counter()
    rms = measure_reward_models(
        paths, train, test, work / "rm_results.json", workers=workers, progress=True
    )
    t_rm = time.perf_counter()

    with open(work / "preferences.jsonl", "w", encoding="utf-8") as f:
        for p in profile_pairs:
            f.write(json.dumps(p) + "\n")
    (work / "simscope.toml").write_text(_config(paths, 32 if args.quick else 96))
    profile = run(load_run_config(work / "simscope.toml"), progress=False).profile
    public = public_benchmarks(paths, corpora.generic_text(), work / "benchmarks.cache.json")
    generic = {n: b["generic_bpb"] for n, b in public.items()}
    t_profile = time.perf_counter()

    whole = profile.filter(pl.col("topic").is_null() & (pl.col("slice") == SLICE))
    value = {(r["model"], r["metric"]): r["value"] for r in whole.iter_rows(named=True)}
    names = [m.name for m in models]
    by_name = {m.name: m for m in models}
    feats = {
        "log_params": [math.log(by_name[n].params) for n in names],
        "generic_bpb": [generic[n] for n in names],
        **{m: [value[(n, m)] for n in names] for m in CLOSENESS + TRANSFER},
    }
    y = np.array([rms[n].accuracy for n in names])
    half = np.array([(rms[n].ci_high - rms[n].ci_low) / 2 for n in names])

    print(f"zoo: {len(models)} models; task: chosen = real HH reply, rejected = {SWAPS} pairs of")
    print(f"neighbouring words swapped; RM = full fine-tune on {len(train)} pairs, accuracy on")
    print(f"{len(test)} pairs")
    print(
        f"{'model':18} {'params':>8} {'RM acc':>7} {'95% CI':>15} {'frozen probe':>13} "
        f"{'gen bpb':>8} {'bpb chosen':>10} {'nn cos':>7}"
    )
    for n in names:
        r = rms[n]
        bpb, cos = value[(n, "likelihood.bits_per_byte")], value[(n, "semantic.nn_cosine")]
        print(
            f"{n:18} {by_name[n].params:8d} {r.accuracy:7.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] "
            f"{value[(n, 'transfer.bt_accuracy')]:13.3f} {generic[n]:8.3f} {bpb:10.3f} {cos:7.3f}"
        )
    spread = float(y.max() - y.min())
    print(
        f"spread of RM accuracy {spread:.3f} = {spread / half.mean():.1f}x the mean CI half-width "
        f"{half.mean():.3f} (target >= 3x)"
    )

    results: dict[str, Any] = {"models": names, "accuracy": y.tolist(), "features": feats}
    mixture_of = np.array([n.rsplit("-", 1)[0] for n in names])
    size_of = np.array([by_name[n].size for n in names])
    for label, groups in (
        ("leave one model out", np.arange(len(names))),
        ("leave one mixture out", mixture_of),
        ("leave one size out", size_of),
    ):
        print(f"\n{label} (95% bootstrap intervals over models)")
        print(f"{'feature set':28} {'Spearman':>22} {'MAE':>22} {'C@3':>18}")
        results[label] = {}
        for set_name, cols in SETS.items():
            x = np.column_stack([feats[c] for c in cols])
            pred = _loo_predictions(x, y, groups)
            m = _with_intervals(pred, y)
            results[label][set_name] = m
            cell = {k: f"{v[0]:.3f} [{v[1]:.2f}, {v[2]:.2f}]" for k, v in m.items()}
            print(f"{set_name:28} {cell['spearman']:>22} {cell['mae']:>22} {cell['c@3']:>18}")

    probe = np.array(feats["transfer.bt_accuracy"])
    rho = _with_intervals(probe, y)["spearman"]
    print(
        f"\nfrozen transfer probe accuracy vs fine-tuned RM accuracy: Spearman {rho[0]:.3f} "
        f"[{rho[1]:.2f}, {rho[2]:.2f}] (target >= 0.8)"
    )
    results["probe_vs_finetuned_spearman"] = rho
    print(
        f"\ntime: zoo {t_lm - t0:.0f} s, reward models {t_rm - t_lm:.0f} s, simscope run + generic "
        f"loss {t_profile - t_rm:.0f} s, total {time.perf_counter() - t0:.0f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
