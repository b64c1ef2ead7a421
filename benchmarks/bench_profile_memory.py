"""Peak memory of a lexical profile as the preference set grows (10k -> 1M pairs, one corpus).

Work measured: ``simscope.overlap.profile.build_profile`` with the lexical scorer only (no
semantic, no topics), all three slices, ``--n-boot`` bootstrap replicates, against one probe
corpus of ``--docs`` documents whose indexes are built beforehand (a warm-up run per source
tree, not timed): what grows with the preference set is the preference side alone.

Paths: ``streamed`` is this checkout; ``before`` (only with ``--before-src DIR``) is another
simscope source tree, e.g. a ``git worktree`` of the commit before the preference side was
streamed, run on the same inputs. Each run is a fresh subprocess; ``peak RSS`` is its VmHWM
(one process, native allocations included), ``inputs RSS`` its RSS once the preference
frame and the corpus are read (parquet), so ``peak - inputs`` is the profile's own. ``KiB/pair``:
the peak's growth per added pair since the previous size of the same path. ``same``:
the Profile equals ``before``'s at that size (``polars.testing.assert_frame_equal``, exact).

Data: the corpus is ``bench_scale.make_corpus`` (HH-RLHF harmless-base transcripts with
seeded one-word drops or swaps, 121 words per document on average). Preference pairs: the
same file's 2,312 records split into prompt (the transcript up to the last "Assistant:"),
chosen and rejected response; from the second round on each text has one seeded word drop or
adjacent swap, so the texts are not copies of each other (but most have near-duplicates in
the corpus, which is the expensive case for the near-duplicate search). Written once as
parquet under ``--workdir``.

Run: ``python benchmarks/bench_profile_memory.py --sizes 10000 100000 1000000``
(``--before-src /path/to/old/checkout --before-max 100000`` adds the old path's rows).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

DATA = (
    Path(__file__).resolve().parents[1] / "tests" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
)
ROOT = Path(__file__).resolve().parents[1]
MODEL = "bench/model"


# ---- data ------------------------------------------------------------------------------------


def _split(transcript: str) -> tuple[str, str]:
    i = transcript.rfind("\n\nAssistant:") + len("\n\nAssistant:")
    return transcript[:i], transcript[i:].strip()


def _edit(text: str, rng: np.random.Generator) -> str:
    """``text`` with one seeded word dropped or two adjacent words swapped."""
    words = text.split()
    if len(words) < 4:
        return text
    k = int(rng.integers(len(words) - 1))
    if rng.random() < 0.5:
        del words[k]
    else:
        words[k], words[k + 1] = words[k + 1], words[k]
    return " ".join(words)


def make_prefs(n_pairs: int, seed: int) -> pl.DataFrame:
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    base = []
    for r in records:
        prompt, chosen = _split(r["chosen"])
        _, rejected = _split(r["rejected"])
        base.append((prompt, chosen, rejected))
    rng = np.random.default_rng(seed)
    cols: dict[str, list[str]] = {"prompt": [], "chosen": [], "rejected": []}
    for i in range(n_pairs):
        row = base[i % len(base)]
        for name, text in zip(cols, row, strict=True):
            cols[name].append(text if i < len(base) else _edit(text, rng))
    return pl.DataFrame(
        {
            "pair_id": [f"p{i:08d}" for i in range(n_pairs)],
            **cols,
            "source": [f"synthetic:{i + 1}" for i in range(n_pairs)],
        }
    )


def ensure_inputs(workdir: Path, n_pairs: int, n_docs: int, seed: int) -> tuple[Path, Path]:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_scale import make_corpus

    corpus = workdir / f"corpus-{n_docs}-seed{seed}.parquet"
    if not corpus.exists():
        make_corpus(n_docs, seed).write_parquet(corpus.with_suffix(".tmp"))
        os.replace(corpus.with_suffix(".tmp"), corpus)
    prefs = workdir / f"prefs-{n_pairs}-seed{seed}.parquet"
    if not prefs.exists():
        make_prefs(n_pairs, seed).write_parquet(prefs.with_suffix(".tmp"))
        os.replace(prefs.with_suffix(".tmp"), prefs)
    return prefs, corpus


# ---- one run (child process) -----------------------------------------------------------------


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_child(
    prefs_path: Path, corpus_path: Path, index_root: Path, out: Path, n_boot: int, rebuild: bool
) -> Any:
    from simscope.overlap.profile import ProfileConfig, build_profile

    prefs = pl.read_parquet(prefs_path)
    corpus = pl.read_parquet(corpus_path)
    inputs_rss = _status_mib("VmRSS")
    c0, t0 = time.process_time(), time.perf_counter()
    result = build_profile(
        prefs,
        {MODEL: corpus},
        index_root,
        ProfileConfig(n_boot=n_boot),
        rebuild=rebuild,
        progress=False,
    )
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _status_mib("VmHWM")
    result.profile.write_parquet(out)
    import simscope

    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "peak_rss_mib": peak,
        "inputs_rss_mib": inputs_rss,
        "rows": result.profile.height,
        "simscope": str(Path(simscope.__file__).parent),
    }


def run_measured(src: Path, args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"run {args} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if Path(result["simscope"]).resolve() != (src / "simscope").resolve():
        raise RuntimeError(f"imported {result['simscope']}, expected {src / 'simscope'}")
    return result


# ---- table -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--docs", type=int, default=20_000, help="corpus documents")
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--before-src", type=Path, help="another simscope checkout to compare")
    parser.add_argument(
        "--before-max", type=int, default=100_000, help="largest size run with --before-src"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/simscope-bench-profile"))
    parser.add_argument("--child", nargs=4, metavar=("PREFS", "CORPUS", "INDEXES", "OUT"))
    parser.add_argument("--rebuild", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        prefs, corpus, indexes, out = map(Path, args.child)
        print(json.dumps(run_child(prefs, corpus, indexes, out, args.n_boot, args.rebuild)))
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    sources = {"streamed": ROOT}
    if args.before_src is not None:
        sources = {"before": args.before_src.resolve(), **sources}
    print(
        f"# {os.cpu_count()} CPUs; lexical profile, 3 slices, n_boot={args.n_boot}, "
        f"corpus of {args.docs} docs; load {os.getloadavg()[0]:.1f}",
        file=sys.stderr,
    )
    header = (
        "| pairs | path | profile s | CPU s | peak RSS MiB | inputs RSS MiB | "
        "KiB/pair | load | same |"
    )
    print(header)
    print("|---:|---|---:|---:|---:|---:|---:|---:|---|")
    previous: dict[str, tuple[int, float]] = {}
    warmed: set[str] = set()
    for size in args.sizes:
        prefs, corpus = ensure_inputs(args.workdir, size, args.docs, args.seed)
        outs: dict[str, Path] = {}
        for name, src in sources.items():
            if name == "before" and size > args.before_max:
                continue
            indexes = args.workdir / f"indexes-{name}"
            if name not in warmed:  # build the corpus's indexes afresh, untimed
                warm, _ = ensure_inputs(args.workdir, 2_000, args.docs, args.seed)
                warm_out = str(args.workdir / "warm.parquet")
                warm_args = ["--child", str(warm), str(corpus), str(indexes), warm_out]
                run_measured(src, [*warm_args, "--rebuild", "--n-boot", "0"])
                warmed.add(name)
            out = args.workdir / f"profile-{name}-{size}.parquet"
            load0 = os.getloadavg()[0]
            r = run_measured(
                src,
                [
                    "--child",
                    str(prefs),
                    str(corpus),
                    str(indexes),
                    str(out),
                    "--n-boot",
                    str(args.n_boot),
                ],
            )
            outs[name] = out
            same = "—"
            if name != "before" and "before" in outs:
                from polars.testing import assert_frame_equal

                try:
                    assert_frame_equal(
                        pl.read_parquet(out), pl.read_parquet(outs["before"]), check_exact=True
                    )
                    same = "yes"
                except AssertionError:
                    same = "NO"
            # marginal growth of the peak per pair since the previous size (the corpus side,
            # the same at every size, cancels out)
            per_pair = "—"
            if name in previous:
                size0, peak0 = previous[name]
                per_pair = f"{1024 * (r['peak_rss_mib'] - peak0) / (size - size0):.2f}"
            previous[name] = (size, r["peak_rss_mib"])
            print(
                f"| {size:,} | {name} | {r['seconds']:.1f} | {r['cpu_s']:.1f} | "
                f"{r['peak_rss_mib']:,.0f} | {r['inputs_rss_mib']:,.0f} | {per_pair} | "
                f"{(load0 + os.getloadavg()[0]) / 2:.1f} | {same} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
