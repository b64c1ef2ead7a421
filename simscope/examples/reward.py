"""Reward models fine-tuned from a causal LM: how the demo and ``bench_zoo`` *measure* RM
quality for each candidate instead of inventing it.

A reward model is the base model's backbone plus a linear head on the last token's final
hidden state, trained with the Bradley-Terry loss ``-log sigmoid(r(chosen) - r(rejected))``.
``full=True`` (the default) fine-tunes every weight, as a real RM recipe does; ``full=False``
keeps the backbone frozen and trains the head alone (the cheap variant). Quality is the
accuracy (share of test pairs with ``r(chosen) > r(rejected)``) on pairs the model never saw,
with a bootstrap interval over those pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from simscope.errors import SimscopeError
from simscope.logs import quiet_transformers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardConfig:
    """The reward-model recipe; every field changes the result."""

    full: bool = True
    """Fine-tune every weight (False: a head on the frozen backbone)."""
    epochs: int = 4
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    batch_pairs: int = 16
    max_tokens: int = 64
    """Tokens per text, from its end (the response is what the reward judges)."""
    num_threads: int | None = 1
    """Torch threads while training (tiny models gain nothing from more; None = leave)."""


@dataclass(frozen=True)
class RewardResult:
    """Accuracy of a trained reward model on held-out pairs, with a bootstrap interval."""

    accuracy: float
    ci_low: float
    ci_high: float
    n_test: int
    final_train_loss: float


class _RewardModel(torch.nn.Module):
    def __init__(self, backbone: Any, hidden: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(hidden, 1)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        last = mask.sum(1) - 1  # right padding: the last real token
        return self.head(states[torch.arange(ids.shape[0]), last]).squeeze(-1)


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _encode(
    tokenizer: Any, texts: Sequence[str], max_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    tokenizer.truncation_side = "left"
    tokenizer.padding_side = "right"
    enc = tokenizer(
        list(texts), max_length=max_tokens, truncation=True, padding=True, return_tensors="pt"
    )
    return enc["input_ids"], enc["attention_mask"]


def _rewards(
    model: _RewardModel, ids: torch.Tensor, mask: torch.Tensor, batch: int
) -> torch.Tensor:
    out = []
    for lo in range(0, ids.shape[0], batch):
        out.append(model(ids[lo : lo + batch], mask[lo : lo + batch]))
    return torch.cat(out)


def train_reward_model(
    model_dir: Path,
    train_pairs: Sequence[tuple[str, str]],
    test_pairs: Sequence[tuple[str, str]],
    config: RewardConfig = RewardConfig(),
    *,
    seed: int = 0,
    n_boot: int = 1000,
    progress: bool = True,
) -> RewardResult:
    """Train a reward model from the causal LM in ``model_dir`` on ``train_pairs`` and test
    it on ``test_pairs``; each pair is ``(chosen_text, rejected_text)``, prompt included."""
    from transformers import AutoModel, AutoTokenizer

    if not Path(model_dir, "config.json").is_file():
        raise SimscopeError(f"{model_dir}: no config.json; expected a saved causal LM directory")
    with _threads(config.num_threads):
        torch.manual_seed(seed)
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            backbone = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        model = _RewardModel(backbone, int(backbone.config.hidden_size))
        if not config.full:
            for p in model.backbone.parameters():
                p.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        chosen = _encode(tokenizer, [c for c, _ in train_pairs], config.max_tokens)
        rejected = _encode(tokenizer, [r for _, r in train_pairs], config.max_tokens)
        n = len(train_pairs)
        rng = np.random.default_rng(seed)
        steps = config.epochs * -(-n // config.batch_pairs)
        loss_value = float("nan")
        model.train()
        desc = f"reward model {Path(model_dir).name}"
        with tqdm(total=steps, desc=desc, disable=not progress) as bar:
            for _ in range(config.epochs):
                order = torch.from_numpy(rng.permutation(n))
                for lo in range(0, n, config.batch_pairs):
                    idx = order[lo : lo + config.batch_pairs]
                    margin = model(chosen[0][idx], chosen[1][idx]) - model(
                        rejected[0][idx], rejected[1][idx]
                    )
                    loss = -torch.nn.functional.logsigmoid(margin).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    loss_value = float(loss.detach())
                    bar.update(1)
        model.eval()
        with torch.inference_mode():
            test_c = _encode(tokenizer, [c for c, _ in test_pairs], config.max_tokens)
            test_r = _encode(tokenizer, [r for _, r in test_pairs], config.max_tokens)
            margins = _rewards(model, *test_c, 64) - _rewards(model, *test_r, 64)
    hits = np.where(margins.numpy() > 0, 1.0, np.where(margins.numpy() < 0, 0.0, 0.5))
    boots = hits[np.random.default_rng(seed).integers(0, hits.size, (n_boot, hits.size))].mean(1)
    low, high = np.quantile(boots, [0.025, 0.975])
    return RewardResult(float(hits.mean()), float(low), float(high), int(hits.size), loss_value)
