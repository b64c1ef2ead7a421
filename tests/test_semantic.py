"""Semantic stage: embeddings and their cache, FAISS indexes, distribution metrics, topics.

Known answers on real text (tests/data): HH-RLHF responses against themselves, against other
HH-RLHF responses, against Shakespeare, and against a 50/50 mixture. Embedding is the slow
step (tens to a hundred texts/s on a 2-core CPU), so the default tests embed ~800 short texts
once, share them through session fixtures and the embedding cache, and the full-size run is
marked slow.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import linalg

from simscope.errors import SimscopeError
from simscope.metrics import spec
from simscope.semantic import (
    Embedder,
    SemanticConfig,
    SemanticIndex,
    StaticEmbedder,
    build_semantic_index,
    choose_chunk_words,
    chunk_document,
    fit_topics,
    get_embedder,
    metric_names,
    profile_chunk_words,
    semantic_estimators,
    topic_mass,
)
from simscope.semantic.distances import (
    GaussianFit,
    frechet_statistic,
    mauve_from_histograms,
)
from simscope.semantic.index import make_faiss_index
from simscope.stats import Estimate

N_SLICE = 200
CFG = SemanticConfig(encoder="transformer", n_boot=40, frechet_n_boot=10, mauve_seeds=(0, 1, 2))
"""The reference encoder (all-MiniLM-L6-v2), its runtime measured once for the session."""
STATIC = replace(CFG, encoder="static")


def last_reply(transcript: str) -> str:
    return transcript.rsplit("\n\nAssistant:", 1)[-1].strip()


def prompt_of(transcript: str) -> str:
    return transcript.rsplit("\n\nAssistant:", 1)[0].strip()


def corpus_frame(model: str, texts: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "model": [model] * len(texts),
            "doc_id": [f"{i:06d}" for i in range(len(texts))],
            "text": texts,
            "origin": ["imported"] * len(texts),
        }
    )


@pytest.fixture(scope="session")
def hh_replies(hh_records: list[dict[str, str]]) -> list[str]:
    """Final assistant replies of HH-RLHF chosen transcripts with 8-60 words (dedup'd)."""
    seen: set[str] = set()
    out = []
    for r in hh_records:
        reply = last_reply(r["chosen"])
        if 8 <= len(reply.split()) <= 60 and reply not in seen:
            seen.add(reply)
            out.append(reply)
    return out


@pytest.fixture(scope="session")
def slice_texts(hh_replies: list[str]) -> list[str]:
    return hh_replies[:N_SLICE]


@pytest.fixture(scope="session")
def shakespeare(shakespeare_paragraphs: list[str]) -> list[str]:
    return [p for p in shakespeare_paragraphs if len(p.split()) <= 60][:N_SLICE]


@pytest.fixture(scope="session")
def sem_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("indexes")


@pytest.fixture(scope="session")
def indexes(
    sem_root: Path, hh_replies: list[str], slice_texts: list[str], shakespeare: list[str]
) -> dict[str, SemanticIndex]:
    """Semantic indexes of four corpora; the mixture's texts all come from the cache."""
    other_hh = hh_replies[N_SLICE : 2 * N_SLICE]
    half = N_SLICE // 2
    corpora = {
        "self": slice_texts,
        "hh": other_hh,
        "shakespeare": shakespeare,
        "mixture": other_hh[:half] + shakespeare[:half],
    }
    return {
        name: build_semantic_index(
            corpus_frame(name, texts), sem_root, CFG, chunk_words=64, progress=False
        )
        for name, texts in corpora.items()
    }


@pytest.fixture(scope="session")
def whole_slice(
    indexes: dict[str, SemanticIndex], slice_texts: list[str]
) -> dict[str, dict[str, Estimate]]:
    everything = np.ones(len(slice_texts), dtype=bool)
    out = {}
    for name, index in indexes.items():
        est = semantic_estimators(index, slice_texts, CFG, seed=0, progress=False)
        out[name] = {metric: fn(everything) for metric, fn in est.items()}
    return out


# ---- pure pieces ------------------------------------------------------------------------


def test_chunk_document_cuts_long_documents_into_equal_word_pieces() -> None:
    words = [f"w{i}" for i in range(200)]
    text = "  ".join(words)
    pieces = chunk_document(text, 64)
    assert len(pieces) == 3  # round(200 / 64)
    assert [len(p.split()) for p in pieces] == [67, 66, 67]
    assert " ".join(" ".join(p.split()) for p in pieces) == " ".join(words)
    assert pieces[0].startswith("w0  w1")  # original whitespace inside a piece is kept
    assert chunk_document("a b c", 64) == ["a b c"]
    assert chunk_document(" ".join(words[:96]), 64) == [" ".join(words[:96])]  # <= 1.5 x


def test_choose_chunk_words_follows_the_slice_length_scale() -> None:
    assert choose_chunk_words(["word " * 30] * 5) == 32
    assert choose_chunk_words(["word " * 3] * 5) == 16
    assert choose_chunk_words(["word " * 1000] * 5) == 128
    assert choose_chunk_words([]) == 64


def test_mauve_of_histograms_known_answers() -> None:
    assert mauve_from_histograms(np.ones(7), np.ones(7)) == pytest.approx(1.0, abs=1e-9)
    disjoint = mauve_from_histograms(np.array([1.0, 1, 0, 0]), np.array([0.0, 0, 1, 1]))
    assert disjoint < 0.01
    half = mauve_from_histograms(np.array([1.0, 1, 1, 0]), np.array([0.0, 1, 1, 1]))
    assert disjoint < half < 1.0


def test_frechet_matches_scipy_sqrtm_on_scopes() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(120, 16))
    b = rng.normal(size=(300, 16)) * 1.3 + 0.2
    stat = frechet_statistic(a, GaussianFit.of(b))
    cov_b = np.cov(b.T, bias=True)
    for rows in (np.arange(120), np.arange(9)):  # full rank, and fewer texts than dims
        sub = a[rows]
        cov_a = np.cov(sub.T, bias=True)
        ref = (
            np.sum((sub.mean(0) - b.mean(0)) ** 2)
            + np.trace(cov_a + cov_b)
            - 2 * np.trace(linalg.sqrtm(cov_a @ cov_b)).real
        )
        w = np.zeros(120)
        w[rows] = 1.0
        assert stat(w) == pytest.approx(ref, rel=1e-6)


def test_config_refuses_bad_values() -> None:
    with pytest.raises(SimscopeError, match=r"semantic.precision: expected one of .*'fp16'"):
        SemanticConfig(precision="fp16")  # type: ignore[arg-type]
    with pytest.raises(
        SimscopeError,
        match=r"semantic.encoder: expected one of auto, transformer, static, found 'bert'",
    ):
        SemanticConfig(encoder="bert")  # type: ignore[arg-type]
    with pytest.raises(SimscopeError, match=r"semantic\.k_nn: expected >= 1, found 0"):
        SemanticConfig(k_nn=0)
    with pytest.raises(SimscopeError, match="models are never downloaded"):
        Embedder(SemanticConfig(model="/nonexistent/model-dir"))


def test_every_semantic_metric_is_documented() -> None:
    for name in [*metric_names(CFG), "semantic.topic_mass_ratio"]:
        assert spec(name).definition


# ---- embeddings -------------------------------------------------------------------------


def test_long_text_is_windowed_and_pooled_by_token_weight() -> None:
    cfg = replace(CFG, max_tokens=34, chunk_overlap_tokens=8)
    embedder = Embedder(cfg)
    text = " ".join(["the quick brown fox jumps over the lazy dog while the cat sleeps"] * 6)
    pieces, owner, weight = embedder._windows([text, "short"])
    assert len(pieces) > 2 and set(owner.tolist()) == {0, 1}
    assert weight[owner == 0].max() == 32  # window = max_tokens - [CLS] - [SEP]
    vec = embedder.encode([text], progress=False)[0]
    piece_vecs = embedder._encode_pieces(
        [p for p, o in zip(pieces, owner, strict=True) if o == 0], False
    )
    pooled = (piece_vecs * weight[owner == 0][:, None]).sum(0)
    assert np.allclose(vec, pooled / np.linalg.norm(pooled), atol=1e-5)
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)


def test_backends_agree_and_keep_separate_caches(slice_texts: list[str], tmp_path: Path) -> None:
    texts = slice_texts[:12]
    fast = get_embedder(CFG)
    torch_fp32 = Embedder(replace(CFG, precision="fp32"), backend="torch")
    assert fast.identity["backend"] in ("openvino", "torch")
    assert fast.identity["precision"] in ("fp32", "bf16")
    assert torch_fp32.identity["backend"] == "torch"
    assert fast.identity != torch_fp32.identity
    assert fast.cache(tmp_path).path != torch_fp32.cache(tmp_path).path
    cos = np.sum(fast.encode(texts, progress=False) * torch_fp32.encode(texts, progress=False), 1)
    assert cos.min() > 0.999


def test_reembedding_cached_texts_encodes_nothing(
    indexes: dict[str, SemanticIndex], sem_root: Path, slice_texts: list[str]
) -> None:
    fresh = Embedder(CFG)  # a new encoder object, as in a new process: only the disk cache
    cache = fresh.cache(sem_root)
    assert len(cache) >= 3 * N_SLICE
    vectors = fresh.embed(slice_texts, cache, progress=False)
    assert fresh.texts_encoded == 0
    assert np.array_equal(vectors, indexes["self"].vectors)
    # Duplicates and whitespace variants of cached texts are not encoded either.
    again = fresh.embed([slice_texts[0], f"  {slice_texts[0]}\n"], cache, progress=False)
    assert fresh.texts_encoded == 0 and np.array_equal(again[0], again[1])
    # A rebuilt index re-embeds nothing.
    before = get_embedder(CFG, sem_root).texts_encoded
    build_semantic_index(
        corpus_frame("self", slice_texts),
        sem_root,
        CFG,
        chunk_words=64,
        rebuild=True,
        progress=False,
    )
    assert get_embedder(CFG, sem_root).texts_encoded == before


def test_a_damaged_embedding_cache_shard_is_refused_and_rebuild_re_embeds_it(
    slice_texts: list[str], tmp_path: Path
) -> None:
    texts = slice_texts[:6]
    embedder = Embedder(CFG)
    first = embedder.embed(texts, embedder.cache(tmp_path), progress=False)
    (shard,) = [p for p in embedder.cache(tmp_path).path.iterdir() if p.name.startswith("shard-")]
    vectors = shard / "vectors.npy"
    vectors.write_bytes(vectors.read_bytes()[:-64])  # truncated
    with pytest.raises(SimscopeError) as refused:
        Embedder(CFG).embed(texts, embedder.cache(tmp_path), progress=False)
    assert str(refused.value) == (
        f"{vectors}: checksum differs from the manifest (file damaged or truncated); rebuild the "
        "index with --rebuild (a shard of the embedding cache: --rebuild drops it and embeds its "
        "texts again)"
    )
    fresh = Embedder(CFG)
    again = fresh.embed(texts, fresh.cache(tmp_path, rebuild=True), progress=False)
    assert fresh.texts_encoded == len(set(texts))
    np.testing.assert_allclose(again, first, atol=1e-6)
    # the damaged shard is gone, a whole one replaces it, and a plain load now works
    assert not shard.exists()
    Embedder(CFG).embed(texts, embedder.cache(tmp_path), progress=False)


# ---- indexes ----------------------------------------------------------------------------


def test_index_round_trip(
    indexes: dict[str, SemanticIndex], sem_root: Path, shakespeare: list[str]
) -> None:
    built = indexes["shakespeare"]
    loaded = build_semantic_index(
        corpus_frame("shakespeare", shakespeare), sem_root, CFG, chunk_words=64, progress=False
    )
    assert loaded.path == built.path == sem_root / "semantic-shakespeare-transformer-w64"
    assert loaded.manifest == built.manifest
    for name in ("vectors", "chunk_doc"):
        assert np.array_equal(getattr(loaded, name), getattr(built, name))
    assert loaded.faiss_index.ntotal == built.vectors.shape[0]
    q = built.vectors[:5]
    assert np.array_equal(loaded.search(q, 3)[1], built.search(q, 3)[1])
    assert np.array_equal(built.search(q, 1)[1][:, 0], np.arange(5))
    assert not list(sem_root.glob("*.incomplete*"))


def test_ivf_index_round_trip_above_a_lowered_cut_off(
    indexes: dict[str, SemanticIndex], sem_root: Path, shakespeare: list[str]
) -> None:
    cfg = replace(CFG, exact_max_rows=50, chunk_words=64)
    frame = corpus_frame("shakespeare-ivf", shakespeare)
    built = build_semantic_index(frame, sem_root, cfg, progress=False)
    assert built.manifest["index_type"] == "ivf-ip"
    assert np.array_equal(built.vectors, indexes["shakespeare"].vectors)  # from the cache
    loaded = build_semantic_index(frame, sem_root, cfg, progress=False)
    assert loaded.faiss_index.nprobe == built.faiss_index.nprobe == 16
    q = built.vectors[:20]
    assert np.array_equal(loaded.search(q, 5)[1], built.search(q, 5)[1])


def test_index_mismatch_is_refused_naming_what_differs(
    indexes: dict[str, SemanticIndex], sem_root: Path, shakespeare: list[str]
) -> None:
    changed = [*shakespeare[:-1], shakespeare[-1] + " Exeunt."]
    cfg = replace(CFG, chunk_words=64)
    with pytest.raises(
        SimscopeError, match=r"input_hash: index has 'rowhash1:[0-9a-f]+', requested"
    ):
        build_semantic_index(corpus_frame("shakespeare", changed), sem_root, cfg, progress=False)
    with pytest.raises(SimscopeError, match="exact_max_rows: index has 50000, requested 30"):
        build_semantic_index(
            corpus_frame("shakespeare", shakespeare),
            sem_root,
            replace(cfg, exact_max_rows=30),
            progress=False,
        )
    other = sem_root.parent / "rebuilt"
    other.mkdir(exist_ok=True)
    first = build_semantic_index(
        corpus_frame("shakespeare", shakespeare), other, cfg, progress=False
    )
    rebuilt = build_semantic_index(
        corpus_frame("shakespeare", changed), other, cfg, rebuild=True, progress=False
    )
    assert rebuilt.manifest["params"]["input_hash"] != first.manifest["params"]["input_hash"]


def test_mixed_models_in_one_corpus_are_refused(sem_root: Path) -> None:
    frame = pl.concat([corpus_frame("a", ["x y z"]), corpus_frame("b", ["u v w"])])
    with pytest.raises(SimscopeError, match=r"expected one model, found \['a', 'b'\]"):
        build_semantic_index(frame, sem_root, CFG, progress=False)


def test_ivf_above_the_cut_off_keeps_recall_at_10(
    indexes: dict[str, SemanticIndex],
) -> None:
    vectors = np.concatenate([indexes["hh"].vectors, indexes["shakespeare"].vectors])
    exact = make_faiss_index(vectors, "flat-ip", CFG)
    approx = make_faiss_index(vectors, "ivf-ip", CFG)
    assert approx.nlist == round(4 * np.sqrt(len(vectors)))
    _, truth = exact.search(vectors, 10)
    _, found = approx.search(vectors, 10)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)])
    assert recall >= 0.95


# ---- known answers ----------------------------------------------------------------------


def test_corpus_against_itself_is_covered_and_mauve_is_one(
    whole_slice: dict[str, dict[str, Estimate]],
) -> None:
    own = whole_slice["self"]
    assert own["semantic.nn_cosine"].value == pytest.approx(1.0, abs=1e-4)
    assert own["semantic.nn_match_rate"].value == 1.0
    assert own["semantic.coverage_k5"].value == 1.0
    assert own["semantic.precision_k5"].value == 1.0
    # Each chunk lies in its own ball and in the balls of its k neighbours: (k + 1) / k, plus
    # 1 / (k m) for every further chunk that ties with a ball's k-th neighbour within
    # RADIUS_TOLERANCE. How many such ties there are depends on float rounding (the CPU's
    # instruction set moves the embeddings in the 6th digit): 0 on AVX-512, 2 of 200 on an AVX2
    # machine. The property is the floor, and ties stay rare (under 5% of the chunks).
    k, m = CFG.k_nn, N_SLICE
    ties = (own["semantic.density_k5"].value - (k + 1) / k) * k * m
    assert ties == pytest.approx(round(ties), abs=1e-6)  # a whole number of extra memberships
    assert 0 <= round(ties) <= 0.05 * m
    assert own["semantic.mauve"].value == pytest.approx(1.0, abs=1e-6)
    assert own["semantic.frechet"].value == pytest.approx(0.0, abs=1e-4)


def test_shakespeare_is_far_and_the_mixture_lies_between(
    whole_slice: dict[str, dict[str, Estimate]],
) -> None:
    hh, mix, far = whole_slice["hh"], whole_slice["mixture"], whole_slice["shakespeare"]
    for metric in (
        "semantic.nn_cosine",
        "semantic.nn_match_rate",
        "semantic.density_k5",
        "semantic.coverage_k5",
        "semantic.mauve",
    ):
        assert hh[metric].value > mix[metric].value > far[metric].value, metric
    assert hh["semantic.frechet"].value < mix["semantic.frechet"].value
    assert mix["semantic.frechet"].value < far["semantic.frechet"].value
    assert hh["semantic.coverage_k5"].value > 0.8 > 0.5 > far["semantic.coverage_k5"].value
    assert hh["semantic.mauve"].value > 0.8 and far["semantic.mauve"].value < 0.1
    print(
        {
            n: {m.split(".")[1]: round(e.value, 3) for m, e in v.items()}
            for n, v in whole_slice.items()
        }
    )
    for est in hh.values():
        assert est.ci_low is not None and est.ci_high is not None
        assert est.ci_low <= est.value <= est.ci_high


def test_same_seed_gives_identical_estimates_on_every_scope(
    indexes: dict[str, SemanticIndex], slice_texts: list[str]
) -> None:
    scopes = [np.ones(N_SLICE, dtype=bool), np.arange(N_SLICE) % 3 == 0]
    runs = [
        {
            (metric, i): fn(scope)
            for metric, fn in semantic_estimators(
                indexes["mixture"], slice_texts, CFG, seed=7, progress=False
            ).items()
            for i, scope in enumerate(scopes)
        }
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    other = semantic_estimators(indexes["mixture"], slice_texts, CFG, seed=8, progress=False)
    assert other["semantic.coverage_k5"](scopes[0]) != runs[0][("semantic.coverage_k5", 0)]


def test_tiny_scope_has_undefined_mauve(
    indexes: dict[str, SemanticIndex], slice_texts: list[str]
) -> None:
    est = semantic_estimators(indexes["hh"], slice_texts, CFG, seed=0, progress=False)
    tiny = np.zeros(N_SLICE, dtype=bool)
    tiny[:3] = True
    assert np.isnan(est["semantic.mauve"](tiny).value)
    assert 0.0 <= est["semantic.coverage_k5"](tiny).value <= 1.0


# ---- topics -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def short_prompts(hh_records: list[dict[str, str]]) -> list[str]:
    prompts = [prompt_of(r["chosen"]) for r in hh_records]
    return [p for p in prompts if len(p.split()) <= 90][:240]


def test_topics_are_seeded_named_and_their_mass_adds_up(
    short_prompts: list[str], sem_root: Path, shakespeare: list[str]
) -> None:
    topics = fit_topics(short_prompts, CFG, seed=0, cache_root=sem_root, progress=False)
    k = len(topics.names)
    assert k == 4  # round(sqrt(240) / 4)
    assert topics.labels.shape == (len(short_prompts),) and set(topics.labels) == set(range(k))
    assert len(set(topics.names)) == k and all(
        n.startswith(f"{i}: ") for i, n in enumerate(topics.names)
    )
    assert not any("human" in n or "assistant" in n for n in topics.names)
    assert topics.share.sum() == pytest.approx(1.0)
    assert np.all(np.diff(topics.share) <= 0)  # numbered by size
    again = fit_topics(short_prompts, CFG, seed=0, cache_root=sem_root, progress=False)
    assert np.array_equal(again.labels, topics.labels) and again.names == topics.names

    # The prompts as a corpus (short enough to stay whole) put exactly the same mass on
    # each topic as the preference data does.
    own = build_semantic_index(
        corpus_frame("prompts", short_prompts), sem_root, CFG, chunk_words=128, progress=False
    )
    assert own.manifest["rows"] == len(short_prompts)
    mass = topic_mass(own, topics)
    assert mass.columns == ["topic", "pref_share", "corpus_share", "mass_ratio"]
    assert np.allclose(mass["mass_ratio"].to_numpy(), 1.0)
    far = topic_mass(
        build_semantic_index(
            corpus_frame("shakespeare", shakespeare), sem_root, CFG, chunk_words=64, progress=False
        ),
        topics,
    )
    assert far["corpus_share"].sum() == pytest.approx(1.0)
    assert not np.allclose(far["mass_ratio"].to_numpy(), 1.0)


# ---- full size --------------------------------------------------------------------------


@pytest.mark.slow
def test_full_hh_replies_vs_shakespeare(
    hh_replies: list[str], shakespeare_paragraphs: list[str], tmp_path: Path
) -> None:
    cfg = SemanticConfig(encoder="transformer")
    half = len(hh_replies) // 2
    slice_, close = hh_replies[:half], hh_replies[half:]
    everything = np.ones(len(slice_), dtype=bool)
    values = {}
    for name, texts in (("close", close), ("far", shakespeare_paragraphs[:1000])):
        index = build_semantic_index(corpus_frame(name, texts), tmp_path, cfg, progress=False)
        est = semantic_estimators(index, slice_, cfg, seed=0, progress=False)
        values[name] = {m: fn(everything).value for m, fn in est.items()}
    assert (
        values["close"]["semantic.coverage_k5"] > 0.9 > 0.5 > values["far"]["semantic.coverage_k5"]
    )
    assert values["close"]["semantic.mauve"] > 0.8 > 0.1 > values["far"]["semantic.mauve"]


# ---- through the overlap stage ------------------------------------------------------------


def test_profile_rows_through_the_overlap_hook(
    hh_records: list[dict[str, str]], hh_replies: list[str], sem_root: Path
) -> None:
    from simscope.overlap.profile import ProfileConfig, build_profile
    from simscope.semantic import SemanticScorer

    records = [r for r in hh_records if len(r["chosen"].split()) <= 80][:60]
    prefs = pl.DataFrame(
        {
            "pair_id": [f"p{i}" for i in range(len(records))],
            "prompt": [prompt_of(r["chosen"]) for r in records],
            "chosen": [last_reply(r["chosen"]) for r in records],
            "rejected": [last_reply(r["rejected"]) for r in records],
            "source": [f"hh:{i + 1}" for i in range(len(records))],
        }
    )
    # Shares the session's root, so the corpus texts (the "hh" fixture's) come from the cache.
    corpora = {"hh-profile": corpus_frame("hh-profile", hh_replies[N_SLICE : N_SLICE + 100])}
    cfg = ProfileConfig(n_boot=20, seed=3)
    topics = fit_topics(prefs["prompt"].to_list(), CFG, seed=3, cache_root=sem_root, progress=False)
    runs = [
        build_profile(
            prefs,
            corpora,
            sem_root,
            cfg,
            topics=topics,
            scorers=[
                SemanticScorer(
                    sem_root,
                    CFG,
                    seed=3,
                    n_boot=20,
                    progress=False,
                    slice_texts={s: prefs[s].to_list() for s in ("prompt", "chosen", "rejected")},
                )
            ],
            progress=False,
        ).profile
        for _ in range(2)
    ]
    profile = runs[0]
    assert profile.equals(runs[1])  # same seed, same rows
    semantic = profile.filter(pl.col("metric").str.starts_with("semantic."))
    assert set(semantic["metric"]) == set(metric_names(CFG))
    assert set(semantic["slice"]) == {"prompt", "chosen", "rejected"}
    assert semantic["topic"].null_count() == 3 * len(metric_names(CFG))
    assert set(semantic["topic"].drop_nulls()) == set(topics.names)
    # One index for all three slices: the corpus is chunked (and embedded) once.
    words = profile_chunk_words(
        {s: prefs[s].to_list() for s in ("prompt", "chosen", "rejected")}, CFG
    )
    assert [p.name for p in sem_root.glob("semantic-hh-profile-*")] == [
        f"semantic-hh-profile-transformer-w{words}"
    ]


# ---- the static encoder and the measured choice --------------------------------------------


@pytest.fixture(scope="session")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An indexes directory where the static encoder is distilled (once per session)."""
    return tmp_path_factory.mktemp("static-indexes")


def test_static_encoder_is_distilled_once_kept_and_checked(
    static_root: Path, tmp_path: Path, slice_texts: list[str]
) -> None:
    from simscope.semantic.static import STATIC_KIND

    embedder = get_embedder(STATIC, static_root)
    assert isinstance(embedder, StaticEmbedder) and embedder.dim == STATIC.static_pca_dims
    (kept,) = static_root.glob("static-encoder-all-MiniLM-L6-v2-*")
    manifest = json.loads((kept / "manifest.json").read_text())
    assert manifest["kind"] == STATIC_KIND
    assert manifest["params"]["pca_dims"] == 256 and manifest["params"]["source_checksum"]
    assert manifest["provenance"]["distill_seconds"] > 0
    assert sorted(manifest["files"]) == ["tokenizer.json", "vectors.npy"]
    assert not list(static_root.glob("*.incomplete*"))
    vectors = embedder.encode(slice_texts[:20], progress=False)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # A fresh load (another indexes directory, same distillation) embeds identically.
    other = StaticEmbedder(STATIC, tmp_path)
    assert other.identity == embedder.identity
    assert np.array_equal(other.encode(slice_texts[:20], progress=False), vectors)
    # Every token counts: a long text is not truncated (model2vec's default cuts at 512).
    long_text = " ".join(slice_texts[:80])
    head = " ".join(long_text.split()[:300])
    whole, first = embedder.encode([long_text, head], progress=False)
    assert len(long_text.split()) > 1000 and float(whole @ first) < 0.999
    # A damaged file is refused on load, naming it.
    (copy,) = tmp_path.glob("static-encoder-*")
    (copy / "tokenizer.json").write_text("{}")
    with pytest.raises(SimscopeError, match=r"tokenizer\.json: checksum differs"):
        StaticEmbedder(STATIC, tmp_path)


def test_static_encoder_known_answers(
    static_root: Path, hh_replies: list[str], slice_texts: list[str], shakespeare: list[str]
) -> None:
    cfg = replace(STATIC, chunk_words=64)
    everything = np.ones(len(slice_texts), dtype=bool)
    values = {}
    for name, texts in (
        ("self", slice_texts),
        ("hh", hh_replies[N_SLICE : 2 * N_SLICE]),
        ("shakespeare", shakespeare),
    ):
        index = build_semantic_index(corpus_frame(name, texts), static_root, cfg, progress=False)
        assert index.path.name == f"semantic-{name}-static-w64"
        est = semantic_estimators(index, slice_texts, cfg, seed=0, progress=False)
        values[name] = {m: fn(everything).value for m, fn in est.items()}
    own, hh, far = values["self"], values["hh"], values["shakespeare"]
    assert own["semantic.nn_cosine"] == pytest.approx(1.0, abs=1e-4)
    assert own["semantic.coverage_k5"] == 1.0 and own["semantic.precision_k5"] == 1.0
    # Identical rows of the PCA product may round apart (BLAS kernels differ between a block
    # and its remainder), and the static vectors hold near-ties that k-means then splits:
    # measured 0.9996, not the exact 1 of two identical histograms.
    assert own["semantic.mauve"] > 0.995
    for metric in ("semantic.nn_cosine", "semantic.coverage_k5", "semantic.mauve"):
        assert own[metric] > hh[metric] > far[metric], metric
    assert hh["semantic.frechet"] < far["semantic.frechet"]


def _kept_choice(root: Path, cfg: SemanticConfig, measured: dict[str, object]) -> None:
    from simscope.semantic.choice import CHOICE_KIND, choice_params, choice_path
    from simscope.storage import atomic_dir, write_manifest

    with atomic_dir(choice_path(cfg, root)) as tmp:
        write_manifest(tmp, CHOICE_KIND, choice_params(cfg), extra={"measured": measured})


def test_auto_is_decided_by_the_kept_measurement_never_by_flags(tmp_path: Path) -> None:
    from simscope.semantic.choice import resolve

    runtimes = [
        {"backend": "torch", "precision": "fp32", "cpu_s": 4.0, "mean_cosine": 1.0},
        {"backend": "openvino", "precision": "fp32", "cpu_s": 3.0, "mean_cosine": 1.0},
        # The cheapest, but its vectors disagree with fp32: never chosen.
        {"backend": "openvino", "precision": "bf16", "cpu_s": 1.0, "mean_cosine": 0.99},
        {"backend": "torch", "precision": "bf16", "cpu_s": 2.0, "mean_cosine": 0.9999},
    ]
    cfg = SemanticConfig(encoder="auto")
    assert SemanticConfig().encoder == "transformer"  # auto is opt-in (bench_recovery path b)
    fast_static = tmp_path / "fast-static"
    _kept_choice(fast_static, cfg, {"runtimes": runtimes, "static": {"cpu_s": 0.01}})
    chosen = resolve(cfg, fast_static)
    assert (chosen.encoder, chosen.backend, chosen.precision) == ("static", "auto", "auto")
    forced = resolve(replace(cfg, encoder="transformer"), fast_static)
    assert (forced.backend, forced.precision) == ("torch", "bf16")
    fixed = resolve(replace(cfg, encoder="transformer", backend="openvino"), fast_static)
    assert (fixed.backend, fixed.precision) == ("openvino", "fp32")
    # Where the transformer runs within 10x of the static encoder, it is the default.
    slow_static = tmp_path / "slow-static"
    _kept_choice(slow_static, cfg, {"runtimes": runtimes, "static": {"cpu_s": 0.5}})
    assert resolve(cfg, slow_static).encoder == "transformer"
    only_openvino = tmp_path / "only-openvino"
    _kept_choice(only_openvino, cfg, {"runtimes": runtimes[1:3]})
    with pytest.raises(
        SimscopeError,
        match=r"no measured runtime fits backend='torch' precision='auto' \(measured: openvino",
    ):
        resolve(replace(cfg, encoder="transformer", backend="torch"), only_openvino)


def test_the_measurement_is_made_once_and_kept(tmp_path: Path) -> None:
    from simscope.semantic.choice import choice_path, resolve

    cfg = replace(CFG, encoder="transformer")
    resolved = resolve(cfg, tmp_path)
    kept = json.loads((choice_path(cfg, tmp_path) / "manifest.json").read_text())["measured"]
    names = {(r["backend"], r["precision"]) for r in kept["runtimes"]}
    assert {("torch", "fp32"), ("torch", "bf16")} <= names
    agreeing = [r for r in kept["runtimes"] if r["mean_cosine"] >= 0.995]
    fp32 = min((r for r in agreeing if r["precision"] == "fp32"), key=lambda r: r["cpu_s"])
    best = min(agreeing, key=lambda r: r["cpu_s"])
    expected = best if best["cpu_s"] <= 0.85 * fp32["cpu_s"] else fp32
    assert (resolved.backend, resolved.precision) == (expected["backend"], expected["precision"])
    assert "static" not in kept  # an explicit transformer never distils
    assert resolve(cfg, tmp_path) == resolved  # read back, not measured again


def test_bf16_is_taken_only_when_clearly_cheaper(tmp_path: Path) -> None:
    from simscope.semantic.choice import resolve

    cfg = replace(SemanticConfig(), encoder="transformer")
    # OpenVINO runs the bf16 hint in fp32 on CPUs without bf16: the two differ by noise.
    close = [
        {"backend": "openvino", "precision": "fp32", "cpu_s": 3.0, "mean_cosine": 1.0},
        {"backend": "openvino", "precision": "bf16", "cpu_s": 2.9, "mean_cosine": 1.0},
    ]
    _kept_choice(tmp_path / "close", cfg, {"runtimes": close})
    assert resolve(cfg, tmp_path / "close").precision == "fp32"
    native = [close[0], {**close[1], "cpu_s": 1.2, "mean_cosine": 0.9999}]
    _kept_choice(tmp_path / "native", cfg, {"runtimes": native})
    assert resolve(cfg, tmp_path / "native").precision == "bf16"


def test_openvino_model_is_kept_and_checked(tmp_path: Path, slice_texts: list[str]) -> None:
    import shutil

    from simscope.semantic.embed import _openvino_model

    cfg = replace(CFG, backend="openvino", precision="fp32")
    first = Embedder(cfg, root=tmp_path / "a")
    vectors = first.encode(slice_texts[:8], progress=False)
    (kept,) = (tmp_path / "a").glob("openvino-encoder-*")
    manifest = json.loads((kept / "manifest.json").read_text())
    assert manifest["kind"] == "openvino-ir" and sorted(manifest["files"]) == [
        "model.bin",
        "model.xml",
    ]
    # A second indexes directory holding the kept model reads it (no tracing) and agrees.
    shutil.copytree(kept, tmp_path / "b" / kept.name)
    again = Embedder(cfg, root=tmp_path / "b").encode(slice_texts[:8], progress=False)
    assert np.allclose(again, vectors, atol=1e-6)
    damaged = tmp_path / "c" / kept.name
    shutil.copytree(kept, damaged)
    with open(damaged / "model.bin", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(SimscopeError, match=r"model\.bin: checksum differs"):
        _openvino_model(first.path, tmp_path / "c")
