"""The run config, `simscope run` / `profile` end to end, and the demo (slow)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner
from polars.testing import assert_frame_equal

from simscope.cli import cli
from simscope.config import load_run_config
from simscope.errors import SimscopeError
from simscope.pipeline import profile_only, run


@pytest.fixture()
def workspace(
    tmp_path: Path, hh_records: list[dict[str, str]], shakespeare_paragraphs: list[str]
) -> Path:
    """Preference data (60 HH pairs), three imported corpora and RM results for them."""
    with open(tmp_path / "prefs.jsonl", "w") as f:
        for r in hh_records[:60]:
            f.write(json.dumps(r) + "\n")
    corpora = {
        "dialogue": [r["chosen"] for r in hh_records[1000:1100]],
        "bard": shakespeare_paragraphs[:100],
        "mixed": [r["chosen"] for r in hh_records[1100:1150]] + shakespeare_paragraphs[100:150],
    }
    for name, texts in corpora.items():
        with gzip.open(tmp_path / f"{name}.jsonl.gz", "wt") as f:
            for t in texts:
                f.write(json.dumps({"body": t}) + "\n")
    (tmp_path / "rm.csv").write_text(
        "model,metric,score\ndialogue,accuracy,0.62\nbard,accuracy,0.51\nmixed,accuracy,0.57\n"
    )
    return tmp_path


def _config(extra: str = "", candidates: str | None = None) -> str:
    cands = candidates or "".join(
        f'[[candidates]]\nname = "{n}"\ncorpus = "{n}.jsonl.gz"\ntext_field = "body"\n\n'
        for n in ("dialogue", "bard", "mixed")
    )
    return (
        'out_dir = "run"\nindexes_dir = "idx"\nn_boot = 20\n'
        + extra
        + '\n[preferences]\npath = "prefs.jsonl"\n\n'
        + "[stages]\nsemantic = false\ntopics = false\nlikelihood = false\n\n"
        + '[select]\nrm_results = "rm.csv"\ntarget = "accuracy"\nn_boot = 50\n\n'
        + cands
    )


def test_run_writes_profile_selection_and_report(workspace: Path) -> None:
    (workspace / "simscope.toml").write_text(_config())
    result = run(load_run_config(workspace / "simscope.toml"), progress=False)
    assert (workspace / "run" / "report.html").is_file()
    profile = pl.read_parquet(workspace / "run" / "profile.parquet")
    assert set(profile["model"]) == {"dialogue", "bard", "mixed"}
    jsd = dict(
        profile.filter(
            (pl.col("metric") == "lexical.hashed_ngram_jsd") & (pl.col("slice") == "chosen")
        )
        .select("model", "value")
        .iter_rows()
    )
    # dialogue is closest to dialogue preference data, Shakespeare farthest, the mixture between
    assert jsd["dialogue"] < jsd["mixed"] < jsd["bard"]
    assert result.selection is not None and result.selection.height == 3
    assert result.verdict
    # a second run reuses the indexes it built
    built = {p.name: p.stat().st_mtime_ns for p in (workspace / "idx").iterdir()}
    run(load_run_config(workspace / "simscope.toml"), progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (workspace / "idx").iterdir()} == built


@pytest.mark.parametrize(
    ("extra", "candidates", "message"),
    [
        ("seeds = 3\n", None, "unknown key(s) 'seeds'"),
        ('seed = "many"\n', None, "seed: expected an integer, found 'many'"),
        ("[lexical]\nnum_perm = 2.5\n", None, "lexical.num_perm: expected an integer, found 2.5"),
        (
            '[lexical]\nengine = "minhash9"\n',
            None,
            "lexical.engine: expected one of rensa, oph, datasketch, found 'minhash9'",
        ),
        ("", '[[candidates]]\nname = "x"\n', "'x' needs a model to probe or a corpus to import"),
        (
            'slices = ["chosen", "answer"]\n',
            None,
            "slices: expected a non-empty subset of ['prompt', 'chosen', 'rejected'], "
            "found ['chosen', 'answer']",
        ),
        (
            "",
            '[[candidates]]\nname = "x"\ncorpus = "a"\n[[candidates]]\nname = "x"\ncorpus = "b"\n',
            "each name once; found ['x'] more than once",
        ),
    ],
)
def test_config_errors_name_the_key(
    workspace: Path, extra: str, candidates: str | None, message: str
) -> None:
    path = workspace / "simscope.toml"
    # sections given in `extra` must come after the top-level keys
    if extra.startswith("["):
        path.write_text(_config(candidates=candidates) + extra)
    else:
        path.write_text(_config(extra, candidates))
    with pytest.raises(SimscopeError) as e:
        load_run_config(path)
    assert message in str(e.value)
    assert str(e.value).startswith(str(path))


def test_toml_syntax_error_is_one_clear_line(workspace: Path) -> None:
    path = workspace / "simscope.toml"
    path.write_text("seed = = 1\n")
    result = CliRunner().invoke(cli, ["run", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: invalid TOML")


def test_profile_command_and_its_errors(workspace: Path) -> None:
    runner = CliRunner()
    out = workspace / "profile.parquet"
    args = ["--quiet", "profile", "--prefs", str(workspace / "prefs.jsonl"), "--no-semantic"]
    args += ["--indexes", str(workspace / "idx"), "-o", str(out), "--n-boot", "10"]
    ok = runner.invoke(
        cli, [*args, "--corpus", f"bard={workspace / 'bard.jsonl.gz'}", "--text-field", "body"]
    )
    assert ok.exit_code == 0, ok.output
    assert "lexical.hashed_ngram_jsd" in ok.output
    assert pl.read_parquet(out).height > 0

    bad = runner.invoke(cli, [*args, "--corpus", "bard"])
    assert bad.exit_code == 1
    assert bad.output.strip() == "Error: --corpus: expected NAME=PATH, found 'bard'"

    (workspace / "empty.jsonl").write_text("")
    empty = runner.invoke(
        cli,
        ["profile", "--prefs", str(workspace / "empty.jsonl"), "--corpus", "a=b", "-o", str(out)],
    )
    assert empty.exit_code == 1
    assert len(empty.output.strip().splitlines()) == 1
    assert empty.output.startswith("Error: ")


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    from simscope.examples.demo import CANDIDATES

    runner = CliRunner()
    result = runner.invoke(cli, ["--quiet", "demo", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Report: " in result.output
    # --quiet: no library bars or notices (weights loading and writing, config defaults)
    for noise in ("Loading weights", "Writing model shards", "[transformers]"):
        assert noise not in result.output
    untried = sorted(c.name for c in CANDIDATES if not c.measured)
    selection = pl.read_parquet(tmp_path / "run" / "selection.parquet")
    assert selection.height == len(CANDIDATES)
    assert sorted(selection.filter(pl.col("observed").is_null())["model"]) == untried
    rm = pl.read_csv(tmp_path / "rm_results.csv")
    assert sorted(rm["model"]) == sorted(c.name for c in CANDIDATES if c.measured)
    assert rm["score"].is_between(0.0, 1.0).all()
    # the held-out truth is printed after the run, for the untried candidates only
    truth = result.output.split("Held-out truth")[1]
    assert all(name in truth for name in untried)
    html = (tmp_path / "run" / "report.html").read_text()
    assert all(c.name in html for c in CANDIDATES)
    assert '<span class="origin imported"' in html  # the imported corpus is labelled
    # the second run reuses the trained models and the measured reward models
    weights = tmp_path / "models" / CANDIDATES[0].name / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = runner.invoke(cli, ["--quiet", "demo", "--dir", str(tmp_path)])
    assert again.exit_code == 0, again.output
    assert weights.stat().st_mtime_ns == before
    assert again.output.split("Held-out truth")[1] == truth


@pytest.mark.slow
def test_run_with_semantic_scorer_topics_and_evidence(workspace: Path) -> None:
    config = _config(
        extra="",
        candidates="".join(
            f'[[candidates]]\nname = "{n}"\ncorpus = "{n}.jsonl.gz"\ntext_field = "body"\n'
            f"n_docs = 40\n\n"
            for n in ("dialogue", "bard")
        ),
    ).replace("semantic = false\ntopics = false", "semantic = true\ntopics = true")
    config = config.replace(
        '[select]\nrm_results = "rm.csv"\ntarget = "accuracy"\nn_boot = 50\n', ""
    )
    config += "[semantic]\nmauve_seeds = [0]\nmax_topics = 2\nn_boot = 10\n"
    (workspace / "simscope.toml").write_text(config)
    result = run(load_run_config(workspace / "simscope.toml"), progress=False)
    profile = result.profile
    mass = profile.filter(pl.col("metric") == "semantic.topic_mass_ratio")
    assert set(mass["model"]) == {"dialogue", "bard"} and mass["topic"].null_count() == 0
    cov = dict(
        profile.filter(
            (pl.col("metric") == "semantic.coverage_k5")
            & (pl.col("slice") == "chosen")
            & pl.col("topic").is_null()
        )
        .select("model", "value")
        .iter_rows()
    )
    assert cov["dialogue"] > cov["bard"]
    examples = json.loads((workspace / "run" / "examples.json").read_text())
    assert {e["model"] for e in examples} == {"dialogue", "bard"}
    assert all(e["probe_text"] for e in examples)
    assert pl.read_parquet(workspace / "run" / "embedding_map.parquet").height > 0


def _profile_with(
    workspace: Path, execution: str, indexes: str, *, rebuild: bool = False
) -> pl.DataFrame:
    config = _config().replace('indexes_dir = "idx"', f'indexes_dir = "{indexes}"')
    (workspace / f"{indexes}.toml").write_text(config + execution)
    cfg = load_run_config(workspace / f"{indexes}.toml")
    return profile_only(cfg, workspace / f"{indexes}.parquet", rebuild=rebuild, progress=False)


def test_execution_engine_builds_the_indexes_the_profile_loads(workspace: Path) -> None:
    in_memory = _profile_with(workspace, "", "idx-memory")
    engine = _profile_with(workspace, '[execution]\nkind = "local"\nunit_docs = 16\n', "idx-local")
    assert_frame_equal(engine, in_memory)
    # Built on the engine from parquet shards kept under indexes/shards/, in work units ...
    manifest = json.loads((workspace / "idx-local" / "lexical-bard" / "manifest.json").read_text())
    assert manifest["execution"] == {"engine": "local", "units": 7}  # 100 docs, row groups of 16
    assert len(list((workspace / "idx-local" / "shards").iterdir())) == 3
    # ... whose files are the in-memory builder's, so either one loads the other's.
    for index in sorted((workspace / "idx-memory").glob("*-*")):
        for array in sorted(index.glob("*.npy")):
            twin = workspace / "idx-local" / index.name / array.name
            assert twin.read_bytes() == array.read_bytes(), twin
    again = _profile_with(workspace, '[execution]\nkind = "local"\nunit_docs = 16\n', "idx-memory")
    assert_frame_equal(again, in_memory)
    # A candidate's corpus changed: its shards are written again, the old version deleted.
    shards = workspace / "idx-local" / "shards"
    before = sorted(p.name for p in shards.iterdir())
    with gzip.open(workspace / "bard.jsonl.gz", "rt") as f:
        lines = f.readlines()
    with gzip.open(workspace / "bard.jsonl.gz", "wt") as f:
        f.writelines(lines[:90])
    section = '[execution]\nkind = "local"\nunit_docs = 16\n'
    _profile_with(workspace, section, "idx-local", rebuild=True)
    after = sorted(p.name for p in shards.iterdir())
    new = [n for n in after if n not in before]
    assert len(after) == 3 and len(new) == 1 and new[0].startswith("bard-")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('kind = "spark"', "execution.kind: expected one of local, ray, found 'spark'"),
        ('address = "auto"', "address, num_cpus, object_store_mb, actors and model_gpus apply"),
        ("unit_docs = 0", "execution.unit_docs: expected >= 1, found 0"),
        ("workers = 2", "execution: unknown key(s) 'workers'"),
    ],
)
def test_execution_config_errors(workspace: Path, section: str, message: str) -> None:
    path = workspace / "simscope.toml"
    path.write_text(_config() + f"[execution]\n{section}\n")
    with pytest.raises(SimscopeError) as e:
        load_run_config(path)
    assert message in str(e.value)
    assert str(e.value).startswith(str(path))


@pytest.mark.slow  # starts a local Ray cluster (~10-20 s)
def test_ray_execution_gives_the_same_profile(workspace: Path) -> None:
    pytest.importorskip("ray")
    in_memory = _profile_with(workspace, "", "idx-memory")
    section = '[execution]\nkind = "ray"\nnum_cpus = 2\nobject_store_mb = 200\nunit_docs = 16\n'
    on_ray = _profile_with(workspace, section, "idx-ray")
    assert_frame_equal(on_ray, in_memory)
    manifest = json.loads((workspace / "idx-ray" / "lexical-bard" / "manifest.json").read_text())
    assert manifest["execution"] == {"engine": "ray", "units": 7}


def test_absolute_paths_in_the_config_are_kept(workspace: Path, tmp_path_factory: Any) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    cands = "".join(
        f'[[candidates]]\nname = "{n}"\ncorpus = "{workspace / f"{n}.jsonl.gz"}"\n'
        'text_field = "body"\n\n'
        for n in ("dialogue", "bard", "mixed")
    )
    config = _config(candidates=cands).replace(
        'rm_results = "rm.csv"', f'rm_results = "{workspace / "rm.csv"}"'
    )
    config = config.replace('path = "prefs.jsonl"', f'path = "{workspace / "prefs.jsonl"}"')
    (elsewhere / "simscope.toml").write_text(config)
    result = run(load_run_config(elsewhere / "simscope.toml"), progress=False)
    assert result.selection is not None and result.selection.height == 3
    assert result.out_dir == elsewhere / "run"


def test_a_failed_run_leaves_the_previous_run_intact(workspace: Path) -> None:
    (workspace / "simscope.toml").write_text(_config())
    run(load_run_config(workspace / "simscope.toml"), progress=False)
    out = workspace / "run"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # fails in the select stage, after the profile was computed
    (workspace / "bad.toml").write_text(_config().replace('target = "accuracy"', 'target = "x"'))
    with pytest.raises(SimscopeError):
        run(load_run_config(workspace / "bad.toml"), progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not list(workspace.glob("*.incomplete*"))
    # a directory that is not a run directory is not replaced
    (workspace / "notes").mkdir()
    (workspace / "notes" / "mine.txt").write_text("keep")
    (workspace / "notes.toml").write_text(_config().replace('out_dir = "run"', 'out_dir = "notes"'))
    with pytest.raises(SimscopeError) as refused:
        run(load_run_config(workspace / "notes.toml"), progress=False)
    assert str(refused.value) == (
        f"out_dir: {workspace / 'notes'}: exists and was not written by simscope (no .simscope "
        "mark), so it is not replaced; choose a new directory, or empty this one"
    )
    assert (workspace / "notes" / "mine.txt").read_text() == "keep"


@pytest.mark.parametrize("out_dir", [".", "..", "idx/.."])
def test_a_run_never_replaces_the_folder_of_its_own_config(workspace: Path, out_dir: str) -> None:
    (workspace / "simscope.toml").write_text(
        _config().replace('out_dir = "run"', f'out_dir = "{out_dir}"')
    )
    before = sorted(p.name for p in workspace.iterdir())
    with pytest.raises(SimscopeError) as refused:
        run(load_run_config(workspace / "simscope.toml"), progress=False)
    out = (workspace / out_dir).resolve()
    assert str(refused.value) == (
        f"out_dir: {out} holds {workspace / 'prefs.jsonl'}, which the run reads; the run "
        'directory is replaced as a whole, so it must be a folder of its own (e.g. out_dir = "run")'
    )
    assert sorted(p.name for p in workspace.iterdir()) == before


def test_a_run_directory_with_a_users_file_in_it_is_not_replaced(workspace: Path) -> None:
    (workspace / "simscope.toml").write_text(_config())
    run(load_run_config(workspace / "simscope.toml"), progress=False)
    (workspace / "run" / "my-notes.md").write_text("keep")
    with pytest.raises(SimscopeError) as refused:
        run(load_run_config(workspace / "simscope.toml"), progress=False)
    assert str(refused.value) == (
        f"out_dir: {workspace / 'run'}: holds my-notes.md, which simscope did not write, so it "
        "is not replaced; move them out or choose a new directory"
    )
    assert (workspace / "run" / "my-notes.md").read_text() == "keep"
    # a folder holding a profile.parquet that simscope did not mark is not a run directory
    other = workspace / "copied"
    other.mkdir()
    (other / "profile.parquet").write_bytes((workspace / "run" / "profile.parquet").read_bytes())
    (other / "prefs-backup.jsonl").write_text("{}")
    config = _config().replace('out_dir = "run"', 'out_dir = "copied"')
    (workspace / "copied.toml").write_text(config)
    with pytest.raises(SimscopeError, match="was not written by simscope"):
        run(load_run_config(workspace / "copied.toml"), progress=False)
    assert (other / "prefs-backup.jsonl").is_file()


def test_an_unwritable_output_is_one_error_line(workspace: Path) -> None:
    target = workspace / "prefs.jsonl" / "x.parquet"  # under a file
    args = ["--quiet", "load", str(workspace / "prefs.jsonl"), "-o", str(target)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {workspace / 'prefs.jsonl'}: is a file; expected a directory here "
        "(an output path under it?)"
    )


@pytest.fixture()
def model_workspace(workspace: Path, hh_records: list[dict[str, str]]) -> Path:
    """The workspace plus a tiny LM (a few seconds of training) as a candidate to probe."""
    from simscope.probe.tiny import TinyLMConfig, train_tiny_lm

    texts = [r["chosen"] for r in hh_records[1200:1500]]
    train_tiny_lm(texts, workspace / "lm", seed=0, config=TinyLMConfig(steps=20))
    return workspace


def _model_config(model: str = "lm") -> str:
    return (
        'out_dir = "run"\nindexes_dir = "idx"\nn_boot = 10\n\n[preferences]\npath = "prefs.jsonl"\n'
        "limit = 12\n\n[stages]\nsemantic = false\ntopics = false\nlikelihood = true\n\n"
        "[generation]\nn_docs = 4\nmax_new_tokens = 16\n\n"
        f'[[candidates]]\nname = "org/gen"\nmodel = "{model}"\n'
    )


def test_caches_are_checked_like_indexes_and_rebuilt_by_rebuild(model_workspace: Path) -> None:
    from simscope.storage import CACHED_TABLE

    config = model_workspace / "simscope.toml"
    config.write_text(_model_config())
    first = run(load_run_config(config), progress=False)
    (likelihood,) = (model_workspace / "idx" / "likelihood").iterdir()
    (corpus,) = (model_workspace / "idx" / "corpora").iterdir()
    assert corpus.name.startswith("org~2Fgen-")  # one folder per candidate name
    # an edited likelihood cache is refused, not reported
    rows = pl.read_parquet(likelihood / CACHED_TABLE).with_columns(pl.lit(99.0).alias("value"))
    rows.write_parquet(likelihood / CACHED_TABLE)
    with pytest.raises(SimscopeError) as refused:
        run(load_run_config(config), progress=False)
    assert str(refused.value) == (
        f"{likelihood / CACHED_TABLE}: checksum differs from the manifest (file damaged or "
        "truncated); rebuild the index with --rebuild"
    )
    # a damaged corpus cache too; --rebuild then rebuilds both
    (corpus / CACHED_TABLE).write_bytes((corpus / CACHED_TABLE).read_bytes()[:100])
    rebuilt = run(load_run_config(config), rebuild=True, progress=False)
    assert_frame_equal(rebuilt.profile, first.profile)
    again = run(load_run_config(config), progress=False)
    assert_frame_equal(again.profile, first.profile)


def test_a_cached_probe_corpus_does_not_depend_on_how_the_model_path_is_spelled(
    model_workspace: Path,
) -> None:
    config = model_workspace / "simscope.toml"
    config.write_text(_model_config())
    run(load_run_config(config), progress=False)
    entries = sorted((model_workspace / "idx" / "corpora").iterdir())
    other = model_workspace / "elsewhere"
    other.mkdir()
    moved = (
        _model_config(model="../lm/")
        .replace('indexes_dir = "idx"', 'indexes_dir = "../idx"')
        .replace('path = "prefs.jsonl"', 'path = "../prefs.jsonl"')
    )
    (other / "simscope.toml").write_text(moved)
    run(load_run_config(other / "simscope.toml"), progress=False)
    assert sorted((model_workspace / "idx" / "corpora").iterdir()) == entries
    assert sorted((model_workspace / "idx" / "likelihood").iterdir()) != []


def test_profile_with_a_lone_surrogate_in_the_preferences(workspace: Path) -> None:
    prefs = workspace / "prefs.jsonl"
    with open(prefs, "a") as f:  # line 61: "\udc80" is half a UTF-16 pair, no text
        f.write('{"chosen": "\\n\\nHuman: Hi\\n\\nAssistant: \\udc80", "rejected": "x"}\n')
    out = workspace / "profile.parquet"
    args = ["--quiet", "profile", "--prefs", str(prefs), "--no-semantic", "-o", str(out)]
    args += ["--indexes", str(workspace / "idx"), "--n-boot", "5", "--text-field", "body"]
    args += ["--corpus", f"bard={workspace / 'bard.jsonl.gz'}"]
    runner = CliRunner()
    bad = runner.invoke(cli, args)
    assert bad.exit_code == 1 and not out.exists()
    assert bad.output.splitlines() == [
        f"Error: {prefs}:61: field 'chosen': expected Unicode text, found a lone surrogate "
        "'\\udc80' at character 24 of '\\n\\nHuman: Hi\\n\\nAssistant: \\udc80' (a \\ud800-\\udfff "
        "escape must be one half of a high-low pair, as in \\ud83d\\ude00); fix the record, or "
        "pass --skip-bad to skip bad records"
    ]
    ok = runner.invoke(cli, [*args, "--skip-bad"])
    assert ok.exit_code == 0, ok.output
    assert pl.read_parquet(out).height > 0


def test_a_run_shows_one_progress_line_per_stage_and_no_log_lines(workspace: Path) -> None:
    (workspace / "simscope.toml").write_text(_config())
    result = CliRunner().invoke(cli, ["run", str(workspace / "simscope.toml")])
    assert result.exit_code == 0, result.output
    # tqdm redraws a line in place with \r: the last state of each line is what stays on screen
    lines = [line.split("\r")[-1].rstrip() for line in result.stderr.split("\n") if line.strip()]
    stages = [line.split(":")[0] for line in lines]
    assert stages == ["probe", "lexical overlap"]
    assert all("3/3" in line and line.endswith("done") for line in lines), lines
    assert "INFO" not in result.stderr
    quiet = CliRunner().invoke(cli, ["--quiet", "run", str(workspace / "simscope.toml")])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    verbose = CliRunner().invoke(cli, ["--verbose", "run", str(workspace / "simscope.toml")])
    assert "INFO simscope.pipeline: preferences: 60 pairs" in verbose.stderr
