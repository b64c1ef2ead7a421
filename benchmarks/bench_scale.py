"""Scale-out: building a corpus's lexical indexes at 10k -> 100k -> 1M documents (or its
semantic index, ``--work semantic``), in memory vs the local engine vs Ray with 1 and 2 workers.

Work measured, the same for every path: the n-gram index (8- and 13-gram sets, hashed
features) and the MinHash index at one window scale (``--scale``, 64 words), of one corpus:

- ``memory``: the lexical stage's own builders on the whole corpus as one polars frame (the
  plain alternative: everything in one process and in memory);
- ``local``: the lexical stage's sharded builder (``simscope.lexical.sharded``) on the local
  engine, out of core from parquet shards;
- ``ray-1`` / ``ray-2``: the same with the Ray engine on a local cluster of 1 / 2 CPUs.

Each run is a fresh subprocess, so peak memory is its own: ``peak PSS`` sums the proportional
set size of the run's whole process tree (driver, raylet, GCS, workers), sampled every
0.25 s; ``driver`` is the driver's own peak RSS. Ray's start (``ray.init``) is timed apart and
not in ``docs/s``. ``same`` says whether the arrays are byte-identical to ``memory``'s (or to
``local``'s where ``memory`` did not run).

Data: HH-RLHF harmless-base transcripts (chosen and rejected), repeated with seeded word
drops and adjacent swaps up to the size, written once as parquet shards of 131,072 rows (row
groups of 2,048; work units of ``--unit-docs`` 4,096) under ``--workdir``. ``CPU ms/doc`` is
the CPU time of the whole process tree per document, start included: on a shared machine it
is steadier than wall time (``load`` is the 1-minute load average during the run).

``--work semantic`` measures the semantic index instead (chunk embeddings with the default
encoder, FAISS, k-NN radii; ``--scale`` is then the chunk length): ``memory`` is
:func:`simscope.semantic.index.build_semantic_index`, the engine paths
:func:`simscope.semantic.sharded.build_sharded_semantic_index` (an actor pool, one encoder
per worker); ``same`` is then the worst cosine between a path's vectors and ``memory``'s (the
chunks must be identical).

Run: ``python benchmarks/bench_scale.py --sizes 10000 100000 1000000 --repeats 3`` and
``python benchmarks/bench_scale.py --work semantic --sizes 2000 10000 --unit-docs 512``
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import xxhash

DATA = (
    Path(__file__).resolve().parents[1] / "tests" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
)
PATHS = ("memory", "local", "ray-1", "ray-2")
MODEL = "bench/model"


# ---- data ------------------------------------------------------------------------------------


def make_corpus(n_docs: int, seed: int) -> pl.DataFrame:
    """``n_docs`` documents: HH transcripts, each copy after the first perturbed (seeded)."""
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    base = [r[k] for r in records for k in ("chosen", "rejected")]
    rng = np.random.default_rng(seed)
    texts = []
    for i in range(n_docs):
        text = base[i % len(base)]
        if i >= len(base):
            words = text.split()
            if len(words) > 3:
                k = int(rng.integers(len(words) - 1))
                if rng.random() < 0.5:
                    del words[k]
                else:
                    words[k], words[k + 1] = words[k + 1], words[k]
            text = " ".join(words)
        texts.append(text)
    return pl.DataFrame(
        {
            "model": MODEL,
            "doc_id": [f"doc{i:010d}" for i in range(n_docs)],
            "text": texts,
            "origin": "imported",
        }
    )


def ensure_shards(workdir: Path, n_docs: int, seed: int) -> Path:
    from simscope.engine import write_corpus_shards

    directory = workdir / f"corpus-{n_docs}-seed{seed}"
    done = directory / "DONE"
    if not done.exists():
        corpus = make_corpus(n_docs, seed)
        write_corpus_shards(corpus, directory, rows_per_shard=131072, row_group_rows=2048)
        done.write_text(
            json.dumps({"docs": n_docs, "bytes": int(corpus["text"].str.len_bytes().sum())})
        )
    return directory


# ---- one run (child process) -----------------------------------------------------------------


def run_child(
    path: str, shards_dir: Path, out_root: Path, scale: int, unit_docs: int, work: str
) -> dict[str, Any]:
    if work == "semantic":
        return run_semantic_child(path, shards_dir, out_root, scale, unit_docs)
    from simscope.engine import CorpusShards
    from simscope.lexical.index import LexicalConfig, build_minhash_index, build_ngram_index
    from simscope.lexical.sharded import build_sharded_lexical_indexes

    cfg = LexicalConfig()
    start_s = 0.0
    if path == "memory":
        t0 = time.perf_counter()
        corpus = pl.read_parquet(sorted(shards_dir.glob("*.parquet")))
        ngram = build_ngram_index(corpus, out_root, cfg, rebuild=True, progress=False)
        minhash = build_minhash_index(corpus, out_root, cfg, scale, rebuild=True, progress=False)
        build_s = time.perf_counter() - t0
        rows = corpus.height
        dirs = [ngram.path, minhash.path]
        del corpus
    else:
        engine, start_s = _started_engine(path, unit_docs)
        t0 = time.perf_counter()
        built = build_sharded_lexical_indexes(
            CorpusShards.from_path(shards_dir),
            out_root,
            cfg,
            engine,
            scales=(scale,),
            rebuild=True,
            progress=False,
        )
        build_s = time.perf_counter() - t0
        engine.close()
        assert built.ngram is not None
        ngram, minhash = built.ngram, built.minhash[scale]
        rows = int(ngram.manifest["rows"])
        dirs = [ngram.path, minhash.path]
    peak_rss = _self_peak_rss_mb()
    windows, ngrams_13 = int(minhash.manifest["rows"]), int(ngram.manifest["ngram_counts"]["13"])
    del ngram, minhash
    # The arrays' files, streamed (identical .npy bytes means identical arrays and headers).
    digest = xxhash.xxh3_128()
    for d in dirs:
        for f in sorted(d.glob("*.npy")):
            with open(f, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    digest.update(block)
    return {
        "rows": rows,
        "windows": windows,
        "ngrams_13": ngrams_13,
        "start_s": start_s,
        "build_s": build_s,
        "digest": digest.hexdigest(),
        "driver_peak_rss_mb": peak_rss,
    }


def _started_engine(path: str, unit_docs: int) -> tuple[Any, float]:
    """The engine a path names, and its fixed cost: Ray's start and the first Ray Data
    execution (workers start, import Ray Data), paid once per session whatever the size."""
    from simscope.engine import EngineConfig, make_engine

    if path == "local":
        cfg = EngineConfig(kind="local", unit_docs=unit_docs)
    else:
        cfg = EngineConfig(kind="ray", num_cpus=int(path.split("-")[1]), unit_docs=unit_docs)
    t0 = time.perf_counter()
    engine = make_engine(cfg)
    engine.map_units(_noop, [0, 1], desc="warm-up", progress=False)
    return engine, time.perf_counter() - t0


def run_semantic_child(
    path: str, shards_dir: Path, out_root: Path, chunk_words: int, unit_docs: int
) -> dict[str, Any]:
    """The semantic index (chunk embeddings + FAISS + k-NN radii) instead of the lexical ones.

    Every path starts with an empty embedding cache; the encoder's load (and, on Ray, each
    actor's) is inside ``build s``. The vectors are saved beside the indexes' root so the
    parent can compare them with ``memory``'s (cosine), since embeddings batched differently
    agree within float tolerance, not bit for bit.
    """
    from simscope.engine import CorpusShards
    from simscope.semantic.config import SemanticConfig
    from simscope.semantic.index import build_semantic_index
    from simscope.semantic.sharded import build_sharded_semantic_index

    cfg = SemanticConfig()
    start_s = 0.0
    if path == "memory":
        t0 = time.perf_counter()
        corpus = pl.read_parquet(sorted(shards_dir.glob("*.parquet")))
        index = build_semantic_index(
            corpus, out_root, cfg, chunk_words=chunk_words, rebuild=True, progress=False
        )
        build_s = time.perf_counter() - t0
        del corpus
    else:
        engine, start_s = _started_engine(path, unit_docs)
        t0 = time.perf_counter()
        index = build_sharded_semantic_index(
            CorpusShards.from_path(shards_dir),
            out_root,
            cfg,
            engine,
            chunk_words=chunk_words,
            rebuild=True,
            progress=False,
        )
        build_s = time.perf_counter() - t0
        engine.close()
    peak_rss = _self_peak_rss_mb()
    vectors_file = out_root.parent / f"vectors-{path}-{os.getpid()}.npy"
    np.save(vectors_file, np.asarray(index.vectors))
    digest = xxhash.xxh3_128(np.ascontiguousarray(index.chunk_doc).tobytes())
    return {
        "rows": int(index.manifest["docs"]),
        "windows": int(index.chunk_doc.size),
        "start_s": start_s,
        "build_s": build_s,
        "digest": digest.hexdigest(),
        "vectors": str(vectors_file),
        "driver_peak_rss_mb": peak_rss,
    }


def _noop(unit: int) -> dict[str, int]:
    return {"unit": unit}


def _self_peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---- memory sampling of a process tree ---------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _tree_pss_mb(root: int, cpu: dict[int, float]) -> float:
    """PSS of ``root`` and its descendants; records each one's CPU seconds in ``cpu``."""
    kids = _children_map()
    stack, total = [root], 0.0
    tick = os.sysconf("SC_CLK_TCK")
    while stack:
        pid = stack.pop()
        stack += kids.get(pid, [])
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
                    break
        except OSError:
            pass
    return total


def run_measured(args: list[str]) -> tuple[dict[str, Any], float, float]:
    """Run one child; return its result, the peak PSS of its tree (MiB) and the tree's CPU
    seconds (each process's last sample, so the child's final teardown is not counted)."""
    proc = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    peak = 0.0
    cpu: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_pss_mb(proc.pid, cpu))
            stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"run {args} failed with exit code {proc.returncode}")
    return json.loads(out.decode().strip().splitlines()[-1]), peak, sum(cpu.values())


# ---- table -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=int, default=64, help="MinHash window (words)")
    parser.add_argument("--unit-docs", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/simscope-bench-scale"))
    parser.add_argument(
        "--max-repeat-seconds",
        type=float,
        default=120.0,
        help="after a run longer than this, do not repeat it",
    )
    parser.add_argument(
        "--work",
        choices=("lexical", "semantic"),
        default="lexical",
        help="lexical: n-gram + MinHash indexes; semantic: embeddings + FAISS "
        "(--scale is then the chunk length in words)",
    )
    parser.add_argument("--child", nargs=2, metavar=("PATH", "SHARDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, shards = args.child
        out_root = args.workdir / f"indexes-{path}-{os.getpid()}"
        try:
            result = run_child(path, Path(shards), out_root, args.scale, args.unit_docs, args.work)
        finally:
            import shutil

            shutil.rmtree(out_root, ignore_errors=True)
        print(json.dumps(result))
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"# {os.cpu_count()} CPUs; "
        + (
            f"n-grams (8, 13) + MinHash w{args.scale}; "
            if args.work == "lexical"
            else f"embeddings of w{args.scale} chunks + FAISS; "
        )
        + f"unit_docs={args.unit_docs}; median of up to {args.repeats}",
        file=sys.stderr,
    )
    header = (
        f"| {'docs':>9} | {'path':<6} | {'build s':>8} | {'docs/s':>8} | {'vs memory':>9} | "
        f"{'start s':>7} | {'CPU ms/doc':>10} | {'peak PSS MiB':>12} | {'driver MiB':>10} | "
        f"{'load':>4} | {'same':>4} | runs |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for size in args.sizes:
        t0 = time.perf_counter()
        shards = ensure_shards(args.workdir, size, args.seed)
        print(f"# corpus {size}: ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        results: dict[str, dict[str, Any]] = {}
        for path in args.paths:
            runs = []
            for _ in range(args.repeats):
                child_args = [
                    "--child",
                    path,
                    str(shards),
                    "--workdir",
                    str(args.workdir),
                    "--scale",
                    str(args.scale),
                    "--unit-docs",
                    str(args.unit_docs),
                    "--work",
                    args.work,
                ]
                load0 = float(Path("/proc/loadavg").read_text().split()[0])
                res, peak, cpu_s = run_measured(child_args)
                res["peak_pss_mb"] = peak
                res["cpu_s"] = cpu_s
                res["load"] = (load0 + float(Path("/proc/loadavg").read_text().split()[0])) / 2
                runs.append(res)
                print(f"# {size} {path}: {res}", file=sys.stderr)
                if res["build_s"] > args.max_repeat_seconds:
                    break
            med = {
                k: statistics.median(r[k] for r in runs)
                for k in (
                    "build_s",
                    "start_s",
                    "peak_pss_mb",
                    "driver_peak_rss_mb",
                    "cpu_s",
                    "load",
                )
            }
            med["digest"] = runs[0]["digest"]
            med["vectors"] = runs[0].get("vectors")
            med["consistent"] = len({r["digest"] for r in runs}) == 1
            med["runs"] = len(runs)
            results[path] = med
        ref = results.get("memory", results.get("local"))
        for path, r in results.items():
            same = "yes" if r["consistent"] and ref and r["digest"] == ref["digest"] else "NO"
            if same == "yes" and args.work == "semantic" and ref is not None:
                # the same chunks; embeddings agree within float tolerance: the worst cosine
                mine, theirs = np.load(r["vectors"]), np.load(ref["vectors"])
                same = f"{float(np.min(np.sum(mine * theirs, axis=1))):.5f}"
            ratio = (
                (results["memory"]["build_s"] / r["build_s"])
                if "memory" in results
                else float("nan")
            )
            print(
                f"| {size:>9,} | {path:<6} | {r['build_s']:>8.2f} | {size / r['build_s']:>8,.0f} | "
                f"{ratio:>9.2f} | {r['start_s']:>7.1f} | {1000 * r['cpu_s'] / size:>10.2f} | "
                f"{r['peak_pss_mb']:>12,.0f} | {r['driver_peak_rss_mb']:>10,.0f} | "
                f"{r['load']:>4.1f} | {same:>4} | {r['runs']:>4} |",
                flush=True,
            )
        for vectors in args.workdir.glob("vectors-*.npy"):  # the semantic runs' outputs
            vectors.unlink()


if __name__ == "__main__":
    main()
