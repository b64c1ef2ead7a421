"""Recovery of known mixtures: does each Profile metric move with the truth?

Probe corpora are drawn with a known share p in ``SHARES`` of dialogue (held-out HH-RLHF
transcripts, pairs 1000-2311, never the profiled pairs) and the rest split evenly between
Shakespeare and Python standard-library source (``simscope.examples.data.mixture``: shares of
characters, one seed, so the corpora are nested draws of the same shuffled domains). Each
corpus is profiled against the preference set (the first ``--pairs`` HH-RLHF pairs) with
``build_profile`` (the lexical and semantic scorers, as ``simscope run``), whole
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
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

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
from simscope.lexical.scorer import LexicalScorer
from simscope.metrics import is_headline, spec
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
    index_root: Path | None = None,
) -> pl.DataFrame:
    """Whole-slice Profile rows of every corpus: lexical + semantic, as ``simscope run``."""
    index_root = index_root or work / "indexes"
    semantic = SemanticScorer(
        index_root,
        SemanticConfig(encoder=cfg.encoder),
        seed=cfg.seed,
        n_boot=cfg.n_boot,
        progress=progress,
        slice_texts={s: prefs.get_column(s).to_list() for s in cfg.slices},
        per_slice_scales=cfg.per_slice_scales,
    )
    profile_cfg = ProfileConfig(n_boot=cfg.n_boot, seed=cfg.seed, slices=cfg.slices)
    lexical = LexicalScorer(index_root, profile_cfg.lexical, progress=progress)
    result = build_profile(
        prefs, corpora, index_root, profile_cfg, scorers=[lexical, semantic], progress=progress
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


# ---- end to end: simscope vs a plain script of the same metrics ----------------------------

PLAIN_SCRIPT = Path(__file__).resolve().parent / "plain_profile.py"
PLAIN_HEADLINE = {
    "plain.nn_cosine": ("semantic.nn_cosine", 1.0),
    "plain.coverage_k5": ("semantic.coverage_k5", 1.0),
    "plain.mauve": ("semantic.mauve", 1.0),
    "plain.dsir_kl": ("lexical.hashed_ngram_jsd", -1.0),
}
"""The plain script's counterpart of each simscope headline metric, and its orientation."""
ONCE_PER_DIRECTORY = ("encoder-choice-*", "static-encoder-*", "openvino-encoder-*")
"""What an indexes directory makes once and keeps (the measured encoder choice, the distilled
static model, the OpenVINO model converted from torch): made in the warm-up run, whose cost is
its own row, and copied into each measured run's fresh directory."""


def timing_name(p: float, seed: int) -> str:
    return model_name(p) if seed == 0 else f"{model_name(p)}-s{seed}"


def write_timing_input(
    prefs: pl.DataFrame, corpora: DemoCorpora, cfg: RecoveryConfig, seeds: int, out: Path
) -> dict[str, int]:
    """The workload as files both sides read: prefs.parquet and corpora/<name>.parquet."""
    (out / "corpora").mkdir(parents=True, exist_ok=True)
    prefs.write_parquet(out / "pairs.parquet")  # simscope's input: the PreferenceSet
    prefs.select(*cfg.slices).write_parquet(out / "prefs.parquet")  # the plain script's
    distinct: set[str] = set()
    n_docs = 0
    for seed in range(seeds):
        for p in SHARES:
            texts = mixture_texts(corpora, p, cfg.n_chars, seed)
            distinct.update(texts)
            n_docs += len(texts)
            name = timing_name(p, seed)
            probe_frame(name, texts).write_parquet(out / "corpora" / f"{name}.parquet")
    return {"corpora": seeds * len(SHARES), "docs": n_docs, "distinct_docs": len(distinct)}


def child_profile(in_dir: Path, out: Path, index_root: Path, encoder: str, n_boot: int) -> None:
    """One simscope profile of the timing workload (run in a fresh process by the parent)."""
    prefs = pl.read_parquet(in_dir / "pairs.parquet")
    slices = tuple(pl.read_parquet_schema(in_dir / "prefs.parquet"))
    corpora = {p.stem: pl.read_parquet(p) for p in sorted((in_dir / "corpora").glob("*.parquet"))}
    cfg = RecoveryConfig(
        n_pairs=prefs.height, slices=slices, n_boot=n_boot, encoder=cast(EncoderKind, encoder)
    )
    profile_corpora(prefs, corpora, index_root.parent, cfg, index_root=index_root).write_parquet(
        out
    )


def run_child(cmd: list[str]) -> dict[str, float]:
    """Run ``cmd``; its CPU seconds (user + system, its children included), wall seconds and
    peak RSS, from the kernel's accounting of that process (``os.wait4``)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd}: exit {proc.returncode}\n{err.decode()[-3000:]}")
    return {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "wall_s": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def plain_recovery(metrics: pl.DataFrame) -> dict[tuple[str, str], float]:
    """Oriented Spearman of the plain script's headline metrics over the seed-0 corpora."""
    out = {}
    for (slice_, metric), g in metrics.group_by(["slice", "metric"], maintain_order=True):
        if metric not in PLAIN_HEADLINE:
            continue
        name, sign = PLAIN_HEADLINE[str(metric)]
        by_model = dict(zip(g["model"], g["value"], strict=True))
        rho, _ = spearman_exact(SHARES, [sign * by_model[model_name(p)] for p in SHARES])
        out[(str(slice_), name)] = rho
    return out


def timing(
    prefs: pl.DataFrame,
    corpora: DemoCorpora,
    cfg: RecoveryConfig,
    work: Path,
    *,
    seeds: int,
    repeats: int,
    encoders: Sequence[str],
) -> dict[str, Any]:
    """Median CPU seconds of ``repeats`` fresh runs of each method, one at a time, methods
    interleaved within each repeat; the recovery of each method's headline metrics."""
    input_dir = work / "timing-input"
    sizes = write_timing_input(prefs, corpora, cfg, seeds, input_dir)
    py = sys.executable
    warm = work / "timing-warm"  # the once-per-directory artefacts: choice, static model
    first_use: dict[str, dict[str, float]] = {}
    for encoder in encoders:
        root = warm / encoder / "indexes"
        if not root.exists():
            first_use[encoder] = run_child(
                [
                    py,
                    __file__,
                    "--child-profile",
                    str(input_dir),
                    str(warm / f"{encoder}.parquet"),
                    str(root),
                    encoder,
                    str(cfg.n_boot),
                ]
            )
    runs: dict[str, list[dict[str, float]]] = {}
    outputs: dict[str, Path] = {}
    for r in range(repeats):
        plain_out = work / f"plain-{r}.parquet"
        runs.setdefault("plain script", []).append(
            run_child([py, str(PLAIN_SCRIPT), str(input_dir), str(plain_out)])
        )
        outputs["plain script"] = plain_out
        for encoder in encoders:
            fresh = work / f"fresh-{encoder}-{r}" / "indexes"
            shutil.rmtree(fresh.parent, ignore_errors=True)
            fresh.mkdir(parents=True)
            for pattern in ONCE_PER_DIRECTORY:
                for kept in (warm / encoder / "indexes").glob(pattern):
                    shutil.copytree(kept, fresh / kept.name)
            out = work / f"simscope-{encoder}-{r}.parquet"
            runs.setdefault(f"simscope {encoder}", []).append(
                run_child(
                    [
                        py,
                        __file__,
                        "--child-profile",
                        str(input_dir),
                        str(out),
                        str(fresh),
                        encoder,
                        str(cfg.n_boot),
                    ]
                )
            )
            outputs[f"simscope {encoder}"] = out
            shutil.rmtree(fresh.parent, ignore_errors=True)
    medians = {
        method: {k: statistics.median(run[k] for run in rs) for k in rs[0]}
        for method, rs in runs.items()
    }
    plain_cpu = medians["plain script"]["cpu_s"]
    recovery: dict[str, Any] = {}
    for method, path in outputs.items():
        table = pl.read_parquet(path)
        if method == "plain script":
            recovery[method] = {f"{s}/{m}": rho for (s, m), rho in plain_recovery(table).items()}
            continue
        seed0 = table.filter(pl.col("model").is_in([model_name(p) for p in SHARES]))
        rec = recovery_table(seed0, SHARES).filter(
            pl.col("metric").map_elements(is_headline, return_dtype=pl.Boolean)
        )
        recovery[method] = {
            f"{r['slice']}/{r['metric']}": (r["rho"], r["n_adjacent_separated"])
            for r in rec.iter_rows(named=True)
        }
    print(
        f"\nEnd to end, {sizes['corpora']} corpora ({sizes['docs']} documents, "
        f"{sizes['distinct_docs']} distinct) x {prefs.height} pairs x {len(cfg.slices)} slices, "
        f"n_boot {cfg.n_boot}; fresh process and empty caches per run, median of {repeats}; "
        f"CPU = user + system of the process tree (os.wait4); {cpu_flags()}"
    )
    print("| method | CPU s | ratio to plain (CPU) | wall s | peak RSS MB |")
    print("|---|---|---|---|---|")
    for method, m in medians.items():
        print(
            f"| {method} | {m['cpu_s']:.1f} | {m['cpu_s'] / plain_cpu:.3f}x "
            f"({plain_cpu / m['cpu_s']:.1f}x faster) | {m['wall_s']:.1f} | {m['peak_rss_mb']:.0f} |"
        )
    for encoder, m in first_use.items():
        print(
            f"| simscope {encoder}, first run in a new indexes directory (measures the "
            f"runtimes{', distils the static encoder' if encoder != 'transformer' else ''}) "
            f"| {m['cpu_s']:.1f} | {m['cpu_s'] / plain_cpu:.3f}x | {m['wall_s']:.1f} "
            f"| {m['peak_rss_mb']:.0f} |"
        )
    keys = sorted({k for rec in recovery.values() for k in rec})
    print(
        "\nHeadline recovery on the seed-0 corpora (simscope: rho / adjacent steps separated;"
        " plain: rho, no intervals):"
    )
    print("| slice/metric | " + " | ".join(recovery) + " |")
    print("|---|" + "---|" * len(recovery))
    for key in keys:
        cells = []
        for rec in recovery.values():
            v = rec.get(key)
            if v is None:
                cells.append("-")
            elif isinstance(v, tuple):
                cells.append(f"{fmt(v[0])} / {v[1]}/5")
            else:
                cells.append(fmt(v))
        print(f"| {key} | " + " | ".join(cells) + " |")
    return {
        "sizes": sizes,
        "medians": medians,
        "runs": runs,
        "first_use": first_use,
        "recovery": {
            m: {k: list(v) if isinstance(v, tuple) else v for k, v in r.items()}
            for m, r in recovery.items()
        },
    }


def cpu_flags() -> str:
    """The CPU model and the vector/matrix extensions it reports (printed, never used)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")),
        "?",
    )
    flags = next(
        (ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []
    )
    wanted = [f for f in flags if f.startswith(("avx", "amx", "fma", "f16c", "vnni"))]
    return f"CPU {model} x{_cpus()}, flags {' '.join(sorted(wanted)) or 'none of avx*/amx*'}"


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
    ap.add_argument(
        "--timing",
        action="store_true",
        help="end to end instead: simscope (each of --timing-encoders) vs the plain script",
    )
    ap.add_argument("--timing-encoders", default="transformer,static")
    ap.add_argument("--corpus-seeds", type=int, default=1, help="--timing: mixture seeds")
    ap.add_argument("--repeats", type=int, default=1, help="--timing: fresh runs per method")
    ap.add_argument("--child-profile", nargs=5, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_profile:
        in_dir, out_file, root, encoder, n_boot = args.child_profile
        child_profile(Path(in_dir), Path(out_file), Path(root), encoder, int(n_boot))
        return

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
        if args.timing:
            out["timing"] = timing(
                prefs,
                corpora,
                cfg,
                work,
                seeds=args.corpus_seeds,
                repeats=args.repeats,
                encoders=args.timing_encoders.split(","),
            )
            if args.json:
                args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
            return
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
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
