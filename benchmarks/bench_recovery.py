"""Recovery of known mixtures: does each Profile metric move with the truth?

Probe corpora are drawn with a known share p in ``SHARES`` of dialogue (held-out HH-RLHF
transcripts, pairs 1000-2311, never the profiled pairs) and the rest split evenly between
Shakespeare and Python standard-library source (``simscope.examples.data.mixture``: shares of
characters, one seed, so the corpora are nested draws of the same shuffled domains). Each
corpus is profiled against the preference set (the first ``--pairs`` HH-RLHF pairs) with
``build_profile`` (lexical scorer, plus the semantic scorer through ``extra_scorers``), whole
slices only. Per metric and slice the script reports:

- ``rho``: Spearman between p and the metric oriented by ``metrics.spec(name).closer_when``
  (sign flipped for "lower = closer"), so 1 = recovers the order exactly; ``p_perm``: its
  exact one-sided permutation p-value over the 720 orders of six levels (1/720 = 0.0014 for
  rho = 1);
- ``step``: the smallest step between neighbouring levels of p whose intervals (``ci_low``,
  ``ci_high``) do not overlap and are in the right order; ``resolution``: the smallest gap d
  such that every pair of levels at least d apart is so separated ("-" when none is).

Two paths: (a) the mixtures imported directly as probe corpora; (b) the real probe path: a
tiny GPT-2 (``probe.tiny.train_tiny_lm``) trained on each mixture and sampled
(``probe.generate.generate_corpus``), the samples profiled as in (a), plus the likelihood
metrics of ``probe.likelihood.score_preferences`` (each tiny model has its own tokenizer, so
only bits per byte compares across models; ``mean_logprob_first*`` is shown for what it is).

Run: ``python benchmarks/bench_recovery.py`` (both paths, all slices: ~20 min on 2 busy cores)
     ``python benchmarks/bench_recovery.py --quick --path a`` (chosen slice only, a few minutes)
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from simscope.examples.data import (
    DIALOGUE_PAIRS,
    HH_FILE,
    DemoCorpora,
    data_path,
    demo_corpora,
    mixture,
)
from simscope.metrics import spec
from simscope.overlap.profile import ProfileConfig, build_profile
from simscope.preferences import load_preferences
from simscope.records import PROBE_SCHEMA, SLICES
from simscope.semantic import SemanticConfig, SemanticScorer
from simscope.semantic.config import EncoderKind

SHARES = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
HEADLINE = (
    "lexical.hashed_ngram_jsd",
    "semantic.nn_cosine",
    "semantic.coverage_k5",
    "semantic.mauve",
)
"""The closeness metrics a user reads first; the slow test asserts their recovery."""


@dataclass(frozen=True)
class RecoveryConfig:
    """One recovery run: data sizes, the profile's bootstrap, the tiny LMs of path (b)."""

    n_pairs: int = 200
    n_chars: int = 150_000
    slices: tuple[str, ...] = SLICES
    n_boot: int = 100
    seed: int = 0
    lm_steps: int = 300
    gen_docs: int = 192
    gen_max_new_tokens: int = 120
    encoder: EncoderKind = "transformer"
    per_slice_scales: bool = False


def model_name(p: float) -> str:
    return f"dialogue-{p:.2f}"


def preference_set(n_pairs: int) -> pl.DataFrame:
    """The first ``n_pairs`` bundled HH-RLHF pairs: disjoint from the dialogue domain."""
    if n_pairs > DIALOGUE_PAIRS.start:
        raise ValueError(f"--pairs {n_pairs} would overlap the dialogue domain (pairs 1000-)")
    return load_preferences(data_path(HH_FILE), limit=n_pairs).pairs


def mixture_texts(corpora: DemoCorpora, p: float, n_chars: int, seed: int) -> list[str]:
    """Share ``p`` of dialogue, the rest split evenly between Shakespeare and code."""
    rest = (1.0 - p) / 2
    # Every domain is named even at share 0, so each draws the same permutation at every p.
    return mixture(corpora, {"dialogue": p, "shakespeare": rest, "code": rest}, n_chars, seed)


def probe_frame(model: str, texts: Sequence[str]) -> pl.DataFrame:
    """An imported ProbeCorpus of ``texts``."""
    return pl.DataFrame(
        {
            "model": [model] * len(texts),
            "doc_id": [f"{i:06d}" for i in range(len(texts))],
            "text": list(texts),
            "origin": ["imported"] * len(texts),
        },
        schema=PROBE_SCHEMA,
    )


def profile_corpora(
    prefs: pl.DataFrame,
    corpora: dict[str, pl.DataFrame],
    work: Path,
    cfg: RecoveryConfig,
    progress: bool = False,
) -> pl.DataFrame:
    """Whole-slice Profile rows of every corpus: lexical + semantic, as ``simscope run``."""
    index_root = work / "indexes"
    semantic = SemanticScorer(
        index_root,
        SemanticConfig(encoder=cfg.encoder),
        seed=cfg.seed,
        n_boot=cfg.n_boot,
        progress=progress,
        slice_texts={s: prefs.get_column(s).to_list() for s in cfg.slices},
        per_slice_scales=cfg.per_slice_scales,
    )
    result = build_profile(
        prefs,
        corpora,
        index_root,
        ProfileConfig(n_boot=cfg.n_boot, seed=cfg.seed, slices=cfg.slices),
        extra_scorers={"semantic": semantic},
        progress=progress,
    )
    return result.profile.filter(pl.col("topic").is_null())


def spearman_exact(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman rho of ``y`` against ``x`` and its exact one-sided permutation p-value."""
    from scipy.stats import rankdata

    yv = np.asarray(y, dtype=float)
    if len(yv) < 3 or np.isnan(yv).any() or np.ptp(yv) == 0:
        return float("nan"), float("nan")
    rx, ry = rankdata(x), rankdata(yv)

    def rho(a: np.ndarray) -> float:
        return float(np.corrcoef(a, ry)[0, 1])

    observed = rho(rx)
    perms = [rho(rx[list(order)]) for order in itertools.permutations(range(len(rx)))]
    p_value = float(np.mean([r >= observed - 1e-12 for r in perms]))
    return observed, p_value


def separated(lo_a: float, hi_a: float, lo_b: float, hi_b: float) -> bool:
    """Interval b lies wholly above interval a (in the oriented scale)."""
    vals = (lo_a, hi_a, lo_b, hi_b)
    return not any(v is None or math.isnan(v) for v in vals) and lo_b > hi_a


def recovery_table(profile: pl.DataFrame, shares: Sequence[float]) -> pl.DataFrame:
    """Per (slice, metric): oriented Spearman, exact p, smallest separated step, resolution."""
    rows: list[dict[str, Any]] = []
    names = {p: model_name(p) for p in shares}
    for (slice_, metric), g in profile.group_by(["slice", "metric"], maintain_order=True):
        by_model = {r["model"]: r for r in g.iter_rows(named=True)}
        if any(names[p] not in by_model for p in shares):
            continue
        sign = 1.0 if spec(str(metric)).closer_when == "higher" else -1.0
        vals, los, his = [], [], []
        for p in shares:
            r = by_model[names[p]]
            v, lo, hi = (
                (float("nan") if r[k] is None else sign * float(r[k]))
                for k in ("value", "ci_low", "ci_high")
            )
            vals.append(v)
            # Flipping the sign swaps the interval's ends.
            los.append(min(lo, hi) if sign < 0 else lo)
            his.append(max(lo, hi) if sign < 0 else hi)
        rho, p_value = spearman_exact(shares, vals)
        seps = {
            (i, j): separated(los[i], his[i], los[j], his[j])
            for i, j in itertools.combinations(range(len(shares)), 2)
        }
        steps = [shares[i + 1] - shares[i] for i in range(len(shares) - 1) if seps[(i, i + 1)]]
        gaps = sorted({round(shares[j] - shares[i], 6) for i, j in seps})
        resolution = next(
            (
                d
                for d in gaps
                if all(ok for (i, j), ok in seps.items() if shares[j] - shares[i] >= d - 1e-9)
            ),
            None,
        )
        rows.append(
            {
                "slice": slice_,
                "metric": metric,
                "family": spec(str(metric)).family,
                "rho": rho,
                "p_perm": p_value,
                "step": min(steps) if steps else None,
                "n_adjacent_separated": len(steps),
                "resolution": resolution,
                "values": [None if math.isnan(v) else sign * v for v in vals],
            }
        )
    return pl.DataFrame(rows).sort(["slice", "family", "metric"])


def path_a(
    prefs: pl.DataFrame, corpora: DemoCorpora, work: Path, cfg: RecoveryConfig
) -> pl.DataFrame:
    """Profile rows of the mixtures imported directly."""
    probes = {
        model_name(p): probe_frame(model_name(p), mixture_texts(corpora, p, cfg.n_chars, cfg.seed))
        for p in SHARES
    }
    return profile_corpora(prefs, probes, work / "a", cfg)


def path_b(
    prefs: pl.DataFrame, corpora: DemoCorpora, work: Path, cfg: RecoveryConfig
) -> pl.DataFrame:
    """Profile rows of tiny LMs trained on each mixture: their samples, and their likelihood."""
    from simscope.probe import (
        GenerationConfig,
        LikelihoodConfig,
        TinyLMConfig,
        generate_corpus,
        load_model,
        score_preferences,
        train_tiny_lm,
    )
    from simscope.probe.corpus import read_probe_corpus

    lm_cfg = TinyLMConfig(steps=cfg.lm_steps)
    gen_cfg = GenerationConfig(
        n_docs=cfg.gen_docs, max_new_tokens=cfg.gen_max_new_tokens, seed=cfg.seed
    )
    probes: dict[str, pl.DataFrame] = {}
    likelihood: list[pl.DataFrame] = []
    for p in SHARES:
        name = model_name(p)
        model_dir = work / "b" / "models" / name
        if not (model_dir / "config.json").is_file():
            texts = mixture_texts(corpora, p, cfg.n_chars, cfg.seed)
            train_tiny_lm(texts, model_dir, seed=cfg.seed, config=lm_cfg)
        lm = load_model(model_dir, name=name, device="cpu")
        corpus_path = work / "b" / "corpora" / f"{name}.parquet"
        corpus_path.parent.mkdir(parents=True, exist_ok=True)
        if corpus_path.is_file():
            probes[name] = read_probe_corpus(corpus_path)
        else:
            probes[name] = generate_corpus(lm, corpus_path, gen_cfg, name=name, progress=False)
        scored = score_preferences(
            lm,
            prefs,
            LikelihoodConfig(),
            slices=cfg.slices,
            n_boot=cfg.n_boot,
            seed=cfg.seed,
            progress=False,
        )
        likelihood.append(scored.profile.filter(pl.col("topic").is_null()))
    return pl.concat([profile_corpora(prefs, probes, work / "b", cfg), *likelihood])


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def print_table(title: str, table: pl.DataFrame) -> None:
    print(f"\n{title}")
    header = (
        f"{'slice':9} {'metric':36} {'family':13} {'rho':>5} {'p_perm':>7} {'step':>5} "
        f"{'adj':>4} {'resol':>5}  raw values at p = {', '.join(map(str, SHARES))}"
    )
    print(header)
    print("-" * len(header))
    for r in table.iter_rows(named=True):
        values = " ".join(fmt(v, 3) for v in r["values"])
        print(
            f"{r['slice']:9} {r['metric']:36} {r['family']:13} {fmt(r['rho']):>5} "
            f"{fmt(r['p_perm'], 4):>7} {fmt(r['step']):>5} {r['n_adjacent_separated']:>2}/5 "
            f"{fmt(r['resolution']):>5}  {values}"
        )


def survival(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """Both paths side by side. A closeness metric survives the LM when rho >= 0.9 on both
    paths; likelihood metrics exist on path (b) only and are judged there alone."""
    joined = a.select("slice", "metric", "family", rho_a="rho", resol_a="resolution").join(
        b.select("slice", "metric", "family", rho_b="rho", resol_b="resolution"),
        on=["slice", "metric", "family"],
        how="full",
        coalesce=True,
    )
    ok_b = pl.col("rho_b").fill_nan(None) >= 0.9 - 1e-9
    ok_a = pl.col("rho_a").fill_nan(None) >= 0.9 - 1e-9
    verdict = (
        pl.when(pl.col("family") == "contamination")
        .then(pl.lit("n/a: contamination check, 0 without copies"))
        .when(pl.col("metric").str.starts_with("likelihood.pref_"))
        .then(pl.lit("n/a: preference signal, not closeness"))
        .when(pl.col("rho_a").is_null())
        .then(pl.when(ok_b).then(pl.lit("b only: yes")).otherwise(pl.lit("b only: no")))
        .when(ok_a & ok_b)
        .then(pl.lit("yes"))
        .when(ok_a)
        .then(pl.lit("no (lost in the LM)"))
        .otherwise(pl.lit("no (fails on a)"))
    )
    return joined.with_columns(survives=verdict).sort(["slice", "family", "metric"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", choices=("a", "b", "both"), default="both")
    ap.add_argument("--quick", action="store_true", help="chosen slice, smaller corpora and LMs")
    ap.add_argument("--pairs", type=int, default=None)
    ap.add_argument("--chars", type=int, default=None, help="characters per mixture")
    ap.add_argument("--slices", default=None, help="comma-separated (default: all three)")
    ap.add_argument("--n-boot", type=int, default=None)
    ap.add_argument("--lm-steps", type=int, default=None)
    ap.add_argument("--gen-docs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--encoder", choices=("transformer", "static", "auto"), default="transformer")
    ap.add_argument(
        "--per-slice-scales",
        action="store_true",
        help="chunk corpora at each slice's own length (as before one scale for all)",
    )
    ap.add_argument("--work-dir", type=Path, default=None, help="cache (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write the tables here")
    args = ap.parse_args()

    base = (
        RecoveryConfig(n_chars=80_000, slices=("chosen",), lm_steps=200, gen_docs=128)
        if args.quick
        else RecoveryConfig()
    )
    overrides: dict[str, Any] = {
        "seed": args.seed,
        "encoder": args.encoder,
        "per_slice_scales": args.per_slice_scales,
    }
    for key, value in (
        ("n_pairs", args.pairs),
        ("n_chars", args.chars),
        ("n_boot", args.n_boot),
        ("lm_steps", args.lm_steps),
        ("gen_docs", args.gen_docs),
    ):
        if value is not None:
            overrides[key] = value
    if args.slices:
        overrides["slices"] = tuple(args.slices.split(","))
    cfg = RecoveryConfig(**{**base.__dict__, **overrides})

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(
        f"# bench_recovery {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit or '?'}, "
        f"{platform.machine()} {platform.processor() or ''} x{_cpus()}, {cfg}",
        file=sys.stderr,
    )
    prefs = preference_set(cfg.n_pairs)
    corpora = demo_corpora()
    out: dict[str, Any] = {"config": cfg.__dict__, "commit": commit, "shares": list(SHARES)}
    tables: dict[str, pl.DataFrame] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        for which, fn in (("a", path_a), ("b", path_b)):
            if args.path not in (which, "both"):
                continue
            start = time.perf_counter()
            profile = fn(prefs, corpora, work, cfg)
            tables[which] = recovery_table(profile, SHARES)
            label = "imported mixtures" if which == "a" else "tiny LMs trained on each, sampled"
            print_table(
                f"Path ({which}): {label} ({time.perf_counter() - start:.0f} s)", tables[which]
            )
            out[which] = tables[which].to_dicts()
    if "a" in tables and "b" in tables:
        both = survival(tables["a"], tables["b"])
        print("\nSurvives the LM (rho >= 0.9 on both paths; resolution a -> b):")
        for r in both.iter_rows(named=True):
            print(
                f"{r['slice']:9} {r['metric']:36} rho a {fmt(r['rho_a']):>5}  "
                f"b {fmt(r['rho_b']):>5}  resol {fmt(r['resol_a']):>4} -> "
                f"{fmt(r['resol_b']):>4}  {r['survives']}"
            )
        out["survival"] = both.to_dicts()
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
