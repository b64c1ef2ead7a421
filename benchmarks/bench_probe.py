"""Probe throughput: generation tokens/s vs batch size, likelihood-scoring tokens/s.

Both measured on one causal LM in one process:

1. generation: ``simscope.probe.generate.sample_batch`` (what ``generate_corpus`` runs per
   batch: left padding, ancestral sampling at temperature 1, ``--max-new-tokens`` new tokens,
   half the samples unconditional and half after a neutral prefix), one batch of each size in
   ``--batch-sizes``; tokens = new tokens actually generated (up to and including EOS);
2. scoring: ``simscope.probe.likelihood.score_texts`` (length-sorted batches, one forward pass
   per batch) on ``--texts`` HH-RLHF transcripts at several batch sizes, against the plain
   alternative: one forward pass per text with ``labels=`` (transformers' own loss), whose
   bits per byte are the quality check (max absolute difference).

Without ``--model`` a tiny GPT-2 (0.7M parameters) is trained on the bundled Shakespeare for
``--train-steps`` steps first; with ``--model PATH`` (a local directory or cached hub id) the
same script measures a real model, on a GPU when there is one (``--device auto``).

Run: ``python benchmarks/bench_probe.py --repeats 3``
     ``python benchmarks/bench_probe.py --model /models/Qwen3-0.6B --device cuda --repeats 3``
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simscope.probe.generate import GenerationConfig, sample_batch
from simscope.probe.likelihood import LikelihoodConfig, score_texts
from simscope.probe.model import LoadedModel, load_model
from simscope.probe.tiny import TinyLMConfig, train_tiny_lm

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls (after one warm-up call) and the last result."""
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def plain_bits_per_byte(lm: LoadedModel, texts: list[str], limit: int) -> np.ndarray:
    """One forward pass per text with transformers' own loss: the plain alternative."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory or cached hub id (default: train tiny)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,64")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--texts", type=int, default=256, help="HH transcripts to score")
    parser.add_argument("--score-batch-sizes", default="1,16,64")
    parser.add_argument("--max-tokens", type=int, default=512, help="tokens scored per text")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--train-steps", type=int, default=300)
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats: expected >= 3 (the table reports medians)")
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model_ref = args.model
        if model_ref is None:
            with gzip.open(DATA / "tinyshakespeare.txt.gz", "rt", encoding="utf-8") as f:
                paragraphs = [p for p in f.read().split("\n\n") if len(p.split()) >= 8]
            start = time.perf_counter()
            model_ref = str(
                train_tiny_lm(
                    paragraphs,
                    Path(tmp) / "tiny",
                    seed=0,
                    config=TinyLMConfig(steps=args.train_steps),
                )
            )
            print(f"trained tiny GPT-2 in {time.perf_counter() - start:.1f} s")
        lm = load_model(model_ref, device=args.device, dtype=args.dtype)
        n_params = sum(p.numel() for p in lm.model.parameters())
        print(
            f"model {model_ref} ({n_params / 1e6:.1f}M params) on {lm.device} ({lm.dtype}), "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{platform.processor() or platform.machine()}, median of {args.repeats}"
        )
        rows: list[tuple[str, str, int, float, float, str]] = []

        base_rate = None
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            cfg = GenerationConfig(
                n_docs=bs,
                batch_size=bs,
                max_new_tokens=args.max_new_tokens,
                prefixes=("", "The"),
                seed=0,
            )
            secs, (_, n_new) = median_time(lambda cfg=cfg: sample_batch(lm, cfg, 0), args.repeats)
            rate = n_new / secs
            base_rate = base_rate or rate
            rows.append(("generate", "simscope", bs, secs, rate, f"{rate / base_rate:.2f}x b1"))

        with gzip.open(DATA / "hh-rlhf-harmless-base-test.jsonl.gz", "rt") as f:
            texts = [json.loads(line)["chosen"] for line in f][: args.texts]
        limit = min(args.max_tokens, lm.max_tokens)
        plain_secs, plain_bpb = median_time(
            lambda: plain_bits_per_byte(lm, texts, limit), args.repeats
        )
        n_tok = None
        for bs in (int(b) for b in args.score_batch_sizes.split(",")):
            cfg_l = LikelihoodConfig(batch_size=bs, max_tokens=limit)
            secs, scores = median_time(
                lambda cfg_l=cfg_l: score_texts(lm, texts, cfg_l, progress=False), args.repeats
            )
            n_tok = scores.tokens_scored
            err = float(np.nanmax(np.abs(scores.bits_per_byte - plain_bpb)))
            rows.append(
                (
                    "score",
                    "simscope",
                    bs,
                    secs,
                    n_tok / secs,
                    f"{plain_secs / secs:.2f}x plain; max |dbpb| {err:.1e}",
                )
            )
        assert n_tok is not None
        rows.append(("score", "plain per-text loss", 1, plain_secs, n_tok / plain_secs, "1.00x"))

    print()
    print("| stage | path | batch | median s | tokens/s | ratio / check |")
    print("|---|---|---:|---:|---:|---|")
    for stage, path, bs, secs, rate, note in rows:
        print(f"| {stage} | {path} | {bs} | {secs:.3f} | {rate:,.0f} | {note} |")


if __name__ == "__main__":
    main()
