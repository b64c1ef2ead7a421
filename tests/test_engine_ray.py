"""Execution engines: on the local and Ray engines the stages' sharded builders build the same
indexes as their in-memory builders, out of core from shards; a worker killed mid-run is
retried, and a run whose workers keep dying fails cleanly with no index directory left behind.

The Ray tests start one local 2-CPU cluster (loopback only) for the module, are skipped when
``ray`` is not installed, and are marked slow (the cluster's start and first Ray Data run
alone take 15-30 s on 2 cores): ``pytest -m slow tests/test_engine_ray.py``.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from simscope.engine import (
    CorpusShards,
    EngineConfig,
    LocalEngine,
    make_engine,
    write_corpus_shards,
)
from simscope.engine.base import Summary
from simscope.engine.shards import ShardUnit, plan_units, read_unit
from simscope.errors import SimscopeError
from simscope.lexical.index import (
    LexicalConfig,
    MinHashIndex,
    NgramIndex,
    build_minhash_index,
    build_ngram_index,
    scale_for_lengths,
)
from simscope.lexical.scorer import lexical_estimators
from simscope.lexical.sharded import build_sharded_lexical_indexes
from simscope.normalize import tokenize
from simscope.storage import RowHash, hash_corpus_texts, slug

CFG = LexicalConfig(batch_docs=300)
SCALES = (16, 32, 64, 128, 256, 512)
MODEL = "org/model-a"


@pytest.fixture(scope="module")
def corpus(hh_records: list[dict[str, str]]) -> pl.DataFrame:
    """1,500 HH transcripts plus edge cases (empty, one word, long), ids out of order."""
    texts = [r["chosen"] for r in hh_records[:1500]]
    texts += ["", "word", " ".join(r["rejected"] for r in hh_records[1500:1510])]
    ids = [f"d{(i * 7919) % 100003:06d}" for i in range(len(texts))]
    return pl.DataFrame(
        {"model": MODEL, "doc_id": ids, "text": texts, "origin": "imported"},
    )


@pytest.fixture(scope="module")
def queries(hh_records: list[dict[str, str]]) -> list[str]:
    """A slice: some corpus texts verbatim (near-duplicates), some unseen responses."""
    return [r["chosen"] for r in hh_records[:40]] + [r["rejected"] for r in hh_records[2000:2100]]


@pytest.fixture(scope="module")
def reference(
    corpus: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> tuple[NgramIndex, dict[int, MinHashIndex]]:
    """The in-memory builders' indexes (the lexical stage's own path)."""
    root = tmp_path_factory.mktemp("reference")
    ngram = build_ngram_index(corpus, root, CFG, progress=False)
    minhash = {s: build_minhash_index(corpus, root, CFG, s, progress=False) for s in SCALES}
    return ngram, minhash


@pytest.fixture(scope="module")
def shards(corpus: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> CorpusShards:
    """Three parquet shards of 200-row row groups (8 units at unit_docs=200)."""
    return write_corpus_shards(
        corpus, tmp_path_factory.mktemp("shards"), rows_per_shard=600, row_group_rows=200
    )


def assert_same_indexes(
    built: Any, reference: tuple[NgramIndex, dict[int, MinHashIndex]], scales: Sequence[int]
) -> None:
    ngram, minhash = reference
    for n in CFG.ngram_sizes:
        np.testing.assert_array_equal(built.ngram.ngrams[n], ngram.ngrams[n])
    np.testing.assert_array_equal(built.ngram.features, ngram.features)
    assert built.ngram.manifest["rows"] == ngram.manifest["rows"]
    assert built.ngram.manifest["ngram_counts"] == ngram.manifest["ngram_counts"]
    for s in scales:
        np.testing.assert_array_equal(built.minhash[s].signatures, minhash[s].signatures)
        np.testing.assert_array_equal(built.minhash[s].chunk_doc, minhash[s].chunk_doc)
        assert built.minhash[s].signatures.dtype == np.uint32


def profile_values(
    queries: list[str], ngram: NgramIndex, minhash: dict[int, MinHashIndex]
) -> dict[str, tuple[float, float | None, float | None]]:
    """The slice's lexical Profile rows (whole slice): value and CI per metric."""
    estimators, _ = lexical_estimators(
        queries, ngram, lambda s: minhash[s], CFG, n_boot=200, seed=0
    )
    mask = np.ones(len(queries), dtype=bool)
    out = {}
    for name, estimate in sorted(estimators.items()):
        e = estimate(mask)
        out[name] = (e.value, e.ci_low, e.ci_high)
    return out


# ---- local engine (no Ray needed) ------------------------------------------------------------


def test_local_engine_matches_in_memory_builders(
    corpus: pl.DataFrame,
    shards: CorpusShards,
    reference: tuple[NgramIndex, dict[int, MinHashIndex]],
    tmp_path: Path,
) -> None:
    engine = LocalEngine(unit_docs=200)
    assert len(plan_units(shards, engine.unit_docs)) == 8
    built = build_sharded_lexical_indexes(
        shards, tmp_path, CFG, engine, scales=SCALES, progress=False
    )
    assert_same_indexes(built, reference, SCALES)
    assert built.ngram is not None
    assert built.ngram.manifest["execution"] == {"engine": "local", "units": 8}
    # Not only the arrays: the files are byte for byte the in-memory builder's.
    pairs = [(built.ngram.path, reference[0].path)]
    pairs += [(built.minhash[s].path, reference[1][s].path) for s in SCALES]
    for mine, theirs in pairs:
        names = sorted(f.name for f in theirs.glob("*.npy"))
        assert names == sorted(f.name for f in mine.glob("*.npy"))
        for name in names:
            assert (mine / name).read_bytes() == (theirs / name).read_bytes(), name
    assert not list(tmp_path.glob("*.incomplete*"))
    assert not list(tmp_path.glob("*/parts"))
    # The same parameters, input hash included: each builder loads the other's index.
    assert built.ngram.manifest["params"] == reference[0].manifest["params"]
    for s in SCALES:
        assert built.minhash[s].manifest["params"] == reference[1][s].manifest["params"]
    in_memory = build_ngram_index(corpus, tmp_path, CFG, progress=False)
    assert in_memory.manifest["created_at"] == built.ngram.manifest["created_at"]
    # Built again: loaded (the manifest matches), not rebuilt.
    again = build_sharded_lexical_indexes(
        shards, tmp_path, CFG, engine, scales=SCALES, progress=False
    )
    assert again.ngram is not None
    assert again.ngram.manifest["created_at"] == built.ngram.manifest["created_at"]
    assert_same_indexes(again, reference, SCALES)


def test_row_hash_depends_on_content_and_order_not_on_sharding(
    corpus: pl.DataFrame, tmp_path: Path
) -> None:
    texts = corpus.sort("doc_id").get_column("text").to_list()
    whole = hash_corpus_texts(texts)
    # The units' sums, combined by offsets, equal the hash of all rows at once.
    parts = []
    for lo, hi in ((0, 7), (7, 500), (500, len(texts))):
        h = RowHash()
        h.update(texts[lo:hi])
        parts.append(h.summary())
    assert RowHash.combine(parts) == whole
    swapped = [texts[1], texts[0], *texts[2:]]
    assert hash_corpus_texts(swapped) != whole
    assert hash_corpus_texts([*texts[:-1], texts[-1] + " "]) != whole


def test_local_engine_merges_ngrams_over_many_ranges(
    shards: CorpusShards,
    reference: tuple[NgramIndex, dict[int, MinHashIndex]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import simscope.lexical.sharded as lexical_sharded

    monkeypatch.setattr(lexical_sharded, "MERGE_RANGE_VALUES", 5000)  # -> 64 ranges
    built = build_sharded_lexical_indexes(shards, tmp_path, CFG, LocalEngine(200), progress=False)
    assert built.ngram is not None
    for n in CFG.ngram_sizes:
        np.testing.assert_array_equal(built.ngram.ngrams[n], reference[0].ngrams[n])


def test_jsonl_shards_give_the_same_index_and_input_hash(
    corpus: pl.DataFrame,
    shards: CorpusShards,
    reference: tuple[NgramIndex, dict[int, MinHashIndex]],
    tmp_path: Path,
) -> None:
    rows = corpus.sort("doc_id").to_dicts()
    (tmp_path / "jsonl").mkdir()
    for k, lo in enumerate((0, 1000)):
        path = tmp_path / "jsonl" / f"part-{k}.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8") as f:
            for row in rows[lo : lo + 1000]:
                f.write(json.dumps(row) + "\n")
    from_jsonl = build_sharded_lexical_indexes(
        CorpusShards.from_path(tmp_path / "jsonl"),
        tmp_path / "a",
        CFG,
        LocalEngine(),
        scales=(64,),
        progress=False,
    )
    from_parquet = build_sharded_lexical_indexes(
        shards, tmp_path / "b", CFG, LocalEngine(300), scales=(64,), progress=False
    )
    assert_same_indexes(from_jsonl, reference, (64,))
    assert from_jsonl.ngram is not None and from_parquet.ngram is not None
    h1 = from_jsonl.ngram.manifest["params"]["input_hash"]
    assert h1 == from_parquet.ngram.manifest["params"]["input_hash"]
    texts = corpus.sort("doc_id").get_column("text").to_list()
    assert h1 == hash_corpus_texts(texts)


def test_shards_out_of_doc_id_order_are_refused(corpus: pl.DataFrame, tmp_path: Path) -> None:
    a = corpus.sort("doc_id").head(100)
    b = corpus.sort("doc_id").slice(100, 100)
    b.write_parquet(tmp_path / "part-0.parquet")  # later ids first
    a.write_parquet(tmp_path / "part-1.parquet")
    with pytest.raises(SimscopeError, match="ascending doc_id order"):
        build_sharded_lexical_indexes(
            CorpusShards.from_path(tmp_path), tmp_path / "idx", CFG, LocalEngine(), progress=False
        )
    assert not (tmp_path / "idx").exists() or not list((tmp_path / "idx").iterdir())


def test_bad_jsonl_shards_are_located(tmp_path: Path) -> None:
    row = '{"model": "m", "doc_id": "d1", "text": "%s"}\n'
    cases = [
        (
            (row % "ok").encode() + (row % "a\\udc80").encode(),
            "{p}:2: field 'text': expected Unicode text, found a lone surrogate '\\udc80' at "
            "character 1 of 'a\\udc80' (a \\ud800-\\udfff escape must be one half of a high-low "
            "pair, as in \\ud83d\\ude00); fix the shard",
        ),
        (
            (row % "caf").encode()[:-3] + b'\xe9"}\n',
            "{p}:1: expected UTF-8 text, found undecodable bytes b'\\xe9\"}}\\n'; convert the "
            "shard to UTF-8",
        ),
    ]
    for k, (content, message) in enumerate(cases):
        path = tmp_path / f"part-{k}.jsonl"
        path.write_bytes(content)
        with pytest.raises(SimscopeError) as e:
            list(read_unit(ShardUnit(0, str(path), None, None), 10))
        assert str(e.value) == message.format(p=path)
    cut = tmp_path / "part-9.jsonl.gz"
    cut.write_bytes(gzip.compress((row % "ok").encode() * 200)[:-20])
    with pytest.raises(SimscopeError) as e:
        list(read_unit(ShardUnit(0, str(cut), None, None), 10))
    assert str(e.value) == (
        f"{cut}: damaged or truncated compressed data (Compressed file ended before the "
        "end-of-stream marker was reached); expected a complete gzip file; write the shard again"
    )


def test_engine_config_is_checked() -> None:
    with pytest.raises(SimscopeError, match=r"execution.kind: expected one of local, ray"):
        EngineConfig(kind="spark")
    with pytest.raises(SimscopeError, match="apply to kind = 'ray' only"):
        EngineConfig(address="auto")
    assert isinstance(make_engine(EngineConfig()), LocalEngine)


# ---- Ray ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_engine() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    from simscope.engine.ray import RayEngine

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 2**20,
        configure_logging=False,
        log_to_driver=False,
    )
    # The fault-injecting wrappers below live in this test module: ship them by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    engine = RayEngine(EngineConfig(kind="ray", unit_docs=200, max_retries=2))
    try:
        yield engine
    finally:
        engine.close()
        ray.shutdown()


@pytest.mark.slow
def test_ray_engine_matches_local(
    ray_engine: Any,
    shards: CorpusShards,
    reference: tuple[NgramIndex, dict[int, MinHashIndex]],
    queries: list[str],
    tmp_path: Path,
) -> None:
    built = build_sharded_lexical_indexes(
        shards, tmp_path, CFG, ray_engine, scales=SCALES, progress=False
    )
    assert_same_indexes(built, reference, SCALES)
    assert built.ngram is not None
    assert built.ngram.manifest["execution"] == {"engine": "ray", "units": 8}
    local = build_sharded_lexical_indexes(
        shards, tmp_path / "local", CFG, LocalEngine(200), scales=SCALES, progress=False
    )
    assert local.ngram is not None
    assert local.ngram.manifest["params"] == built.ngram.manifest["params"]
    # The Profile rows of a slice are the same, value and bootstrap CI.
    needed = set(scale_for_lengths(tokenize(queries).lengths()).tolist())
    assert needed <= set(SCALES), needed
    ngram, minhash = reference
    assert profile_values(queries, built.ngram, built.minhash) == profile_values(
        queries, ngram, minhash
    )
    assert profile_values(queries, ngram, minhash)["lexical.near_dup_rate@0.8"][0] > 0.2


class KillWorker:
    """Wraps a unit function: on unit ``victim`` the worker runs the unit, leaves a truncated
    part file behind, and dies (``os._exit``): on every attempt, or only on the first (a
    marker file remembers it)."""

    def __init__(
        self, fn: Callable[[Any], Summary], marker: Path, victim: int, always: bool
    ) -> None:
        self.fn, self.marker, self.victim, self.always = fn, marker, victim, always

    def __call__(self, unit: Any) -> Summary:
        out = self.fn(unit)
        if getattr(unit, "index", None) == self.victim and (
            self.always or not self.marker.exists()
        ):
            self.marker.touch()
            for d in (getattr(self.fn, "ngram_dir", None), *dict(self.fn.minhash_dirs).values()):
                if d:
                    part = sorted(Path(d).glob(f"u{self.victim:06d}-*.npy"))[0]
                    part.write_bytes(part.read_bytes()[:100])
            os._exit(1)
        return out


def flaky(engine: Any, marker: Path, *, always: bool) -> Any:
    """The Ray engine with a worker killed in the corpus pass, on unit 3."""

    class Flaky(type(engine)):  # type: ignore[misc]
        def __init__(self) -> None:
            self.__dict__.update(engine.__dict__)
            self._owned = False

        def map_units(
            self, fn: Any, units: Sequence[Any], *, desc: str, progress: bool = True
        ) -> list[Summary]:
            if hasattr(fn, "minhash_dirs") and (fn.ngram_dir or fn.minhash_dirs):
                fn = KillWorker(fn, marker, victim=3, always=always)
            return super().map_units(fn, units, desc=desc, progress=progress)

    return Flaky()


@pytest.mark.slow
def test_ray_retries_a_killed_worker_and_the_index_is_intact(
    ray_engine: Any,
    shards: CorpusShards,
    reference: tuple[NgramIndex, dict[int, MinHashIndex]],
    tmp_path: Path,
) -> None:
    marker = tmp_path / "killed-once"
    engine = flaky(ray_engine, marker, always=False)
    built = build_sharded_lexical_indexes(
        shards, tmp_path / "idx", CFG, engine, scales=(64,), progress=False
    )
    assert marker.exists()  # the worker did die once
    assert_same_indexes(built, reference, (64,))
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [
        f"lexical-{slug(MODEL)}",
        f"minhash-{slug(MODEL)}-w64",
    ]
    # The manifest's checksums hold: loading again verifies every file.
    again = build_sharded_lexical_indexes(
        shards, tmp_path / "idx", CFG, LocalEngine(), scales=(64,), progress=False
    )
    assert_same_indexes(again, reference, (64,))


@pytest.mark.slow
def test_ray_worker_that_always_dies_fails_cleanly(
    ray_engine: Any, shards: CorpusShards, tmp_path: Path
) -> None:
    root = tmp_path / "idx"
    engine = flaky(ray_engine, tmp_path / "marker", always=True)
    with pytest.raises(SimscopeError, match=r"a Ray worker died 3 times .* no index was written"):
        build_sharded_lexical_indexes(shards, root, CFG, engine, scales=(64,), progress=False)
    assert not root.exists() or list(root.iterdir()) == []
    # A failed rebuild leaves an existing index as it was.
    build_sharded_lexical_indexes(shards, root, CFG, LocalEngine(200), scales=(64,), progress=False)
    before = {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    with pytest.raises(SimscopeError, match="no index was written"):
        build_sharded_lexical_indexes(
            shards, root, CFG, engine, scales=(64,), rebuild=True, progress=False
        )
    after = {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    assert after == before
    assert not list(root.glob("*.incomplete*"))


@pytest.mark.slow
def test_ray_reports_a_user_error_from_a_worker(ray_engine: Any, tmp_path: Path) -> None:
    path = tmp_path / "part-0.jsonl"
    path.write_text(
        json.dumps({"model": MODEL, "doc_id": "a", "text": "hello"})
        + "\n"
        + json.dumps({"model": MODEL, "doc_id": "b", "text": 3})
        + "\n"
    )
    with pytest.raises(SimscopeError) as e:
        build_sharded_lexical_indexes(
            CorpusShards.from_path(path), tmp_path / "idx", CFG, ray_engine, progress=False
        )
    assert str(e.value) == f"{path}:2: field 'text': expected a string, found 3"
    assert not list((tmp_path / "idx").glob("*"))


@pytest.mark.slow  # each worker loads and compiles the encoder: ~2 min on 2 busy cores
def test_ray_semantic_index_matches_local(
    ray_engine: Any, hh_records: list[dict[str, str]], tmp_path: Path
) -> None:
    from simscope.semantic.config import SemanticConfig
    from simscope.semantic.index import build_semantic_index
    from simscope.semantic.sharded import build_sharded_semantic_index

    texts = [r["chosen"] for r in hh_records[:90]] + ["", "short text"]
    corpus = pl.DataFrame(
        {
            "model": MODEL,
            "doc_id": [f"d{i:04d}" for i in range(len(texts))],
            "text": texts,
            "origin": "generated",
        }
    )
    cfg = SemanticConfig()
    local = build_semantic_index(corpus, tmp_path / "local", cfg, chunk_words=64, progress=False)
    shards = write_corpus_shards(corpus, tmp_path / "shards", rows_per_shard=40)
    built = build_sharded_semantic_index(
        shards, tmp_path / "ray", cfg, ray_engine, chunk_words=64, progress=False
    )
    assert built.manifest["execution"] == {"engine": "ray", "units": 3}
    np.testing.assert_array_equal(built.chunk_doc, local.chunk_doc)
    assert built.vectors.shape == local.vectors.shape
    cosine = np.sum(built.vectors * local.vectors, axis=1)
    assert cosine.min() > 0.999, cosine.min()
    # the Fréchet distance's corpus side (mean and covariance) agrees too
    fit_built, fit_local = built.gaussian_fit(), local.gaussian_fit()
    np.testing.assert_allclose(fit_built.mean, fit_local.mean, atol=1e-3)
    np.testing.assert_allclose(fit_built.cov, fit_local.cov, atol=1e-3)
    # The FAISS indexes answer alike: each chunk's 5 nearest similarities, best first.
    np.testing.assert_allclose(
        built.search(local.vectors, 5)[0], local.search(local.vectors, 5)[0], atol=2e-3
    )
    assert built.manifest["index_type"] == local.manifest["index_type"]
    assert built.manifest["params"] == local.manifest["params"]
    assert built.manifest["params"]["input_hash"] == hash_corpus_texts(texts)
    # Loaded, not rebuilt, the second time.
    again = build_sharded_semantic_index(
        shards, tmp_path / "ray", cfg, ray_engine, chunk_words=64, progress=False
    )
    assert again.manifest["created_at"] == built.manifest["created_at"]


@pytest.mark.slow  # trains a tiny LM (~10 s) and loads it in every worker
def test_ray_likelihood_scores_match_in_process(
    ray_engine: Any, hh_records: list[dict[str, str]], tmp_path: Path
) -> None:
    from simscope.probe.likelihood import LikelihoodConfig, score_texts
    from simscope.probe.model import load_model
    from simscope.probe.sharded import score_sharded_corpus
    from simscope.probe.tiny import TinyLMConfig, train_tiny_lm

    lm_dir = train_tiny_lm(
        [r["chosen"] for r in hh_records[:400]],
        tmp_path / "lm",
        seed=0,
        config=TinyLMConfig(steps=30),
    )
    texts = [r["rejected"] for r in hh_records[:300]] + [""]
    corpus = pl.DataFrame(
        {
            "model": MODEL,
            "doc_id": [f"d{i:04d}" for i in range(len(texts))],
            "text": texts,
            "origin": "imported",
        }
    )
    shards = write_corpus_shards(corpus, tmp_path / "shards", rows_per_shard=120)
    cfg = LikelihoodConfig(max_tokens=64)
    expected = score_texts(load_model(lm_dir, device="cpu"), texts, cfg, progress=False)
    got = score_sharded_corpus(shards, lm_dir, tmp_path / "work", ray_engine, cfg, device="cpu")
    for field in ("mean_logprob_first_k", "bits_per_byte"):
        np.testing.assert_allclose(
            getattr(got, field), getattr(expected, field), rtol=1e-5, equal_nan=True
        )
    np.testing.assert_array_equal(got.n_tokens, expected.n_tokens)
    np.testing.assert_array_equal(got.n_bytes, expected.n_bytes)
    assert not list((tmp_path / "work").iterdir())
