"""Tiny GPT-2-style causal LMs trained locally in seconds: for tests, the demo and benchmarks.

A byte-level BPE tokenizer is trained with ``tokenizers`` on the given texts, a GPT-2 model is
built from a config (no pretrained weights, nothing downloaded) and trained on random windows
of the tokenized texts, and both are saved with ``save_pretrained`` (safetensors) so that
``transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True)`` loads them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simscope.errors import SimscopeError
from simscope.logs import quiet_transformers
from simscope.storage import atomic_dir

logger = logging.getLogger(__name__)

EOS = "<|endoftext|>"


@dataclass(frozen=True)
class TinyLMConfig:
    """Size and training schedule of a tiny model. The defaults train in about 10 s on 2 cores."""

    vocab_size: int = 1024
    n_positions: int = 128
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 2
    block_tokens: int = 64
    batch_size: int = 16
    steps: int = 300
    max_seconds: float | None = None
    learning_rate: float = 3e-3
    num_threads: int | None = 1


def train_tiny_lm(
    texts: Sequence[str],
    out_dir: Path,
    *,
    seed: int = 0,
    config: TinyLMConfig = TinyLMConfig(),
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Train a tokenizer and a tiny GPT-2 on ``texts``; save both to ``out_dir`` and return it.

    Deterministic for a seed when ``config.max_seconds`` is None (a time limit stops after a
    machine-dependent number of steps). ``out_dir`` is written atomically.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    texts = [t for t in texts if t.strip()]
    if not texts:
        raise SimscopeError("train_tiny_lm: expected at least one non-empty text, found none")
    out_dir = Path(out_dir)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=None
    )
    tokenizer.model_max_length = config.n_positions
    eos_id = tok.token_to_id(EOS)
    assert eos_id is not None

    ids: list[int] = []
    for enc in tok.encode_batch(texts):
        ids.append(eos_id)
        ids.extend(enc.ids)
    stream = torch.tensor(ids, dtype=torch.long)
    if stream.numel() <= config.block_tokens + 1:
        raise SimscopeError(
            f"train_tiny_lm: texts hold {stream.numel()} tokens; expected more than "
            f"block_tokens + 1 = {config.block_tokens + 1}; give more text"
        )

    torch.manual_seed(seed)
    model_config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model_config.loss_type = "ForCausalLM"  # silences a warning about the unset loss type
    model = GPT2LMHeadModel(model_config)
    threads_before = torch.get_num_threads()
    if config.num_threads is not None:
        # A model this small is dominated by per-op overhead: extra threads only add
        # synchronisation, and on a busy machine they make each step ~20x slower.
        torch.set_num_threads(config.num_threads)
    try:
        with quiet_transformers():  # its notices about config defaults say nothing here
            loss_value = _train(model, stream, config, seed, progress)
    finally:
        torch.set_num_threads(threads_before)
    logger.info("tiny LM: final training loss %.3f", loss_value)
    model.eval()
    with atomic_dir(out_dir, overwrite=overwrite) as tmp, quiet_transformers():
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "simscope_tiny.json").write_text(
            json.dumps({"seed": seed, **asdict(config)}, indent=2) + "\n"
        )
    return out_dir


def _train(model: Any, stream: Any, config: TinyLMConfig, seed: int, progress: bool) -> float:
    import torch
    from tqdm import tqdm

    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    offsets = torch.arange(config.block_tokens + 1)
    start = time.perf_counter()
    loss_value = float("nan")
    bar = tqdm(range(config.steps), desc="train tiny lm", unit="step", disable=not progress)
    for step in bar:
        if config.max_seconds is not None and time.perf_counter() - start > config.max_seconds:
            break
        # Linear warm-up over the first 10% of steps, then constant.
        lr_scale = min(1.0, (step + 1) / max(1, config.steps // 10))
        for group in optim.param_groups:
            group["lr"] = config.learning_rate * lr_scale
        starts = rng.integers(0, stream.numel() - config.block_tokens - 1, config.batch_size)
        batch = stream[torch.from_numpy(starts)[:, None] + offsets]
        out = model(input_ids=batch, labels=batch)
        optim.zero_grad(set_to_none=True)
        out.loss.backward()
        optim.step()
        loss_value = float(out.loss.detach())
        bar.set_postfix(loss=f"{loss_value:.2f}")
    return loss_value
