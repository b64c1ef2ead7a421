"""Select stage: readers, features, predictors, CV, intervals, verdict, writer and CLI.

Synthetic tables plant a known relation (or none); the real tables in tests/data are the
Open LLM Leaderboard v2 and published RM results by backbone (see tests/data/README.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

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
    read_benchmarks,
    read_model_map,
    read_rm_results,
    rename_models,
    select_models,
    write_selection,
)
from simscope.select.cv import pair_splits, spearman, top_k_coverage
from simscope.select.enet import L1_RATIOS, _inner_folds, alpha_grid, fit_enet_cv
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
    assert p["p_best"].max() < 0.5


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
