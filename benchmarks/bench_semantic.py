"""Benchmark the semantic stage: embedding throughput and agreement, cache, FAISS search.

Runs, in one process and on the same texts (HH-RLHF chosen transcripts, "long", and single
HH-RLHF assistant replies, "short"):

- sentence-transformers' default ``encode`` (fp32, batch 32): the baseline;
- the transformer runtimes simscope can pick (torch bf16 weights; OpenVINO fp32 and bf16, fed
  in order of token count, batch 16), each truncating at the model window like the baseline,
  with their cosine agreement to it; the one ``semantic.backend = "auto"`` measured and kept
  for this machine is marked;
- simscope's full ``Embedder.embed`` (the measured runtime, long texts windowed and pooled
  rather than truncated, duplicates removed) on an empty cache, and again on the warm cache;
- the static encoder (model2vec, distilled from the same model; ``semantic.encoder =
  "static"``): throughput only, since its vectors live in another space (no cosine to the
  baseline): its quality is its recovery in bench_recovery;
- FAISS exact (IndexFlatIP) vs IVF (simscope's index above the cut-off) and HNSW, at a size
  above the exact cut-off: build time,
  query time and recall@10 against exact. The vectors are blends of the real embeddings from
  the run above (to reach ``--faiss-rows``; no larger real set is bundled).

Prints one table (median of ``--repeats``). Usage::

    .venv/bin/python benchmarks/bench_semantic.py --repeats 3
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import faiss

from simscope.semantic.choice import choice_path, resolve
from simscope.semantic.config import SemanticConfig
from simscope.semantic.embed import (
    Embedder,
    StaticEmbedder,
    _compile_openvino,
    _load_sentence_transformer,
    cpu_has_bf16,
)
from simscope.semantic.index import ivf_nprobe, make_faiss_index

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def load_texts(n_long: int, n_short: int) -> dict[str, list[str]]:
    with gzip.open(DATA / "hh-rlhf-harmless-base-test.jsonl.gz", "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    long = [r["chosen"].strip() for r in records[:n_long]]
    replies = []
    for r in records:
        reply = r["chosen"].rsplit("\n\nAssistant:", 1)[-1].strip()
        if reply:
            replies.append(reply)
    return {"long": long, "short": replies[:n_short]}


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def run_interleaved(
    methods: list[tuple[str, Callable[[], np.ndarray]]], repeats: int
) -> dict[str, tuple[float, float, np.ndarray]]:
    """Median wall and CPU seconds of each method, and its last output.

    Methods take turns within each repeat, so load from other processes on a shared machine
    falls on all of them alike.
    """
    wall: dict[str, list[float]] = {name: [] for name, _ in methods}
    cpu: dict[str, list[float]] = {name: [] for name, _ in methods}
    out: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, fn in methods:
            t, c = time.perf_counter(), time.process_time()
            out[name] = fn()
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    return {
        name: (statistics.median(wall[name]), statistics.median(cpu[name]), out[name])
        for name, _ in methods
    }


def embed_fresh(cfg: SemanticConfig, data: list[str], root: Path) -> np.ndarray:
    """simscope's whole path on an empty cache under ``root`` (emptied first)."""
    shutil.rmtree(root, ignore_errors=True)
    e = Embedder(cfg)
    return e.embed(data, e.cache(root), progress=False)


def embed_cached(cfg: SemanticConfig, data: list[str], root: Path) -> np.ndarray:
    """The same texts again through a new Embedder: every vector comes from disk."""
    e = Embedder(cfg)
    out = e.embed(data, e.cache(root), progress=False)
    assert e.texts_encoded == 0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-long", type=int, default=300)
    ap.add_argument("--n-short", type=int, default=1000)
    ap.add_argument("--faiss-rows", type=int, default=100_000)
    ap.add_argument("--faiss-queries", type=int, default=2000)
    ap.add_argument(
        "--faiss-only", action="store_true", help="skip the encoder table (embed --n-short)"
    )
    ap.add_argument(
        "--indexes",
        type=Path,
        default=None,
        help="an indexes directory holding the measured choice and the static encoder "
        "(default: a scratch one: the choice is measured and the static encoder distilled)",
    )
    args = ap.parse_args()
    if args.faiss_only:
        short = load_texts(0, args.n_short)["short"]
        faiss_table(Embedder(SemanticConfig()).encode(short, progress=False), args)
        return
    texts = load_texts(args.n_long, args.n_short)
    rows: list[tuple[str, str, int, float, float, float, str]] = []
    scratch = Path(tempfile.mkdtemp())
    indexes = args.indexes or scratch / "indexes"
    t = time.perf_counter()
    cfg = resolve(SemanticConfig(), indexes)  # the runtime "auto" measured on this machine
    choice_s = time.perf_counter() - t
    chosen = f"openvino {cfg.precision}" if cfg.backend == "openvino" else f"torch {cfg.precision}"
    path = Embedder(cfg).path
    st_fp32 = _load_sentence_transformer(path, "fp32")
    st_bf16 = _load_sentence_transformer(path, "bf16")
    t = time.perf_counter()
    _compile_openvino(path, "bf16")
    _compile_openvino(path, "fp32")
    setup_s = time.perf_counter() - t
    base = SemanticConfig(encoder="transformer")
    ov = {
        "fp32": Embedder(replace(base, precision="fp32"), backend="openvino"),
        "bf16": Embedder(replace(base, precision="bf16"), backend="openvino"),
    }
    for e in ov.values():  # warm up
        e._encode_pieces(["warm up"] * 8, False)
    st_fp32.encode(["warm up"] * 8)
    st_bf16.encode(["warm up"] * 8)
    t = time.perf_counter()
    static = StaticEmbedder(replace(base, encoder="static"), indexes)
    static_s = time.perf_counter() - t
    static.encode(["warm up"] * 8, progress=False)
    all_vectors = []
    for kind, data in texts.items():
        root = scratch / kind
        baseline = "sentence-transformers encode fp32 (baseline)"
        methods: list[tuple[str, Callable[[], np.ndarray]]] = [
            (baseline, lambda d=data: st_fp32.encode(d, batch_size=32)),
            (
                "torch bf16 weights",
                lambda d=data: (
                    st_bf16.encode(d, batch_size=32, convert_to_tensor=True).float().numpy()
                ),
            ),
            (
                "openvino fp32" + (" (auto here)" if chosen == "openvino fp32" else ""),
                lambda d=data: ov["fp32"]._encode_pieces(d, False),
            ),
            (
                "openvino bf16" + (" (auto here)" if chosen == "openvino bf16" else ""),
                lambda d=data: ov["bf16"]._encode_pieces(d, False),
            ),
            (
                "simscope embed, empty cache (windowed)",
                lambda d=data, r=root: embed_fresh(cfg, d, r),
            ),
            ("simscope embed, warm cache (re-run)", lambda d=data, r=root: embed_cached(cfg, d, r)),
            (
                "static encoder (model2vec, 256 dims)",
                lambda d=data: static.encode(d, progress=False),
            ),
        ]
        results = run_interleaved(methods, args.repeats)
        base_wall, base_cpu, base = results[baseline]
        base = unit(base)
        all_vectors.append(base)
        for name, (wall, cpu, vectors) in results.items():
            if name.startswith("static encoder"):
                quality = "n/a: another vector space; judged by recovery (bench_recovery)"
            elif name.startswith("simscope embed, empty"):
                quality = "n/a: pools all tokens, baseline truncates"
            elif name.startswith("simscope embed, warm"):
                quality = "same vectors as the empty-cache run"
            else:
                cos = np.sum(unit(vectors) * base, axis=1)
                quality = f"{cos.mean():.5f} (min {cos.min():.4f})"
            rows.append((kind, name, len(data), wall, base_wall / wall, base_cpu / cpu, quality))
    shutil.rmtree(scratch / "long", ignore_errors=True)
    shutil.rmtree(scratch / "short", ignore_errors=True)
    if args.indexes is None:
        shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"# {cpu_flags()}; /proc/cpuinfo lists native bf16: {cpu_has_bf16()} (printed, not "
        f"used); runtime measured for 'auto': {chosen} ({choice_s:.1f} s, kept in "
        f"{choice_path(cfg, indexes).name}); openvino convert+compile (once per process): "
        f"{setup_s:.1f} s; static encoder load or distil: {static_s:.1f} s; "
        f"median of {args.repeats}",
        file=sys.stdout,
    )
    print()
    print(
        "| texts | method | n | median wall s | texts/s | speed-up (wall) | speed-up (CPU s) "
        "| cosine to baseline (mean, min) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind, name, n, wall, ratio, cpu_ratio, quality in rows:
        print(
            f"| {kind} | {name} | {n} | {wall:.3f} | {n / wall:.1f} | {ratio:.2f}x "
            f"| {cpu_ratio:.2f}x | {quality} |"
        )
    print()
    faiss_table(np.concatenate(all_vectors), args)


def cpu_flags() -> str:
    """The CPU model and the vector/matrix extensions it reports."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")),
        "?",
    )
    flags = next(
        (ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []
    )
    wanted = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "f16c", "vnni")))
    return f"CPU {model}, {os.cpu_count()} cores, flags {' '.join(wanted) or '-'}"


def faiss_table(real: np.ndarray, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    n, d = args.faiss_rows, real.shape[1]
    data = blend(real, n, rng)
    queries = blend(real, args.faiss_queries, rng)
    k = 10
    results: list[tuple[str, float, float, float]] = []
    truth = None
    nlist = round(4 * np.sqrt(n))
    configs: list[tuple[str, Callable[[], faiss.Index]]] = [
        ("exact IndexFlatIP", lambda: _filled(faiss.IndexFlatIP(d), data)),
        (
            f"IVF-Flat nlist={nlist} nprobe={ivf_nprobe(nlist, SemanticConfig())} "
            "(simscope above cut-off)",
            lambda: _ivf(data),
        ),
        ("HNSW M=32 efC=80 efS=128", lambda: _filled(_hnsw(d), data)),
    ]
    for name, make in configs:
        build, search, recall = [], [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            index = make()
            build.append(time.perf_counter() - t)
            t = time.perf_counter()
            _, ids = index.search(queries, k)
            search.append(time.perf_counter() - t)
            if truth is None:
                truth = ids
            recall.append(
                float(np.mean([len(set(a) & set(b)) / k for a, b in zip(truth, ids, strict=True)]))
            )
        results.append(
            (name, statistics.median(build), statistics.median(search), statistics.median(recall))
        )
    print(
        f"FAISS, {n} rows x {d} dims (Dirichlet blends of 3 real embeddings + noise), "
        f"{args.faiss_queries} queries, k={k}"
    )
    print()
    print("| index | build s | search s | queries/s | recall@10 vs exact |")
    print("|---|---|---|---|---|")
    for name, b, s, r in results:
        print(f"| {name} | {b:.2f} | {s:.3f} | {args.faiss_queries / s:.0f} | {r:.4f} |")


def blend(real: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit vectors spread between real embeddings: Dirichlet mixtures of 3 real
    vectors plus a little noise (noisy copies of single vectors would make near neighbours
    trivially their siblings and recall meaningless)."""
    picks = rng.integers(0, real.shape[0], size=(n, 3))
    weights = rng.dirichlet(np.ones(3), size=n).astype(np.float32)
    mixed = np.einsum("nk,nkd->nd", weights, real[picks])
    return unit(mixed + rng.normal(scale=0.01, size=mixed.shape).astype(np.float32))


def _hnsw(d: int) -> faiss.Index:
    index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.hnsw.efSearch = 128
    return index


def _ivf(data: np.ndarray) -> faiss.Index:
    return make_faiss_index(data, "ivf-ip", SemanticConfig())  # trains and adds


def _filled(index: faiss.Index, data: np.ndarray) -> faiss.Index:
    index.add(data)
    return index


if __name__ == "__main__":
    main()
