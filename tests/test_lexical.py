"""Lexical stage: tokenization, MinHash vs exact Jaccard, LSH vs datasketch, n-gram
containment, the indexes on disk, and known answers on real corpora."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from datasketch import LeanMinHash, MinHashLSH
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from simscope.errors import SimscopeError
from simscope.lexical.index import (
    LexicalConfig,
    build_minhash_index,
    build_ngram_index,
    chunk_shingles,
    scale_for_lengths,
    shingle,
)
from simscope.lexical.minhash import NearDuplicateFinder, estimate_jaccard, lsh_params, sign
from simscope.lexical.scorer import (
    HashedFeatures,
    containment,
    js_divergence,
    lexical_estimators,
)
from simscope.normalize import TokenBatch, ngram_hashes, tokenize
from simscope.overlap.profile import ProfileConfig, build_profile
from simscope.records import PROFILE_SCHEMA
from simscope.stats import bootstrapped, mean_statistic, scope_rows, topic_scopes
from simscope.storage import hash_texts, outdated_indexes

CFG = LexicalConfig()


def _split_hh(transcript: str) -> tuple[str, str]:
    i = transcript.rfind("\n\nAssistant:") + len("\n\nAssistant:")
    return transcript[:i], transcript[i:].strip()


@pytest.fixture(scope="module")
def prefs(hh_records: list[dict[str, str]]) -> pl.DataFrame:
    rows = []
    for k, r in enumerate(hh_records[:300]):
        prompt, chosen = _split_hh(r["chosen"])
        _, rejected = _split_hh(r["rejected"])
        rows.append(
            {
                "pair_id": str(k),
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "source": f"hh:{k + 1}",
            }
        )
    return pl.DataFrame(rows)


def corpus(model: str, texts: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "model": model,
            "doc_id": [f"{i:07d}" for i in range(len(texts))],
            "text": texts,
            "origin": "imported",
        }
    )


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", unicodedata.normalize("NFKC", text).lower())


# ---- tokenization ----------------------------------------------------------------------------


def test_words_match_a_regex_reference_on_real_text(hh_records: list[dict[str, str]]) -> None:
    texts = [r["chosen"] for r in hh_records[:300]]
    batch = tokenize(texts)
    assert batch.lengths().tolist() == [len(_words(t)) for t in texts]
    # one hash per distinct word, the same wherever the word stands
    words = [w for t in texts for w in _words(t)]
    by_word: dict[str, set[int]] = {}
    for w, h in zip(words, batch.hashes.tolist(), strict=True):
        by_word.setdefault(w, set()).add(h)
    assert all(len(hs) == 1 for hs in by_word.values())
    assert len({next(iter(hs)) for hs in by_word.values()}) == len(by_word)


def test_normalization_folds_case_width_and_whitespace() -> None:
    a = tokenize(["Hello,   WORLD!\n"]).hashes
    b = tokenize(["hello world"]).hashes
    # fullwidth letters and a no-break space fold to ASCII under NFKC
    c = tokenize(["\uff48\uff45\uff4c\uff4c\uff4f\u00a0world"]).hashes
    assert a.tolist() == b.tolist() == c.tolist()


# capital/small/final sigma, dotted/dotless i, titlecase, a ligature, NBSP, a combining accent,
# astral math letters, Kelvin sign, capital sharp s, a combining iota, a line separator
_TRICKY = (
    "aZ \n.,'\u03a3\u03c3\u03c2\u0130I\u0131\u01c5\ufb01\u00a0\u0301e"
    "\U0001d400\U0001d537\u212a\u1e9e\u0345\u2028"
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.one_of(st.sampled_from(_TRICKY), st.characters(codec="utf-8"))),
        max_size=6,
    )
)
def test_batch_tokenize_equals_normalizing_each_text_alone(texts: list[str]) -> None:
    # The batch path lowers through a table and skips ASCII texts; the reference normalizes
    # each text with unicodedata + str.lower and hashes its code points as they are.
    from simscope.normalize import Normalization, normalize_text

    raw = Normalization(unicode_form="", lowercase=False)
    batch = tokenize(texts)
    for i, t in enumerate(texts):
        alone = tokenize([normalize_text(t)], raw)
        assert batch.hashes[batch.offsets[i] : batch.offsets[i + 1]].tolist() == (
            alone.hashes.tolist()
        ), t


def test_tokenize_cuts_a_large_batch_without_changing_it(
    hh_records: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import simscope.normalize as normalize_module

    texts = [r["chosen"] for r in hh_records[:200]] + ["", "\U0001f44d ok"]
    whole = tokenize(texts)
    monkeypatch.setattr(normalize_module, "_CHUNK_CHARS", 3000)  # ~100 chunks
    cut = tokenize(texts)
    assert np.array_equal(cut.offsets, whole.offsets)
    assert np.array_equal(cut.hashes, whole.hashes)


def test_golden_word_hashes_and_signature() -> None:
    # Pinned: a change here invalidates every index on disk (bump storage.FORMAT_VERSION).
    assert tokenize(["Hello, World!"]).hashes.tolist() == [
        878596624934215830,
        4992365058970126744,
    ]
    fox = shingle(["The quick brown fox jumps over the lazy dog."], CFG)
    sig = sign(fox, num_perm=128, seed=0, engine="rensa")
    assert sig[0, :8].tolist() == [
        31301813,
        3453399108,
        3483127808,
        3224496548,
        3224692614,
        3260987679,
        3376234950,
        3362195438,
    ]


def test_golden_oph_signature() -> None:
    # Pinned: a change here must bump minhash.OPH_VERSION (indexes signed before are refused).
    fox = shingle(["The quick brown fox jumps over the lazy dog."], CFG)
    sig = sign(fox, num_perm=128, seed=0, engine="oph")
    # 9 words: 5 shingles fill 5 of the 128 bins, the others copy one of them
    assert sig[0, :8].tolist() == [
        498767865,
        1317122687,
        3074225738,
        1317122687,
        2142095668,
        2142095668,
        498767865,
        1317122687,
    ]
    assert np.unique(sig).size == 5


def test_ngrams_and_short_texts() -> None:
    batch = tokenize(["a b c d", "x y", ""])
    grams = ngram_hashes(batch, 3)
    assert grams.lengths().tolist() == [2, 0, 0]
    whole = ngram_hashes(batch, 3, short="whole")
    assert whole.lengths().tolist() == [2, 1, 0]
    assert whole.hashes[:2].tolist() == grams.hashes.tolist()


# ---- MinHash and LSH -------------------------------------------------------------------------


def _exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = set(a.tolist()), set(b.tolist())
    return len(sa & sb) / len(sa | sb)


@pytest.mark.parametrize("engine", ["oph", "rensa", "datasketch"])
def test_minhash_estimates_exact_jaccard_on_real_pairs(
    hh_records: list[dict[str, str]], engine: str
) -> None:
    # chosen vs rejected transcripts share their prompt: Jaccards spread over [0, 1]
    texts = [t for r in hh_records[:200] for t in (r["chosen"], r["rejected"])]
    sh = shingle(texts, CFG)
    sig = sign(sh, num_perm=128, seed=0, engine=engine)
    errors, exact = [], []
    for i in range(0, len(texts), 2):
        a = sh.hashes[sh.offsets[i] : sh.offsets[i + 1]]
        b = sh.hashes[sh.offsets[i + 1] : sh.offsets[i + 2]]
        j = _exact_jaccard(a, b)
        exact.append(j)
        errors.append(abs(float(estimate_jaccard(sig[i], sig[i + 1])[0]) - j))
    assert np.std(exact) > 0.1  # the check covers a spread of similarities
    # 128 permutations: the estimate's standard deviation is at most 0.044
    assert np.mean(errors) < 0.04
    assert np.max(errors) < 0.2


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet="abcdefgh ", min_size=1, max_size=60), min_size=2, max_size=6))
def test_jaccard_estimate_bounded_symmetric_and_one_on_itself(texts: list[str]) -> None:
    sig = sign(shingle(texts, CFG), num_perm=64, seed=3)
    for i in range(len(texts)):
        for j in range(len(texts)):
            e_ij = float(estimate_jaccard(sig[i], sig[j])[0])
            assert 0.0 <= e_ij <= 1.0
            assert e_ij == float(estimate_jaccard(sig[j], sig[i])[0])
        assert float(estimate_jaccard(sig[i], sig[i])[0]) == 1.0


def test_oph_signs_each_text_as_if_alone_and_knows_the_extremes(
    hh_records: list[dict[str, str]],
) -> None:
    texts = [r["chosen"] for r in hh_records[:60]] + ["", "one", "two words", "one"]
    sh = shingle(texts, CFG)
    batch = sign(sh, num_perm=128, seed=5, engine="oph")
    for i, t in enumerate(texts):
        alone = sign(shingle([t], CFG), num_perm=128, seed=5, engine="oph")
        assert np.array_equal(batch[i], alone[0]), i
    assert (batch[60] == np.iinfo(np.uint32).max).all()  # empty text: matches nothing
    assert float(estimate_jaccard(batch[61], batch[63])[0]) == 1.0  # the same one shingle
    assert float(estimate_jaccard(batch[61], batch[62])[0]) == 0.0  # disjoint
    other_seed = sign(sh, num_perm=128, seed=6, engine="oph")
    assert (other_seed[:60] != batch[:60]).mean() > 0.9
    # any width, not only powers of two, and every bin of a non-empty text is filled
    odd = sign(sh, num_perm=100, seed=5, engine="oph")
    assert odd.shape == (64, 100)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(0, 300), st.integers(0, 300), st.integers(0, 2**32))
def test_oph_estimate_is_close_to_exact_jaccard(shared: int, only_a: int, only_b: int, seed: int):
    # Random 64-bit "shingles" with a known Jaccard: the estimate over 256 bins has a standard
    # deviation of at most 0.5 / sqrt(256) = 0.031 (Shrivastava 2017: densified one-permutation
    # hashing is within the variance of classic MinHash); 0.2 is over 6 standard deviations.
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 2**63, shared + only_a + only_b, dtype=np.uint64)
    a, b = pool[: shared + only_a], np.concatenate((pool[:shared], pool[shared + only_a :]))
    sh = TokenBatch(np.concatenate((a, b)), np.array([0, a.size, a.size + b.size]))
    sig = sign(sh, num_perm=256, seed=seed, engine="oph")
    exact = shared / (shared + only_a + only_b)
    assert abs(float(estimate_jaccard(sig[0], sig[1])[0]) - exact) < 0.2


def test_banding_finds_the_same_candidates_as_datasketch(
    hh_records: list[dict[str, str]],
) -> None:
    texts = [r["chosen"] for r in hh_records[:400]]
    sig = sign(shingle(texts, CFG), num_perm=128, seed=0)
    corpus_sig, query_sig = sig[:300], sig[300:]
    # near-copies among the queries, so that there is something to find
    query_sig = np.concatenate((query_sig, corpus_sig[:20]))
    for t in (0.5, 0.8):
        lsh = MinHashLSH(threshold=t, num_perm=128)
        assert (lsh.b, lsh.r) == lsh_params(t, 128)
        for key, row in enumerate(corpus_sig):
            lsh.insert(key, LeanMinHash(seed=0, hashvalues=row, scheme="affine32"))
        theirs = [
            set(lsh.query(LeanMinHash(seed=0, hashvalues=q, scheme="affine32"))) for q in query_sig
        ]
        ours = NearDuplicateFinder(corpus_sig, (t,)).candidates(query_sig, t)
        assert ours == theirs
        assert sum(map(len, ours)) >= 20


def test_chunks_cover_long_texts_and_keep_short_ones_whole() -> None:
    sh = TokenBatch(np.arange(25, dtype=np.uint64), np.array([0, 3, 25]))
    chunks, text_of = chunk_shingles(sh, window=8, stride=4, whole_up_to=10)
    assert text_of.tolist() == [0, 1, 1, 1, 1, 1]
    assert chunks.hashes[: chunks.offsets[1]].tolist() == [0, 1, 2]
    covered = set(chunks.hashes[chunks.offsets[1] :].tolist())
    assert covered == set(range(3, 25))
    assert chunks.lengths().tolist() == [3, 8, 8, 8, 8, 8]
    assert scale_for_lengths(np.array([0, 10, 40, 100, 5000])).tolist() == [
        16,
        16,
        32,
        128,
        2048,
    ]


# ---- containment -----------------------------------------------------------------------------


def test_containment_matches_set_arithmetic(hh_records: list[dict[str, str]]) -> None:
    corpus_texts = [r["chosen"] for r in hh_records[:100]]
    texts = [r["rejected"] for r in hh_records[:100]] + ["too short"]
    corpus_grams = np.unique(ngram_hashes(tokenize(corpus_texts), 8).hashes)
    got = containment(tokenize(texts), 8, corpus_grams)
    corpus_set = {
        tuple(w[i : i + 8]) for t in corpus_texts for w in [_words(t)] for i in range(len(w) - 7)
    }
    for text, value in zip(texts, got, strict=True):
        words = _words(text)
        grams = [tuple(words[i : i + 8]) for i in range(len(words) - 7)]
        if not grams:
            assert np.isnan(value)
        else:
            assert value == pytest.approx(sum(g in corpus_set for g in grams) / len(grams))


# ---- indexes on disk -------------------------------------------------------------------------


def test_index_round_trip_and_refusals(tmp_path: Path, shakespeare_paragraphs: list[str]) -> None:
    c = corpus("bard", shakespeare_paragraphs[:400])
    built = build_minhash_index(c, tmp_path, CFG, 32, progress=False)
    loaded = build_minhash_index(c, tmp_path, CFG, 32, progress=False)
    assert np.array_equal(built.signatures, loaded.signatures)
    assert loaded.manifest["params"]["engine"] == "rensa"
    assert not list(tmp_path.glob("*.incomplete*"))

    with pytest.raises(SimscopeError) as e:
        build_minhash_index(c, tmp_path, LexicalConfig(num_perm=64), 32, progress=False)
    assert "num_perm: index has 128, requested 64" in str(e.value)
    with pytest.raises(SimscopeError) as e:
        build_minhash_index(c, tmp_path, LexicalConfig(engine="datasketch"), 32, progress=False)
    assert "engine: index has 'rensa', requested 'datasketch'" in str(e.value)
    with pytest.raises(SimscopeError) as e:
        build_minhash_index(c, tmp_path, LexicalConfig(engine="oph"), 32, progress=False)
    assert "engine: index has 'rensa', requested 'oph'" in str(e.value)
    assert "rebuild" in str(e.value)
    changed = corpus("bard", shakespeare_paragraphs[:399])
    with pytest.raises(SimscopeError, match="input_hash: index has"):
        build_minhash_index(changed, tmp_path, CFG, 32, progress=False)
    # --rebuild replaces it
    rebuilt = build_minhash_index(changed, tmp_path, CFG, 32, rebuild=True, progress=False)
    assert rebuilt.chunk_doc.max() == 398

    ngrams = build_ngram_index(c, tmp_path, CFG, progress=False)
    target = ngrams.path / "ngrams_13.npy"
    target.write_bytes(target.read_bytes()[:-100])  # truncated
    with pytest.raises(SimscopeError) as e:
        build_ngram_index(c, tmp_path, CFG, progress=False)
    assert str(e.value) == (
        f"{target}: checksum differs from the manifest (file damaged or truncated); "
        "rebuild the index with --rebuild"
    )


def test_an_index_from_an_older_simscope_is_named_as_such(
    tmp_path: Path, shakespeare_paragraphs: list[str]
) -> None:
    c = corpus("bard", shakespeare_paragraphs[:50])
    built = build_ngram_index(c, tmp_path, CFG, progress=False)
    assert built.manifest["params"]["input_hash"].startswith("rowhash1:")
    assert outdated_indexes(tmp_path) == []
    # Before storage.RowHash, input_hash was a bare hex digest of the concatenated texts.
    manifest_file = built.path / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["params"]["input_hash"] = hash_texts(shakespeare_paragraphs[:50])
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(SimscopeError) as e:
        build_ngram_index(c, tmp_path, CFG, progress=False)
    assert str(e.value) == (
        f"{built.path}: index written by an older simscope (its input_hash is of another "
        "kind); rebuild it with --rebuild"
    )
    assert outdated_indexes(tmp_path) == [built.path]
    build_ngram_index(c, tmp_path, CFG, rebuild=True, progress=False)
    assert outdated_indexes(tmp_path) == []


def test_a_corpus_with_null_ids_or_texts_is_refused(tmp_path: Path) -> None:
    with_null = corpus("m", ["a text", "another"]).with_columns(
        pl.Series("text", ["a text", None], dtype=pl.String)
    )
    with pytest.raises(SimscopeError) as e:
        build_ngram_index(with_null, tmp_path, CFG, progress=False)
    assert (
        str(e.value)
        == "ProbeCorpus: column 'text': expected a string in every row, found 1 null(s)"
    )
    assert not list(tmp_path.iterdir())


def test_a_crash_while_building_leaves_nothing(
    tmp_path: Path, shakespeare_paragraphs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import simscope.lexical.index as index_module

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(index_module, "write_manifest", boom)
    with pytest.raises(RuntimeError):
        build_ngram_index(
            corpus("bard", shakespeare_paragraphs[:50]), tmp_path, CFG, progress=False
        )
    assert list(tmp_path.iterdir()) == []


# ---- known answers ---------------------------------------------------------------------------


def _values(profile: pl.DataFrame, model: str, slice_: str) -> dict[str, float]:
    rows = profile.filter(
        (pl.col("model") == model) & (pl.col("slice") == slice_) & pl.col("topic").is_null()
    )
    return dict(zip(rows["metric"].to_list(), rows["value"].to_list(), strict=True))


def test_known_answers_self_unrelated_and_mixture(
    tmp_path: Path, prefs: pl.DataFrame, shakespeare_paragraphs: list[str]
) -> None:
    chosen = prefs["chosen"].to_list()
    bard = shakespeare_paragraphs[: len(chosen)]
    corpora = {
        "self": corpus("self", chosen),
        "bard": corpus("bard", bard),
        "mix": corpus("mix", chosen[::2] + bard[1::2]),
    }
    cfg = ProfileConfig(n_boot=50, slices=("chosen",))
    result = build_profile(prefs, corpora, tmp_path, cfg, progress=False)
    me, far, mix = (_values(result.profile, m, "chosen") for m in ("self", "bard", "mix"))
    # a corpus against itself: every text is found, the histograms are identical
    assert me["lexical.containment_8gram"] == 1.0
    assert me["lexical.near_dup_rate@0.8"] >= 0.99
    assert me["lexical.hashed_ngram_jsd"] == pytest.approx(0.0, abs=1e-9)
    # an unrelated domain: no copies, far histograms
    assert far["lexical.containment_8gram"] == 0.0
    assert far["lexical.near_dup_rate@0.5"] == 0.0
    assert far["lexical.hashed_ngram_jsd"] > 0.3
    # half of the texts: copies of about half, a histogram in between
    assert mix["lexical.near_dup_rate@0.8"] == pytest.approx(0.5, abs=0.05)
    assert 0.0 < mix["lexical.hashed_ngram_jsd"] < far["lexical.hashed_ngram_jsd"]
    # every interval brackets its estimate
    for row in result.profile.iter_rows(named=True):
        if row["ci_low"] is not None:
            assert row["ci_low"] - 1e-12 <= row["value"] <= row["ci_high"] + 1e-12, row


def test_same_seed_same_profile(tmp_path: Path, prefs: pl.DataFrame) -> None:
    corpora = {"self": corpus("self", prefs["chosen"].to_list()[:150])}
    cfg = ProfileConfig(n_boot=30, seed=7)
    a = build_profile(prefs, corpora, tmp_path / "a", cfg, progress=False).profile
    b = build_profile(prefs, corpora, tmp_path / "b", cfg, progress=False).profile
    assert a.equals(b)


# ---- streamed scoring ------------------------------------------------------------------------


def _in_memory_estimators(texts: list[str], ngram_index, minhash_for, cfg: LexicalConfig):  # type: ignore[no-untyped-def]
    """The lexical scorer as it was before it streamed: the whole slice tokenized and
    signed at once, its hashed features one scipy sparse matrix (float64 counts)."""
    import scipy.sparse as sp

    from simscope.lexical.index import hashed_features

    batch = tokenize(texts, cfg.normalization)
    queries = sign(shingle(texts, cfg), num_perm=cfg.num_perm, seed=cfg.seed, engine=cfg.engine)
    scales = scale_for_lengths(batch.lengths())
    best = {t: np.zeros(len(texts)) for t in cfg.thresholds}
    for scale in np.unique(scales).tolist():
        rows = np.flatnonzero(scales == scale)
        for t in cfg.thresholds:
            best[t][rows] = minhash_for(int(scale)).finder.best_matches(queries[rows], t)[0]
    rows_, buckets = hashed_features(batch, cfg.feature_buckets_log2)
    transposed = sp.csr_matrix(
        (np.ones(rows_.size), (rows_, buckets)),
        shape=(len(texts), 1 << cfg.feature_buckets_log2),
    ).T.tocsr()
    stats = {f"lexical.near_dup_rate@{t}": mean_statistic((best[t] >= t) * 1.0) for t in best}
    for n in cfg.ngram_sizes:
        frac = containment(batch, n, ngram_index.ngrams[n])
        stats[f"lexical.containment_{n}gram"] = mean_statistic(frac)
        share = np.where(np.isnan(frac), np.nan, (frac > cfg.contaminated_fraction) * 1.0)
        stats[f"lexical.contaminated_share_{n}gram"] = mean_statistic(share)
    features = ngram_index.features
    stats["lexical.hashed_ngram_jsd"] = lambda w: js_divergence(transposed @ w, features)
    return {
        name: bootstrapped(
            stat,
            n_boot=40,
            seed=3,
            recenter=name == "lexical.hashed_ngram_jsd",
            bounds=(0.0, 1.0),
        )
        for name, stat in stats.items()
    }


def test_streamed_profile_is_identical_to_the_in_memory_path(
    tmp_path: Path, prefs: pl.DataFrame, shakespeare_paragraphs: list[str]
) -> None:
    chosen = prefs["chosen"].to_list()
    mixed = corpus("mix", chosen[::2] + shakespeare_paragraphs[:150])
    # blocks of 7 texts: every block boundary and a last partial block are crossed
    cfg = LexicalConfig(batch_docs=7)
    labels = np.arange(prefs.height) % 4 - 1  # three topics and texts in none
    names = ["t0", "t1", "t2"]
    streamed = build_profile(
        prefs,
        {"mix": mixed},
        tmp_path,
        ProfileConfig(n_boot=40, seed=3, lexical=cfg),
        topics=type("T", (), {"labels": labels, "names": names})(),
        progress=False,
    ).profile
    assert streamed.height > 0

    ngram_index = build_ngram_index(mixed, tmp_path, cfg, progress=False)

    def minhash_for(scale: int):  # type: ignore[no-untyped-def]
        return build_minhash_index(mixed, tmp_path, cfg, scale, progress=False)

    rows = []
    for s in ("chosen", "prompt", "rejected"):
        estimators = _in_memory_estimators(prefs[s].to_list(), ngram_index, minhash_for, cfg)
        rows += scope_rows("mix", s, estimators, topic_scopes(prefs.height, labels, names))
    expected = pl.DataFrame(rows, schema=PROFILE_SCHEMA).sort(
        ["model", "slice", "metric", "topic"], nulls_last=False
    )
    assert_frame_equal(streamed, expected, check_exact=True)
    # the contamination checks found copies, so the comparison covers non-zero values too
    assert streamed.filter(pl.col("metric") == "lexical.near_dup_rate@0.8")["value"].max() > 0.3


def test_hashed_feature_histogram_is_exact_in_any_chunking(
    hh_records: list[dict[str, str]],
) -> None:
    texts = [r["chosen"] for r in hh_records[:120]]
    w = np.random.default_rng(0).integers(0, 4, len(texts)).astype(np.float64)
    one = HashedFeatures(16)
    one.add(tokenize(texts))
    many = HashedFeatures(16)
    for lo in range(0, len(texts), 13):
        many.add(tokenize(texts[lo : lo + 13]))
    # the histogram by hand: each occurrence of a bucket adds its text's weight
    from simscope.lexical.index import hashed_features

    rows, buckets = hashed_features(tokenize(texts), 16)
    expected = np.zeros(1 << 16)
    np.add.at(expected, buckets, w[rows])
    assert np.array_equal(one.histogram(w), expected)
    assert np.array_equal(many.histogram(w), expected)
    assert one.chunks[0][2].dtype == np.uint16
    assert int(one.chunks[0][1].sum()) == rows.size


def test_lexical_estimators_take_a_polars_column_like_a_list(
    tmp_path: Path, prefs: pl.DataFrame
) -> None:
    c = corpus("self", prefs["chosen"].to_list()[:100])
    cfg = LexicalConfig(batch_docs=50)
    ngram_index = build_ngram_index(c, tmp_path, cfg, progress=False)

    def minhash_for(scale: int):  # type: ignore[no-untyped-def]
        return build_minhash_index(c, tmp_path, cfg, scale, progress=False)

    column = prefs["chosen"]
    a, scores_a = lexical_estimators(column, ngram_index, minhash_for, cfg, n_boot=20, seed=0)
    b, scores_b = lexical_estimators(
        column.to_list(), ngram_index, minhash_for, cfg, n_boot=20, seed=0
    )
    mask = np.ones(column.len(), dtype=bool)
    assert {k: e(mask) for k, e in a.items()} == {k: e(mask) for k, e in b.items()}
    assert np.array_equal(scores_a.best_doc[0.8], scores_b.best_doc[0.8])
    # the first 100 texts are the corpus: (nearly) each finds itself, none past them does
    assert (scores_a.best_doc[0.8][:100] >= 0).sum() >= 95
    assert (scores_a.best_jaccard[0.8][:100] == 1.0).sum() >= 95


def test_js_divergence_matches_scipy_and_its_known_values() -> None:
    from scipy.spatial.distance import jensenshannon

    rng = np.random.default_rng(0)
    p, q = rng.poisson(0.3, 4096).astype(float), rng.poisson(0.6, 4096).astype(float)
    s = 0.5
    expected = jensenshannon(p + s, q + s, base=2) ** 2
    assert js_divergence(p, q, s) == pytest.approx(expected, rel=1e-9)
    assert js_divergence(p, p, s) == 0.0
    # disjoint supports: one bit
    assert js_divergence(np.array([5.0, 0.0]), np.array([0.0, 3.0]), 1e-12) == pytest.approx(1.0)
