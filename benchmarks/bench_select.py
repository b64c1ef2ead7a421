"""Selection quality on published results: does simscope beat "pick the biggest"?

Data: the bundled Ahrabian et al. 2025 Regression table (40 instruct base models, RewardBench
v1 overall ``score`` and its categories ``chat``, ``chat_hard``, ``safety``, ``reasoning``)
with the bundled Open LLM Leaderboard v2 as the public benchmarks. Families are inferred from
the model ids (17; listed at the top of the output) and always held out together.

1. **Cold start (k = 0)**, leave-one-family-out: for each family, the prior is chosen and fit
   on the other families' published results (``simscope.select.prior.evaluate_prior``) and
   predicts it. Pooled over the 40 models: Spearman, MAE, C@5 and C@10, against ranking by
   log(params) and by the best single benchmark (chosen on the other families), each a
   linear fit on the other families for the MAE.
2. **Pilot (k = 3, 5, 10)**: per draw the families are split at random into "published" (the
   prior's table) and "the user's"; the user measured k of their models (at random) and asks
   ``simscope.select.select_models`` (``--prior`` = the published half, candidates = the
   user's half) to rank the rest. Same target: the overall score; different target: a
   category as the user's metric while the prior knows only the overall score (the draws
   cycle through the four categories). Mean Spearman of the untried ranking, top-1 and top-3
   hit rates (the true best untried model first / in the top 3), and the coverage of the
   90% intervals; against log(params), the best benchmark (chosen on the published half),
   today's user-only Elastic Net (fit on the k measured models; needs k >= 3) and the prior
   alone (the calibration skipped).
3. **Verdict calibration**: over every pilot draw, the share of "reliable" verdicts whose
   untried ranking has Spearman < 0.3, and the mean Spearman of each verdict.
4. **--suggest**: from 2 measured models of the user's half, measure the suggested model,
   refit, repeat, until the true best of the user's half is measured; the number of
   measurements, against a random order (expected (m + 1) / 2 for the best's position among
   m untried) and largest first.

Seeded; 50 draws per cell (``--draws``). Run: ``python benchmarks/bench_select.py`` (about
15-25 min on 2 busy cores; ``--draws 10`` for a quick look; ``--json F`` writes the numbers).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from collections import Counter
from typing import Any

import numpy as np
import polars as pl

from simscope.select import read_benchmarks, read_prior, select_models
from simscope.select.cv import spearman, top_k_coverage
from simscope.select.families import group_codes, infer_families, members
from simscope.select.features import LOG_PARAMS, benchmark_wide, build_features
from simscope.select.predictors import fit_predictor, predictor_specs
from simscope.select.prior import evaluate_prior, predict_with_prior, prior_features
from simscope.select.published import PriorTable

PRIOR = "ahrabian2025-regression"
MAIN = "score"
CATEGORIES = ("chat", "chat_hard", "safety", "reasoning")
KS = (3, 5, 10)


def load() -> tuple[PriorTable, pl.DataFrame, dict[str, str]]:
    table = read_prior(PRIOR)
    bench = read_benchmarks("open-llm-leaderboard-v2")
    models = table.covariates.get_column("model").to_list()
    return table, bench, infer_families(models)


def scores_of(table: PriorTable, metric: str) -> dict[str, float]:
    rows = table.scores.filter(pl.col("metric") == metric)
    return dict(zip(rows["model"].to_list(), rows["score"].to_list(), strict=True))


def log_params_of(table: PriorTable) -> dict[str, float]:
    cov = table.covariates
    return dict(zip(cov["model"].to_list(), np.log(cov["params_B"].to_numpy()), strict=True))


# ---- 1. cold start -------------------------------------------------------------------------


def cold_start(table: PriorTable, bench: pl.DataFrame, fam: dict[str, str]) -> list[dict[str, Any]]:
    models = table.covariates["model"].to_list()
    wide, _ = benchmark_wide(bench)
    _, names, X = prior_features(models, [], wide, table.covariates)
    F = X[: len(models)]
    usable = [i for i, n in enumerate(names) if not np.isnan(F[:, i]).any()]
    F = F[:, usable]
    names = [names[i] for i in usable]
    groups = np.array(group_codes(models, fam))
    targets = {m: np.array([scores_of(table, m)[x] for x in models]) for m in table.metrics}
    lp = F[:, names.index(LOG_PARAMS)]
    bench_cols = [
        i for i, n in enumerate(names) if n not in (LOG_PARAMS, "log_tokens", "benchmark_mean")
    ]
    rows = []
    for metric in (MAIN, *CATEGORIES):
        y = targets[metric]
        ev = evaluate_prior(F, names, targets, groups, metric=metric, main_metric=MAIN)
        size_pred = np.empty_like(y)
        best_pred = np.empty_like(y)
        for g in np.unique(groups):
            test = groups == g
            c1, c0 = np.polyfit(lp[~test], y[~test], 1)
            size_pred[test] = c0 + c1 * lp[test]
            corr = [abs(spearman(F[~test, j], y[~test])) for j in bench_cols]
            j = bench_cols[int(np.argmax(corr))]
            b1, b0 = np.polyfit(F[~test, j], y[~test], 1)
            best_pred[test] = b0 + b1 * F[test, j]
        for name, pred, rank_by in (
            ("simscope prior", ev.predicted, ev.predicted),
            ("log(params)", size_pred, lp),
            ("best benchmark", best_pred, best_pred),
        ):
            rows.append(
                {
                    "target": metric,
                    "method": name,
                    "spearman": spearman(rank_by, y),
                    "mae": float(np.mean(np.abs(pred - y))),
                    "c@5": top_k_coverage(rank_by, y, 5),
                    "c@10": top_k_coverage(rank_by, y, 10),
                }
            )
    return rows


# ---- 2-3. pilot ----------------------------------------------------------------------------


def split(fam: dict[str, str], rng: np.random.Generator) -> tuple[list[str], list[str]]:
    families = sorted(set(fam.values()))
    order = rng.permutation(len(families))
    published = {families[i] for i in order[: len(families) // 2]}
    pub = sorted(m for m, f in fam.items() if f in published)
    user = sorted(m for m, f in fam.items() if f not in published)
    return pub, user


def rm_frame(models: list[str], values: dict[str, float], metric: str) -> pl.DataFrame:
    return pl.DataFrame(
        {"model": models, "metric": [metric] * len(models), "score": [values[m] for m in models]}
    )


def untried_scores(truth: np.ndarray, pred: np.ndarray) -> tuple[float, bool, bool]:
    best = int(np.argmax(truth))
    order = np.argsort(-pred, kind="stable")
    return spearman(pred, truth), bool(order[0] == best), bool(best in order[:3])


def pilot(
    table: PriorTable, bench: pl.DataFrame, fam: dict[str, str], draws: int, seed: int
) -> list[dict[str, Any]]:
    lp_all = log_params_of(table)
    wide, _ = benchmark_wide(bench)
    bench_names = [c for c in wide.columns if c not in ("model", LOG_PARAMS, "log_tokens")]
    records: list[dict[str, Any]] = []
    rng = np.random.default_rng(seed)
    for kind in ("same", "different"):
        for k in KS:
            for d in range(draws):
                metric = MAIN if kind == "same" else CATEGORIES[d % len(CATEGORIES)]
                truth_all = scores_of(table, metric)
                pub, user = split(fam, rng)
                perm = list(rng.permutation(len(user)))
                measured = sorted(user[i] for i in perm[:k])
                untried = sorted(user[i] for i in perm[k:])
                truth = np.array([truth_all[m] for m in untried])
                prior = table.subset(set(pub), name=f"{PRIOR}[published half]")
                result = select_models(
                    None,
                    bench,
                    rm_frame(measured, truth_all, metric),
                    target_metric=metric,
                    seed=d,
                    candidates=user,
                    prior=prior,
                    prior_metric=MAIN,
                    baselines=False,
                )
                sel = result.selection.filter(pl.col("observed").is_null())
                sel = dict(zip(sel["model"].to_list(), sel.iter_rows(named=True), strict=True))
                pred = np.array([sel[m]["predicted"] for m in untried])
                lo = np.array([sel[m]["pi_low"] for m in untried], dtype=float)
                hi = np.array([sel[m]["pi_high"] for m in untried], dtype=float)
                rho, top1, top3 = untried_scores(truth, pred)
                rows = {
                    "simscope": (rho, top1, top3, float(np.mean((lo <= truth) & (truth <= hi)))),
                }
                lp = np.array([lp_all[m] for m in untried])
                rows["log(params)"] = (*untried_scores(truth, lp), None)
                # best single benchmark, chosen on the published half's overall score
                pub_truth = scores_of(table, MAIN)
                pub_wide = wide.filter(pl.col("model").is_in(pub))
                best_name = max(
                    bench_names,
                    key=lambda c: abs(
                        spearman(
                            pub_wide[c].to_numpy(),
                            np.array([pub_truth[m] for m in pub_wide["model"].to_list()]),
                        )
                    ),
                )
                bvals = dict(zip(wide["model"].to_list(), wide[best_name].to_list(), strict=True))
                rows["best benchmark"] = (
                    *untried_scores(truth, np.array([bvals[m] for m in untried])),
                    None,
                )
                rows["user-only enet"] = (
                    *_user_enet(bench, measured, untried, truth_all, metric, truth),
                    None,
                )
                pp = predict_with_prior(prior, user, wide, metric=MAIN, evaluate=False)
                z = dict(zip(pp.models, pp.mean.tolist(), strict=True))
                rows["prior alone"] = (
                    *untried_scores(truth, np.array([z[m] for m in untried])),
                    None,
                )
                ps, cal = result.summary.prior, result.summary.calibration
                evidence = {
                    "prior_spearman": ps.spearman if ps else None,
                    "prior_low": ps.spearman_ci[0] if ps and ps.spearman_ci else None,
                    "minus_size_low": ps.minus_size_ci[0] if ps and ps.minus_size_ci else None,
                    "agreement": cal.agreement if cal else None,
                    "disagrees": cal.disagrees if cal else None,
                    "expected_spearman": result.summary.expected_spearman,
                    "expected_low": result.summary.expected_spearman_low,
                }
                for method, (r, t1, t3, cov) in rows.items():
                    records.append(
                        {
                            "target": kind,
                            "metric": metric,
                            "k": k,
                            "draw": d,
                            "method": method,
                            "spearman": r,
                            "top1": t1,
                            "top3": t3,
                            "coverage": cov,
                            "verdict": result.verdict.status if method == "simscope" else None,
                            **(evidence if method == "simscope" else {}),
                        }
                    )
    return records


def _user_enet(
    bench: pl.DataFrame,
    measured: list[str],
    untried: list[str],
    truth_all: dict[str, float],
    metric: str,
    truth: np.ndarray,
) -> tuple[float, bool, bool]:
    """Today's user-only Elastic Net on benchmarks + log(params), fit on the k measured."""
    if len(measured) < 3:
        return float("nan"), False, False
    features = build_features(
        bench,
        rm_frame(measured, truth_all, metric),
        metric,
        candidates=untried,
    )
    spec = next(s for s in predictor_specs(features) if s.name == "benchmarks_enet")
    m = features.measured
    fit = fit_predictor(spec, features.X[m], features.y[m], seed=0)
    pred_all = dict(zip(features.models, fit.predict(features.X).tolist(), strict=True))
    return untried_scores(truth, np.array([pred_all[x] for x in untried]))


# ---- 4. suggest ----------------------------------------------------------------------------


def suggest_sim(
    table: PriorTable, bench: pl.DataFrame, fam: dict[str, str], draws: int, seed: int
) -> dict[str, list[float]]:
    lp_all = log_params_of(table)
    truth_all = scores_of(table, MAIN)
    rng = np.random.default_rng(seed + 1)
    out: dict[str, list[float]] = {
        "simscope --suggest": [],
        "random order": [],
        "largest first": [],
    }
    for d in range(draws):
        pub, user = split(fam, rng)
        prior = table.subset(set(pub), name=f"{PRIOR}[published half]")
        best = max(user, key=lambda m: truth_all[m])
        perm = list(rng.permutation(len(user)))
        measured = sorted(user[i] for i in perm[:2])
        rest = [m for m in user if m not in measured]
        # random order: the best's expected position among the untried
        out["random order"].append(0.0 if best in measured else (len(rest) + 1) / 2)
        by_size = sorted(rest, key=lambda m: (-lp_all[m], m))
        out["largest first"].append(0.0 if best in measured else float(by_size.index(best) + 1))
        steps = 0
        while best not in measured:
            result = select_models(
                None,
                bench,
                rm_frame(measured, truth_all, MAIN),
                target_metric=MAIN,
                seed=d,
                candidates=user,
                prior=prior,
                suggest=1,
                baselines=False,
            )
            nxt = result.summary.suggestions[0].model if result.summary.suggestions else None
            if nxt is None:  # no value left: measure the top untried
                sel = result.selection.filter(pl.col("observed").is_null())
                nxt = sel["model"][0]
            measured = sorted([*measured, nxt])
            steps += 1
        out["simscope --suggest"].append(float(steps))
    return out


# ---- printing ------------------------------------------------------------------------------


def summarize(records: list[dict[str, Any]]) -> pl.DataFrame:
    df = pl.DataFrame(records, infer_schema_length=None)
    return (
        df.group_by("target", "k", "method", maintain_order=True)
        .agg(
            pl.col("spearman").filter(pl.col("spearman").is_not_nan()).mean(),
            pl.col("top1").cast(pl.Float64).mean(),
            pl.col("top3").cast(pl.Float64).mean(),
            pl.col("coverage").mean(),
            pl.len().alias("draws"),
        )
        .sort("target", "k", maintain_order=True)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--suggest-draws", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write every number here")
    ap.add_argument("--skip", nargs="*", default=[], choices=["cold", "pilot", "suggest"])
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    start = time.perf_counter()
    table, bench, fam = load()
    print(f"# bench_select on {platform.processor() or platform.machine()}, draws {args.draws}")
    print(f"families ({len(set(fam.values()))}, inferred from ids):")
    for f, ms in members(fam).items():
        print(f"  {f}: {', '.join(m.split('/')[-1] for m in ms)}")
    out: dict[str, Any] = {}

    if "cold" not in args.skip:
        t = time.perf_counter()
        rows = cold_start(table, bench, fam)
        out["cold_start"] = rows
        print(f"\n## 1. Cold start (k = 0), leave-one-family-out ({time.perf_counter() - t:.0f} s)")
        print(f"{'target':<10} {'method':<15} {'spearman':>8} {'MAE':>6} {'C@5':>5} {'C@10':>5}")
        for r in rows:
            print(
                f"{r['target']:<10} {r['method']:<15} {r['spearman']:8.3f} {r['mae']:6.2f} "
                f"{r['c@5']:5.2f} {r['c@10']:5.2f}"
            )
        by = {(r["target"], r["method"]): r["spearman"] for r in rows}
        gain = {m: by[(m, "simscope prior")] - by[(m, "log(params)")] for m in (MAIN, *CATEGORIES)}
        met_overall = gain[MAIN] >= 0
        plus = [m for m in CATEGORIES if gain[m] >= 0.05]
        print(
            f"target: overall >= log(params): {'MET' if met_overall else 'MISSED'} "
            f"({gain[MAIN]:+.3f}); >= +0.05 on two of four categories: "
            f"{'MET' if len(plus) >= 2 else 'MISSED'} ("
            + ", ".join(f"{m} {gain[m]:+.3f}" for m in CATEGORIES)
            + ")"
        )

    if "pilot" not in args.skip:
        t = time.perf_counter()
        records = pilot(table, bench, fam, args.draws, args.seed)
        out["pilot"] = records
        summary = summarize(records)
        print(f"\n## 2. Pilot ({time.perf_counter() - t:.0f} s)")
        print(
            f"{'target':<10} {'k':>3} {'method':<15} {'spearman':>8} {'top1':>5} {'top3':>5} "
            f"{'cover':>5}"
        )
        for r in summary.iter_rows(named=True):
            cov = "" if r["coverage"] is None else f"{r['coverage']:5.2f}"
            print(
                f"{r['target']:<10} {r['k']:>3} {r['method']:<15} {r['spearman']:8.3f} "
                f"{r['top1']:5.2f} {r['top3']:5.2f} {cov:>5}"
            )
        for kind in ("same", "different"):
            for k in KS:
                cell = summary.filter((pl.col("target") == kind) & (pl.col("k") == k))
                sp = dict(zip(cell["method"].to_list(), cell["spearman"].to_list(), strict=True))
                base = max(sp["log(params)"], sp["best benchmark"])
                t3 = cell.filter(pl.col("method") == "simscope")["top3"][0]
                print(
                    f"target {kind} k={k}: Spearman >= best baseline: "
                    f"{'MET' if sp['simscope'] >= base else 'MISSED'} "
                    f"({sp['simscope'] - base:+.3f}); top-3 >= 0.8: "
                    f"{'MET' if t3 >= 0.8 else 'MISSED'} ({t3:.2f})"
                )
        sims = [r for r in records if r["method"] == "simscope"]
        counts = Counter(r["verdict"] for r in sims)
        reliable = [r for r in sims if r["verdict"] == "reliable_ranking"]
        endorsed = [r for r in sims if r["verdict"] != "no_reliable_ranking"]
        false = sum(r["spearman"] < 0.3 for r in reliable)
        false_e = sum(r["spearman"] < 0.3 for r in endorsed)
        print(f"\n## 3. Verdict calibration over {len(sims)} pilot draws: {dict(counts)}")
        for status in ("reliable_ranking", "no_better_than_baseline", "no_reliable_ranking"):
            rs = [r["spearman"] for r in sims if r["verdict"] == status]
            if rs:
                print(f"  {status:<24} mean held-out Spearman {np.mean(rs):.3f} (n = {len(rs)})")
        share_e = false_e / len(endorsed) if endorsed else 0.0
        if reliable:
            share = false / len(reliable)
            print(
                f"false 'reliable' (Spearman < 0.3): {false} of {len(reliable)} = {share:.1%} "
                f"(target <= 5%: {'MET' if share <= 0.05 else 'MISSED'})"
            )
        else:
            print("false 'reliable': no 'reliable' verdict at all (nothing to check)")
        print(
            f"rankings endorsed (reliable, or 'no better than size': rank by it or by size) "
            f"with Spearman < 0.3: {false_e} of {len(endorsed)} = {share_e:.1%} (target <= 5%: "
            f"{'MET' if endorsed and share_e <= 0.05 else 'MISSED'})"
        )
        out["verdicts"] = dict(counts)

    if "suggest" not in args.skip:
        t = time.perf_counter()
        n = args.suggest_draws or args.draws
        sim = suggest_sim(table, bench, fam, n, args.seed)
        out["suggest"] = sim
        print(f"\n## 4. --suggest from 2 measured, {n} draws ({time.perf_counter() - t:.0f} s)")
        print(f"{'order':<20} {'median':>6} {'mean':>6}  measurements until the true best")
        for name, v in sim.items():
            print(f"{name:<20} {np.median(v):6.1f} {np.mean(v):6.2f}")
        s, r, lf = (sim[k] for k in ("simscope --suggest", "random order", "largest first"))
        print(
            f"target: median <= largest-first: "
            f"{'MET' if np.median(s) <= np.median(lf) else 'MISSED'} "
            f"({np.median(s):.1f} vs {np.median(lf):.1f}); mean <= half of random: "
            f"{'MET' if np.mean(s) <= np.mean(r) / 2 else 'MISSED'} "
            f"({np.mean(s):.2f} vs {np.mean(r) / 2:.2f})"
        )
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
