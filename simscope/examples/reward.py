"""A small Bradley-Terry reward model on top of a causal LM: how the demo *measures* RM
quality for each candidate instead of inventing it.

The reward is a linear head on the last non-padding token's hidden state; training minimises
``-log sigmoid(r(chosen) - r(rejected))`` over preference pairs, and quality is the accuracy
(share of test pairs with ``r(chosen) > r(rejected)``) on pairs the model never saw.
This is the recipe of reward-model papers shrunk to seconds on a CPU, not a way to train a
production RM.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from simscope.errors import SimscopeError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardResult:
    """Accuracy of a trained reward model on held-out pairs, with a bootstrap interval."""

    accuracy: float
    ci_low: float
    ci_high: float
    n_test: int
    final_train_loss: float


class _RewardModel(nn.Module):
    def __init__(self, body: nn.Module, hidden: int) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(hidden, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.body(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state
        last = attention_mask.sum(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0]), last]
        return self.head(pooled).squeeze(-1)


def _encode(
    tokenizer: object, texts: list[str], max_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    # keep the end of each text: the response is what the reward must judge
    tokenizer.truncation_side = "left"  # type: ignore[attr-defined]
    tokenizer.padding_side = "right"  # type: ignore[attr-defined]
    enc = tokenizer(  # type: ignore[operator]
        texts, max_length=max_tokens, truncation=True, padding=True, return_tensors="pt"
    )
    return enc["input_ids"], enc["attention_mask"]


def train_reward_model(
    model_dir: Path,
    train_pairs: list[tuple[str, str]],
    test_pairs: list[tuple[str, str]],
    *,
    epochs: int = 2,
    batch_size: int = 16,
    lr: float = 5e-4,
    max_tokens: int = 128,
    seed: int = 0,
    n_boot: int = 500,
    progress: bool = True,
) -> RewardResult:
    """Fine-tune a reward head (and the body) on ``train_pairs`` and test it.

    Each pair is ``(chosen_text, rejected_text)``, the prompt included in both.
    """
    from transformers import AutoModel, AutoTokenizer

    if not Path(model_dir, "config.json").is_file():
        raise SimscopeError(f"{model_dir}: no config.json; expected a saved causal LM directory")
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    body = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    model = _RewardModel(body, int(body.config.hidden_size))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    loss_value = float("nan")
    model.train()
    steps = epochs * ((len(train_pairs) + batch_size - 1) // batch_size)
    with tqdm(
        total=steps, desc=f"reward model {Path(model_dir).name}", disable=not progress
    ) as bar:
        for _ in range(epochs):
            order = rng.permutation(len(train_pairs))
            for start in range(0, len(order), batch_size):
                batch = [train_pairs[i] for i in order[start : start + batch_size]]
                ids, mask = _encode(
                    tokenizer, [c for c, _ in batch] + [r for _, r in batch], max_tokens
                )
                rewards = model(ids, mask)
                chosen, rejected = rewards[: len(batch)], rewards[len(batch) :]
                loss = -torch.nn.functional.logsigmoid(chosen - rejected).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss_value = float(loss.detach())
                bar.update(1)
    model.eval()
    correct = []
    with torch.no_grad():
        for start in range(0, len(test_pairs), batch_size):
            batch = test_pairs[start : start + batch_size]
            ids, mask = _encode(
                tokenizer, [c for c, _ in batch] + [r for _, r in batch], max_tokens
            )
            rewards = model(ids, mask)
            correct.extend((rewards[: len(batch)] > rewards[len(batch) :]).tolist())
    hits = np.asarray(correct, dtype=float)
    boots = [hits[rng.integers(0, hits.size, hits.size)].mean() for _ in range(n_boot)]
    low, high = np.quantile(boots, [0.025, 0.975])
    return RewardResult(float(hits.mean()), float(low), float(high), int(hits.size), loss_value)
