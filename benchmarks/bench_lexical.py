"""MinHash signing throughput and accuracy: simscope's lexical path vs datasketch and bare rensa.

Every path goes from raw text to a (docs x 128) uint32 signature matrix over word 5-gram
shingles, on the same documents, in one process:

1. simscope / rensa (the default): ``tokenize`` + ``ngram_hashes(5, short="whole")`` +
   ``sign(engine="rensa")`` (rensa's Rust signing, its digests read back through Python lists)
   in batches of 2000 docs, as the index builder does;
2. simscope / oph and simscope / datasketch: the same with ``engine="oph"`` (one-permutation
   hashing with optimal densification, numpy) and ``engine="datasketch"``;
3. datasketch ``MinHash.update`` per shingle, a fresh ``MinHash`` per doc;
4. datasketch ``MinHash.update_batch`` per doc;
5. datasketch ``MinHash.bulk`` over all docs (the reference for the ratio column);
6. rensa ``RMinHash.update(list_of_shingle_strings)`` per doc with Python shingling, and the
   same rensa signing alone on shingle lists built beforehand (no shingling time), and, for
   reference, rensa's ``update`` alone there without reading the digests out.

Paths 3-6 normalize the simple way (NFKC, lower case, ``str.split``) and shingle in Python.

Data: the HH-RLHF harmless-base test transcripts (chosen and rejected), repeated with seeded
word drops and adjacent swaps up to ``--docs`` documents. Accuracy: the mean absolute error of
each path's Jaccard estimate against the exact Jaccard of the shingle sets that path uses, on
the chosen/rejected pair of each of the first ``--pairs`` records (they share the prompt, so
their Jaccards spread over [0, 1]).

Run: ``python benchmarks/bench_lexical.py --repeats 3 --docs 50000``
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import gzip
import itertools
import json
import os
import platform
import statistics
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasketch
import numpy as np
import rensa
from datasketch import MinHash

from simscope.lexical.minhash import sign
from simscope.normalize import TokenBatch, ngram_hashes, tokenize

DATA = (
    Path(__file__).resolve().parents[1] / "tests" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
)
NUM_PERM = 128
SHINGLE_WORDS = 5
BATCH_DOCS = 2000  # LexicalConfig.batch_docs
SEED = 0


# ---- data ----------------------------------------------------------------------------------


def load_pairs(path: Path) -> list[tuple[str, str]]:
    """(chosen, rejected) transcripts of the HH-RLHF file, in file order."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [(r["chosen"], r["rejected"]) for r in map(json.loads, f)]


def perturb(text: str, rng: np.random.Generator, p_drop: float, p_swap: float) -> str:
    """``text`` with each word dropped with ``p_drop`` and adjacent words swapped with
    ``p_swap`` (whitespace collapses to single spaces)."""
    words = text.split()
    k = len(words)
    if k < 2:
        return text
    order = np.arange(k)
    for i in np.flatnonzero(rng.random(k - 1) < p_swap).tolist():
        order[i], order[i + 1] = order[i + 1], order[i]
    order = order[rng.random(k) >= p_drop]
    return " ".join([words[j] for j in order.tolist()])


def make_docs(base: list[str], n_docs: int, seed: int) -> list[str]:
    """``base`` itself, then perturbed copies of it, up to ``n_docs`` documents."""
    rng = np.random.default_rng(seed)
    docs = list(base[:n_docs])
    while len(docs) < n_docs:
        for text in base:
            if len(docs) >= n_docs:
                break
            docs.append(perturb(text, rng, p_drop=0.03, p_swap=0.03))
    return docs


# ---- the paths -----------------------------------------------------------------------------


def py_shingles(text: str) -> list[str]:
    """Word 5-gram shingle strings, the plain way; a shorter non-empty text is one shingle
    (as ``ngram_hashes(short="whole")``)."""
    words = unicodedata.normalize("NFKC", text).lower().split()
    if len(words) < SHINGLE_WORDS:
        return [" ".join(words)] if words else []
    return [" ".join(words[i : i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1)]


def simscope_path(engine: str) -> Callable[[list[str]], np.ndarray]:
    def run(docs: list[str]) -> np.ndarray:
        parts = []
        for i in range(0, len(docs), BATCH_DOCS):
            shingles = ngram_hashes(
                tokenize(docs[i : i + BATCH_DOCS]), SHINGLE_WORDS, short="whole"
            )
            parts.append(sign(shingles, num_perm=NUM_PERM, seed=SEED, engine=engine))
        return np.concatenate(parts)

    return run


def datasketch_update(docs: list[str]) -> np.ndarray:
    rows = []
    for text in docs:
        m = MinHash(num_perm=NUM_PERM, seed=SEED)
        for s in py_shingles(text):
            m.update(s.encode("utf-8"))
        rows.append(m.hashvalues)
    return np.vstack(rows).astype(np.uint32)


def datasketch_update_batch(docs: list[str]) -> np.ndarray:
    rows = []
    for text in docs:
        m = MinHash(num_perm=NUM_PERM, seed=SEED)
        m.update_batch([s.encode("utf-8") for s in py_shingles(text)])
        rows.append(m.hashvalues)
    return np.vstack(rows).astype(np.uint32)


def datasketch_bulk(docs: list[str]) -> np.ndarray:
    encoded = ([s.encode("utf-8") for s in py_shingles(t)] for t in docs)
    minhashes = MinHash.bulk(encoded, num_perm=NUM_PERM, seed=SEED)
    return np.vstack([m.hashvalues for m in minhashes]).astype(np.uint32)


def rensa_sign_lists(shingle_lists: list[list[str]]) -> np.ndarray:
    rows = []
    for shingles in shingle_lists:
        m = rensa.RMinHash(num_perm=NUM_PERM, seed=SEED)
        m.update(shingles)
        rows.append(m.digest())
    return np.array(rows, dtype=np.uint32)


def rensa_update_only(shingle_lists: list[list[str]]) -> None:
    """rensa's hashing alone: the digests are never read out into Python."""
    for shingles in shingle_lists:
        m = rensa.RMinHash(num_perm=NUM_PERM, seed=SEED)
        m.update(shingles)


def rensa_python_shingles(docs: list[str]) -> np.ndarray:
    return rensa_sign_lists([py_shingles(t) for t in docs])


def python_shingling(docs: list[str]) -> list[list[str]]:
    return [py_shingles(t) for t in docs]


# ---- measuring -----------------------------------------------------------------------------


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _release_memory() -> None:
    gc.collect()
    # Hand the freed heap back to the OS, so the next path's RSS growth is its own.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class Row:
    name: str
    docs: int
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    peaks_mib: list[float] = field(default_factory=list)
    mae: float | None = None
    subset: bool = False

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.median


@dataclass
class BenchPath:
    """One path to time: ``fn(arg)`` signs (or shingles) ``docs`` documents."""

    row: Row
    fn: Callable[[Any], Any]
    arg: Any
    exact: np.ndarray | None  # exact Jaccards of the MAE pairs over this path's sets


def time_once(path: BenchPath) -> Any:
    """Run a path once, adding its wall and CPU seconds and RSS high-water growth to its row.

    The RSS growth includes the returned matrix and the native allocations that tracemalloc
    would miss (rensa's)."""
    _release_memory()
    can_peak = _reset_peak_rss()
    rss0 = _status_kib("VmRSS")
    c0, t0 = time.process_time(), time.perf_counter()
    result = path.fn(path.arg)
    path.row.seconds.append(time.perf_counter() - t0)
    path.row.cpu_seconds.append(time.process_time() - c0)
    hwm = _status_kib("VmHWM")
    if can_peak and rss0 is not None and hwm is not None:
        path.row.peaks_mib.append((hwm - rss0) / 1024)
    return result


# ---- accuracy ------------------------------------------------------------------------------


def hash_sets(texts: list[str]) -> list[np.ndarray]:
    """The 5-gram hash set of each text, as simscope's paths sign it."""
    shingles = ngram_hashes(tokenize(texts), SHINGLE_WORDS, short="whole")
    o = shingles.offsets
    return [np.unique(shingles.hashes[o[i] : o[i + 1]]) for i in range(shingles.n_texts)]


def exact_jaccards_hashes(texts: list[str]) -> np.ndarray:
    sets = hash_sets(texts)
    out = []
    for a, b in zip(sets[0::2], sets[1::2], strict=True):
        union = np.union1d(a, b).size
        out.append(np.intersect1d(a, b, assume_unique=True).size / union if union else np.nan)
    return np.array(out)


def exact_jaccards_strings(texts: list[str]) -> np.ndarray:
    sets = [set(py_shingles(t)) for t in texts]
    out = []
    for a, b in zip(sets[0::2], sets[1::2], strict=True):
        union = len(a | b)
        out.append(len(a & b) / union if union else np.nan)
    return np.array(out)


def pair_mae(signatures: np.ndarray, exact: np.ndarray) -> float:
    """Mean |estimate - exact| over the pairs (rows 2i, 2i+1); pairs of two empty texts skipped."""
    n = exact.size
    est = np.mean(signatures[0 : 2 * n : 2] == signatures[1 : 2 * n : 2], axis=1)
    ok = ~np.isnan(exact)
    return float(np.mean(np.abs(est[ok] - exact[ok])))


# ---- where simscope's time goes ------------------------------------------------------------


def simscope_breakdown(docs: list[str], repeats: int) -> list[tuple[str, float]]:
    """Median CPU seconds of each step of the default (rensa) path, its signing steps done
    inline, and of the oph engine's signing for comparison.

    The per-text Python part of ``tokenize`` (NFKC of the non-ASCII texts, the join) is timed
    on its own as ``tokenize`` does it, so the tokenize row splits into it and the numpy part
    that follows (table lookup, word split, word hashes).
    """
    keys = ("python", "tokenize", "ngram_hashes", "digest", "to_rows", "fromiter", "oph")
    runs: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(repeats):
        _release_memory()
        acc = dict.fromkeys(keys, 0.0)
        for i in range(0, len(docs), BATCH_DOCS):
            batch = docs[i : i + BATCH_DOCS]
            t = [time.process_time()]
            normalized = [x if x.isascii() else unicodedata.normalize("NFKC", x) for x in batch]
            _ = "\x00".join(normalized) + "\x00"
            t.append(time.process_time())
            tokens = tokenize(batch)
            t.append(time.process_time())
            shingles: TokenBatch = ngram_hashes(tokens, SHINGLE_WORDS, short="whole")
            t.append(time.process_time())
            matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(
                shingles.hashes, shingles.offsets.astype(np.uint64), num_perm=NUM_PERM, seed=SEED
            )
            t.append(time.process_time())
            rows = matrix.to_rows()
            t.append(time.process_time())
            n = shingles.n_texts
            sig = np.fromiter(
                itertools.chain.from_iterable(rows), dtype=np.uint32, count=n * NUM_PERM
            ).reshape(n, NUM_PERM)
            t.append(time.process_time())
            sign(shingles, num_perm=NUM_PERM, seed=SEED, engine="oph")
            t.append(time.process_time())
            del rows, sig
            for k, t0, t1 in zip(keys, t[:-1], t[1:], strict=True):
                acc[k] += t1 - t0
        for k in keys:
            runs[k].append(acc[k])
    m = {k: statistics.median(v) for k, v in runs.items()}
    return [
        ("tokenize", m["tokenize"]),
        ("- NFKC of non-ASCII texts + join (Python, per text)", m["python"]),
        (
            "- lower case/word table lookup, word split, word hashes (numpy)",
            m["tokenize"] - m["python"],
        ),
        ("ngram_hashes (5-gram hashes, numpy)", m["ngram_hashes"]),
        ("rensa digest_matrix_from_flat_token_hashes", m["digest"]),
        ("to numpy: RMinHashDigestMatrix.to_rows (lists)", m["to_rows"]),
        ("to numpy: np.fromiter over the lists", m["fromiter"]),
        ("(oph engine instead of the three rensa rows: sign, numpy)", m["oph"]),
    ]


def cpu_description() -> str:
    """The CPU model and the instruction-set flags that numpy and rensa may use."""
    model, flags = platform.processor() or "unknown CPU", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", "unknown CPU", "x86_64"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
    wanted = ("sse4_2", "avx", "avx2", "fma", "bmi2", "avx512f", "avx512bw", "avx512vl")
    shown = [f for f in wanted if f in flags] + sorted(f for f in flags if f.startswith("asimd"))
    return f"{model}; flags: {' '.join(shown) or 'none listed'}"


# ---- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--docs", type=int, default=50_000, help="documents for the fast paths")
    parser.add_argument(
        "--slow-docs",
        type=int,
        default=None,
        help="documents for datasketch update / update_batch and simscope's datasketch engine "
        "(the first ones of the same list; default: all); e.g. 5000 for a quicker run",
    )
    parser.add_argument("--pairs", type=int, default=2_000, help="chosen/rejected pairs for MAE")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    pairs = load_pairs(DATA)
    if args.pairs > len(pairs):
        parser.error(f"--pairs: at most {len(pairs)} records in {DATA.name}")
    base = [t for pair in pairs for t in pair]  # chosen_0, rejected_0, chosen_1, ...
    docs = make_docs(base, args.docs, SEED)
    slow_n = min(args.slow_docs or len(docs), len(docs))
    if min(len(docs), slow_n) < 2 * args.pairs:
        parser.error(f"--docs and --slow-docs must be >= 2 * --pairs = {2 * args.pairs}")
    slow_docs = docs[:slow_n]
    words = np.array([len(t.split()) for t in docs])
    pair_texts = base[: 2 * args.pairs]
    exact_h = exact_jaccards_hashes(pair_texts)
    exact_s = exact_jaccards_strings(pair_texts)

    print(
        f"bench_lexical: {len(docs)} docs ({len(base)} HH-RLHF transcripts + perturbed copies), "
        f"{words.mean():.0f} words/doc (median {np.median(words):.0f}); num_perm={NUM_PERM}, "
        f"word {SHINGLE_WORDS}-gram shingles; repeats={args.repeats}"
    )
    print(f"CPU: {cpu_description()}")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"datasketch {datasketch.__version__}, rensa {rensa.RMinHash.ALGORITHM_VERSION} (alg.), "
        f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}"
    )
    print(
        f"MAE pairs: {exact_h.size} chosen/rejected pairs, exact Jaccard (hash sets) quartiles "
        f"{np.nanpercentile(exact_h, 25):.2f} / {np.nanmedian(exact_h):.2f} / "
        f"{np.nanpercentile(exact_h, 75):.2f}, mean {np.nanmean(exact_h):.2f}"
    )
    print("timing, seconds per repeat (paths in table order, round robin):", flush=True)

    prebuilt = python_shingling(docs)  # input of rensa bare signing, built untimed
    specs = [
        (
            "simscope rensa, default (tokenize+ngram_hashes+sign)",
            simscope_path("rensa"),
            docs,
            exact_h,
        ),
        ("simscope oph engine (numpy)", simscope_path("oph"), docs, exact_h),
        ("simscope datasketch engine", simscope_path("datasketch"), slow_docs, exact_h),
        ("datasketch MinHash.update per doc", datasketch_update, slow_docs, exact_s),
        ("datasketch MinHash.update_batch", datasketch_update_batch, slow_docs, exact_s),
        ("datasketch MinHash.bulk", datasketch_bulk, docs, exact_s),
        ("rensa RMinHash.update + Python shingling", rensa_python_shingles, docs, exact_s),
        ("Python shingling alone (no signing)", python_shingling, docs, None),
        ("rensa bare signing, pre-built shingle lists", rensa_sign_lists, prebuilt, exact_s),
        ("rensa update alone, pre-built lists, no digest", rensa_update_only, prebuilt, None),
    ]
    paths = [
        BenchPath(Row(name, len(arg), subset=len(arg) < len(docs)), fn, arg, exact)
        for name, fn, arg, exact in specs
    ]
    for p in paths:  # warm-up: imports, caches, first-touch page faults
        p.fn(p.arg[:BATCH_DOCS])
    # Round robin, so that load from other processes falls on every path alike.
    for r in range(args.repeats):
        for p in paths:
            result = time_once(p)
            if r == args.repeats - 1 and p.exact is not None:
                p.row.mae = pair_mae(result, p.exact)
            del result
        print(
            f"  repeat {r + 1}: "
            + ", ".join(f"{p.row.seconds[-1]:.2f}" for p in paths)
            + f" s; load avg {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    del prebuilt
    rows = [p.row for p in paths]

    def cpu_ratio(r: Row) -> float:
        return r.docs / statistics.median(r.cpu_seconds)

    bulk = next(r for r in rows if r.name == "datasketch MinHash.bulk")
    print()
    print(
        "| path | docs | median s | CPU s | docs/s | x ds.bulk | x ds.bulk (CPU) "
        "| MAE vs exact J | peak RSS Δ MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        docs_col = f"{r.docs}*" if r.subset else str(r.docs)
        mae = f"{r.mae:.4f}" if r.mae is not None else "—"
        mem = f"{max(r.peaks_mib):.0f}" if r.peaks_mib else "n/a"
        cpu = statistics.median(r.cpu_seconds)
        print(
            f"| {r.name} | {docs_col} | {r.median:.2f} | {cpu:.2f} | {r.docs_per_s:,.0f} | "
            f"{r.docs_per_s / bulk.docs_per_s:.1f} | {cpu_ratio(r) / cpu_ratio(bulk):.1f} | "
            f"{mae} | {mem} |"
        )
    if slow_n < len(docs):
        print(
            f"\n* timed on the first {slow_n} docs of the same list (--slow-docs); docs/s and "
            "the ratio are comparable with the other rows, seconds are not."
        )
    print(
        "\nMAE: mean |estimate - exact Jaccard| over the pairs; exact over the same sets each path "
        "signs (5-gram hashes for simscope, shingle strings for the Python paths).\n"
        "CPU s: median process CPU time (user + sys) of a repeat; well below the wall time "
        "means other processes took the CPU; x ds.bulk (CPU) is the "
        "ratio of docs per CPU second, steadier on a shared machine.\n"
        "Peak memory: growth of the process's RSS high-water mark (VmHWM) over one repeat, "
        "largest of the repeats, freed memory trimmed first, output matrix included "
        "(tracemalloc would miss rensa's native allocations)."
    )

    simscope_row = rows[0]
    steps = simscope_breakdown(docs, args.repeats)
    total = sum(v for k, v in steps if not k.startswith(("-", "(")))
    end_to_end = statistics.median(simscope_row.cpu_seconds)
    print(
        f"\nwhere simscope's default path spends its CPU time ({len(docs)} docs, median of "
        f"{args.repeats}; path timed end to end at {end_to_end:.2f} CPU s; shares of the "
        "default path's steps):"
    )
    print("| step | s | share |")
    print("|---|---:|---:|")
    for k, v in steps:
        print(f"| {k} | {v:.3f} | {100 * v / total:.0f}% |")
    print(f"| sum of the default path's steps | {total:.3f} | 100% |")


if __name__ == "__main__":
    main()
