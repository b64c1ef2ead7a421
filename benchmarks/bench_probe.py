"""Probe throughput and memory: likelihood scoring against plain HF loops, and generation.

1. scoring: ``simscope.probe.likelihood.score_texts`` (length-bucketed batches, the backbone
   without a KV cache, the output layer only on scored positions, a chunk at a time, reduced
   to the target logit and a logsumexp) on ``--texts`` HH-RLHF transcripts cut to
   ``--max-tokens``, against three plain alternatives written as one would with transformers:
   ``plain batched`` (batches of ``--plain-batch`` texts in input order, right padded,
   ``model(...).logits``, ``log_softmax`` over the batch, ``gather``), the same loop over
   length-sorted batches (``plain sorted``: what length bucketing alone gives), and one
   forward pass per text with ``labels=`` (``plain per-text loss``). Timed in one process,
   wall and CPU seconds, the repeats interleaved across paths; then each path runs once more
   in a fresh subprocess, so that its peak RSS (VmHWM) is its own: ``loaded`` is the RSS
   after loading the model and scoring one text (weights paged in, the runtime's buffers
   allocated), ``working`` the peak minus that (what scoring the texts adds), ``working /
   weights`` that over the bytes of the weights (<= 1 means peak RSS <= loaded runtime + 2x
   the weights). Quality: max
   |bits per byte - plain batched's| over the texts.
2. generation: ``simscope.probe.generate.sample_batch`` (what ``generate_corpus`` runs per
   batch: left padding, ancestral sampling at temperature 1, ``--max-new-tokens`` new tokens,
   half the samples unconditional and half after a neutral prefix), one batch of each size in
   ``--batch-sizes``; tokens = new tokens actually generated (up to and including EOS).
   ``--batch-sizes ''`` skips it.

The CPU (model name, the SIMD flags that matter, torch's capability) and simscope's dtype
decision (a timed float32 vs bfloat16 product) are printed first. Without ``--model`` a tiny
GPT-2 (0.2M parameters, 512 positions) is trained on the bundled Shakespeare for
``--train-steps`` steps;
with ``--model PATH`` (a model directory, a cached hub id or a ``.gguf`` file, de-quantised
once into ``--gguf-cache``) the same script measures a real model, on a GPU when there is
one (``--device auto``).

Run: ``python benchmarks/bench_probe.py --repeats 3``
     ``python benchmarks/bench_probe.py --model SmolLM2-135M-Instruct.Q4_1.gguf --texts 48 \\
        --max-tokens 256 --repeats 3 --batch-sizes ''``
     ``python benchmarks/bench_probe.py --model /models/Qwen3-0.6B --device cuda --repeats 3``
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
PATHS = ("simscope", "plain batched", "plain sorted", "plain per-text loss")
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "asimd", "sve", "bf16")


def cpu_description() -> str:
    """The CPU's model name and which of the flags that matter for bf16/fp32 kernels it has."""
    import torch

    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = set(value.split())
    except OSError:
        pass
    have = [f for f in FLAGS if f in flags] or ["none of " + ",".join(FLAGS)]
    return (
        f"{name}, {len(os.sched_getaffinity(0))} usable CPUs, flags: {' '.join(have)}, "
        f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )


def rss_now() -> int:
    """This process's resident set size in bytes (Linux; 0 elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def rss_peak() -> int:
    """This process's peak RSS in bytes: VmHWM, the high-water mark of its own memory map.
    (``ru_maxrss`` would not do: Linux carries it over from the parent through fork and exec,
    so a worker started by a big parent reports the parent's peak.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def hh_texts(n: int) -> list[str]:
    with gzip.open(DATA / "hh-rlhf-harmless-base-test.jsonl.gz", "rt") as f:
        return [json.loads(line)["chosen"] for line in f][:n]


def plain_bits_per_byte(
    lm: Any, texts: list[str], limit: int, batch_size: int, *, sort: bool
) -> np.ndarray:
    """The plain batched loop: right-padded batches, full logits, log_softmax, gather."""
    import torch

    ids = [
        [lm.start_token_id, *lm.tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"]]
        for t in texts
    ]
    ids = [x[:limit] for x in ids]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i])) if sort else range(len(ids))
    order = [i for i in order if len(ids[i]) > 1]
    out = np.full(len(texts), np.nan)
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            width = max(len(ids[i]) for i in idx)
            x = torch.full((len(idx), width), lm.start_token_id, dtype=torch.long)
            mask = torch.zeros_like(x)
            for row, i in enumerate(idx):
                x[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1
            x, mask = x.to(lm.device), mask.to(lm.device)
            logits = lm.model(input_ids=x, attention_mask=mask).logits
            lp = torch.log_softmax(logits.float(), dim=-1)[:, :-1].gather(2, x[:, 1:, None])[..., 0]
            lp = lp.double().cpu().numpy()
            for row, i in enumerate(idx):
                n = len(ids[i]) - 1
                scored = texts[i] if n < limit - 1 else lm.tokenizer.decode(ids[i][1:])
                out[i] = -lp[row, :n].sum() / math.log(2) / len(scored.encode("utf-8"))
    return out


def plain_loss_bits_per_byte(lm: Any, texts: list[str], limit: int) -> np.ndarray:
    """One forward pass per text with transformers' own loss."""
    import torch

    out = np.full(len(texts), np.nan)
    with torch.inference_mode():
        for i, text in enumerate(texts):
            ids = lm.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"][
                : limit - 1
            ]
            if not ids:
                continue
            x = torch.tensor([[lm.start_token_id, *ids]], device=lm.device)
            loss = float(lm.model(input_ids=x, labels=x).loss)  # mean nats over len(ids)
            scored = text if len(ids) < limit - 1 else lm.tokenizer.decode(ids)
            out[i] = loss * len(ids) / math.log(2) / len(scored.encode("utf-8"))
    return out


def load(args: argparse.Namespace, model: str) -> Any:
    import torch

    from simscope.probe.model import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    return load_model(model, device=args.device, dtype=args.dtype, gguf_cache=args.gguf_cache)


def scoring_paths(
    args: argparse.Namespace, lm: Any, texts: list[str]
) -> dict[tuple[str, int], Callable[[list[str]], np.ndarray]]:
    """(path, batch) -> a function from texts to their bits per byte."""
    from simscope.probe.likelihood import LikelihoodConfig, score_texts

    limit = min(args.max_tokens, lm.max_tokens)
    pb = args.plain_batch
    paths: dict[tuple[str, int], Callable[[list[str]], np.ndarray]] = {
        ("plain batched", pb): lambda t: plain_bits_per_byte(lm, t, limit, pb, sort=False),
        ("plain sorted", pb): lambda t: plain_bits_per_byte(lm, t, limit, pb, sort=True),
    }
    if not args.skip_per_text:
        paths["plain per-text loss", 1] = lambda t: plain_loss_bits_per_byte(lm, t, limit)
    for bs in (int(b) for b in args.score_batch_sizes.split(",")):
        cfg = LikelihoodConfig(batch_size=bs, max_tokens=limit)
        paths["simscope", bs] = lambda t, cfg=cfg: (
            score_texts(lm, t, cfg, progress=False).bits_per_byte
        )
    return paths


def worker(args: argparse.Namespace) -> None:
    """One scoring path, run once in this fresh process: its peak RSS, as one JSON line."""
    import torch

    lm = load(args, args.model)
    weights = sum(
        {p.data_ptr(): p.numel() * p.element_size() for p in lm.model.parameters()}.values()
    )
    texts = hh_texts(args.texts)
    fn = scoring_paths(args, lm, texts)[args.worker, args.batch]
    fn(texts[:1])  # weights paged in, the runtime's buffers allocated
    base = rss_now()
    fn(texts)
    peak = rss_peak()
    n_params = sum(p.numel() for p in lm.model.parameters())
    info = {
        "peak_rss": peak,
        "base_rss": base,
        "weights": weights,
        "model": f"{args.model} ({n_params / 1e6:.1f}M params, {weights / 2**20:.0f} MiB) on "
        f"{lm.device} ({lm.dtype}), {torch.get_num_threads()} threads",
    }
    print(json.dumps(info))


def peak_rss(args: argparse.Namespace, model: str, path: str, batch: int) -> dict[str, Any]:
    """Run one path in a fresh subprocess (``--worker``) and read its memory figures."""
    cmd = [sys.executable, __file__, "--worker", path, "--batch", str(batch), "--model", model]
    for key in ("repeats", "texts", "max_tokens", "device", "dtype", "threads", "gguf_cache"):
        value = getattr(args, key)
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    if args.skip_per_text:
        cmd.append("--skip-per-text")
    cmd += ["--score-batch-sizes", args.score_batch_sizes, "--plain-batch", str(args.plain_batch)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of one call and its result."""
    import torch

    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def cpu_timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall and CPU seconds (this process, all threads) of one call, and its result."""
    cpu = time.process_time()
    wall, result = timed(fn)
    return wall, time.process_time() - cpu, result


def generation_rows(args: argparse.Namespace, lm: Any) -> list[str]:
    from simscope.probe.generate import GenerationConfig, sample_batch

    rows, base_rate = [], None
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        cfg = GenerationConfig(
            n_docs=bs, batch_size=bs, max_new_tokens=args.max_new_tokens, prefixes=("", "The")
        )
        sample_batch(lm, cfg, 0)  # warm-up
        runs = [timed(lambda cfg=cfg: sample_batch(lm, cfg, 0)) for _ in range(args.repeats)]
        secs = statistics.median(t for t, _ in runs)
        rate = runs[-1][1][1] / secs
        base_rate = base_rate or rate
        rows.append(f"| {bs} | {secs:.3f} | {rate:,.0f} | {rate / base_rate:.2f}x |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", help="model directory, hub id or .gguf (default: train tiny)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--texts", type=int, default=256, help="HH transcripts to score")
    parser.add_argument("--max-tokens", type=int, default=512, help="tokens scored per text")
    parser.add_argument("--score-batch-sizes", default="16,64", help="simscope's batch sizes")
    parser.add_argument("--plain-batch", type=int, default=16, help="the plain loops' batch")
    parser.add_argument("--batch-sizes", default="1,8,64", help="generation batch sizes")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: simscope's)")
    parser.add_argument("--gguf-cache", type=Path, help="where a .gguf is de-quantised once")
    parser.add_argument("--skip-per-text", action="store_true", help="leave out per-text loss")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=16, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats: expected >= 3 (the table reports medians)")
    if args.worker:
        worker(args)
        return

    from simscope.probe.model import matmul_seconds, resolve_dtype
    from simscope.probe.tiny import TinyLMConfig, train_tiny_lm

    print(cpu_description())
    fp32, bf16 = matmul_seconds()
    print(
        f"256^3 matmul, 1 thread: float32 {fp32 * 1e3:.2f} ms, bfloat16 {bf16 * 1e3:.2f} ms "
        f"-> dtype auto on cpu = {resolve_dtype('auto', 'cpu')}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            with gzip.open(DATA / "tinyshakespeare.txt.gz", "rt", encoding="utf-8") as f:
                paragraphs = [p for p in f.read().split("\n\n") if len(p.split()) >= 8]
            start = time.perf_counter()
            cfg = TinyLMConfig(steps=args.train_steps, n_positions=512)
            model = str(train_tiny_lm(paragraphs, Path(tmp) / "tiny", seed=0, config=cfg))
            print(f"trained tiny GPT-2 in {time.perf_counter() - start:.1f} s")
        if args.gguf_cache is None and model.endswith(".gguf"):
            args.gguf_cache = Path(tmp) / "gguf"
        lm = load(args, model)
        texts = hh_texts(args.texts)
        paths = scoring_paths(args, lm, texts)
        # Repeats interleaved across paths: a change in the machine's load hits all alike.
        times: dict[tuple[str, int], list[float]] = {key: [] for key in paths}
        cpu_times: dict[tuple[str, int], list[float]] = {key: [] for key in paths}
        results: dict[tuple[str, int], np.ndarray] = {}
        for fn in paths.values():
            fn(texts[:4])  # warm-up
        for _ in range(args.repeats):
            for key, fn in paths.items():
                secs, cpu, results[key] = cpu_timed(lambda fn=fn: fn(texts))
                times[key].append(secs)
                cpu_times[key].append(cpu)
        memory = {key: peak_rss(args, model, *key) for key in paths}
        gen = generation_rows(args, lm) if args.batch_sizes else []
        limit = min(args.max_tokens, lm.max_tokens)
        ids = [lm.tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"] for t in texts]
        n_tok = sum(min(len(x), limit - 1) for x in ids)

    first = next(iter(memory.values()))
    print(f"model {first['model']}, median of {args.repeats} (repeats interleaved across paths)")
    print(f"scoring {len(texts)} HH transcripts, <= {limit} tokens each, {n_tok} tokens in all")
    print()
    print(
        "| path | batch | median s | tokens/s | vs plain batched | CPU s | CPU vs plain | "
        "peak RSS MiB | "
        "loaded MiB | working MiB | working / weights | max abs dbpb |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    plain_key = ("plain batched", args.plain_batch)
    plain_secs = statistics.median(times[plain_key])
    plain_cpu = statistics.median(cpu_times[plain_key])
    for key in sorted(paths, key=lambda k: (PATHS.index(k[0]), k[1])):
        secs = statistics.median(times[key])
        cpu = statistics.median(cpu_times[key])
        m = memory[key]
        grown = m["peak_rss"] - m["base_rss"]
        err = float(np.nanmax(np.abs(results[key] - results[plain_key])))
        print(
            f"| {key[0]} | {key[1]} | {secs:.2f} | {n_tok / secs:,.0f} | "
            f"{plain_secs / secs:.2f}x | {cpu:.2f} | {plain_cpu / cpu:.2f}x | "
            f"{m['peak_rss'] / 2**20:,.0f} | "
            f"{m['base_rss'] / 2**20:,.0f} | {grown / 2**20:,.0f} | "
            f"{grown / m['weights']:.2f} | {err:.1e} |"
        )
    if gen:
        print()
        print("| generate batch | median s | tokens/s | vs batch 1 |")
        print("|---:|---:|---:|---:|")
        print("\n".join(gen))


if __name__ == "__main__":
    main()
