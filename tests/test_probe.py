"""Probe stage: tiny GPT-2 models trained here on bundled text, generation, import, likelihood.

Two tiny models are trained once per session (about 10 s each): one on Shakespeare, one on
HH-RLHF dialogue. Their held-out texts are the last 100 of each domain, never trained on.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

import simscope.probe.generate as generate_mod
from simscope.cli import cli
from simscope.errors import SimscopeError
from simscope.metrics import spec
from simscope.probe.corpus import read_probe_corpus, read_probe_metadata, write_probe_corpus
from simscope.probe.generate import GenerationConfig, generate_corpus
from simscope.probe.importer import import_corpus
from simscope.probe.likelihood import (
    LikelihoodConfig,
    js_distance,
    likelihood_scorer,
    presence_distances,
    score_preferences,
    score_reference_corpora,
    score_texts,
)
from simscope.probe.model import LoadedModel, load_model, resolve_device
from simscope.probe.tiny import TinyLMConfig, train_tiny_lm
from simscope.records import PREFERENCE_SCHEMA, PROBE_SCHEMA, PROFILE_SCHEMA

HELD_OUT = 100
TRAIN = TinyLMConfig(steps=100)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny models gain nothing from threads, and on a shared 2-core machine the OpenMP
    # spin-waits of two threads make them an order of magnitude slower.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def dialogue_texts(hh_records: list[dict[str, str]]) -> list[str]:
    return [r["chosen"] for r in hh_records]


@pytest.fixture(scope="session")
def tiny_models(
    tmp_path_factory: pytest.TempPathFactory,
    shakespeare_paragraphs: list[str],
    dialogue_texts: list[str],
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "shakespeare": train_tiny_lm(
            shakespeare_paragraphs[:-HELD_OUT][:3000], root / "shakespeare", seed=0, config=TRAIN
        ),
        "dialogue": train_tiny_lm(
            dialogue_texts[:-HELD_OUT][:1500], root / "dialogue", seed=0, config=TRAIN
        ),
    }


@pytest.fixture(scope="session")
def shakespeare_lm(tiny_models: dict[str, Path]) -> LoadedModel:
    return load_model(tiny_models["shakespeare"], device="cpu", name="shakespeare")


@pytest.fixture(scope="session")
def dialogue_lm(tiny_models: dict[str, Path]) -> LoadedModel:
    return load_model(tiny_models["dialogue"], device="cpu", name="dialogue")


def _hh_prefs(records: list[dict[str, str]], n: int) -> pl.DataFrame:
    """A PreferenceSet from HH transcripts: prompt = shared prefix up to the last Assistant."""
    rows = []
    for i, r in enumerate(records[:n]):
        cut = r["chosen"].rfind("\n\nAssistant:") + len("\n\nAssistant:")
        prompt = r["chosen"][:cut]
        rows.append(
            {
                "pair_id": str(i),
                "prompt": prompt,
                "chosen": r["chosen"][cut:].strip(),
                "rejected": r["rejected"][cut:].strip(),
                "source": f"hh:{i + 1}",
            }
        )
    return pl.DataFrame(rows, schema=PREFERENCE_SCHEMA)


# ---- tiny models and loading ----------------------------------------------------------------


def test_tiny_model_is_saved_as_safetensors(tiny_models: dict[str, Path]) -> None:
    files = {p.name for p in tiny_models["shakespeare"].iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)


def test_device_auto_is_cpu_without_gpu() -> None:
    # No GPU on the test machine: "auto" must fall back to the CPU (CUDA is tried first).
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") in (expected, "mps")
    with pytest.raises(SimscopeError) as e:
        resolve_device("tpu")
    assert str(e.value) == "device: expected one of ['auto', 'cpu', 'cuda', 'mps'], found 'tpu'"


def test_bad_model_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-model"
    with pytest.raises(SimscopeError) as e:
        load_model(missing)
    assert str(e.value) == (
        f"model {str(missing)!r}: expected a model directory (with config.json) or a model id "
        "in the local Hugging Face cache, found no such directory; check the path"
    )
    with pytest.raises(SimscopeError) as e:
        load_model(tmp_path)
    assert str(e.value) == (
        f"model {str(tmp_path)!r}: expected a model directory with config.json, found none; "
        "point at the directory that save_pretrained wrote"
    )
    with pytest.raises(SimscopeError) as e:
        load_model("simscope-tests/no-such-model")
    msg = str(e.value)
    assert msg.startswith(
        "model 'simscope-tests/no-such-model': cannot load it from disk or the local Hugging "
        "Face cache ("
    )
    assert msg.endswith(
        "); nothing is downloaded at run time: download it beforehand (e.g. "
        "`huggingface-cli download MODEL`) or give a local path"
    )


def test_cli_bad_model_path_is_one_error_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = CliRunner().invoke(
        cli, ["--quiet", "probe", "generate", str(missing), "-o", str(tmp_path / "c.parquet")]
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: model {str(missing)!r}: expected a model directory (with config.json) or a "
        "model id in the local Hugging Face cache, found no such directory; check the path"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model", "t=a", "--model", "t=b"],
            "--model: each name once; found ['t'] more than once",
        ),
        (["--model", "=a"], "--model: expected NAME=PATH or PATH, found '=a'"),
        (
            ["--model", "a", "--presence-out", "p.parquet"],
            "--presence-out: needs at least one --reference corpus, found none",
        ),
    ],
)
def test_cli_score_checks_its_options_before_loading_models(
    tmp_path: Path, hh_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "s.parquet"
    result = CliRunner().invoke(
        cli, ["--quiet", "probe", "score", str(hh_path), *args, "-o", str(out)]
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: {message}"]
    assert not out.exists()


# ---- likelihood -------------------------------------------------------------------------------


def test_each_model_finds_its_own_domain_more_likely(
    shakespeare_lm: LoadedModel,
    dialogue_lm: LoadedModel,
    shakespeare_paragraphs: list[str],
    dialogue_texts: list[str],
) -> None:
    held = {
        "shakespeare": shakespeare_paragraphs[-HELD_OUT:],
        "dialogue": dialogue_texts[-HELD_OUT:],
    }
    bpb = {}
    first_k = {}
    for lm in (shakespeare_lm, dialogue_lm):
        for domain, texts in held.items():
            s = score_texts(lm, texts, progress=False)
            assert not np.isnan(s.bits_per_byte).any()
            bpb[lm.name, domain] = float(s.bits_per_byte.mean())
            first_k[lm.name, domain] = float(s.mean_logprob_first_k.mean())
    assert bpb["shakespeare", "shakespeare"] < bpb["shakespeare", "dialogue"]
    assert bpb["dialogue", "dialogue"] < bpb["dialogue", "shakespeare"]
    assert first_k["shakespeare", "shakespeare"] > first_k["shakespeare", "dialogue"]
    assert first_k["dialogue", "dialogue"] > first_k["dialogue", "shakespeare"]


def test_scores_do_not_depend_on_batching(
    shakespeare_lm: LoadedModel, shakespeare_paragraphs: list[str]
) -> None:
    texts = [*shakespeare_paragraphs[-20:], "", "a"]
    one = score_texts(shakespeare_lm, texts, LikelihoodConfig(batch_size=1), progress=False)
    many = score_texts(shakespeare_lm, texts, LikelihoodConfig(batch_size=8), progress=False)
    np.testing.assert_allclose(one.bits_per_byte, many.bits_per_byte, rtol=1e-4)
    np.testing.assert_allclose(one.mean_logprob_first_k, many.mean_logprob_first_k, rtol=1e-4)
    assert np.isnan(one.bits_per_byte[-2]) and one.n_tokens[-2] == 0
    assert one.n_tokens[-1] == 1 and one.n_bytes[-1] == 1


def test_long_texts_are_cut_to_the_context(
    shakespeare_lm: LoadedModel, shakespeare_text: str
) -> None:
    s = score_texts(shakespeare_lm, [shakespeare_text[:20000]], progress=False)
    assert s.n_tokens[0] == 127  # 128 positions, one taken by the start token
    assert 0 < s.n_bytes[0] < 2000


def test_preference_profile(shakespeare_lm: LoadedModel, hh_records: list[dict[str, str]]) -> None:
    prefs = _hh_prefs(hh_records, 40)
    labels = np.array([i % 3 - 1 for i in range(40)])  # -1 = no topic
    result = score_preferences(
        shakespeare_lm,
        prefs,
        LikelihoodConfig(first_k_tokens=16),
        topic_labels=labels,
        topic_names=["even", "odd"],
        n_boot=50,
        seed=0,
        progress=False,
    )
    profile = result.profile
    assert profile.schema == PROFILE_SCHEMA
    for metric in profile.get_column("metric").unique():
        assert spec(metric).family == "likelihood"
    whole = profile.filter(pl.col("topic").is_null())
    assert set(zip(whole["slice"], whole["metric"], strict=True)) == {
        *(
            (s, m)
            for s in ("prompt", "chosen", "rejected")
            for m in ("likelihood.mean_logprob_first16", "likelihood.bits_per_byte")
        ),
        ("chosen", "likelihood.pref_agreement"),
        ("chosen", "likelihood.pref_logprob_margin"),
    }
    assert set(profile.get_column("topic").drop_nulls()) == {"even", "odd"}
    for row in profile.iter_rows(named=True):
        assert row["ci_low"] <= row["value"] <= row["ci_high"]
    agree = whole.filter(pl.col("metric") == "likelihood.pref_agreement").row(0, named=True)
    assert 0.0 <= agree["value"] <= 1.0
    # The whole-slice value is the plain mean of the per-text values.
    bpb = whole.filter(
        (pl.col("slice") == "chosen") & (pl.col("metric") == "likelihood.bits_per_byte")
    )
    assert bpb["value"][0] == pytest.approx(float(np.nanmean(result.texts["chosen"].bits_per_byte)))
    # A topic is the mean over its own pairs.
    odd = profile.filter(
        (pl.col("slice") == "chosen")
        & (pl.col("metric") == "likelihood.bits_per_byte")
        & (pl.col("topic") == "odd")
    )
    assert odd["value"][0] == pytest.approx(
        float(np.nanmean(result.texts["chosen"].bits_per_byte[labels == 1]))
    )


def test_agreement_is_high_when_chosen_is_the_models_own_domain(
    shakespeare_lm: LoadedModel, shakespeare_paragraphs: list[str], dialogue_texts: list[str]
) -> None:
    n = 30
    prefs = pl.DataFrame(
        {
            "pair_id": [str(i) for i in range(n)],
            "prompt": ["ROMEO:"] * n,
            "chosen": shakespeare_paragraphs[-n:],
            "rejected": [t[:300] for t in dialogue_texts[-n:]],
            "source": ["t"] * n,
        }
    )
    result = score_preferences(shakespeare_lm, prefs, slices=("chosen",), n_boot=0, progress=False)
    assert result.pairs is not None
    assert float(np.nanmean(result.pairs.agreement)) > 0.75


def test_topic_labels_must_match(
    shakespeare_lm: LoadedModel, hh_records: list[dict[str, str]]
) -> None:
    prefs = _hh_prefs(hh_records, 5)
    with pytest.raises(SimscopeError) as e:
        score_preferences(shakespeare_lm, prefs, topic_labels=np.zeros(4), progress=False)
    assert str(e.value) == "topics: expected one label per preference pair (5), found 4"


def test_presence_distance_between_models(
    shakespeare_lm: LoadedModel,
    dialogue_lm: LoadedModel,
    shakespeare_paragraphs: list[str],
    dialogue_texts: list[str],
    stdlib_texts: list[str],
) -> None:
    refs = {
        "books": shakespeare_paragraphs[-40:],
        "dialogue": dialogue_texts[-40:],
        "code": stdlib_texts[:20],
    }
    table = pl.concat(
        [score_reference_corpora(lm, refs, progress=False) for lm in (shakespeare_lm, dialogue_lm)]
    )
    sums = table.group_by("model").agg(pl.col("presence").sum())
    assert sums["presence"].to_list() == pytest.approx([1.0, 1.0])
    top = table.sort("presence", descending=True).group_by("model").first()
    assert dict(zip(top["model"], top["corpus"], strict=True)) == {
        "shakespeare": "books",
        "dialogue": "dialogue",
    }
    dist = presence_distances(table, n_boot=100)
    assert dist.height == 1 and 0.5 < dist["value"][0] <= 1.0
    assert dist["ci_low"][0] <= dist["value"][0] <= dist["ci_high"][0]
    same = presence_distances(
        pl.concat(
            [
                table.filter(pl.col("model") == "dialogue"),
                table.filter(pl.col("model") == "dialogue").with_columns(
                    pl.lit("copy").alias("model")
                ),
            ]
        )
    )
    assert same["value"][0] == pytest.approx(0.0, abs=1e-6)


def test_js_distance_known_values() -> None:
    assert js_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert js_distance(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    # JSD([1,0],[.5,.5]) = 1.5 - 0.75 log2(3) bits.
    assert js_distance(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(
        np.sqrt(1.5 - 0.75 * np.log2(3))
    )


# ---- generation -----------------------------------------------------------------------------

GEN = GenerationConfig(
    n_docs=24, batch_size=4, max_new_tokens=24, prefixes=("", "KING:"), seed=7, chunk_docs=8
)


def test_generation_is_deterministic(shakespeare_lm: LoadedModel, tmp_path: Path) -> None:
    a = generate_corpus(shakespeare_lm, tmp_path / "a.parquet", GEN, progress=False)
    b = generate_corpus(shakespeare_lm, tmp_path / "b.parquet", GEN, progress=False)
    assert a.equals(b)
    assert a.schema == PROBE_SCHEMA and set(a["origin"]) == {"generated"}
    assert a.height >= 20 and a["doc_id"].is_unique().all()
    assert all(t.startswith("KING:") for t in a.filter(pl.col("doc_id") == "gen-000001")["text"])
    other = GenerationConfig(**{**GEN.__dict__, "seed": 8})
    c = generate_corpus(shakespeare_lm, tmp_path / "c.parquet", other, progress=False)
    assert not a.equals(c)
    meta = read_probe_metadata(tmp_path / "a.parquet")
    assert meta["seed"] == 7 and meta["prefixes"] == ["", "KING:"]
    assert meta["temperature"] == 1.0 and meta["top_p"] == 1.0 and meta["max_new_tokens"] == 24
    assert meta["model"] == "shakespeare" and len(meta["model_revision"]) == 32
    assert not (tmp_path / "a.parquet.incomplete").exists()


def test_models_own_generation_config_does_not_leak(
    tiny_models: dict[str, Path], shakespeare_lm: LoadedModel, tmp_path: Path
) -> None:
    # A chat-style generation_config.json must not narrow the sampled distribution.
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_models["shakespeare"], copy)
    cfg_path = copy / "generation_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(top_k=1, min_p=0.5, repetition_penalty=5.0, no_repeat_ngram_size=2, temperature=0.1)
    cfg_path.write_text(json.dumps(cfg))
    tuned = load_model(copy, device="cpu", name="shakespeare")
    a = generate_corpus(shakespeare_lm, tmp_path / "a.parquet", GEN, progress=False)
    b = generate_corpus(tuned, tmp_path / "b.parquet", GEN, progress=False)
    assert a.equals(b)


def test_generation_resumes_after_interruption(
    shakespeare_lm: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = generate_corpus(shakespeare_lm, tmp_path / "ref.parquet", GEN, progress=False)
    real = generate_mod.sample_batch
    calls: list[int] = []

    def crash_in_third_batch(
        lm: LoadedModel, config: GenerationConfig, batch: int
    ) -> tuple[list[str], int]:
        calls.append(batch)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(lm, config, batch)

    out = tmp_path / "run.parquet"
    monkeypatch.setattr(generate_mod, "sample_batch", crash_in_third_batch)
    with pytest.raises(KeyboardInterrupt):
        generate_corpus(shakespeare_lm, out, GEN, progress=False)
    monkeypatch.setattr(generate_mod, "sample_batch", real)
    work = tmp_path / "run.parquet.incomplete"
    assert sorted(p.name for p in work.glob("chunk-*")) == ["chunk-0000000-0000002.parquet"]
    assert not out.exists()
    resumed_batches: list[int] = []

    def record(lm: LoadedModel, config: GenerationConfig, batch: int) -> tuple[list[str], int]:
        resumed_batches.append(batch)
        return real(lm, config, batch)

    monkeypatch.setattr(generate_mod, "sample_batch", record)
    resumed = generate_corpus(shakespeare_lm, out, GEN, progress=False)
    assert resumed_batches == [2, 3, 4, 5]
    assert resumed.equals(reference)
    assert not work.exists()


def test_resume_refuses_other_settings(shakespeare_lm: LoadedModel, tmp_path: Path) -> None:
    out = tmp_path / "c.parquet"
    work = tmp_path / "c.parquet.incomplete"
    work.mkdir()
    settings = {"seed": 1}
    (work / "settings.json").write_text(json.dumps(settings))
    with pytest.raises(SimscopeError) as e:
        generate_corpus(shakespeare_lm, out, GEN, progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{work}: an interrupted run with other settings is there (")
    assert "seed: earlier run 1, now 7" in msg
    assert msg.endswith(
        "); rerun with its settings to resume it, or delete the directory to start over"
    )


def test_generation_refuses_existing_output(shakespeare_lm: LoadedModel, tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    out.write_bytes(b"")
    with pytest.raises(SimscopeError) as e:
        generate_corpus(shakespeare_lm, out, GEN, progress=False)
    assert str(e.value) == f"{out}: already exists; remove it or pass --overwrite"


_KILL_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from pathlib import Path
from simscope.probe.generate import GenerationConfig, generate_corpus
cfg = GenerationConfig(**{cfg})
generate_corpus(sys.argv[1], Path(sys.argv[2]), cfg, name="shakespeare", device="cpu",
                progress=False)
"""


@pytest.mark.slow
def test_generation_resumes_after_sigkill(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    cfg = {**GEN.__dict__, "n_docs": 200, "chunk_docs": 4, "prefixes": ["", "KING:"]}
    out = tmp_path / "killed.parquet"
    script = _KILL_SCRIPT.replace("{cfg}", repr(cfg))
    cmd = [sys.executable, "-c", script, str(tiny_models["shakespeare"]), str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = tmp_path / "killed.parquet.incomplete"
    deadline = time.monotonic() + 120
    while not list(work.glob("chunk-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    chunks = list(work.glob("chunk-*.parquet"))
    assert chunks and not out.exists()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reference = tmp_path / "reference.parquet"
    subprocess.run(
        [*cmd[:-1], str(reference)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert read_probe_corpus(out).equals(read_probe_corpus(reference))


# ---- import -----------------------------------------------------------------------------------


def test_import_txt_paragraphs_and_directory(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(
        "First doc\nstill first.\n\n\nSecond doc.\n\nFirst doc\nstill first.\n"
    )
    df = import_corpus(tmp_path / "a.txt", model="m").corpus
    assert df.schema == PROBE_SCHEMA
    assert df.to_dicts() == [
        {
            "model": "m",
            "doc_id": "a.txt:1",
            "text": "First doc\nstill first.",
            "origin": "imported",
        },
        {"model": "m", "doc_id": "a.txt:5", "text": "Second doc.", "origin": "imported"},
    ]
    lines = import_corpus(tmp_path / "a.txt", model="m", txt_unit="line", dedupe=False).corpus
    assert lines["text"].to_list() == [
        "First doc",
        "still first.",
        "Second doc.",
        "First doc",
        "still first.",
    ]
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "b.txt").write_text("bee")
    with gzip.open(docs / "sub" / "c.txt.gz", "wt") as f:
        f.write("sea\n\nstill sea")
    (docs / "ignored.md").write_text("not a txt")
    d = import_corpus(docs, model="m").corpus
    assert d.select("doc_id", "text").rows() == [
        ("b.txt", "bee"),
        ("sub/c.txt.gz", "sea\n\nstill sea"),
    ]


def test_import_filters_dedupes_and_samples(tmp_path: Path, shakespeare_text: str) -> None:
    path = tmp_path / "s.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(shakespeare_text)
    full = import_corpus(path, model="books")
    assert full.stats.n_duplicates > 0
    assert full.corpus["text"].is_unique().all()
    assert full.stats.n_kept == full.corpus.height
    filtered = import_corpus(path, model="books", min_chars=50, max_chars=400)
    lengths = filtered.corpus["text"].str.len_chars()
    assert lengths.to_list() and all(50 <= n <= 400 for n in lengths.to_list())
    assert filtered.stats.n_too_short > 0 and filtered.stats.n_too_long > 0
    a = import_corpus(path, model="books", n_docs=100, seed=3).corpus
    b = import_corpus(path, model="books", n_docs=100, seed=3).corpus
    c = import_corpus(path, model="books", n_docs=100, seed=4).corpus
    assert a.equals(b) and not a.equals(c) and a.height == 100
    # A sample keeps input order and is a subset of the full corpus.
    position = {d: i for i, d in enumerate(full.corpus["doc_id"])}
    order = [position[d] for d in a["doc_id"]]
    assert order == sorted(order)


def test_probe_corpus_round_trip(tmp_path: Path) -> None:
    df = pl.DataFrame(
        {
            "model": ["m", "m"],
            "doc_id": ["x1", "x2"],
            "text": ["one", "two"],
            "origin": ["generated", "generated"],
        },
        schema=PROBE_SCHEMA,
    )
    path = tmp_path / "c.parquet"
    write_probe_corpus(df, path, {"seed": 3, "prefixes": ["", "A"]})
    assert read_probe_corpus(path).equals(df)
    assert read_probe_metadata(path)["prefixes"] == ["", "A"]
    again = import_corpus(path).corpus  # model and origin kept from the ProbeCorpus
    assert again.equals(df)
    renamed = import_corpus(path, model="other", n_docs=1, seed=0).corpus
    assert renamed["model"].to_list() == ["other"] and renamed.height == 1


def test_import_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(SimscopeError) as e:
        import_corpus(tmp_path / "none.txt", model="m")
    assert str(e.value) == (
        f"{tmp_path / 'none.txt'}: no such file or directory; expected a corpus to import"
    )
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(SimscopeError) as e:
        import_corpus(bad, model="m")
    assert str(e.value) == (
        f"{bad}: byte 3: expected UTF-8 text, found undecodable bytes b'\\xe9 au'; convert the "
        "file to UTF-8"
    )
    odd = tmp_path / "corpus.xml"
    odd.write_text("<doc/>")
    with pytest.raises(SimscopeError) as e:
        import_corpus(odd, model="m")
    assert str(e.value) == (
        f"{odd}: unknown corpus format; expected a ProbeCorpus parquet, a file of records "
        "(.jsonl, .ndjson, .json, .parquet, .pq, .csv, .tsv), a .txt file (each optionally .gz) "
        "or a directory of .txt files; name the format with --format"
    )
    (tmp_path / "a.txt").write_text("text")
    with pytest.raises(SimscopeError) as e:
        import_corpus(tmp_path / "a.txt")
    assert str(e.value) == (
        f"{tmp_path / 'a.txt'}: name the model this corpus stands for (--model NAME); only a "
        "ProbeCorpus parquet carries its own"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SimscopeError) as e:
        import_corpus(empty, model="m")
    assert str(e.value) == (
        f"{empty}: directory holds no .txt or .txt.gz files; expected one document per text file"
    )
    with pytest.raises(SimscopeError) as e:
        import_corpus(tmp_path / "a.txt", model="m", min_chars=10)
    assert str(e.value) == (
        f"{tmp_path / 'a.txt'}: no documents left to import (read 1, bad 0, empty 0, too short "
        "1, too long 0); check --text-field and the length filters"
    )


def test_import_records_with_a_text_field(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"body": "one", "id": 1}) + "\n")
        f.write(json.dumps({"body": "two"}) + "\n")
        f.write(json.dumps({"body": "one"}) + "\n")
    df = import_corpus(path, model="m", text_field="body").corpus
    assert df.select("doc_id", "text").rows() == [("c.jsonl.gz:1", "one"), ("c.jsonl.gz:2", "two")]
    csv = tmp_path / "c.csv"
    pl.DataFrame({"text": ["x", "y"]}).write_csv(csv)
    assert import_corpus(csv, model="m").corpus["text"].to_list() == ["x", "y"]
    pq = tmp_path / "plain.parquet"
    pl.DataFrame({"content": ["p", "q"]}).write_parquet(pq)
    assert import_corpus(pq, model="m", text_field="content").corpus["text"].to_list() == ["p", "q"]


def test_import_bad_records_are_located(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": 3}\n{"body": "x"}\n{"text": "fine"}\n')
    with pytest.raises(SimscopeError) as e:
        import_corpus(path, model="m")
    assert str(e.value) == (
        f"{path}:2: field 'text': expected a string, found 3; choose the text field with "
        "--text-field, or skip bad records with --skip-bad"
    )
    missing = tmp_path / "missing.json"
    missing.write_text('[{"text": "ok"}, {"body": "x"}]')
    with pytest.raises(SimscopeError) as e:
        import_corpus(missing, model="m")
    assert str(e.value) == (
        f"{missing}:item 2: field 'text': expected a string, found no such field (fields: "
        "['body']); choose the text field with --text-field, or skip bad records with --skip-bad"
    )
    result = import_corpus(path, model="m", skip_bad=True)
    assert result.stats.n_bad == 2 and result.corpus["text"].to_list() == ["ok", "fine"]


SURROGATE_HINT = (
    "(a \\ud800-\\udfff escape must be one half of a high-low pair, as in \\ud83d\\ude00)"
)


def test_import_lone_surrogates_are_bad_records(tmp_path: Path) -> None:
    # Hand-written JSON: "\udc80" is half a UTF-16 pair, which no text can hold; a pair
    # ("\ud83d\ude00", an emoji) is fine. CSV and text files spell no escapes: the same six
    # characters there are text, and the bytes of a surrogate are not UTF-8.
    lines = ['{"text": "ok"}', '{"text": "a\\udc80b"}', '{"text": "smile \\ud83d\\ude00"}']
    jsonl, array = tmp_path / "c.jsonl", tmp_path / "c.json"
    jsonl.write_text("\n".join(lines) + "\n")
    array.write_text("[" + ", ".join(lines) + "]")
    for path, where in ((jsonl, f"{jsonl}:2"), (array, f"{array}:item 2")):
        with pytest.raises(SimscopeError) as e:
            import_corpus(path, model="m")
        assert str(e.value) == (
            f"{where}: field 'text': expected Unicode text, found a lone surrogate '\\udc80' at "
            f"character 1 of 'a\\udc80b' {SURROGATE_HINT}; fix the record, or skip bad records "
            "with --skip-bad"
        )
        result = import_corpus(path, model="m", skip_bad=True)
        assert result.stats.n_bad == 1
        assert result.corpus["text"].to_list() == ["ok", "smile \U0001f600"]
    csv = tmp_path / "c.csv"
    csv.write_text('text\n"a\\udc80b"\n')
    assert import_corpus(csv, model="m").corpus["text"].to_list() == ["a\\udc80b"]
    txt = tmp_path / "c.txt"
    txt.write_bytes(b"ok\n\na\xed\xb2\x80b\n")
    with pytest.raises(SimscopeError) as e:
        import_corpus(txt, model="m")
    assert str(e.value) == (
        f"{txt}: byte 5: expected UTF-8 text, found undecodable bytes b'\\xed\\xb2\\x80b'; "
        "convert the file to UTF-8"
    )


def test_import_parquet_with_strings_that_are_not_utf8(tmp_path: Path) -> None:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    offsets = pa.py_buffer(b"\x00\x00\x00\x00\x02\x00\x00\x00\x05\x00\x00\x00")
    text = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"ok\xed\xb2\x80")])
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": text}), path)
    with pytest.raises(SimscopeError) as e:
        import_corpus(path, model="m", skip_bad=True)
    assert str(e.value) == (
        f"{path}:row 2: column 'text': expected UTF-8 text, found undecodable bytes "
        "b'\\xed\\xb2\\x80'; rewrite the column as UTF-8 (parquet strings must be UTF-8)"
    )


def test_import_a_file_name_that_is_not_utf8(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    # Linux file names are bytes; Python hands this one over as "caf\udce9.txt"
    (docs / os.fsdecode(b"caf\xe9.txt")).write_text("bee")
    df = import_corpus(docs, model="m").corpus
    assert df.select("doc_id", "text").rows() == [("caf\\xe9.txt", "bee")]
    one = import_corpus(docs / os.fsdecode(b"caf\xe9.txt"), model="m").corpus
    assert one["doc_id"].to_list() == ["caf\\xe9.txt:1"]


def test_cli_import_with_a_lone_surrogate(tmp_path: Path) -> None:
    src = tmp_path / "c.jsonl"
    src.write_text('{"text": "\\ud800"}\n{"text": "fine"}\n')
    out = tmp_path / "c.parquet"
    runner = CliRunner()
    args = ["--quiet", "probe", "import", str(src), "-o", str(out), "--model", "m"]
    bad = runner.invoke(cli, args)
    assert bad.exit_code == 1 and not out.exists()
    assert bad.output.splitlines() == [
        f"Error: {src}:1: field 'text': expected Unicode text, found a lone surrogate "
        f"'\\ud800' at character 0 of '\\ud800' {SURROGATE_HINT}; fix the record, or skip bad "
        "records with --skip-bad"
    ]
    ok = runner.invoke(cli, [*args, "--skip-bad"])
    assert ok.exit_code == 0, ok.output
    assert "wrote 1 documents" in ok.output and "bad 1" in ok.output
    assert read_probe_corpus(out)["text"].to_list() == ["fine"]


def test_cli_import_and_bad_import_file(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("one\n\ntwo\n\none\n")
    out = tmp_path / "c.parquet"
    runner = CliRunner()
    ok = runner.invoke(cli, ["probe", "import", str(src), "-o", str(out), "--model", "m"])
    assert ok.exit_code == 0, ok.output
    assert "wrote 2 documents" in ok.output
    assert read_probe_corpus(out)["text"].to_list() == ["one", "two"]
    assert read_probe_metadata(out)["stats"]["n_duplicates"] == 1
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00")
    result = runner.invoke(
        cli, ["probe", "import", str(bad), "-o", str(tmp_path / "b.parquet"), "--model", "m"]
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {bad}: byte 0: expected UTF-8 text, found undecodable bytes b'\\xff\\xfe\\x00'; "
        "convert the file to UTF-8"
    ]


def test_cli_generate_and_score(
    tiny_models: dict[str, Path],
    tmp_path: Path,
    hh_records: list[dict[str, str]],
    shakespeare_paragraphs: list[str],
) -> None:
    runner = CliRunner()
    corpus = tmp_path / "gen.parquet"
    gen = runner.invoke(
        cli,
        [
            "--quiet",
            "probe",
            "generate",
            str(tiny_models["dialogue"]),
            "-o",
            str(corpus),
            "--name",
            "dialogue",
            "--n-docs",
            "8",
            "--batch-size",
            "4",
            "--max-new-tokens",
            "16",
            "--prefix",
            "Human:",
            "--device",
            "cpu",
        ],
    )
    assert gen.exit_code == 0, gen.output
    assert read_probe_corpus(corpus)["model"].unique().to_list() == ["dialogue"]
    prefs = tmp_path / "prefs.jsonl"  # read by simscope's preference loader (HH schema)
    prefs.write_text("".join(json.dumps(r) + "\n" for r in hh_records[:12]))
    books = tmp_path / "books.txt"
    books.write_text("\n\n".join(shakespeare_paragraphs[-20:]))
    profile = tmp_path / "profile.parquet"
    presence = tmp_path / "presence.parquet"
    score = runner.invoke(
        cli,
        [
            "--quiet",
            "probe",
            "score",
            str(prefs),
            "--model",
            f"sh={tiny_models['shakespeare']}",
            "--model",
            f"dl={tiny_models['dialogue']}",
            "-o",
            str(profile),
            "--n-boot",
            "20",
            "--reference",
            f"books={books}",
            "--reference",
            f"dialogue={corpus}",
            "--presence-out",
            str(presence),
            "--device",
            "cpu",
        ],
    )
    assert score.exit_code == 0, score.output
    df = pl.read_parquet(profile)
    assert df.schema == PROFILE_SCHEMA and set(df["model"]) == {"sh", "dl"}
    assert set(pl.read_parquet(presence)["corpus"]) == {"books", "dialogue"}
    assert "likelihood.presence_js_distance" in score.output


def test_likelihood_rows_through_the_overlap_stage(
    shakespeare_lm: LoadedModel,
    hh_records: list[dict[str, str]],
    shakespeare_paragraphs: list[str],
    tmp_path: Path,
) -> None:
    from simscope.overlap.profile import ProfileConfig, build_profile

    prefs = _hh_prefs(hh_records, 10)
    corpus = pl.DataFrame(
        {
            "model": "shakespeare",
            "doc_id": [str(i) for i in range(50)],
            "text": shakespeare_paragraphs[:50],
            "origin": "imported",
        },
        schema=PROBE_SCHEMA,
    )
    scorer = likelihood_scorer({"shakespeare": shakespeare_lm}, prefs=prefs, n_boot=20)
    result = build_profile(
        prefs,
        {"shakespeare": corpus},
        tmp_path / "indexes",
        ProfileConfig(n_boot=20),
        extra_scorers={"likelihood": scorer},
        progress=False,
    )
    rows = result.profile.filter(pl.col("metric").str.starts_with("likelihood."))
    direct = score_preferences(shakespeare_lm, prefs, n_boot=20, progress=False).profile
    assert rows.sort("slice", "metric").equals(direct.sort("slice", "metric"))


def test_generate_refuses_more_new_tokens_than_the_context_holds(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "c.parquet"
    model = str(tiny_models["shakespeare"])
    # the default 256 on a 128-position model used to end in an IndexError deep in generate
    result = CliRunner().invoke(cli, ["--quiet", "probe", "generate", model, "-o", str(out)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: generation.max_new_tokens (--max-new-tokens): {model} has 128 positions and its "
        "longest prompt takes 1, so at most 127 new tokens fit; found 256"
    ]
    assert not out.exists()
    ok = CliRunner().invoke(
        cli,
        [
            "--quiet",
            "probe",
            "generate",
            model,
            "-o",
            str(out),
            "--n-docs",
            "2",
            "--max-new-tokens",
            "127",
        ],
    )
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-boot", "-1"], "Invalid value for '--n-boot': -1 is not in the range x>=0."),
        (["--seed", "-1"], "Invalid value for '--seed': -1 is not in the range 0<=x<=4294967295."),
        (
            ["--seed", str(2**64)],
            f"Invalid value for '--seed': {2**64} is not in the range 0<=x<=4294967295.",
        ),
        (["--batch-size", "0"], "Invalid value for '--batch-size': 0 is not in the range x>=1."),
    ],
)
def test_cli_score_option_ranges_are_one_error_line_exit_1(
    tmp_path: Path, hh_path: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "--quiet",
            "probe",
            "score",
            str(hh_path),
            "--model",
            "m",
            *args,
            "-o",
            str(tmp_path / "s.parquet"),
        ],
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == f"Error: {message}"
