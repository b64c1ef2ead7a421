"""Select stage: readers, features, predictors, CV, intervals, verdict, writer and CLI.

Synthetic tables plant a known relation (or none); the real tables in tests/data are the
Open LLM Leaderboard v2 and published RM results by backbone (see tests/data/README.md).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import spearmanr
from sklearn.linear_model import ElasticNetCV
from sklearn.model_selection import PredefinedSplit

from simscope.cli import cli
from simscope.errors import SimscopeError
from simscope.records import PROFILE_SCHEMA, SELECTION_SCHEMA
from simscope.select import (
    format_result,
    read_benchmarks,
    read_candidates,
    read_model_map,
    read_prior,
    read_rm_results,
    rename_models,
    select_models,
    write_selection,
)
from simscope.select.cv import pair_splits, spearman, top_k_coverage
from simscope.select.enet import L1_RATIOS, _inner_folds, alpha_grid, fit_enet_cv
from simscope.select.families import assign_families, infer_families
from simscope.select.summary import CVSummary
from simscope.select.uncertainty import conformal_radius

DATA = Path(__file__).parent / "data"
SKYWORK = DATA / "rm_results_skywork_reward_v2.csv"
RB2 = DATA / "rm_results_rewardbench2_by_base.csv"
RB2_MAP = DATA / "select" / "rewardbench2_model_map.csv"


def synthetic(
    n_measured: int,
    n_untried: int,
    *,
    seed: int,
    signal: bool = True,
    n_bench: int = 4,
    noise: float = 1.0,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, float]]:
    """Benchmarks (long, with params_B) and RM results; with ``signal`` the target is
    0.3 b0 + 0.15 b1 + 40 + N(0, noise), otherwise N(60, 3) independent of everything."""
    rng = np.random.default_rng(seed)
    n = n_measured + n_untried
    B = rng.normal(50.0, 10.0, size=(n, n_bench))
    params = np.exp(rng.uniform(-1.0, 3.0, size=n))
    if signal:
        y = 0.3 * B[:, 0] + 0.15 * B[:, 1] + 40.0 + rng.normal(0.0, noise, size=n)
    else:
        y = rng.normal(60.0, 3.0, size=n)
    models = [f"org/m{i:03d}" for i in range(n)]
    rows = [(m, f"b{j}", float(B[i, j])) for i, m in enumerate(models) for j in range(n_bench)]
    rows += [(m, "params_B", float(params[i])) for i, m in enumerate(models)]
    bench = pl.DataFrame(
        rows, schema={"model": pl.String, "benchmark": pl.String, "score": pl.Float64}, orient="row"
    )
    rm = pl.DataFrame(
        {"model": models[:n_measured], "metric": ["rb"] * n_measured, "score": y[:n_measured]}
    )
    return bench, rm, dict(zip(models, y.tolist(), strict=True))


# ---- the measurements: planted relation, pure noise --------------------------------


def test_planted_linear_relation_is_recovered_with_calibrated_intervals() -> None:
    bench, rm, truth = synthetic(24, 150, seed=1)
    result = select_models(None, bench, rm, target_metric="rb", all_models=True, seed=0, n_boot=50)
    assert result.verdict.status in ("reliable_ranking", "no_better_than_baseline")
    # no prior: the ranker is log(params) calibrated to the measured models; size carries no
    # signal here, so the residual model over the benchmarks does the ranking
    assert result.summary.ranker == "size_calibrated"
    assert result.verdict.chosen == "calibrated"
    assert result.summary.calibration is not None
    assert result.summary.calibration.residual_strength > 0
    untried = result.selection.filter(pl.col("observed").is_null())
    true = np.array([truth[m] for m in untried.get_column("model")])
    rho = spearmanr(untried.get_column("predicted").to_numpy(), true).statistic
    assert rho > 0.85
    low, high = untried.get_column("pi_low").to_numpy(), untried.get_column("pi_high").to_numpy()
    coverage = float(np.mean((low <= true) & (true <= high)))
    assert abs(coverage - 0.9) <= 0.10
    assert abs(result.summary.interval_coverage - 0.9) <= 0.15
    row = result.summary.predictors[result.verdict.chosen]
    assert row.pair_tau_ci[0] > 0.3
    # The weights name the planted benchmarks, b0 heaviest.
    assert max(result.weights, key=lambda k: abs(result.weights[k])) == "b0"


def test_pure_noise_gets_no_reliable_ranking() -> None:
    bench, rm, _ = synthetic(24, 30, seed=2, signal=False)
    result = select_models(None, bench, rm, target_metric="rb", all_models=True, seed=0, n_boot=20)
    assert result.verdict.status == "no_reliable_ranking"
    assert result.verdict.text.startswith("NO RELIABLE RANKING: ")
    assert "do not pick a base model by it" in result.verdict.text


def test_loo_shrink_to_mean_artefact_is_reported_not_rewarded() -> None:
    bench, rm, _ = synthetic(12, 0, seed=3, signal=False)
    result = select_models(None, bench, rm, target_metric="rb", all_models=True, seed=0, n_boot=5)
    const = result.summary.predictors["constant"]
    # The mean of the other models falls as a model's own score rises: Spearman -1 under LOO.
    assert const.spearman_raw == pytest.approx(-1.0)
    assert const.spearman == 0.0
    assert const.pair_tau == 0.0


# ---- small and awkward inputs -------------------------------------------------------------


def test_three_measured_models_work_and_say_no_reliable_ranking() -> None:
    bench, rm, _ = synthetic(3, 5, seed=4)
    result = select_models(None, bench, rm, target_metric="rb", all_models=True, seed=0, n_boot=10)
    assert result.verdict.status == "no_reliable_ranking"
    assert "only 3 measured models" in result.verdict.text
    assert result.selection.height == 8
    untried = result.selection.filter(pl.col("observed").is_null())
    # Calibrated around log(params), the intervals are bounded even from 3 measured models
    # (jackknife+ alone would need 9 at 90%); their coverage is checked on held-out families.
    assert untried.get_column("pi_low").is_not_null().all()
    assert (untried["pi_low"] < untried["predicted"]).all()
    assert (untried["predicted"] < untried["pi_high"]).all()
    # with 3 measured models in another metric than the prior (log params), holding a family
    # out leaves too few to set the scale: the coverage line says so instead of vanishing
    assert result.summary.interval_coverage is None
    assert result.summary.interval_note.startswith("no measured family can be held out")
    assert result.selection.get_column("p_best").sum() == pytest.approx(1.0)


def test_two_measured_models_is_an_error() -> None:
    bench, rm, _ = synthetic(2, 5, seed=4)
    with pytest.raises(SimscopeError) as e:
        select_models(None, bench, rm, target_metric="rb", all_models=True, seed=0)
    assert str(e.value) == (
        "select: only 2 of 2 measured models ('rb') are found in the feature tables (need 3); "
        "unmatched: none; names must match exactly: rename them in the RM-results table or "
        "give --model-map with columns name,model; or give --prior to rank from published "
        "results"
    )


def test_missing_features_are_imputed_or_dropped_with_a_report() -> None:
    bench, rm, _ = synthetic(10, 4, seed=5)
    # b2 missing for one measured model (imputed), b3 for 7 of 10 (dropped), and an untried
    # model known only by name elsewhere has no features at all.
    bench = bench.filter(
        ~((pl.col("benchmark") == "b2") & (pl.col("model") == "org/m000"))
        & ~((pl.col("benchmark") == "b3") & (pl.col("model") < "org/m007"))
    )
    result = select_models(
        None,
        bench,
        rm,
        target_metric="rb",
        seed=0,
        n_boot=5,
        candidates=["org/m010", "org/m011", "org/zzz"],
    )
    report = result.summary.features
    assert report.imputed == {"b2": ["org/m000"]}
    assert report.dropped_features == {"b3": "missing for 7 of 10 measured models"}
    assert report.unknown_candidates == {"org/zzz": []}
    assert set(result.selection.get_column("model")) == {f"org/m{i:03d}" for i in range(12)}
    # when no candidate is known there is nothing to rank: say so, with what was meant
    with pytest.raises(SimscopeError) as e:
        select_models(
            None, bench, rm, target_metric="rb", seed=0, n_boot=5, candidates=["m011", "zzz"]
        )
    assert str(e.value) == (
        "select: none of the candidates has features: 'm011' (did you mean org/m011?); "
        "'zzz' (no close name)"
    )


def test_collinear_features_do_not_break_the_fit() -> None:
    bench, rm, truth = synthetic(12, 30, seed=6)
    copy = bench.filter(pl.col("benchmark") == "b0").with_columns(benchmark=pl.lit("b0_copy"))
    wide = bench.filter(pl.col("benchmark").is_in(["b0", "b1", "b2", "b3"]))
    avg = wide.group_by("model").agg(pl.col("score").mean()).with_columns(benchmark=pl.lit("avg"))
    bench = pl.concat([bench, copy, avg.select(bench.columns)])
    result = select_models(None, bench, rm, target_metric="rb", all_models=True, seed=0, n_boot=10)
    untried = result.selection.filter(pl.col("observed").is_null())
    true = np.array([truth[m] for m in untried.get_column("model")])
    assert spearmanr(untried.get_column("predicted").to_numpy(), true).statistic > 0.8
    assert np.isfinite(untried.get_column("predicted").to_numpy()).all()


def test_profile_features_add_similarity_and_combined_predictors() -> None:
    bench, rm, truth = synthetic(12, 4, seed=7, n_bench=2)
    models = sorted(truth)
    rng = np.random.default_rng(0)
    closeness = {m: truth[m] / 10.0 + rng.normal(0, 0.05) for m in models}
    profile = pl.DataFrame(
        {
            "model": models * 3,
            "slice": ["prompt"] * len(models) + ["chosen"] * (2 * len(models)),
            "topic": [None] * (3 * len(models)),
            "metric": ["semantic.coverage_k5"] * (2 * len(models))
            + ["lexical.containment_13gram"] * len(models),
            "value": [closeness[m] for m in models]
            + [0.5] * len(models)
            + [truth[m] / 100 for m in models],
            "ci_low": [None] * (3 * len(models)),
            "ci_high": [None] * (3 * len(models)),
        },
        schema=PROFILE_SCHEMA,
    )
    result = select_models(profile, bench, rm, target_metric="rb", seed=0, n_boot=5)
    table = result.summary.predictors
    assert list(table) == [
        "constant",
        "best_benchmark",
        "log_params",
        "benchmarks_enet",
        "similarity_enet",
        "combined_enet",
        "calibrated",
    ]
    assert table["similarity_enet"].features == ["prompt/semantic.coverage_k5"]
    # the similarity feature reaches the calibrated ranker's residual model too
    assert "prompt/semantic.coverage_k5" in table["calibrated"].features
    # chosen/semantic.coverage_k5 is constant: dropped, and said so.
    assert result.summary.features.dropped_features == {
        "chosen/semantic.coverage_k5": "constant over the 12 measured models that have it"
    }
    assert table["similarity_enet"].pair_tau > 0.8
    # A contamination check finds copies, not closeness: kept out of the features, and said so.
    assert result.summary.features.contamination_checks_not_used == [
        "chosen/lexical.containment_13gram"
    ]


def test_same_seed_same_result_other_seed_same_shape() -> None:
    bench, rm, _ = synthetic(12, 6, seed=8)
    a = select_models(None, bench, rm, target_metric="rb", seed=3, n_boot=20)
    b = select_models(None, bench, rm, target_metric="rb", seed=3, n_boot=20)
    assert a.selection.equals(b.selection)
    assert a.summary == b.summary
    assert a.selection.schema == SELECTION_SCHEMA


# ---- pieces checked against exact answers --------------------------------------------------


def test_batched_elastic_net_matches_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    for n, p in ((12, 4), (40, 6)):
        X = rng.normal(size=(n, p))
        X[:, -1] = X[:, :-1].mean(axis=1)  # exactly collinear, as a leaderboard average is
        X = (X - X.mean(axis=0)) / X.std(axis=0)
        y = X[:, 0] - 0.5 * X[:, 1] + rng.normal(size=n)
        fit = fit_enet_cv(X, y, seed=0)
        folds = np.zeros(n, dtype=int)
        for k, val in enumerate(_inner_folds(n, 0)):
            folds[val] = k
        alphas, ratios = alpha_grid(X, y)
        for l1 in L1_RATIOS:
            ref = ElasticNetCV(
                l1_ratio=l1,
                alphas=alphas[ratios == l1],
                cv=PredefinedSplit(folds),
                tol=1e-10,
                max_iter=100_000,
            ).fit(X, y)
            if l1 == fit.l1_ratio:
                assert ref.alpha_ == pytest.approx(fit.alpha)
                np.testing.assert_allclose(fit.coef, ref.coef_, atol=1e-5)
                assert fit.intercept == pytest.approx(ref.intercept_, abs=1e-5)


def test_top_k_coverage_known_answers() -> None:
    y = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    assert top_k_coverage(y, y, 3) == 1.0
    assert top_k_coverage(-y, y, 2) == 0.0
    # All tied predictions: each model is in the top 2 with probability 2/5 (chance).
    assert top_k_coverage(np.zeros(5), y, 2) == pytest.approx(0.4)


def test_pair_splits_leave_pair_out_for_small_n() -> None:
    splits = pair_splits(np.arange(6.0), seed=0)
    assert len(splits.test_sets) == 15 and splits.first.size == 15


@given(st.lists(st.floats(-100, 100), min_size=2, max_size=12))
def test_spearman_bounded_and_zero_without_spread(values: list[float]) -> None:
    a = np.array(values)
    rho = spearman(a, np.arange(a.size, dtype=float))
    assert -1.0 - 1e-12 <= rho <= 1.0 + 1e-12
    assert spearman(np.zeros(a.size), a) == 0.0


# ---- real tables --------------------------------------------------------------------------


def test_bundled_leaderboard_is_readable_by_name() -> None:
    bench = read_benchmarks("open-llm-leaderboard-v2")
    assert bench.get_column("model").n_unique() == 89  # 96 rows, 7 models listed twice
    assert sorted(bench.get_column("benchmark").unique()) == [
        "BBH",
        "GPQA",
        "IFEval",
        "MATH_Lvl5",
        "MMLU_PRO",
        "MUSR",
        "average",
        "params_B",
    ]
    gemma = bench.filter((pl.col("model") == "google/gemma-2-2b") & (pl.col("benchmark") == "BBH"))
    assert gemma.get_column("score").to_list() == [pytest.approx((12.50 + 11.76) / 2)]


def test_skywork_backbones_three_match_and_the_verdict_is_honest() -> None:
    rm = read_rm_results(SKYWORK, model_column="base_model", where={"rm_variant": "Llama-3.1-8B"})
    rm = pl.concat(
        [rm, read_rm_results(SKYWORK, model_column="base_model", duplicates="first")]
    ).unique(["model", "metric"], keep="first", maintain_order=True)
    bench = read_benchmarks("open-llm-leaderboard-v2")
    result = select_models(None, bench, rm, target_metric="rewardbench_v2", seed=0, n_boot=20)
    unmatched = result.summary.features.unmatched_measured_models
    assert sorted(unmatched) == [
        "Qwen/Qwen3-0.6B",
        "Qwen/Qwen3-1.7B",
        "Qwen/Qwen3-4B",
        "Qwen/Qwen3-8B",
    ]
    assert result.summary.n_measured == 3
    assert result.verdict.status == "no_reliable_ranking"


def test_rewardbench2_short_names_match_through_a_model_map() -> None:
    names = read_model_map(RB2_MAP)
    rm = rename_models(
        read_rm_results(RB2, model_column="base_model", where={"training_data": "Both"}), names
    )
    bench = read_benchmarks("open-llm-leaderboard-v2")
    result = select_models(None, bench, rm, target_metric="rb2_avg", seed=0, n_boot=20)
    assert result.summary.n_measured == 5
    assert sorted(result.summary.features.unmatched_measured_models) == [
        "Llama-3.1-70B-Instruct",
        "Tulu-3-70B-SFT",
    ]
    assert result.verdict.status != "reliable_ranking"


# ---- bad input tables ----------------------------------------------------------------------


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_missing_model_column_names_the_fix(tmp_path: Path) -> None:
    path = _write(tmp_path, "rm.csv", "backbone,rb\na,1\n")
    with pytest.raises(SimscopeError) as e:
        read_rm_results(path)
    assert str(e.value) == (
        f"{path}: RMResults: no model column 'model'; expected a column with the model ids, "
        "found columns ['backbone', 'rb']; rename it, or name it with --rm-model-column"
    )


def test_long_layout_missing_benchmark_model_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "b.csv", "name,benchmark,score\na,x,1\n")
    with pytest.raises(SimscopeError) as e:
        read_benchmarks(path)
    assert str(e.value) == (
        f"{path}: Benchmarks: no model column 'model'; expected a column with the model ids, "
        "found columns ['name', 'benchmark', 'score']; rename it, or name it with "
        "--benchmark-model-column"
    )


def test_duplicate_models_are_refused_with_the_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, "rm.csv", "model,rb\na,1\nb,2\na,3\n")
    with pytest.raises(SimscopeError) as e:
        read_rm_results(path)
    assert str(e.value) == (
        f"{path}: duplicate model 'a' (metric 'rb') at lines 2, 4: expected one score per "
        "model, or delete rows, or combine them with --rm-duplicates mean|max|first"
    )
    combined = read_rm_results(path, duplicates="mean").sort("model")
    assert combined.get_column("score").to_list() == [2.0, 2.0]


def test_non_numeric_score_names_line_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "b.csv", "model,IFEval,BBH\na,1.0,2\nb,n/a,3\n")
    with pytest.raises(SimscopeError) as e:
        read_benchmarks(path)
    assert str(e.value) == (
        f"{path}:3: Benchmarks: field 'IFEval': expected a finite number (the column holds "
        "scores), found 'n/a'; fix the cell, leave it empty for a missing score, or delete the "
        "column"
    )
    long = _write(tmp_path, "rm.csv", "model,metric,score\na,rb,1\nb,rb,high\n")
    with pytest.raises(SimscopeError) as e:
        read_rm_results(long)
    assert str(e.value) == (
        f"{long}:3: RMResults: field 'score': expected a finite number, found 'high'; fix the cell "
        "or delete the row"
    )
    infinite = _write(tmp_path, "inf.csv", "model,metric,score\na,rb,1\nb,rb,inf\n")
    with pytest.raises(SimscopeError, match=r"inf.csv:3: RMResults: field 'score': expected a "):
        read_rm_results(infinite)


def test_unknown_target_lists_the_metrics(tmp_path: Path) -> None:
    bench, rm, _ = synthetic(4, 0, seed=9)
    with pytest.raises(SimscopeError) as e:
        select_models(None, bench, rm, target_metric="rewardbench", seed=0)
    assert str(e.value) == (
        "select: --target 'rewardbench' is not a metric of the RM results; found ['rb']"
    )


def test_unmatched_names_are_reported_with_suggestions(tmp_path: Path) -> None:
    bench = read_benchmarks("open-llm-leaderboard-v2")
    rm = read_rm_results(RB2, model_column="base_model", where={"training_data": "Both"})
    with pytest.raises(SimscopeError) as e:
        select_models(None, bench, rm, target_metric="rb2_avg", seed=0)
    message = str(e.value)
    assert message.startswith("select: only 0 of 7 measured models ('rb2_avg') are found")
    assert "'Tulu-3-8B-SFT' (closest: 'allenai/Llama-3.1-Tulu-3-8B-SFT')" in message
    assert message.endswith(
        "give --model-map with columns name,model; or give --prior to rank from published results"
    )


# ---- writer and CLI ------------------------------------------------------------------------


def test_write_selection_round_trips(tmp_path: Path) -> None:
    bench, rm, _ = synthetic(8, 4, seed=10)
    result = select_models(None, bench, rm, target_metric="rb", all_models=True, seed=0, n_boot=10)
    table, summary = write_selection(result, tmp_path / "sel")
    assert pl.read_parquet(table).equals(result.selection)
    loaded = json.loads(summary.read_text())
    assert loaded["verdict"] == result.verdict.text
    assert loaded["chosen"] == result.verdict.chosen
    assert sorted(p.name for p in (tmp_path / "sel").iterdir()) == [
        "cv_summary.json",
        "selection.parquet",
    ]


def test_cli_select_prints_ranking_and_verdict(tmp_path: Path) -> None:
    bench, rm, _ = synthetic(8, 4, seed=11)
    bench.write_csv(tmp_path / "bench.csv")
    rm.write_csv(tmp_path / "rm.csv")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "--quiet",
            "select",
            "--benchmarks",
            str(tmp_path / "bench.csv"),
            "--rm-results",
            str(tmp_path / "rm.csv"),
            "--target",
            "rb",
            "--n-boot",
            "10",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Ranking by ")
    assert "Cross-validation over the measured models" in result.output
    assert (out / "selection.parquet").is_file() and (out / "cv_summary.json").is_file()


def test_cli_select_bad_target_is_one_error_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "select",
            "--benchmarks",
            "open-llm-leaderboard-v2",
            "--rm-results",
            str(SKYWORK),
            "--rm-model-column",
            "base_model",
            "--rm-duplicates",
            "first",
            "--target",
            "rewardbench_v3",
        ],
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: select: --target 'rewardbench_v3' is not a metric of the RM results; found "
        "['avg7', 'judgebench', 'ppe_corr', 'ppe_pref', 'rb2_avg_check', 'rb2_factuality', "
        "'rb2_focus', 'rb2_math', 'rb2_precise_if', 'rb2_safety', 'rb2_ties', 'rewardbench_v1', "
        "'rewardbench_v2', 'rm_bench', 'rmb', 'rmbench_avg_check', 'rmbench_easy', "
        "'rmbench_hard', 'rmbench_normal']"
    )
    assert "Traceback" not in result.output


# ---- rates over many seeds (slow) ----------------------------------------------------------


@pytest.mark.slow
def test_rates_over_seeds_false_rankings_and_coverage() -> None:
    false_rankings = 0
    for seed in range(20):
        bench, rm, _ = synthetic(20, 10, seed=100 + seed, signal=False)
        result = select_models(
            None, bench, rm, target_metric="rb", all_models=True, seed=0, n_boot=10
        )
        false_rankings += result.verdict.status != "no_reliable_ranking"
    assert false_rankings <= 2  # <= 10% of pure-noise targets get any ranking
    rhos, coverages = [], []
    for seed in range(10):
        bench, rm, truth = synthetic(20, 100, seed=100 + seed)
        result = select_models(
            None, bench, rm, target_metric="rb", all_models=True, seed=0, n_boot=10
        )
        untried = result.selection.filter(pl.col("observed").is_null())
        true = np.array([truth[m] for m in untried.get_column("model")])
        rhos.append(spearmanr(untried.get_column("predicted").to_numpy(), true).statistic)
        low = untried.get_column("pi_low").to_numpy()
        high = untried.get_column("pi_high").to_numpy()
        coverages.append(float(np.mean((low <= true) & (true <= high))))
    assert np.mean(rhos) > 0.9
    assert abs(np.mean(coverages) - 0.9) <= 0.05


def test_parquet_tables_name_rows(tmp_path: Path) -> None:
    path = tmp_path / "b.parquet"
    pl.DataFrame(
        {"model": ["a", "b"], "benchmark": ["x", "x"], "score": ["1.5", "oops"]}
    ).write_parquet(path)
    with pytest.raises(SimscopeError) as e:
        read_benchmarks(path)
    assert str(e.value) == (
        f"{path}: row 2: Benchmarks: field 'score': expected a finite number, found 'oops'; "
        "fix the cell or delete the row"
    )


def test_rm_where_names_the_values_found() -> None:
    with pytest.raises(SimscopeError) as e:
        read_rm_results(RB2, model_column="base_model", where={"training_data": "both"})
    assert str(e.value) == (
        f"{RB2}: --rm-where training_data=both: no row has training_data='both'; values found: "
        "['Both', 'Skywork', 'Tulu']"
    )


def test_profile_csv_through_the_cli(tmp_path: Path) -> None:
    bench, rm, truth = synthetic(8, 3, seed=12, n_bench=2)
    bench.write_csv(tmp_path / "bench.csv")
    rm.write_csv(tmp_path / "rm.csv")
    lines = ["model,slice,topic,metric,value,ci_low,ci_high"]
    lines += [f"{m},prompt,,semantic.coverage_k5,{truth[m] / 100:.4f},," for m in sorted(truth)]
    lines += [f"{m},prompt,t1,semantic.coverage_k5,0.5,," for m in sorted(truth)]
    (tmp_path / "profile.csv").write_text("\n".join(lines) + "\n")
    args = ["select", "--profile", str(tmp_path / "profile.csv"), "--benchmarks"]
    args += [str(tmp_path / "bench.csv"), "--rm-results", str(tmp_path / "rm.csv")]
    result = CliRunner().invoke(cli, [*args, "--target", "rb", "--n-boot", "5"])
    assert result.exit_code == 0, result.output
    assert "similarity_enet" in result.output and "combined_enet" in result.output
    (tmp_path / "profile.csv").write_text("\n".join([*lines, lines[1]]) + "\n")
    result = CliRunner().invoke(cli, [*args, "--target", "rb"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {tmp_path / 'profile.csv'}: Profile: duplicate rows for model 'org/m000', "
        "feature 'prompt/semantic.coverage_k5' (topic null); expected one value per (model, "
        "slice, metric); deduplicate the Profile"
    )


def test_equal_scores_share_p_best_and_give_no_ranking() -> None:
    bench, rm, _ = synthetic(6, 2, seed=13)
    result = select_models(
        None,
        bench,
        rm.with_columns(score=pl.lit(70.0)),
        target_metric="rb",
        all_models=True,
        seed=0,
        n_boot=5,
    )
    assert result.verdict.status == "no_reliable_ranking"
    p = result.selection.sort("model")
    assert p["p_best"].sum() == pytest.approx(1.0)
    measured = p.filter(pl.col("observed").is_not_null())["p_best"]
    assert measured.n_unique() == 1  # equal observed scores share the win


def test_model_map_needs_name_and_model_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "map.csv", "short,long\na,b\n")
    with pytest.raises(SimscopeError) as e:
        read_model_map(path)
    assert str(e.value) == (
        f"{path}: model map: missing column(s) ['name', 'model']; expected columns ['name', "
        "'model'] (one row per name to rename), found ['short', 'long']"
    )


def test_jackknife_plus_ranks_are_exact_at_round_levels() -> None:
    # 9 residuals at 90%: the ceil(0.9 * 10) = 9th value, not the 10th (float 9.000000000000002).
    assert conformal_radius(np.arange(1.0, 10.0), coverage=0.9) == 9.0
    assert conformal_radius(np.arange(1.0, 9.0), coverage=0.9) == math.inf


# ---- issue 14: bugs and frictions, one test each -------------------------------------------


def _wide_bench(tmp_path: Path, extra: dict[str, list[float]], n: int = 12) -> tuple[Path, Path]:
    """A wide benchmark CSV (b0, b1, params_B and ``extra`` columns) and RM results for the
    first 8 models (rb = 2 b0 + noise)."""
    rng = np.random.default_rng(3)
    b0, b1 = rng.normal(50, 10, n), rng.normal(50, 10, n)
    models = [f"org/m{i:02d}" for i in range(n)]
    y = 2 * b0 + rng.normal(0, 1, n)
    cols = {"model": models, "b0": b0, "b1": b1, "params_B": np.exp(rng.uniform(0, 3, n))}
    cols.update({k: v[:n] for k, v in extra.items()})
    pl.DataFrame(cols).write_csv(tmp_path / "bench.csv")
    pl.DataFrame({"model": models[:8], "rb": y[:8]}).write_csv(tmp_path / "rm.csv")
    return tmp_path / "bench.csv", tmp_path / "rm.csv"


def test_benchmark_column_with_the_targets_name_is_not_a_feature(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    bench_path, rm_path = _wide_bench(tmp_path, {"rb": list(rng.normal(0, 1, 12))})
    bench = read_benchmarks(bench_path)
    rm = read_rm_results(rm_path)
    result = select_models(None, bench, rm, target_metric="rb", all_models=True, n_boot=5)
    assert "rb" not in result.summary.features.features
    assert result.summary.features.excluded_columns["rb"].startswith(
        "has the name of an RM-results metric"
    )


def test_benchmark_equal_to_the_target_is_left_out(tmp_path: Path) -> None:
    bench_path, rm_path = _wide_bench(tmp_path, {})
    rm = read_rm_results(rm_path)
    leak = rm.rename({"metric": "benchmark"}).with_columns(benchmark=pl.lit("leaderboard_score"))
    bench = pl.concat([read_benchmarks(bench_path), leak.select("model", "benchmark", "score")])
    result = select_models(None, bench, rm, target_metric="rb", all_models=True, n_boot=5)
    assert result.summary.features.excluded_columns["leaderboard_score"] == (
        "equals the RM results' 'rb' on all 8 measured models that have it: the target itself, "
        "not a public benchmark"
    )
    assert result.summary.predictors["benchmarks_enet"].mae > 0.1


def test_rank_columns_are_not_features_and_features_are_listed(tmp_path: Path) -> None:
    ranks = [float(i) for i in range(1, 13)]
    bench_path, rm_path = _wide_bench(tmp_path, {"v2_rank": ranks})
    args = ["select", "--benchmarks", str(bench_path), "--rm-results", str(rm_path)]
    result = CliRunner().invoke(cli, [*args, "--target", "rb", "--all-models", "--n-boot", "5"])
    assert result.exit_code == 0, result.output
    assert "Features (3): b0, b1, log_params" in result.output
    assert "Not features: v2_rank (bookkeeping, not a score" in result.output
    # named explicitly, it is used
    args += ["--benchmark-columns", "b0,v2_rank"]
    result = CliRunner().invoke(cli, [*args, "--target", "rb", "--all-models", "--n-boot", "5"])
    assert result.exit_code == 0, result.output
    assert "Features (3): b0, v2_rank, log_params" in result.output


def test_an_uninformative_predictor_ties_instead_of_ranking_alphabetically() -> None:
    # No sizes and no prior: the CV-chosen predictor over a Profile of pure noise predicts
    # one value for every untried model; they share a rank.
    rng = np.random.default_rng(5)
    models = [f"org/m{i:02d}" for i in range(14)]
    profile = pl.DataFrame(
        {
            "model": models,
            "slice": ["chosen"] * 14,
            "topic": [None] * 14,
            "metric": ["semantic.coverage_k5"] * 14,
            "value": rng.normal(0.5, 0.1, 14),
            "ci_low": [None] * 14,
            "ci_high": [None] * 14,
        },
        schema=PROFILE_SCHEMA,
    )
    rm = pl.DataFrame({"model": models[:10], "metric": "rb", "score": rng.normal(60, 3, 10)})
    result = select_models(profile, None, rm, target_metric="rb", seed=0, n_boot=5)
    assert result.summary.ranker == "cv_chosen"
    assert result.verdict.status == "no_reliable_ranking"
    untried = result.selection.filter(pl.col("observed").is_null())
    if untried["predicted"].n_unique() == 1:
        assert untried["rank"].n_unique() == 1


def test_extrapolation_sentence_reads_without_a_stray_comma() -> None:
    bench, rm, _ = synthetic(10, 40, seed=21, noise=0.3)
    result = select_models(None, bench, rm, target_metric="rb", all_models=True, n_boot=5)
    text = result.verdict.text
    assert "untried models, lie" not in text
    if result.summary.extrapolated:
        n, m = len(result.summary.extrapolated), result.summary.n_untried
        assert f"{n} of {m} untried models" in text
        assert " lie outside the measured models' range" in text


def test_output_names_the_best_benchmark_and_the_size_slopes_sign(tmp_path: Path) -> None:
    bench, rm, _ = synthetic(10, 3, seed=22)
    bench.write_csv(tmp_path / "bench.csv")
    rm.write_csv(tmp_path / "rm.csv")
    args = ["select", "--benchmarks", str(tmp_path / "bench.csv"), "--rm-results"]
    args += [str(tmp_path / "rm.csv"), "--target", "rb", "--all-models", "--n-boot", "5"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    best = next(line for line in result.output.splitlines() if line.startswith("best_benchmark"))
    assert best.endswith("(b0, higher is better)")
    size = next(line for line in result.output.splitlines() if line.startswith("log_params "))
    assert size.endswith("is better)") and "(log_params, " in size


def test_scope_is_the_named_candidates_plus_the_measured_ones() -> None:
    bench = read_benchmarks("open-llm-leaderboard-v2")
    rm = pl.DataFrame(
        {
            "model": ["Qwen/Qwen2.5-7B-Instruct", "google/gemma-2-2b-it", "tiiuae/Falcon3-7B-Base"],
            "metric": "rb",
            "score": [80.0, 70.0, 75.0],
        }
    )
    cands = ["meta-llama/Llama-3.2-3B-Instruct", "microsoft/phi-2"]
    result = select_models(None, bench, rm, target_metric="rb", candidates=cands, n_boot=5)
    assert sorted(result.selection["model"]) == sorted([*cands, *rm["model"]])
    with pytest.raises(SimscopeError) as e:
        select_models(
            None,
            bench,
            pl.DataFrame(schema=dict(rm.schema)),
            target_metric="rb",
            prior=read_prior("ahrabian2025-regression"),
        )
    assert str(e.value) == (
        "select: no candidates to rank; name them with --candidate or --candidates-file (the "
        "feature tables list 89 models; --all-models ranks every one)"
    )


def test_candidates_file_text_and_csv(tmp_path: Path) -> None:
    text = _write(tmp_path, "c.txt", "# mine\nQwen/Qwen2.5-7B\n\nmicrosoft/phi-2  # small\n")
    assert read_candidates(text).models == ("Qwen/Qwen2.5-7B", "microsoft/phi-2")
    csv = _write(tmp_path, "c.csv", "model,family,cost,params_B\na,fa,3.5,7\nb,,,\n")
    table = read_candidates(csv)
    assert table.models == ("a", "b")
    assert table.families == {"a": "fa"} and table.costs == {"a": 3.5}
    assert table.params_b == {"a": 7.0}
    twice = _write(tmp_path, "d.csv", "model\na\nb\na\n")
    with pytest.raises(SimscopeError) as e:
        read_candidates(twice)
    assert str(e.value) == (
        f"{twice}:4: candidates: field 'model': 'a' is listed twice (also at line 2); keep one row"
    )
    bad = _write(tmp_path, "e.csv", "model,cost\na,cheap\n")
    with pytest.raises(SimscopeError) as e:
        read_candidates(bad)
    assert str(e.value) == (
        f"{bad}:2: candidates: field 'cost': expected a finite number, found 'cheap'; fix the "
        "cell or leave it empty"
    )


def test_model_map_applies_to_candidates_and_the_candidates_file(tmp_path: Path) -> None:
    rm = _write(
        tmp_path,
        "rm.csv",
        "model,rb\nQwen/Qwen2.5-7B-Instruct,80\n"
        "google/gemma-2-2b-it,70\ntiiuae/Falcon3-7B-Base,75\n",
    )
    names = _write(
        tmp_path,
        "map.csv",
        "name,model\nphi2,microsoft/phi-2\nllama3b,meta-llama/Llama-3.2-3B-Instruct\n",
    )
    cands = _write(tmp_path, "c.txt", "llama3b\n")
    args = ["select", "--benchmarks", "open-llm-leaderboard-v2", "--rm-results", str(rm)]
    args += ["--target", "rb", "--model-map", str(names), "--candidate", "phi2"]
    args += ["--candidates-file", str(cands), "--n-boot", "5"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "microsoft/phi-2" in result.output
    assert "meta-llama/Llama-3.2-3B-Instruct" in result.output
    assert "(3 measured, 2 untried" in result.output


def test_benchmark_model_column_is_configurable(tmp_path: Path) -> None:
    path = _write(tmp_path, "b.csv", "hf_id,x,params_B\na,1,1\nb,2,2\nc,3,4\nd,5,8\n")
    bench = read_benchmarks(path, model_column="hf_id")
    assert sorted(bench["model"].unique()) == ["a", "b", "c", "d"]
    with pytest.raises(SimscopeError) as e:
        read_benchmarks(path)
    assert str(e.value).endswith("rename it, or name it with --benchmark-model-column")


def test_jackknife_intervals_below_9_measured_say_why_in_the_coverage_line() -> None:
    # A Profile alone (no sizes, no prior): the CV-chosen predictor with jackknife+ intervals,
    # which are unbounded at 90% from 5 models; the coverage line says so instead of vanishing.
    rng = np.random.default_rng(1)
    models = [f"org/m{i:02d}" for i in range(8)]
    truth = rng.normal(60, 3, 8)
    profile = pl.DataFrame(
        {
            "model": models,
            "slice": ["chosen"] * 8,
            "topic": [None] * 8,
            "metric": ["semantic.coverage_k5"] * 8,
            "value": truth / 100 + rng.normal(0, 0.001, 8),
            "ci_low": [None] * 8,
            "ci_high": [None] * 8,
        },
        schema=PROFILE_SCHEMA,
    )
    rm = pl.DataFrame({"model": models[:5], "metric": "rb", "score": truth[:5]})
    result = select_models(profile, None, rm, target_metric="rb", seed=0, n_boot=5)
    assert result.summary.interval_coverage is None
    assert result.summary.interval_note.startswith(
        "90% jackknife+ intervals need at least 9 measured models (have 5)"
    )
    assert "Interval coverage not checked: 90% jackknife+" in format_result(result)


def test_bundled_duplicate_averaging_is_not_logged_on_every_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        read_benchmarks("open-llm-leaderboard-v2")
    assert "averaged repeated submissions" not in caplog.text
    own = _write(
        tmp_path,
        "lb.csv",
        "model,x,duplicate_entry\na,1,yes\na,3,yes\nb,2,\n",
    )
    with caplog.at_level(logging.INFO):
        bench = read_benchmarks(own)
    assert "averaged repeated submissions of ['a']" in caplog.text
    assert bench.filter(pl.col("model") == "a")["score"].to_list() == [2.0]


# ---- issue 16 item 5: a NaN or blank RM score is refused -------------------------------------


def test_blank_or_nan_rm_scores_are_refused_with_line_and_field(tmp_path: Path) -> None:
    long = _write(tmp_path, "long.csv", "model,metric,score\na,rb,1\nb,rb,\n")
    with pytest.raises(SimscopeError) as e:
        read_rm_results(long)
    assert str(e.value) == (
        f"{long}:3: RMResults: field 'score': expected a finite number, found an empty cell; "
        "fix the cell or delete the row (a model not measured yet is a candidate: leave its "
        "row out)"
    )
    wide = _write(tmp_path, "wide.csv", "model,rb,other\na,1,2\nb,nan,3\n")
    with pytest.raises(SimscopeError) as e:
        read_rm_results(wide)
    assert str(e.value) == (
        f"{wide}:3: RMResults: field 'rb': expected a finite number (the column holds scores), "
        "found 'nan'; fill the cell, or delete the row (a model not measured yet is a "
        "candidate), or give the long layout (model,metric,score) without that score"
    )
    blank = _write(tmp_path, "blank.csv", "model,rb\na,1\nb,\n")
    result = CliRunner().invoke(
        cli,
        [
            "select",
            "--benchmarks",
            "open-llm-leaderboard-v2",
            "--rm-results",
            str(blank),
            "--target",
            "rb",
        ],
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(f"Error: {blank}:3: RMResults: ")
    # a benchmark may miss a score: an empty benchmark cell stays a missing value
    bench = _write(tmp_path, "b.csv", "model,x,y\na,1,\nb,2,3\n")
    assert read_benchmarks(bench).height == 3


# ---- families ------------------------------------------------------------------------------


def test_families_are_inferred_from_ids_and_a_column_wins() -> None:
    models = [
        "Qwen/Qwen2.5-0.5B-Instruct",
        "Qwen/Qwen2.5-7B",
        "Qwen/Qwen2-7B-Instruct",
        "google/gemma-2-9b-it",
        "google/gemma-1.1-2b-it",
        "meta-llama/Llama-3.1-8B-Instruct",
        "allenai/Llama-3.1-Tulu-3-8B-DPO",
        "mistralai/Mistral-7B-Instruct-v0.3",
        "mistralai/Mistral-7B-v0.1",
        "stabilityai/stablelm-2-1_6b-chat",
        "allenai/OLMo-2-1124-7B-Instruct",
        "microsoft/Phi-3-mini-4k-instruct",
        "microsoft/Phi-3-small-8k-instruct",
    ]
    fam = infer_families(models)
    assert fam["Qwen/Qwen2.5-0.5B-Instruct"] == fam["Qwen/Qwen2.5-7B"] == "qwen2.5"
    assert fam["Qwen/Qwen2-7B-Instruct"] == "qwen2"
    assert fam["google/gemma-2-9b-it"] == "gemma-2" != fam["google/gemma-1.1-2b-it"]
    # a fine-tune published by another organisation stays with its base
    assert fam["allenai/Llama-3.1-Tulu-3-8B-DPO"] == fam["meta-llama/Llama-3.1-8B-Instruct"]
    assert fam["mistralai/Mistral-7B-Instruct-v0.3"] == fam["mistralai/Mistral-7B-v0.1"]
    assert fam["stabilityai/stablelm-2-1_6b-chat"] == "stablelm-2"
    assert fam["allenai/OLMo-2-1124-7B-Instruct"] == "olmo-2"
    assert fam["microsoft/Phi-3-mini-4k-instruct"] == fam["microsoft/Phi-3-small-8k-instruct"]
    given = assign_families(models[:2], {"Qwen/Qwen2.5-7B": "mine"})
    assert given == {"Qwen/Qwen2.5-0.5B-Instruct": "qwen2.5", "Qwen/Qwen2.5-7B": "mine"}
    # the bundled prior's 40 models fall into 17 families
    table = read_prior("ahrabian2025-regression")
    assert len(set(infer_families(table.covariates["model"]).values())) == 17


# ---- the prior -----------------------------------------------------------------------------


def test_bundled_priors_read_with_their_provenance() -> None:
    table = read_prior("ahrabian2025-regression")
    assert table.metrics == ["chat", "chat_hard", "reasoning", "safety", "score"]
    assert table.main_metric == "score" and table.scores.height == 200
    assert "arXiv 2505.10775" in table.provenance
    assert table.covariates.filter(pl.col("model") == "google/gemma-2-9b-it").row(0) == (
        "google/gemma-2-9b-it",
        9.24,
        8.0,
    )
    rb2 = read_prior("rewardbench2-by-base")
    assert "allenai/Llama-3.1-Tulu-3-8B-SFT" in rb2.scores["model"].to_list()  # mapped names
    assert rb2.scores["model"].n_unique() == 7  # training_data = Both
    sky = read_prior("skywork-reward-v2")
    assert sky.scores["model"].n_unique() == 7  # the 40M-pair variant left out
    assert "rb2_avg_check" not in sky.metrics
    with pytest.raises(SimscopeError) as e:
        read_prior("ahrabian2026")
    assert str(e.value) == (
        "--prior 'ahrabian2026': not a bundled prior nor a file; bundled: "
        "ahrabian2025-regression, rewardbench2-by-base, skywork-reward-v2; or give a CSV of "
        "published results"
    )


def test_prior_alone_ranks_candidates_when_nothing_is_measured() -> None:
    bench = read_benchmarks("open-llm-leaderboard-v2")
    cands = ["google/gemma-2-9b-it", "Qwen/Qwen2.5-7B", "HuggingFaceTB/SmolLM2-1.7B-Instruct"]
    result = select_models(
        None,
        bench,
        None,
        target_metric="score",
        candidates=cands,
        prior=read_prior("ahrabian2025-regression"),
    )
    s = result.summary
    assert s.ranker == "prior_calibrated" and s.n_measured == 0
    sel = {r["model"]: r for r in result.selection.iter_rows(named=True)}
    # a published model keeps its published score; the others are predicted with intervals
    assert sel["google/gemma-2-9b-it"]["predicted"] == pytest.approx(88.1)
    assert s.prior is not None and s.prior.published == ["google/gemma-2-9b-it"]
    smol = sel["HuggingFaceTB/SmolLM2-1.7B-Instruct"]
    assert smol["pi_low"] < smol["predicted"] < smol["pi_high"]
    assert sel["Qwen/Qwen2.5-7B"]["predicted"] > smol["predicted"]
    # the truth on this table: public benchmarks add little to size on the overall score
    assert s.prior.spearman_ci is not None and s.prior.minus_size_ci is not None
    assert s.prior.minus_size_ci[0] < 0 < s.prior.minus_size_ci[1]
    assert result.verdict.status == "no_better_than_baseline"
    assert result.verdict.text.startswith("NO BETTER THAN SIZE: the prior")
    assert s.prior.features == ["log_params", "benchmark_mean"]
    assert s.interval_note.startswith("nothing measured")


def test_prior_evidence_never_sees_the_family_it_predicts() -> None:
    from simscope.select.prior import evaluate_prior

    rng = np.random.default_rng(0)
    n = 30
    groups = np.repeat(np.arange(10), 3)
    F = rng.normal(size=(n, 3))
    y = F[:, 0] * 2 + rng.normal(0, 0.5, n)
    names = ["log_params", "benchmark_mean", "b"]
    ev = evaluate_prior(F, names, {"s": y}, groups, metric="s", main_metric="s")
    y2 = y.copy()
    y2[groups == 4] += 100.0  # change family 4's own scores: its predictions must not move
    ev2 = evaluate_prior(F, names, {"s": y2}, groups, metric="s", main_metric="s")
    assert np.allclose(ev.predicted[groups == 4], ev2.predicted[groups == 4])
    assert not np.allclose(ev.predicted[groups != 4], ev2.predicted[groups != 4])


def test_a_prior_too_small_to_check_is_refused() -> None:
    bench = read_benchmarks("open-llm-leaderboard-v2")
    with pytest.raises(SimscopeError) as e:
        select_models(
            None,
            bench,
            None,
            target_metric="avg7",
            candidates=["microsoft/phi-2"],
            prior=read_prior("skywork-reward-v2"),
        )
    assert str(e.value) == (
        "prior 'skywork-reward-v2': only 3 of its 7 models with 'avg7' have features in the "
        "benchmark table (a feature must be known for 80% of them); give a benchmark table "
        "that covers its models"
    )


# ---- calibration ---------------------------------------------------------------------------


def _calibration_data(k: int, *, slope: float, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    true = rng.normal(70, 8, k)
    z = true + rng.normal(0, 3, k)
    y = 5 + slope * true + rng.normal(0, 1, k)
    return y, z, np.full(k, 9.0), np.empty((k, 0))


def test_calibration_is_the_prior_at_k0_and_least_squares_as_k_grows() -> None:
    from simscope.select.calibrate import CalibrationPrior, fit_calibration, prior_only

    post = prior_only(70.0, 3.0, 0)
    z = np.array([60.0, 75.0])
    assert post.mean(z, np.empty((2, 0))) == pytest.approx(z)
    y, z, v, phi = _calibration_data(2000, slope=0.5, seed=1)
    fit = fit_calibration(
        y, z, v, phi, CalibrationPrior(False, 3.0), center=float(z.mean()), z_spread=8.0
    )
    a, b, _ = fit.coefficients()
    ols = np.polyfit(z, y, 1)
    assert b == pytest.approx(ols[0], abs=0.01)  # the grid's step is ~0.3% of b
    assert a == pytest.approx(np.polyval(ols, z.mean()), abs=0.05)


def test_disagreeing_results_are_flagged_and_widen_the_intervals() -> None:
    bench = read_benchmarks("open-llm-leaderboard-v2")
    prior = read_prior("ahrabian2025-regression")
    score = dict(
        zip(
            *prior.scores.filter(pl.col("metric") == "score")
            .select("model", "score")
            .to_dict(as_series=False)
            .values(),
            strict=True,
        )
    )
    models = sorted(score)[:12]
    cands = ["HuggingFaceTB/SmolLM2-1.7B-Instruct", "Qwen/Qwen2.5-7B"]

    def run(sign: float) -> tuple[Any, float]:
        rm = pl.DataFrame(
            {"model": models, "metric": "mine", "score": [sign * score[m] for m in models]}
        )
        r = select_models(
            None, bench, rm, target_metric="mine", candidates=cands, prior=prior, baselines=False
        )
        un = r.selection.filter(pl.col("observed").is_null())
        width = float((un["pi_high"] - un["pi_low"]).mean()) / float(rm["score"].std())
        return r, width

    agree, w_agree = run(1.0)
    disagree, w_dis = run(-1.0)
    assert agree.summary.calibration is not None and not agree.summary.calibration.disagrees
    assert disagree.summary.calibration is not None and disagree.summary.calibration.disagrees
    assert disagree.verdict.status == "no_reliable_ranking"
    assert "disagree with it" in disagree.verdict.text
    assert w_dis > 1.1 * w_agree  # relative to the spread of the user's scores


# ---- suggest and cost: known answers -------------------------------------------------------


def test_knowledge_gradient_matches_the_closed_form() -> None:
    from scipy.stats import norm

    from simscope.select.suggest import knowledge_gradient

    mu = np.array([10.0, 9.0])
    cov = np.diag([0.0, 4.0])
    value = knowledge_gradient(mu, cov, np.array([False, True]))
    z = (10.0 - 9.0) / 2.0
    exact = 2.0 * norm.pdf(z) - 1.0 * (1 - norm.cdf(z))  # E[max(10, Y)] - 10
    assert value[1] == pytest.approx(exact, rel=1e-3)
    assert value[0] == 0.0


def test_suggestions_come_with_their_reason() -> None:
    from simscope.select.suggest import suggest

    rng = np.random.default_rng(0)
    draws = np.column_stack(
        [np.full(4000, 10.0), rng.normal(9.5, 2.0, 4000), rng.normal(5.0, 0.1, 4000)]
    )
    out = suggest(
        ["measured", "wide", "narrow"],
        draws,
        np.array([False, True, True]),
        2,
        intervals={},
        p_best={"wide": 0.4},
    )
    assert [s.model for s in out] == ["wide", "narrow"]
    assert out[0].value > 0.3 and out[1].value < 1e-3
    assert out[0].reason.startswith("today's pick is measured; predicted 9.")
    assert "expected regret of the pick" in out[0].reason


def test_cost_model_pareto_front_and_budget() -> None:
    from simscope.select.cost import CostConfig, cost_summary, pareto_front

    cfg = CostConfig()
    # 6 x 8e9 x 3e7 FLOPs at 40% of 989 TFLOP/s is 1.011 GPU-hours: $2.53
    assert cfg.cost_usd(8.0) == pytest.approx(6 * 8e9 * 3e7 / (9.89e14 * 0.4) / 3600 * 2.5)
    assert cfg.cost_usd(8.0) == pytest.approx(2.527, abs=1e-3)
    assert pareto_front([1.0, 2.0, 1.5, 2.0], [1.0, 3.0, 3.0, None]) == [True, True, False, False]
    summary = cost_summary(
        ["a", "b", "c"],
        np.array([70.0, 80.0, 90.0]),
        np.array([True, False, False]),
        params_b={"a": 1.0, "b": 3.0, "c": 9.0},
        given={},
        config=cfg,
        budget=cfg.cost_usd(4.0),
        draws=None,
    )
    assert summary.best_within_budget == "b"
    assert [r.pareto for r in summary.rows] == [True, True, True]
    with pytest.raises(SimscopeError, match=r"cost.gpu_utilization: expected in \(0, 1\]"):
        CostConfig(gpu_utilization=1.5)


def test_cli_select_with_a_prior_suggest_and_budget(tmp_path: Path) -> None:
    args = [
        "select",
        "--benchmarks",
        "open-llm-leaderboard-v2",
        "--prior",
        "ahrabian2025-regression",
        "--target",
        "score",
        "--suggest",
        "1",
        "--budget",
        "2",
    ]
    for c in ["google/gemma-2-2b-it", "Qwen/Qwen2.5-7B", "HuggingFaceTB/SmolLM2-1.7B-Instruct"]:
        args += ["--candidate", c]
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("Ranking by the prior ahrabian2025-regression (nothing measured yet)")
    assert "Measure next (value of information):\n  1. " in out
    assert "Within the budget $2: " in out
    assert "Pareto front of quality vs cost" in out
    assert out.strip().splitlines()[-3].startswith("NO ")  # the verdict, before "wrote"
    saved = CVSummary.from_json((tmp_path / "out" / "cv_summary.json").read_text())
    assert saved.suggestions and saved.cost is not None and saved.cost.budget == 2.0
    bad = CliRunner().invoke(cli, [*args, "--gpu-utilization", "2"])
    assert bad.exit_code == 1
    assert bad.output.strip().splitlines()[-1] == (
        "Error: --gpu-utilization: expected in (0, 1], found 2.0"
    )
    none = CliRunner().invoke(
        cli, ["select", "--benchmarks", "open-llm-leaderboard-v2", "--target", "score"]
    )
    assert none.exit_code == 1
    assert none.output.strip().splitlines()[-1] == (
        "Error: select: give --rm-results (what you measured), --prior (published results, e.g. "
        "ahrabian2025-regression), or both"
    )


# ---- the CV summary contract ---------------------------------------------------------------


def test_cv_summary_round_trips_and_a_bad_file_names_the_key(tmp_path: Path) -> None:
    bench, rm, _ = synthetic(8, 3, seed=30)
    result = select_models(
        None, bench, rm, target_metric="rb", all_models=True, n_boot=5, suggest=1
    )
    text = result.summary.to_json()
    assert CVSummary.from_json(text) == result.summary
    schema = CVSummary.json_schema()
    assert {"verdict", "held_out", "prior", "calibration", "suggestions", "cost"} <= set(
        schema["properties"]
    )
    data = json.loads(text)
    data["predictors"]["constant"]["mae"] = "small"
    with pytest.raises(SimscopeError) as e:
        CVSummary.from_data(data, "run/cv_summary.json")
    assert str(e.value).startswith("run/cv_summary.json: field 'predictors.constant.mae': ")
    assert str(e.value).endswith("found 'small'; rerun `simscope select` to rewrite the file")
    data = json.loads(text)
    data["schema_version"] = 1
    with pytest.raises(SimscopeError, match="schema_version 1; this simscope reads version 2"):
        CVSummary.from_data(data, "x.json")


def test_transfer_probe_rows_are_features_of_the_calibrated_ranker() -> None:
    bench, rm, truth = synthetic(12, 4, seed=31, n_bench=2)
    models = sorted(truth)
    profile = pl.DataFrame(
        {
            "model": models,
            "slice": ["chosen"] * len(models),
            "topic": [None] * len(models),
            "metric": ["transfer.accuracy"] * len(models),
            "value": [truth[m] / 100 for m in models],
            "ci_low": [None] * len(models),
            "ci_high": [None] * len(models),
        },
        schema=PROFILE_SCHEMA,
    )
    result = select_models(profile, bench, rm, target_metric="rb", seed=0, n_boot=5)
    assert result.summary.features.features["chosen/transfer.accuracy"] == "similarity"
    assert "chosen/transfer.accuracy" in result.summary.predictors["calibrated"].features


def test_run_config_select_section_takes_prior_suggest_budget_and_cost(tmp_path: Path) -> None:
    from simscope.config import load_run_config

    base = (
        'seed = 0\n[preferences]\npath = "p.jsonl"\n[[candidates]]\nname = "a"\n'
        'corpus = "a.jsonl"\n[select]\ntarget = "score"\nprior = "ahrabian2025-regression"\n'
        "suggest = 2\nbudget = 10.0\n[select.cost]\ntrain_tokens = 1e8\n"
    )
    cfg = load_run_config(_write(tmp_path, "ok.toml", base))
    assert cfg.select.prior == "ahrabian2025-regression" and cfg.select.suggest == 2
    assert cfg.select.cost.train_tokens == 1e8 and cfg.select.budget == 10.0
    bad = _write(tmp_path, "bad.toml", base + "gpu_utilization = 2\n")
    with pytest.raises(SimscopeError) as e:
        load_run_config(bad)
    assert str(e.value) == f"{bad}: select.cost.gpu_utilization: expected in (0, 1], found 2.0"
    neg = _write(tmp_path, "neg.toml", base.replace("suggest = 2", "suggest = -1"))
    with pytest.raises(SimscopeError) as e:
        load_run_config(neg)
    assert str(e.value) == f"{neg}: select.suggest: expected >= 0, found -1"
