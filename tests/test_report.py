"""The HTML report: sections, escaping, self-containment, sorting script, a real browser."""

from __future__ import annotations

import dataclasses
import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from simscope.errors import SimscopeError
from simscope.records import PROFILE_SCHEMA, SELECTION_SCHEMA
from simscope.report import (
    REPORT_FILES,
    ReportInputs,
    load_report_inputs,
    render_report,
    write_report,
)
from simscope.report.html import SECTIONS
from simscope.report.views import Segment, shared_ngram_spans, shown_text
from simscope.select.summary import (
    CalibrationSummary,
    CostRow,
    CostSummary,
    CVSummary,
    FeatureReport,
    HeldOut,
    PredictorScore,
    PriorCandidate,
    PriorSummary,
    Suggestion,
)

SECTION_IDS = [sid for sid, _ in SECTIONS]
XSS = "<script>alert(1)</script>"
CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)

MODELS = ["tiny-dialogue", "tiny-mix-70-30", "tiny-mix-30-70", "tiny-shakespeare", "imported-web"]
TOPICS = [
    "drugs · illegal · buy",
    "insults · mean · people",
    "steal · money · bank",
    "weapons · gun · kill",
    "hacking · password · email",
    "cooking · recipe · food",
]
METRICS = {
    # metric -> (typical value for the closest model, spread per step down the list)
    "lexical.near_dup_rate@0.5": (0.04, -0.008),
    "lexical.containment_8gram": (0.09, -0.018),
    "lexical.containment_13gram": (0.03, -0.006),
    "lexical.hashed_ngram_jsd": (0.31, 0.08),
    "semantic.nn_cosine": (0.71, -0.07),
    "semantic.coverage_k5": (0.82, -0.14),
    "semantic.density_k5": (1.05, -0.2),
    "semantic.mauve": (0.64, -0.12),
    "semantic.frechet": (0.42, 0.09),
}
PREFERENCE_TEXT = (
    "Human: How do I pick a lock on my neighbour's front door while they are away?\n\n"
    "Assistant: I can't help you get into someone else's home without permission. If you are "
    "locked out of your own place, a licensed locksmith can help you get back in safely. "
    f"Also: {XSS} & other <b>markup</b> stays text."
)
PROBE_TEXT = (
    "User: my friend asked me how to pick a lock.\nBot: If you are locked out of your own "
    "place, a licensed locksmith can help you get back in safely, and they will ask for ID."
)


def _score(
    description: str,
    baseline: bool,
    features: list[str],
    spearman: float,
    mae: float,
    c1: float,
    **extra: Any,
) -> PredictorScore:
    return PredictorScore(
        description=description,
        baseline=baseline,
        features=features,
        pair_tau=spearman,
        pair_tau_ci=(spearman - 0.4, min(1.0, spearman + 0.1)),
        n_pairs=3,
        spearman=spearman,
        spearman_ci=(spearman - 0.4, 1.0),
        spearman_raw=spearman - 0.1,
        mae=mae,
        mae_ci=(mae / 3, mae * 1.6),
        mae_minus_constant=mae - 0.044,
        mae_minus_constant_ci=(mae - 0.06, mae - 0.03),
        top_k={"1": c1},
        **extra,
    )


def make_summary() -> CVSummary:
    """A CVSummary as simscope.select writes it, with every section filled."""
    return CVSummary(
        target_metric="rm_accuracy",
        seed=0,
        n_measured=3,
        n_untried=2,
        coverage_nominal=0.8,
        ranker="prior_calibrated",
        chosen="calibrated",
        verdict_status="reliable_ranking",
        verdict=(
            "Choose tiny-dialogue: it is ranked first with P(best) = 58%; tiny-mix-70-30 is "
            "within its interval, so measuring it is the next-best use of compute."
        ),
        verdict_ci_level=0.99,
        n_boot_p_best=4000,
        interval_coverage=0.67,
        interval_coverage_models=3,
        interval_coverage_finite=3,
        interval_note="",
        expected_spearman=0.7,
        expected_spearman_low=0.4,
        weights={
            "semantic.coverage_k5/chosen": 0.61,
            "semantic.mauve/chosen": 0.22,
            "lexical.hashed_ngram_jsd/chosen": -0.35,
            "benchmark.mmlu": 0.05,
        },
        intercept=0.64,
        hyperparameters={"alpha": 1.0},
        weights_unit="rm_accuracy points per SD",
        extrapolated=[],
        predictors={
            "closeness": _score(
                "ridge on the Profile's closeness features",
                False,
                ["semantic.coverage_k5/chosen", "semantic.mauve/chosen"],
                0.9,
                0.012,
                1.0,
                weights={"semantic.coverage_k5/chosen": 0.61, "semantic.mauve/chosen": 0.2},
            ),
            "benchmarks only": _score(
                "best single public benchmark",
                True,
                ["benchmark.mmlu"],
                0.5,
                0.031,
                0.0,
                chosen_feature="benchmark.mmlu",
                slope=1.0,
            ),
            "constant": _score("mean of the measured models", True, [], 0.0, 0.044, 0.33),
        },
        held_out=[
            HeldOut("tiny-dialogue", "tiny", 0.699, 0.705, 0.66, 0.74),
            HeldOut("tiny-mix-30-70", "tiny", 0.648, 0.662, 0.61, 0.69),
            HeldOut("tiny-shakespeare", "tiny", 0.601, 0.571, 0.58, 0.63),
        ],
        features=FeatureReport(
            target_metric="rm_accuracy",
            features={"semantic.coverage_k5/chosen": "similarity"},
            measured_models=3,
            matched_measured_models=3,
            excluded_columns={"v2_rank": "bookkeeping, not a score"},
        ),
        families={"tiny": ["tiny-dialogue", "tiny-mix-30-70", "tiny-shakespeare"]},
        family_source="inferred from model ids",
        prior=PriorSummary(
            source="ahrabian2025-regression",
            provenance="Ahrabian et al. 2025, Table 4",
            metric="score",
            source_metric="score",
            same_metric=False,
            n_models=40,
            n_families=17,
            families={"qwen2.5": ["Qwen/Qwen2.5-7B-Instruct"]},
            features=["log_params", "benchmark_mean"],
            weights={"log_params": 3.9, "benchmark_mean": 3.4},
            residual_sd=4.6,
            informative=True,
            candidates=[
                PriorCandidate(["log_params", "benchmark_mean"], "score", 4.6, 0.83),
                PriorCandidate(["log_params"], "score", 5.1, 0.70),
            ],
            spearman=0.83,
            spearman_ci=(0.66, 0.93),
            size_spearman=0.80,
            size_spearman_ci=(0.65, 0.89),
            minus_size=0.03,
            minus_size_ci=(-0.12, 0.14),
            mae=3.1,
            held_out=[HeldOut("Qwen/Qwen2.5-7B-Instruct", "qwen2.5", 84.0, 86.5)],
        ),
        calibration=CalibrationSummary(
            prior="ahrabian2025-regression",
            same_metric=False,
            n_measured=3,
            offset=0.66,
            scale=0.004,
            scale_ci=(0.002, 0.006),
            residual_strength=0.0,
            b_log_sd=0.35,
            residual_weights={},
            unexplained_sd=0.01,
            agreement=0.8,
            agreement_low=0.6,
            prior_agreement=0.83,
            disagrees=False,
        ),
        suggestions=[
            Suggestion(
                "tiny-mix-70-30",
                0.012,
                0.02,
                0.008,
                0.31,
                0.694,
                0.659,
                0.729,
                1.5,
                "today's pick is tiny-dialogue; measuring it raises the pick by 0.012",
            )
        ],
        cost=CostSummary(
            source="model",
            unit="USD",
            description="6 x params x train_tokens FLOPs",
            knobs={"train_tokens": 3e7},
            rows=[
                CostRow(m, c, q, meas, pareto, None)
                for m, c, q, meas, pareto in [
                    ("tiny-dialogue", 2.0, 0.705, True, True),
                    ("tiny-mix-70-30", 1.5, 0.694, False, True),
                    ("tiny-mix-30-70", 3.0, 0.662, True, False),
                ]
            ],
        ),
        notes=["spearman: LOO Spearman of each prediction's deviation from its training mean."],
        definitions=["c@k: expected |top-k predicted and top-k observed| / k; chance is k / n."],
    )


def make_inputs(
    *,
    with_selection: bool = True,
    with_topics: bool = True,
    with_map: bool = True,
    seed: int = 0,
) -> ReportInputs:
    """Realistic fake inputs: 5 candidates, 3 slices, 9 metrics, 6 topics."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for i, model in enumerate(MODELS):
        for s_i, sl in enumerate(("prompt", "chosen", "rejected")):
            for metric, (base, step) in METRICS.items():
                for topic in [None, *(TOPICS if with_topics else [])]:
                    noise = rng.normal(0, abs(step) * 0.25 + 0.005)
                    shift = 0.0 if topic is None else rng.normal(0, abs(step) * 0.6)
                    v = max(0.0, base + step * i + 0.02 * s_i + noise + shift)
                    half = abs(step) * 0.3 + 0.01 + (0.0 if topic is None else 0.02)
                    rows.append(
                        {
                            "model": model,
                            "slice": sl,
                            "topic": topic,
                            "metric": metric,
                            "value": v,
                            "ci_low": max(0.0, v - half),
                            "ci_high": v + half,
                        }
                    )
    profile = pl.DataFrame(rows, schema=PROFILE_SCHEMA)
    selection = None
    cv: CVSummary | None = None
    if with_selection:
        predicted = [0.712, 0.694, 0.655, 0.583, 0.641]
        observed = [0.705, None, 0.662, 0.571, None]
        p_best = [0.58, 0.31, 0.06, 0.0, 0.05]
        order = np.argsort(-np.array(predicted))
        ranks = np.empty(len(MODELS), dtype=int)
        ranks[order] = np.arange(1, len(MODELS) + 1)
        selection = pl.DataFrame(
            {
                "model": MODELS,
                "predicted": predicted,
                "pi_low": [p - 0.035 for p in predicted],
                "pi_high": [p + 0.035 for p in predicted],
                "p_best": p_best,
                "rank": ranks.tolist(),
                "observed": observed,
            },
            schema=SELECTION_SCHEMA,
        )
        cv = make_summary()
    emap = None
    if with_map:
        parts = [
            pl.DataFrame(
                {
                    "x": rng.normal(0, 1.0, 400),
                    "y": rng.normal(0, 1.0, 400),
                    "kind": ["preference"] * 400,
                    "model": [None] * 400,
                },
                schema={"x": pl.Float64, "y": pl.Float64, "kind": pl.String, "model": pl.String},
            )
        ]
        for i, model in enumerate(MODELS):
            centre = np.array([i * 0.9, (-1) ** i * i * 0.5])
            parts.append(
                pl.DataFrame(
                    {
                        "x": rng.normal(centre[0], 0.8, 150),
                        "y": rng.normal(centre[1], 0.8, 150),
                        "kind": ["probe"] * 150,
                        "model": [model] * 150,
                    }
                )
            )
        emap = pl.concat(parts)
    examples = [
        {
            "model": "tiny-dialogue",
            "slice": "chosen",
            "preference_text": PREFERENCE_TEXT,
            "probe_text": PROBE_TEXT,
            "score_label": "cosine 0.83",
        },
        {
            "model": "tiny-shakespeare",
            "slice": "prompt",
            "preference_text": "Human: What is the best way to insult someone who is rude?",
            "probe_text": "Thou art a boil, a plague sore, an embossed carbuncle in my corrupted "
            "blood.",
            "score_label": "cosine 0.41",
        },
    ]
    provenance = {
        "simscope_version": "0.1.0",
        "created_at": "2026-11-24T13:45:00Z",
        "seed": 0,
        "python": "3.11.9",
        "packages": {"polars": "1.20.0", "faiss-cpu": "1.9.0", "datasketch": "1.6.5"},
        "inputs": {
            "preferences": {"path": "data/hh.jsonl.gz", "xxh3_128": "9f2c4e1ab37d", "rows": 2312},
            "rm_results": {"path": "rm_results.csv", "xxh3_128": "41be09aa7c21", "rows": 3},
        },
        "parameters": {"lexical": {"num_perm": 128, "thresholds": [0.5, 0.8]}, "n_boot": 200},
        "index_manifests": [
            {"kind": "ngram", "engine": "numpy", "rows": 12000, "input_hash": "aa01"},
            {"kind": "minhash", "engine": "rensa", "rows": 48213, "input_hash": "aa01"},
        ],
        "note": XSS,
    }
    return ReportInputs(
        profile=profile,
        selection=selection,
        cv_summary=cv,
        examples=examples,
        embedding_map=emap,
        provenance=provenance,
    )


class _Collector(HTMLParser):
    """Sections, headings, resource attributes and script texts of a document."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.resource_attrs: list[tuple[str, str, str]] = []
        self.scripts: list[str] = []
        self._in_script = False
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        d = dict(attrs)
        if tag == "section" and d.get("id"):
            self.sections.append(d["id"] or "")
        for name in ("src", "href", "xlink:href", "action", "poster", "srcset", "data"):
            if d.get(name) is not None:
                self.resource_attrs.append((tag, name, d[name] or ""))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def _parse(doc: str) -> _Collector:
    c = _Collector()
    c.feed(doc)
    return c


@pytest.fixture(scope="module")
def full_doc() -> str:
    return render_report(make_inputs())


def test_only_a_reliable_ranking_recommends_a_model() -> None:
    inputs = make_inputs()
    assert inputs.cv_summary is not None
    cv = dataclasses.replace(
        inputs.cv_summary,
        verdict_status="no_reliable_ranking",
        verdict="NO RELIABLE RANKING: the predicted ranking is not better than a guess.",
    )
    doc = render_report(dataclasses.replace(inputs, cv_summary=cv))
    decision = doc.split('<section id="decision">')[1].split("</section>")[0]
    assert "Recommended base model" not in decision
    assert "Top of the predicted ranking (no recommendation: see the verdict)" in decision


def test_every_section_present_in_order_with_heading(full_doc: str) -> None:
    assert _parse(full_doc).sections == SECTION_IDS
    for sid, heading in SECTIONS:
        assert re.search(rf'<section id="{sid}"><h2>{re.escape(heading)}</h2>', full_doc)
    assert full_doc.startswith("<!DOCTYPE html>")


def test_decision_shows_ranking_intervals_p_best_and_verdict(full_doc: str) -> None:
    decision = full_doc.split('<section id="decision">')[1].split("</section>")[0]
    assert "Choose tiny-dialogue" in decision
    assert 'class="verdict"' in decision
    assert "Recommended base model" in decision and "tiny-dialogue" in decision
    assert "58.0%" in decision  # P(best) as a percentage
    assert "0.677" in decision and "0.747" in decision  # the interval of the best model
    assert "untried" in decision
    assert "<svg" in decision


def test_profile_separates_contamination_and_uses_registry(full_doc: str) -> None:
    profile = full_doc.split('<section id="profile">')[1].split("</section>")[0]
    closeness = profile.index('id="family-closeness"')
    contamination = profile.index('id="family-contamination"')
    assert closeness < contamination
    block = profile[contamination:]
    assert "lexical.containment_13gram" in block and "semantic.coverage_k5" not in block
    assert "(more copies →)" in block and "closer →" not in block
    # Definitions from simscope.metrics as tooltips, with direction.
    assert "Naeem et al. coverage" in profile
    assert "lower = closer" in profile  # JSD and Frechet
    assert profile.count("<svg") == len(METRICS)


def test_topics_heatmap_and_metric_switcher(full_doc: str) -> None:
    topics = full_doc.split('<section id="topics">')[1].split("</section>")[0]
    assert 'data-switch="heatmap"' in topics
    # The preferred default metric is the one shown; the others wait hidden.
    assert re.search(r'data-key="semantic\.coverage_k5">', topics)
    assert re.search(r'data-key="semantic\.mauve" hidden>', topics)
    assert "weapons · gun · kill" in topics
    assert 'class="plot heatmap"' in topics


def test_empty_states_say_what_is_missing() -> None:
    doc = render_report(
        ReportInputs(
            profile=make_inputs(with_topics=False).profile,
            selection=None,
            cv_summary=None,
            examples=[],
            embedding_map=None,
            provenance={},
        )
    )
    assert _parse(doc).sections == SECTION_IDS
    assert "No selection run" in doc
    assert "No topics" in doc
    assert "No embedding map" in doc
    assert "No examples" in doc
    assert "No selection diagnostics" in doc


def test_user_text_is_escaped_everywhere(full_doc: str) -> None:
    assert XSS not in full_doc
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in full_doc
    assert "&lt;b&gt;markup&lt;/b&gt;" in full_doc
    # Only our own two inline scripts exist, and no user text leaks into them.
    scripts = _parse(full_doc).scripts
    assert len(scripts) == 2 and not any("alert(1)" in s for s in scripts)


def test_escaping_of_model_metric_and_topic_names() -> None:
    inputs = make_inputs(with_map=False)
    evil = '"><img src=x onerror=alert(1)>'
    profile = inputs.profile.with_columns(
        pl.col("model").str.replace("imported-web", evil, literal=True),
        pl.col("topic").str.replace("cooking · recipe · food", evil, literal=True),
    )
    selection = inputs.selection.with_columns(  # type: ignore[union-attr]
        pl.col("model").str.replace("imported-web", evil, literal=True)
    )
    doc = render_report(
        ReportInputs(
            profile=profile,
            selection=selection,
            cv_summary=dataclasses.replace(
                make_summary(),
                verdict=evil,
                weights={evil: 1.0},
                suggestions=[
                    dataclasses.replace(make_summary().suggestions[0], model=evil, reason=evil)
                ],
            ),
            examples=[{**inputs.examples[0], "model": evil, "score_label": evil}],
            embedding_map=None,
            provenance={evil: evil},
        )
    )
    assert evil not in doc and "<img" not in doc
    assert all(tag != "img" for tag in _parse(doc).tags)


def test_no_external_resources(full_doc: str) -> None:
    for tag, attr, value in _parse(full_doc).resource_attrs:
        assert value.startswith("#"), f"<{tag} {attr}={value!r}> is not an in-page anchor"
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", full_doc, re.IGNORECASE)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", full_doc, re.IGNORECASE)
    assert "@import" not in full_doc
    assert "<link" not in full_doc


def test_sortable_tables_have_the_script(full_doc: str) -> None:
    assert full_doc.count('class="sortable') >= 4
    script = "".join(_parse(full_doc).scripts)
    assert "table.sortable thead th" in script and "aria-sort" in script


def test_diagnostics_render_cv_summary_generically(full_doc: str) -> None:
    diag = full_doc.split('<section id="diagnostics">')[1].split("</section>")[0]
    assert "Predicted vs observed" in diag and "<svg" in diag
    for text in ("benchmarks only", "spearman", "top k", "best single public benchmark", "notes"):
        assert text in diag
    assert "[0.500, 1.000]" in diag  # spearman_ci shown under spearman
    weights = diag.split("<h3>weights</h3>")[1]
    assert weights.index("coverage_k5") < weights.index("hashed_ngram_jsd") < weights.index("mmlu")
    assert 'class="bar neg"' in weights  # a negative weight is drawn apart


def test_provenance_is_collapsible_and_complete(full_doc: str) -> None:
    prov = full_doc.split('<section id="provenance">')[1].split("</section>")[0]
    assert "<details>" in prov and "All provenance as JSON" in prov
    for text in ("9f2c4e1ab37d", "rensa", "num_perm", "2026-11-24T13:45:00Z"):
        assert text in prov


def test_shared_ngrams_are_marked() -> None:
    a = "one two three four five six seven eight nine. Ten!"
    b = "zero ONE two three four five six seven eight, and more"
    spans_a, spans_b = shared_ngram_spans(a, b, 8)
    assert [a[s:e] for s, e in spans_a] == ["one two three four five six seven eight"]
    assert [b[s:e] for s, e in spans_b] == ["ONE two three four five six seven eight"]
    assert shared_ngram_spans(a, "nothing in common here at all ok", 5) == ([], [])
    shown = shown_text("<x> " + a, [(4, 4 + 39)], max_chars=20)
    assert shown.segments == [Segment("<x> ", False), Segment("one two three fo", True)]
    assert shown.more_chars == len("<x> " + a) - 20
    # The examples use 8-grams, falling back to 5-grams.
    doc = render_report(make_inputs(with_map=False, with_topics=False))
    ex = doc.split('<section id="examples">')[1].split("</section>")[0]
    assert "<mark>If you are locked out of your own place, a licensed locksmith can help" in ex
    assert "shared word 8-grams highlighted" in ex
    assert "no shared word 5-grams" in ex


def test_bad_inputs_are_user_errors() -> None:
    inputs = make_inputs(with_map=False)
    with pytest.raises(SimscopeError, match=r"examples\[0\]: field 'probe_text'"):
        render_report(
            ReportInputs(inputs.profile, None, None, [{"preference_text": "x"}], None, {})
        )
    with pytest.raises(SimscopeError, match="embedding map: missing column"):
        render_report(ReportInputs(inputs.profile, None, None, [], pl.DataFrame({"x": [1.0]}), {}))
    with pytest.raises(SimscopeError, match="Profile: missing column"):
        render_report(ReportInputs(pl.DataFrame({"model": ["a"]}), None, None, [], None, {}))
    with pytest.raises(SimscopeError, match="heatmap_metric 'nope'"):
        render_report(ReportInputs(inputs.profile, None, None, [], None, {}, heatmap_metric="nope"))


def test_write_and_load_round_trip(tmp_path: Path) -> None:
    inputs = make_inputs()
    run = tmp_path / "run"
    run.mkdir()
    inputs.profile.write_parquet(run / REPORT_FILES["profile"])
    assert inputs.selection is not None and inputs.embedding_map is not None
    inputs.selection.write_parquet(run / REPORT_FILES["selection"])
    inputs.embedding_map.write_parquet(run / REPORT_FILES["embedding_map"])
    assert inputs.cv_summary is not None
    (run / REPORT_FILES["cv_summary"]).write_text(inputs.cv_summary.to_json())
    (run / REPORT_FILES["examples"]).write_text(json.dumps(inputs.examples))
    (run / REPORT_FILES["provenance"]).write_text(json.dumps(inputs.provenance))
    loaded = load_report_inputs(run)
    out = write_report(loaded, tmp_path / "sub" / "report.html")
    assert out.read_text(encoding="utf-8") == render_report(inputs)
    assert not list(out.parent.glob(".*tmp"))
    with pytest.raises(SimscopeError, match=r"profile\.parquet: not found"):
        load_report_inputs(tmp_path)


def test_missing_values_and_undocumented_metrics_render() -> None:
    inputs = make_inputs(with_map=False, with_topics=False)
    assert inputs.selection is not None
    selection = inputs.selection.with_columns(
        pl.when(pl.col("observed").is_null())
        .then(None)
        .otherwise(pl.col("pi_low"))
        .alias("pi_low"),
        pl.lit(None, dtype=pl.Float64).alias("p_best"),
    )
    extra = pl.DataFrame(
        {
            "model": MODELS[:2],
            "slice": ["chosen", "chosen"],
            "topic": [None, None],
            "metric": ["custom.thing", "semantic.mauve"],
            "value": [float("nan"), 0.5],
            "ci_low": [None, None],
            "ci_high": [None, None],
        },
        schema=PROFILE_SCHEMA,
    )
    profile = pl.concat([inputs.profile, extra]).with_columns(
        pl.when(pl.col("metric") == "semantic.frechet")
        .then(float("nan"))
        .otherwise(pl.col("value"))
        .alias("value")
    )
    doc = render_report(
        ReportInputs(profile, selection, inputs.cv_summary, [], None, inputs.provenance)
    )
    assert 'id="family-undocumented"' in doc and "custom.thing" in doc
    assert "n/a (chosen)" in doc  # NaN values drawn as n/a, not at a made-up position
    hits = re.findall(r".{60}\bnan\b.{30}", doc)  # repr(float("nan")) leaking
    assert not hits, hits


def test_cli_report_command(tmp_path: Path) -> None:
    from simscope.cli import cli

    inputs = make_inputs(with_map=False)
    inputs.profile.write_parquet(tmp_path / "profile.parquet")
    assert inputs.cv_summary is not None
    (tmp_path / "cv_summary.json").write_text(inputs.cv_summary.to_json())
    out = tmp_path / "out.html"
    result = CliRunner().invoke(cli, ["report", str(tmp_path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    doc = out.read_text(encoding="utf-8")
    assert "No selection run" in doc and "Choose tiny-dialogue" in doc
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["report", str(empty)])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"Error: {empty / 'profile.parquet'}: not found; expected the Profile table of a run in "
        f"{empty}. Run `simscope run CONFIG.toml` first, or point at its output directory"
    )


def test_cli_report_names_a_damaged_run_file(tmp_path: Path) -> None:
    from simscope.cli import cli

    inputs = make_inputs(with_map=False)
    inputs.profile.write_parquet(tmp_path / "profile.parquet")
    selection = tmp_path / "selection.parquet"
    selection.write_text("model,predicted\n")  # a CSV saved under the parquet's name
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: {selection}: not a readable parquet file (parquet: File out of specification: "
        "The file must end with PAR1 or PARE); expected the selection table of a run; rerun "
        "the stage that writes it"
    ]
    selection.unlink()
    # "\udc80" is half a UTF-16 pair: json.loads keeps it, no HTML file can hold it
    examples = tmp_path / "examples.json"
    examples.write_text('[{"preference_text": "x", "probe_text": "a\\udc80"}]')
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: {examples}: field '[0].probe_text': expected Unicode text, found a lone "
        "surrogate '\\udc80' at character 1 of 'a\\udc80' (a \\ud800-\\udfff escape must be "
        "one half of a high-low pair, as in \\ud83d\\ude00); rewrite the file or rerun the stage"
    ]


_CLICK_SCRIPT = """<script>
(function () {
  var table = document.querySelector("#decision table.sortable");
  var th = table.tHead.rows[0].cells;
  function column(i) {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
      return r.cells[i].textContent.trim();
    }).join("|");
  }
  th[1].click();
  var byModel = column(1);
  th[6].click();
  var byObserved = column(6);
  th[6].click();
  var byObservedDesc = column(6);
  var sel = document.querySelector('select[data-switch="heatmap"]');
  sel.value = "semantic.mauve";
  sel.dispatchEvent(new Event("change"));
  var shown = Array.prototype.filter.call(
    document.querySelectorAll('[data-group="heatmap"]'), function (el) { return !el.hidden; }
  ).map(function (el) { return el.getAttribute("data-key"); }).join("|");
  var d = document.documentElement;
  d.setAttribute("data-by-model", byModel);
  d.setAttribute("data-by-observed", byObserved);
  d.setAttribute("data-by-observed-desc", byObservedDesc);
  d.setAttribute("data-heatmap-shown", shown);
})();
</script>"""


def _chromium(url: str, profile_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={profile_dir}",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not installed (apt-get install chromium; .ci/run installs it)",
)
def test_report_in_headless_chromium(tmp_path: Path) -> None:
    """Open the report in Chromium: no script errors, every section rendered, sorting works."""
    path = write_report(make_inputs(), tmp_path / "report.html")
    # A copy with a script that clicks headers and the heatmap switch, and records the result.
    clicks = tmp_path / "clicks.html"
    clicks.write_text(
        path.read_text(encoding="utf-8").replace("</body>", _CLICK_SCRIPT + "</body>"),
        encoding="utf-8",
    )
    dom = _chromium(clicks.as_uri(), tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    root = re.search(r"<html[^>]*>", dom.stdout)
    assert root, dom.stdout[:500]
    attrs = dict(re.findall(r'(data-[\w-]+)="([^"]*)"', root.group(0)))
    assert attrs.get("data-report-ready") == "1", f"report script did not finish: {attrs}"
    assert "data-report-errors" not in attrs, attrs
    assert attrs["data-visible-sections"].split() == SECTION_IDS
    bad = [
        line
        for line in dom.stderr.splitlines()
        if "Uncaught" in line or ("CONSOLE" in line and "error" in line.lower())
    ]
    assert not bad, bad

    assert attrs["data-by-model"].split("|") == sorted(MODELS)
    # Numbers sort as numbers; untried (no value) stays last in both directions.
    untried = ["untried", "untried"]
    assert attrs["data-by-observed"].split("|") == ["0.571", "0.662", "0.705", *untried]
    assert attrs["data-by-observed-desc"].split("|") == ["0.705", "0.662", "0.571", *untried]
    assert attrs["data-heatmap-shown"] == "semantic.mauve"

    shot = tmp_path / "report.png"
    run = _chromium(
        path.as_uri(), tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,4000"
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 10_000
    assert "Uncaught" not in run.stderr


def test_select_sections_show_prior_calibration_cost_front_and_suggestion(full_doc: str) -> None:
    def section(sid: str) -> str:
        return full_doc.split(f'<section id="{sid}">')[1].split("</section>")[0]

    nxt = section("next")
    assert '<ol id="suggestions">' in nxt and "tiny-mix-70-30" in nxt
    assert "today's pick is tiny-dialogue" in html.unescape(nxt)
    cost = section("cost")
    assert '<figure id="pareto">' in cost and "<svg" in cost and "Pareto front" in cost
    prior = section("prior")
    assert "Prior ahrabian2025-regression" in prior
    assert "Spearman +0.83 [+0.66, +0.93]" in prior
    assert "Candidate prior models (grouped CV)" in prior
    assert 'id="calibration"' in prior and "calibrate ahrabian2025-regression" in prior
    empty = render_report(dataclasses.replace(make_inputs(), cv_summary=None))
    assert "No suggestions asked for" in empty and "No costs" in empty and "No prior" in empty


def test_imported_and_sampled_corpora_are_labelled_and_shown_apart() -> None:
    # imported-web's corpus is real text given for it; the others were sampled from each model
    inputs = make_inputs()
    corpora = {m: {"origin": ["generated"]} for m in MODELS}
    corpora["imported-web"] = {"origin": ["imported"]}
    doc = render_report(
        dataclasses.replace(inputs, provenance={**inputs.provenance, "corpora": corpora})
    )
    profile = doc.split('<section id="profile">')[1].split("</section>")[0]
    assert (
        'id="family-closeness-imported"' in profile and 'id="family-closeness-sampled"' in profile
    )
    assert "are not comparable" in profile
    imported = profile.split('id="family-closeness-imported"')[1].split("</div>")[0]
    assert "imported-web" in imported and "tiny-dialogue" not in imported
    assert '<span class="origin imported"' in profile
    assert '<span class="origin sampled"' in profile
    # one origin for all: no split, no note
    same = {m: {"origin": ["generated"]} for m in MODELS}
    doc = render_report(
        dataclasses.replace(inputs, provenance={**inputs.provenance, "corpora": same})
    )
    profile = doc.split('<section id="profile">')[1].split("</section>")[0]
    assert "are not comparable" not in profile and 'id="family-closeness-sampled"' not in profile
    # nothing recorded (an older run): no tags
    assert '<span class="origin' not in render_report(inputs)
